use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::policy::DrainPolicy;
use crate::connection::{ConnectionHandle, HasHandle};
use crate::error::ErrorKind;

/// A connection's service that drains the connection when its
/// [`DrainPolicy`] says so. Made by [`DrainLayer`](super::DrainLayer).
#[derive(Debug, Clone)]
pub struct Drain<S> {
    inner: S,
    policy: Arc<DrainPolicy>,
    age_limit: Option<Duration>,
}

impl<S: HasHandle> Drain<S> {
    /// Wraps `inner` (without the timer task: use the layer for that).
    pub(crate) fn new(inner: S, policy: Arc<DrainPolicy>, age_limit: Option<Duration>) -> Self {
        Drain {
            inner,
            policy,
            age_limit,
        }
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

impl<S: HasHandle> HasHandle for Drain<S> {
    fn handle(&self) -> &ConnectionHandle {
        self.inner.handle()
    }
}

impl<S, Request> Service<Request> for Drain<S>
where
    S: Service<Request> + HasHandle,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let handle = self.inner.handle();
        if handle.is_open() {
            if let Some(reason) = self.policy.reason(handle, self.age_limit) {
                if handle.start_draining(ErrorKind::ConnectionClosed, reason.clone()) {
                    tracing::debug!(connection = handle.id(), %reason, "draining connection");
                }
            }
        }
        // A draining connection's service is ready at once; its `call`
        // rejects the request as never sent, handing it back.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        self.inner.call(request)
    }
}
