use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

use super::status_from_error;
use crate::error::BoxError;

pin_project! {
    /// A response body whose errors are gRPC statuses: a stream cut off
    /// mid-response reaches the tonic caller with the code gRPC prescribes.
    #[derive(Debug)]
    pub struct StatusBody<B> {
        #[pin]
        inner: B,
    }
}

/// tonic's `with_interceptor` asks for a default response body.
impl<B: Default> Default for StatusBody<B> {
    fn default() -> Self {
        StatusBody::new(B::default())
    }
}

impl<B> StatusBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        StatusBody { inner }
    }

    /// Unwraps the body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> HttpBody for StatusBody<B>
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Status>>> {
        self.project()
            .inner
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(status_from_error)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
