use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::CONTENT_LENGTH;
use http::{Response, StatusCode};

use super::stream::StreamGuard;
use crate::body::Body;
use crate::error::{Delivery, Error, ErrorKind};

/// The response future of a [`Connection`](super::Connection).
///
/// Resolves when the response headers arrive; the request body may still be
/// streaming. Dropping it resets the stream with CANCEL.
pub struct ResponseFuture {
    state: State,
}

enum State {
    Waiting {
        response: h2::client::ResponseFuture,
        guard: StreamGuard,
        // Our own reset, parked while the body task tells us why.
        reset: Option<h2::Error>,
        // False for a HEAD request: its response's content-length is that
        // of a body it does not carry.
        body_expected: bool,
    },
    Failed(Option<Error>),
}

impl ResponseFuture {
    pub(crate) fn waiting(
        response: h2::client::ResponseFuture,
        guard: StreamGuard,
        body_expected: bool,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                response,
                guard,
                reset: None,
                body_expected,
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed(Some(error)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, guard, reset) = match &mut self.state {
            State::Failed(error) => {
                return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                    Error::new(ErrorKind::NotReady, Delivery::NeverSent)
                        .with_detail("response future polled after completion")
                })))
            }
            State::Waiting {
                response,
                guard,
                reset,
                ..
            } => (response, guard, reset),
        };
        let h2_error = match reset.take() {
            Some(parked) => parked,
            None => match Pin::new(&mut *response).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(h2_error)) => h2_error,
                Poll::Ready(Ok(head)) => {
                    guard.answered();
                    let State::Waiting {
                        guard,
                        body_expected,
                        ..
                    } = std::mem::replace(&mut self.state, State::Failed(None))
                    else {
                        unreachable!("state was matched as Waiting above")
                    };
                    // h2 fails a HEAD response that carries data.
                    let length = if body_expected {
                        content_length(&head)
                    } else {
                        Some(0)
                    };
                    return Poll::Ready(Ok(head.map(|recv| Body::streaming(recv, guard, length))));
                }
            },
        };
        if h2_error.is_reset() && !h2_error.is_remote() && guard.has_body_task() {
            match guard.poll_body_error(cx) {
                Poll::Pending => {
                    *reset = Some(h2_error);
                    return Poll::Pending;
                }
                Poll::Ready(Some(body_error)) => {
                    self.state = State::Failed(None);
                    return Poll::Ready(Err(Error::new(
                        ErrorKind::RequestBody,
                        Delivery::MaybeProcessed,
                    )
                    .with_source(body_error)));
                }
                Poll::Ready(None) => {}
            }
        }
        let error = guard.stream_error(h2_error, false);
        if error.kind() == ErrorKind::GoAway && error.is_refused() {
            guard.note_refused_by_goaway();
        }
        self.state = State::Failed(None);
        Poll::Ready(Err(error))
    }
}

/// The body length the response announces, for the body's size hint (as
/// hyper's `Incoming` gives it). h2 has already refused a stream whose data
/// disagrees with it, or whose value is not a number. 204 and 304 responses
/// carry no body whatever the header says.
fn content_length(response: &Response<h2::RecvStream>) -> Option<u64> {
    if matches!(
        response.status(),
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        return None;
    }
    response
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Failed(Some(_)) => "failed",
            State::Failed(None) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
