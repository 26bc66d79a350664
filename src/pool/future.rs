use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{Request, Response};
use http_body::Body as HttpBody;
use tokio::time::Sleep;
use tower_service::Service;

use super::origin::{OriginPool, Waiter};
use crate::body::Body;
use crate::connection;
use crate::error::{BoxError, Delivery, Error, ErrorKind};

/// The response future of [`Pool`](super::Pool) and
/// [`OriginService`](super::OriginService).
///
/// It waits for a stream slot (bounded by the pool's pending timeout), then
/// for the response headers. Dropping it gives up the wait, or resets the
/// stream with CANCEL.
pub struct ResponseFuture<B> {
    state: State<B>,
}

enum State<B> {
    Acquiring {
        origin: Arc<OriginPool>,
        request: Option<Request<B>>,
        waiter: Waiter,
        pending_timeout: Option<Duration>,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    Sending {
        origin: Arc<OriginPool>,
        response: connection::ResponseFuture,
    },
    Failed(Option<Error>),
}

// The request body is moved, never pinned, so the future can move freely
// whatever the body type.
impl<B> Unpin for ResponseFuture<B> {}

impl<B> ResponseFuture<B> {
    pub(crate) fn acquiring(
        origin: Arc<OriginPool>,
        request: Request<B>,
        pending_timeout: Option<Duration>,
    ) -> Self {
        origin.record_request();
        ResponseFuture {
            state: State::Acquiring {
                origin,
                request: Some(request),
                waiter: Waiter::default(),
                pending_timeout,
                deadline: None,
            },
        }
    }

    pub(crate) fn sending(origin: Arc<OriginPool>, response: connection::ResponseFuture) -> Self {
        origin.record_request();
        ResponseFuture {
            state: State::Sending { origin, response },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed(Some(error)),
        }
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Acquiring {
                    origin,
                    request,
                    waiter,
                    pending_timeout,
                    deadline,
                } => {
                    let outcome = match origin.poll_acquire::<B>(cx, waiter, true) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => match pending_timeout {
                            None => return Poll::Pending,
                            Some(timeout) => {
                                let timeout = *timeout;
                                let sleep = deadline
                                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                                match sleep.as_mut().poll(cx) {
                                    Poll::Pending => return Poll::Pending,
                                    Poll::Ready(()) => Err(Error::new(
                                        ErrorKind::PendingTimeout,
                                        Delivery::NeverSent,
                                    )
                                    .with_detail(origin.no_slot_detail(timeout))),
                                }
                            }
                        },
                    };
                    let Some(request) = request.take() else {
                        this.state = State::Failed(None);
                        continue;
                    };
                    match outcome {
                        Ok(mut connection) => {
                            let response = Service::call(&mut connection, request);
                            let origin = origin.clone();
                            this.state = State::Sending { origin, response };
                        }
                        Err(error) => {
                            origin.record_error(error.kind());
                            this.state = State::Failed(None);
                            return Poll::Ready(Err(error.with_request(request)));
                        }
                    }
                }
                State::Sending { origin, response } => {
                    let outcome = match Pin::new(response).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(outcome) => outcome,
                    };
                    if let Err(error) = &outcome {
                        origin.record_error(error.kind());
                    }
                    this.state = State::Failed(None);
                    return Poll::Ready(outcome);
                }
                State::Failed(error) => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                        Error::new(ErrorKind::NotReady, Delivery::NeverSent)
                            .with_detail("response future polled after completion")
                    })))
                }
            }
        }
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "waiting for a stream slot",
            State::Sending { .. } => "waiting for response headers",
            State::Failed(Some(_)) => "failed",
            State::Failed(None) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
