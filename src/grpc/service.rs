use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tonic::Status;
use tower_service::Service;

use super::body::StatusBody;
use super::future::ResponseFuture;
use super::status_from_error;
use crate::error::BoxError;

/// A service whose errors, and whose response bodies' errors, are gRPC
/// statuses: what a tonic client over the pool should run on. Made by
/// [`GrpcStatusLayer`](super::GrpcStatusLayer).
///
/// It also keeps the call's deadline, as tonic's `Channel` does: a call
/// whose `grpc-timeout` (tonic's `Request::set_timeout`) passes before the
/// response headers arrive fails with `DEADLINE_EXCEEDED`, and its stream
/// is reset.
#[derive(Debug, Clone)]
pub struct GrpcStatus<S> {
    inner: S,
}

impl<S> GrpcStatus<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        GrpcStatus { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The wrapped service's load, so a balancer can weigh origins under it.
impl<S: tower::load::Load> tower::load::Load for GrpcStatus<S> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcStatus<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<StatusBody<ResBody>>;
    type Error = Status;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx).map_err(status_from_error)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let timeout = grpc_timeout(request.headers());
        ResponseFuture::new(self.inner.call(request), timeout)
    }
}

/// The call's deadline from its `grpc-timeout` header (what tonic's
/// `Request::set_timeout` sets), as the gRPC spec writes it: at most eight
/// digits, then a unit. A malformed one is ignored, as tonic's `Channel`
/// does.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match value.as_bytes().last()? {
        b'H' => Duration::from_secs(amount * 60 * 60),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_are_read_as_the_spec_writes_them() {
        let read = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().expect("a header value"));
            grpc_timeout(&headers)
        };
        assert_eq!(read("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(read("3M"), Some(Duration::from_secs(180)));
        assert_eq!(read("5S"), Some(Duration::from_secs(5)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for malformed in ["", "m", "5", "123456789S", "-5S", "+5S", "5s", "5 S", "é"] {
            assert_eq!(read(malformed), None, "{malformed:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
