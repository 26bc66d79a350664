use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::Status;

use super::body::StatusBody;
use super::status_from_error;
use crate::error::BoxError;

pin_project! {
    /// The response future of [`GrpcStatus`](super::GrpcStatus).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // The call's `grpc-timeout`, if it has one.
        #[pin]
        deadline: Option<Sleep>,
        timeout: Duration,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, timeout: Option<Duration>) -> Self {
        ResponseFuture {
            inner,
            deadline: timeout.map(tokio::time::sleep),
            timeout: timeout.unwrap_or_default(),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<StatusBody<B>>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(outcome) = this.inner.poll(cx) {
            return Poll::Ready(match outcome {
                Ok(response) => Ok(response.map(StatusBody::new)),
                Err(error) => Err(status_from_error(error)),
            });
        }
        match this.deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
            // Dropping `inner` with this future resets the stream.
            Some(Poll::Ready(())) => Poll::Ready(Err(Status::deadline_exceeded(format!(
                "no response within the call's grpc-timeout of {:?}",
                this.timeout
            )))),
            _ => Poll::Pending,
        }
    }
}
