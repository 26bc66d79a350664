use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body as HttpBody;
use tower_service::Service;

use super::body::ReplayBody;
use super::classify::{Classify, SourceChainClassifier};
use super::future::ResponseFuture;
use super::layer::Policy;
use super::stats::{Counters, ReplayStats};
use crate::error::BoxError;

/// Sends again requests that the server provably did not process. Made by
/// [`ReplayLayer`](super::ReplayLayer).
///
/// It wraps each request body in a [`ReplayBody`] and keeps a copy of the
/// request head; a failed attempt that its classifier judges safe goes again
/// on a clone of the inner service, after that clone's `poll_ready`.
#[derive(Clone)]
pub struct Replay<S, C = SourceChainClassifier> {
    inner: S,
    policy: Arc<Policy<C>>,
}

impl<S, C> Replay<S, C> {
    pub(crate) fn new(inner: S, policy: Arc<Policy<C>>) -> Self {
        Replay { inner, policy }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// What this service and its siblings of the same layer have replayed.
    pub fn stats(&self) -> ReplayStats {
        self.policy.counters.snapshot()
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for Replay<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    S::Error: fmt::Display,
    C: Classify<S::Error>,
    B: HttpBody + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let policy = &self.policy;
        if policy.max_attempts <= 1 {
            let future = self.inner.call(request.map(ReplayBody::passthrough));
            Counters::add(&policy.counters.requests);
            return ResponseFuture::single(future, policy.clone());
        }
        let (head, body) = request.into_parts();
        let body = ReplayBody::new(body, policy.buffer_limit);
        let replays = body.detached();
        let future = self.inner.call(Request::from_parts(head.clone(), body));
        // Counted once the request is on its way (the inner service may send
        // it from `call`): this is bookkeeping, and the request need not
        // wait for it. A replay can only be asked for once the future is
        // polled, after the deposit.
        Counters::add(&policy.counters.requests);
        policy.budget.deposit();
        ResponseFuture::replaying(future, self.inner.clone(), policy.clone(), head, replays)
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Replay<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("inner", &self.inner)
            .field("max_attempts", &self.policy.max_attempts)
            .finish_non_exhaustive()
    }
}
