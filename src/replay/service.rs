use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use http::request::Parts;
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
/// on a clone of the inner service (as it was at the first request after
/// the layer wrapped it, or after the last [`get_mut`](Replay::get_mut)),
/// after that clone's `poll_ready`.
pub struct Replay<S, C = SourceChainClassifier> {
    inner: S,
    shared: Arc<ReplayShared<S, C>>,
}

/// What a `Replay`, its clones and their response futures share.
pub(crate) struct ReplayShared<S, C> {
    pub(crate) policy: Arc<Policy<C>>,
    /// The service replays are cloned from, taken at the first request.
    /// A response future keeps this rather than a clone of the service:
    /// few requests are replayed, and a clone per request (for the pool,
    /// two reference counts that every request of every task touches)
    /// would be paid by all of them.
    template: OnceLock<Mutex<S>>,
}

impl<S, C> ReplayShared<S, C> {
    /// Shared state with no template yet: the next request takes one.
    fn new(policy: Arc<Policy<C>>) -> Arc<Self> {
        Arc::new(ReplayShared {
            policy,
            template: OnceLock::new(),
        })
    }
}

impl<S: Clone, C> ReplayShared<S, C> {
    /// A clone of the inner service for another attempt.
    pub(crate) fn service(&self) -> Option<S> {
        self.template
            .get()
            .map(|template| crate::connection::lock(template).clone())
    }
}

impl<S, C> Replay<S, C> {
    pub(crate) fn new(inner: S, policy: Arc<Policy<C>>) -> Self {
        Replay {
            inner,
            shared: ReplayShared::new(policy),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably. Replays of later requests go out on
    /// clones of it as changed.
    pub fn get_mut(&mut self) -> &mut S {
        // A template of its own, taken afresh at the next request; clones
        // keep theirs.
        if self.shared.template.get().is_some() {
            self.shared = ReplayShared::new(self.shared.policy.clone());
        }
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// What this service and its siblings of the same layer have replayed.
    pub fn stats(&self) -> ReplayStats {
        self.shared.policy.counters.snapshot()
    }
}

impl<S: Clone, C> Clone for Replay<S, C> {
    fn clone(&self) -> Self {
        Replay {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
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

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        if policy.max_attempts <= 1 {
            let future = self.inner.call(request.map(ReplayBody::passthrough));
            Counters::add(&policy.counters.requests);
            return ResponseFuture::single(future);
        }
        let (head, body) = request.into_parts();
        let body = ReplayBody::new(body, policy.buffer_limit);
        let replays = body.detached();
        let inner = &self.inner;
        self.shared
            .template
            .get_or_init(|| Mutex::new(inner.clone()));
        let future = self.inner.call(Request::from_parts(copy_head(&head), body));
        // Counted once the request is on its way (the inner service may send
        // it from `call`): this is bookkeeping, and the request need not
        // wait for it. A replay can only be asked for once the future is
        // polled, after the deposit.
        Counters::add(&policy.counters.requests);
        policy.budget.deposit();
        ResponseFuture::replaying(future, self.shared.clone(), head, replays)
    }
}

/// A copy of `head` for one attempt: `Parts::clone`, but the headers and
/// extensions only when there are any. Many requests have none, and a
/// clone of the empty collections costs more than new ones (about 100
/// instructions of a small GET's copy, callgrind).
pub(super) fn copy_head(head: &Parts) -> Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = head.method.clone();
    copy.uri = head.uri.clone();
    copy.version = head.version;
    if !head.headers.is_empty() {
        copy.headers = head.headers.clone();
    }
    if !head.extensions.is_empty() {
        copy.extensions = head.extensions.clone();
    }
    copy
}

impl<S: fmt::Debug, C> fmt::Debug for Replay<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("inner", &self.inner)
            .field("max_attempts", &self.shared.policy.max_attempts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::copy_head;

    #[derive(Debug, Clone, PartialEq)]
    struct Tag(u32);

    #[test]
    fn a_copied_head_has_everything_of_the_original() {
        let mut request = http::Request::post("http://example.test/path?q=1")
            .version(http::Version::HTTP_2)
            .header("x-one", "1")
            .header("x-two", "2")
            .body(())
            .expect("a request");
        request.extensions_mut().insert(Tag(7));
        let (head, ()) = request.into_parts();
        let copy = copy_head(&head);
        assert_eq!(copy.method, head.method);
        assert_eq!(copy.uri, head.uri);
        assert_eq!(copy.version, head.version);
        assert_eq!(copy.headers, head.headers);
        assert_eq!(copy.extensions.get::<Tag>(), Some(&Tag(7)));

        let (bare, ()) = http::Request::new(()).into_parts();
        let copy = copy_head(&bare);
        assert!(copy.headers.is_empty() && copy.extensions.is_empty());
    }
}
