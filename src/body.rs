//! The response body.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::connection::stream::StreamGuard;
use crate::error::{Delivery, Error, ErrorKind};

/// The body of a response from h2pool: data frames, then trailers.
///
/// It hands HTTP/2 flow-control window back to the server as the consumer
/// takes each chunk, so a slow reader slows the server down and no more than
/// a window's worth is ever buffered. Dropping it before its end resets the
/// stream with CANCEL and frees the stream slot at once. Its size hint is
/// exact when the response has a `content-length`, as with hyper's `Incoming`.
///
/// ```
/// use http_body_util::BodyExt;
///
/// # async fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let body = h2pool::Body::empty();
/// let collected = body.collect().await?;
/// assert!(collected.to_bytes().is_empty());
/// # Ok(()) }
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Stream {
        recv: h2::RecvStream,
        guard: StreamGuard,
        data_done: bool,
        // Whether h2 was asked, after the first chunk, if the stream ended
        // with it; and whether it had (no data or trailers are left then).
        looked_for_end: bool,
        ended: bool,
        // Set when h2 reported our own reset: the body task's error explains it.
        failed: Option<h2::Error>,
        // What the response's content-length says is left to come.
        remaining: Option<u64>,
    },
}

impl Body {
    /// A body with no data and no trailers.
    pub fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// The body of a response; `content_length` is what its header says.
    pub(crate) fn streaming(
        recv: h2::RecvStream,
        guard: StreamGuard,
        content_length: Option<u64>,
    ) -> Self {
        Body {
            kind: Kind::Stream {
                recv,
                guard,
                data_done: false,
                looked_for_end: false,
                ended: false,
                failed: None,
                remaining: content_length,
            },
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Kind::Stream {
            recv,
            guard,
            data_done,
            looked_for_end,
            ended,
            failed,
            remaining,
        } = &mut self.kind
        else {
            return Poll::Ready(None);
        };
        if *ended {
            return Poll::Ready(None);
        }
        if let Some(h2_error) = failed.take() {
            return poll_failure(guard, h2_error, cx, failed);
        }
        if !*data_done {
            match recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    // Give the window back now that the consumer has the bytes.
                    let _ = recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    // Most responses fit one DATA frame, which ends the
                    // stream: knowing it now spares the next poll two trips
                    // through h2's lock (for the end of the data, then for
                    // trailers). Asked once, so a long body pays it once.
                    if !*looked_for_end {
                        *looked_for_end = true;
                        *ended = recv.is_end_stream();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(h2_error))) => {
                    return poll_failure(guard, h2_error, cx, failed)
                }
                Poll::Ready(None) => *data_done = true,
            }
        }
        match recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(h2_error)) => poll_failure(guard, h2_error, cx, failed),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Stream { ended: true, .. } => true,
            Kind::Stream { recv, .. } => recv.is_end_stream(),
        }
    }

    /// Exact when the response has a content-length (h2 fails the body
    /// if its data disagrees), as hyper's `Incoming` does.
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty | Kind::Stream { ended: true, .. } => SizeHint::with_exact(0),
            Kind::Stream {
                remaining: Some(remaining),
                ..
            } => SizeHint::with_exact(*remaining),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

/// Turns a stream error into ours; a reset we sent because the request
/// body failed is reported as that body's error.
fn poll_failure(
    guard: &mut StreamGuard,
    h2_error: h2::Error,
    cx: &mut Context<'_>,
    parked: &mut Option<h2::Error>,
) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
    let ours = h2_error.is_reset() && !h2_error.is_remote();
    if ours && guard.has_body_task() {
        return match guard.poll_body_error(cx) {
            Poll::Pending => {
                *parked = Some(h2_error);
                Poll::Pending
            }
            Poll::Ready(Some(body_error)) => Poll::Ready(Some(Err(Error::new(
                ErrorKind::RequestBody,
                Delivery::MaybeProcessed,
            )
            .with_source(body_error)))),
            Poll::Ready(None) => Poll::Ready(Some(Err(guard.stream_error(h2_error, true)))),
        };
    }
    Poll::Ready(Some(Err(guard.stream_error(h2_error, true))))
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f.write_str("Body(Empty)"),
            Kind::Stream { recv, .. } => f
                .debug_struct("Body")
                .field("stream_id", &recv.stream_id())
                .finish(),
        }
    }
}
