use tower_layer::Layer;

use super::service::GrpcStatus;

/// Wraps a service in [`GrpcStatus`]: its errors, and its response bodies'
/// errors, become gRPC statuses (see [the module](super)).
///
/// ```no_run
/// use h2pool::grpc::GrpcStatusLayer;
/// use tower::ServiceBuilder;
///
/// # fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let pool = h2pool::Pool::new();
/// let channel = ServiceBuilder::new()
///     .layer(GrpcStatusLayer::new())
///     .service(pool.origin("http://127.0.0.1:50051".parse()?)?);
/// # drop(channel); Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatusLayer {
    _private: (),
}

impl GrpcStatusLayer {
    /// The layer.
    pub fn new() -> Self {
        GrpcStatusLayer::default()
    }
}

impl<S> Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;

    fn layer(&self, inner: S) -> GrpcStatus<S> {
        GrpcStatus::new(inner)
    }
}
