use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http::{Request, Response};
use http_body::Body as HttpBody;
use pin_project_lite::pin_project;

use super::dispatch::Dispatch;
use crate::body::Body;
use crate::error::{BoxError, Error};
use crate::replay::{self, ReplayBody, SourceChainClassifier};

pin_project! {
    /// The response future of [`Pool`](super::Pool) and
    /// [`OriginService`](super::OriginService).
    ///
    /// Each attempt waits for a stream slot (bounded by the pool's pending
    /// timeout), then for the response headers; a request the server did not
    /// process goes again (see [`replay`](crate::replay)). Dropping the
    /// future gives up the wait, or resets the stream with CANCEL.
    pub struct ResponseFuture<B>
    where
        B: HttpBody,
        B: Send,
        B: 'static,
        B::Data: Buf,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        #[pin]
        inner: replay::ResponseFuture<Dispatch, B, SourceChainClassifier>,
    }
}

impl<B> ResponseFuture<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(inner: replay::ResponseFuture<Dispatch, B, SourceChainClassifier>) -> Self {
        ResponseFuture { inner }
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().inner.poll(cx)) {
            Ok(response) => Poll::Ready(Ok(response)),
            Err(error) => Poll::Ready(Err(hand_back_original::<B>(error))),
        }
    }
}

/// An error that carries the request back carries it as the replay layer
/// sent it; the caller gets the body type it gave.
fn hand_back_original<B>(mut error: Error) -> Error
where
    B: HttpBody + Send + 'static,
{
    if !error.has_request() {
        return error;
    }
    let Some(request) = error.take_request::<Request<ReplayBody<B>>>() else {
        return error;
    };
    let (head, body) = request.into_parts();
    match body.into_original() {
        Ok(body) => error.with_request(Request::from_parts(head, body)),
        // Part of it went out with an earlier attempt: there is nothing
        // untouched to hand back.
        Err(_) => error,
    }
}

impl<B> fmt::Debug for ResponseFuture<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResponseFuture").field(&self.inner).finish()
    }
}
