use tower_layer::Layer;

use super::keep_alive::{self, KeepAlive};
use super::service::Readiness;
use crate::connection::HasHandle;

/// Wraps a connection's service in [`Readiness`], and starts its keep-alive
/// task (on the current tokio runtime) when keep-alive is on.
///
/// Clones share the keep-alive interval, so a server's request to ping less
/// often holds for every later connection it wraps too.
#[derive(Debug, Clone, Default)]
pub struct ReadinessLayer {
    keep_alive: Option<KeepAlive>,
}

impl ReadinessLayer {
    /// A layer that pings as `keep_alive` says, or never with `None`.
    pub fn new(keep_alive: Option<KeepAlive>) -> Self {
        ReadinessLayer { keep_alive }
    }
}

impl<S: HasHandle> Layer<S> for ReadinessLayer {
    type Service = Readiness<S>;

    fn layer(&self, inner: S) -> Readiness<S> {
        if let Some(keep_alive) = &self.keep_alive {
            keep_alive::spawn(inner.handle().clone(), keep_alive.clone());
        }
        Readiness::new(inner)
    }
}
