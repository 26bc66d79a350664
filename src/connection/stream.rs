//! One request's stream: the task that sends its body, and the guard that
//! holds its stream slot until both directions are done.

use std::future::{poll_fn, Future};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, SendStream};
use http_body::Body as HttpBody;
use tokio::task::JoinHandle;

use super::handle::StreamSlot;
use crate::error::{BoxError, Delivery, Error, ErrorKind};

/// Holds a stream's slot, and the task sending its request body.
///
/// Dropping it (with the response future or the response body) aborts the
/// body task; h2 then resets the stream with CANCEL because no handle is
/// left, and the slot is free at once.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    slot: StreamSlot,
    body_task: Option<JoinHandle<Result<(), BoxError>>>,
}

impl StreamGuard {
    pub(crate) fn new(
        slot: StreamSlot,
        body_task: Option<JoinHandle<Result<(), BoxError>>>,
    ) -> Self {
        StreamGuard { slot, body_task }
    }

    /// After h2 reported our own reset of the stream: waits for the body task
    /// and returns the request body's error, if that is why the stream ended.
    pub(crate) fn poll_body_error(&mut self, cx: &mut Context<'_>) -> Poll<Option<BoxError>> {
        let Some(task) = self.body_task.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = match std::pin::Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        self.body_task = None;
        Poll::Ready(match outcome {
            Ok(Err(body_error)) => Some(body_error),
            Err(join_error) if join_error.is_panic() => {
                Some("the request body panicked while it was being sent".into())
            }
            Ok(Ok(())) | Err(_) => None,
        })
    }

    pub(crate) fn has_body_task(&self) -> bool {
        self.body_task.is_some()
    }

    /// Notes that the server's GOAWAY refused this stream, for the count
    /// of streams it took. (The GOAWAY itself drained the connection as its
    /// frame was read, before h2 refused anything.)
    pub(crate) fn note_refused_by_goaway(&self) {
        self.slot.handle().record_refused_by_goaway();
    }

    /// Notes that the response head arrived.
    pub(crate) fn answered(&self) {
        self.slot.handle().record_answer();
    }

    /// Our error for an h2 error that ended the stream. A stream cut off
    /// because its connection was aborted (a keep-alive PING went
    /// unanswered) says so, rather than "broken pipe".
    pub(crate) fn stream_error(&self, h2_error: h2::Error, headers_arrived: bool) -> Error {
        let aborted = self
            .slot
            .handle()
            .close_reason()
            .filter(|reason| reason.kind == ErrorKind::KeepAliveTimeout);
        if let (Some(reason), false) = (aborted, h2_error.is_reset() && h2_error.is_remote()) {
            return Error::new(ErrorKind::KeepAliveTimeout, Delivery::MaybeProcessed)
                .with_detail(reason.detail)
                .with_source(h2_error);
        }
        let error = Error::from_h2(h2_error, true);
        if headers_arrived {
            error.after_response_began()
        } else {
            error
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.body_task {
            task.abort();
        }
        self.slot.handle().record_stream_ended();
    }
}

/// Sends a request body on its stream, honouring HTTP/2 flow control: a
/// chunk goes out only as fast as the server grants window, so at most one
/// chunk of the body is held here at a time.
///
/// Returns the body's own error, after resetting the stream. h2 errors end
/// the task quietly: the response side reports them with more context.
pub(crate) async fn send_body<B>(body: B, stream: SendStream<Bytes>) -> Result<(), BoxError>
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    let mut sending = ResetUnlessDone {
        stream,
        done: false,
    };
    let outcome = send_frames(body, &mut sending.stream).await;
    sending.done = true;
    outcome
}

/// The stream of a body being sent; reset with CANCEL if the sending stops
/// half way without saying why: the body panicked, or the task was aborted.
/// h2 resets a stream by itself only once every handle on it is gone, and
/// the response future holds one, so a server waiting for the rest of the
/// body would otherwise leave the request hanging.
struct ResetUnlessDone {
    stream: SendStream<Bytes>,
    done: bool,
}

impl Drop for ResetUnlessDone {
    fn drop(&mut self) {
        if !self.done {
            self.stream.send_reset(Reason::CANCEL);
        }
    }
}

async fn send_frames<B>(body: B, stream: &mut SendStream<Bytes>) -> Result<(), BoxError>
where
    B: HttpBody,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    loop {
        let next = poll_fn(|cx| {
            // A server that resets or answers early must not leave us waiting
            // on a body that may never produce another frame.
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            body.as_mut()
                .poll_frame(cx)
                .map(|frame| Some(frame.map(|frame| frame.map_err(Into::<BoxError>::into))))
        })
        .await;
        let frame = match next {
            None => return Ok(()),
            Some(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return Ok(());
            }
            Some(Some(Err(error))) => {
                stream.send_reset(Reason::CANCEL);
                return Err(error);
            }
            Some(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                let end = body.is_end_stream();
                let bytes = data.copy_to_bytes(data.remaining());
                if !send_data(stream, bytes, end).await || end {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return Ok(());
                }
                // Unknown frame kinds carry nothing HTTP/2 can send.
            }
        }
    }
}

/// Sends one chunk as window allows. Returns false once the stream is gone.
async fn send_data(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> bool {
    if data.is_empty() {
        return if end {
            stream.send_data(data, true).is_ok()
        } else {
            true
        };
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            Some(Err(_)) | None => return false,
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        if stream.send_data(chunk, end && data.is_empty()).is_err() {
            return false;
        }
    }
    true
}
