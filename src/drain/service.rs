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
    // Whether a timer task watches the time limits; without one (no tokio
    // runtime), `poll_ready` reads the clock itself.
    timed: bool,
}

impl<S: HasHandle> Drain<S> {
    /// Wraps `inner`; `timed` says whether a timer task watches the policy's
    /// time limits (the layer starts one).
    pub(crate) fn new(
        inner: S,
        policy: Arc<DrainPolicy>,
        age_limit: Option<Duration>,
        timed: bool,
    ) -> Self {
        Drain {
            inner,
            policy,
            age_limit,
            timed,
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
            // The counts change with every stream; the time limits are the
            // timer task's, which spares each request a read of the clock.
            let reason = if self.timed {
                self.policy.count_reason(handle)
            } else {
                self.policy.reason(handle, self.age_limit)
            };
            if let Some(reason) = reason {
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
