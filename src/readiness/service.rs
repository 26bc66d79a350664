use std::task::{Context, Poll};

use tower_service::Service;

use crate::connection::{ConnectionHandle, HasHandle};

/// A connection's service that is ready only while the connection is open,
/// alive and has a free stream slot. Made by [`ReadinessLayer`](super::ReadinessLayer).
#[derive(Debug, Clone)]
pub struct Readiness<S> {
    inner: S,
}

impl<S> Readiness<S> {
    /// Wraps `inner` (without a keep-alive task: use the layer for that).
    pub fn new(inner: S) -> Self {
        Readiness { inner }
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

impl<S: HasHandle> HasHandle for Readiness<S> {
    fn handle(&self) -> &ConnectionHandle {
        self.inner.handle()
    }
}

impl<S, Request> Service<Request> for Readiness<S>
where
    S: Service<Request> + HasHandle,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Not open (draining, closed, or retired by the keep-alive task):
        // ready at once, and the connection's `call` rejects the request with
        // a never-sent error that hands it back, rather than waiting forever
        // for a slot that will not come, or failing the service itself.
        if !self.inner.handle().is_open() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        self.inner.call(request)
    }
}
