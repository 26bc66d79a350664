use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::body::ReplayBody;
use super::classify::Classify;
use super::layer::Policy;
use super::service::{copy_head, ReplayShared};
use super::stats::Counters;
use crate::error::Delivery;

/// How many attempts a response took, in its extensions when it took more
/// than one.
///
/// ```
/// use h2pool::replay::Attempts;
///
/// let response = http::Response::new(());
/// assert_eq!(Attempts::of(&response), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(pub u32);

impl Attempts {
    /// The attempts `response` took: 1 unless the replay layer says more.
    pub fn of<B>(response: &Response<B>) -> u32 {
        response
            .extensions()
            .get::<Attempts>()
            .map_or(1, |attempts| attempts.0)
    }
}

pin_project! {
    /// The response future of [`Replay`](super::Replay).
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        attempt: Attempt<S::Future, Request<ReplayBody<B>>>,
        // `None` when replays are off.
        replay: Option<ReplayState<S, B, C>>,
        attempts: u32,
    }
}

struct ReplayState<S, B, C> {
    shared: Arc<ReplayShared<S, C>>,
    // Attempts the server turned away (not those that never left the
    // client), for the backoff.
    turned_away: u32,
    // A clone of the inner service, made for the first replay.
    service: Option<S>,
    head: Parts,
    body: ReplayBody<B>,
}

pin_project! {
    // The request waiting for the service lives in the variant, boxed:
    // a request head is larger than many services' futures, and every
    // response future (moved on every call) would carry its size for a
    // replay that few requests need.
    #[project = AttemptProj]
    enum Attempt<F, R> {
        Sending { #[pin] future: F },
        GettingReady {
            request: Option<Box<R>>,
            // The backoff before this attempt, if it waits one.
            backoff: Option<Pin<Box<Sleep>>>,
        },
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn single(future: S::Future) -> Self {
        ResponseFuture {
            attempt: Attempt::Sending { future },
            replay: None,
            attempts: 1,
        }
    }

    #[inline]
    pub(crate) fn replaying(
        future: S::Future,
        shared: Arc<ReplayShared<S, C>>,
        head: Parts,
        body: Option<ReplayBody<B>>,
    ) -> Self {
        ResponseFuture {
            attempt: Attempt::Sending { future },
            // A match, not `Option::map`: the state is built in place
            // rather than moved in, a copy of its few hundred bytes.
            replay: match body {
                Some(body) => Some(ReplayState {
                    shared,
                    turned_away: 0,
                    service: None,
                    head,
                    body,
                }),
                None => None,
            },
            attempts: 1,
        }
    }
}

impl<S, B, C, ResBody> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    S::Error: fmt::Display,
    C: Classify<S::Error>,
    B: Send + 'static,
    B: http_body::Body,
{
    type Output = Result<Response<ResBody>, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.attempt.as_mut().project() {
                AttemptProj::Sending { future } => match ready!(future.poll(cx)) {
                    Ok(mut response) => {
                        if let Some(replay) = this.replay.as_ref() {
                            replay.body.end_replays();
                        }
                        if *this.attempts > 1 {
                            response.extensions_mut().insert(Attempts(*this.attempts));
                        }
                        return Poll::Ready(Ok(response));
                    }
                    Err(error) => {
                        let Some(replay) = this.replay.as_mut() else {
                            return Poll::Ready(Err(error));
                        };
                        match next_attempt(replay, *this.attempts, error) {
                            Ok((request, delivery)) => {
                                *this.attempts += 1;
                                if delivery != Delivery::NeverSent {
                                    replay.turned_away += 1;
                                }
                                let backoff = replay
                                    .shared
                                    .policy
                                    .backoff
                                    .before(replay.turned_away, delivery)
                                    .map(|wait| Box::pin(tokio::time::sleep(wait)));
                                this.attempt.set(Attempt::GettingReady {
                                    request: Some(Box::new(request)),
                                    backoff,
                                });
                            }
                            Err(error) => return Poll::Ready(Err(error)),
                        }
                    }
                },
                AttemptProj::GettingReady { request, backoff } => {
                    if let Some(wait) = backoff {
                        ready!(wait.as_mut().poll(cx));
                        *backoff = None;
                    }
                    let Some(replay) = this.replay.as_mut() else {
                        unreachable!("only a replay gets ready for another attempt");
                    };
                    let Some(service) = replay.service.as_mut() else {
                        unreachable!("a replay clones the service before getting ready");
                    };
                    ready!(service.poll_ready(cx))?;
                    let Some(request) = request.take() else {
                        unreachable!("an attempt is prepared before getting ready for it");
                    };
                    let future = service.call(*request);
                    this.attempt.set(Attempt::Sending { future });
                }
            }
        }
    }
}

/// The request for the next attempt and how the last one ended, or the
/// error to give the caller.
fn next_attempt<S, B, C, E>(
    replay: &mut ReplayState<S, B, C>,
    attempts: u32,
    mut error: E,
) -> Result<(Request<ReplayBody<B>>, Delivery), E>
where
    S: Clone,
    C: Classify<E>,
    E: fmt::Display,
    B: http_body::Body + Send + 'static,
{
    let policy: &Policy<C> = &replay.shared.policy;
    let counters = &policy.counters;
    let Some(delivery) = policy.classifier.classify(&error) else {
        return Err(error);
    };
    if !policy.replay_connect_failures && policy.classifier.is_connect_failure(&error) {
        return Err(error);
    }
    let counter = match delivery {
        Delivery::NeverSent => &counters.replayed_never_sent,
        Delivery::Refused => &counters.replayed_refused,
        Delivery::MaybeProcessed
            if policy.retry_idempotent && is_idempotent(&replay.head.method) =>
        {
            &counters.retried_maybe_processed
        }
        Delivery::MaybeProcessed => return Err(error),
    };
    let uri = &replay.head.uri;
    if attempts >= policy.max_attempts {
        Counters::add(&counters.gave_up_attempts);
        tracing::debug!(%uri, attempts, %error, "not replaying: no attempts left");
        return Err(error);
    }
    // A request handed back untouched is always replayable; a kept body
    // only if it did not outgrow the buffer.
    if !replay.body.is_replayable() {
        Counters::add(&counters.gave_up_body_too_large);
        tracing::debug!(%uri, %error, "not replaying: the body outgrew the replay buffer");
        return Err(policy.classifier.body_too_large_to_replay(error));
    }
    if replay.service.is_none() {
        // The template is taken at the call that made this future.
        let Some(service) = replay.shared.service() else {
            return Err(error);
        };
        replay.service = Some(service);
    }
    if !policy.budget.withdraw() {
        Counters::add(&counters.gave_up_budget);
        tracing::debug!(%uri, %error, "not replaying: the retry budget is spent");
        return Err(error);
    }
    // Prefer the untouched request the error hands back: it needs no copy.
    let request = match policy.classifier.take_request::<ReplayBody<B>>(&mut error) {
        Some(request) => request,
        None => match replay.body.replay() {
            Some(body) => Request::from_parts(copy_head(&replay.head), body),
            None => {
                Counters::add(&counters.gave_up_body_too_large);
                return Err(policy.classifier.body_too_large_to_replay(error));
            }
        },
    };
    Counters::add(counter);
    tracing::debug!(%uri, attempt = attempts + 1, ?delivery, %error, "replaying request");
    Ok((request, delivery))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
