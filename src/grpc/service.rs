use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tower_service::Service;

use super::body::StatusBody;
use super::future::ResponseFuture;
use super::status_from_error;
use crate::error::BoxError;

/// A service whose errors, and whose response bodies' errors, are gRPC
/// statuses: what a tonic client over the pool should run on. Made by
/// [`GrpcStatusLayer`](super::GrpcStatusLayer).
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
        ResponseFuture::new(self.inner.call(request))
    }
}
