use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::connection::lock;
use crate::error::BoxError;

/// A request body that keeps the bytes already sent, so the request can be
/// sent again byte for byte.
///
/// Every attempt of a request reads through its own `ReplayBody`: a replay
/// first gives back what earlier attempts read, then goes on reading the
/// original body where they stopped. Only one attempt reads the original at
/// a time; an attempt replaced by a newer one ends with an error at its next
/// poll, so it cannot race the replay.
///
/// Up to the buffer limit (64 KiB by default) the data read so far is kept,
/// trailers included, until the response head arrives (no replay follows
/// then). Keeping is zero-copy when the body yields [`Bytes`]; each chunk
/// counts at least 64 bytes against the limit, for the handle it takes.
/// Past the limit the buffer is dropped and the request is *committed*: if a
/// replay is then needed, it fails with
/// [`ErrorKind::BodyTooLargeToReplay`](crate::ErrorKind::BodyTooLargeToReplay).
/// A body whose size hint already exceeds the limit is never buffered; it can
/// still be replayed as long as none of it was read, which is the case for
/// every request that never left the client.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use h2pool::replay::ReplayBody;
///
/// # async fn doc() -> Result<(), h2pool::BoxError> {
/// let mut first = ReplayBody::new(Full::new(Bytes::from("hello")), 64 * 1024);
/// assert_eq!((&mut first).collect().await?.to_bytes(), "hello");
///
/// // The first attempt read the body; a replay gives the same bytes.
/// let again = first.replay().expect("the body fits the buffer");
/// assert_eq!(again.collect().await?.to_bytes(), "hello");
/// # Ok(()) }
/// ```
pub struct ReplayBody<B> {
    mode: Mode<B>,
    // The caller's body while this attempt holds it.
    reading: Option<Original<B>>,
    // Which attempt this is; an older one stops at its next poll.
    attempt: u64,
    // How many of the kept chunks this attempt has given out.
    chunks_given: usize,
    // Bytes this attempt has given out, for the size hint.
    bytes_given: u64,
    trailers_given: bool,
}

enum Mode<B> {
    // The body had nothing to send, so every replay is empty too.
    Empty,
    // Nothing is kept and no replay is possible; nothing is shared or locked.
    Passthrough,
    // Attempts share what was read so far.
    Kept(Arc<Mutex<Shared<B>>>),
}

/// The caller's body: moved freely until its first poll, pinned in a box
/// from then on, so it can pass between attempts whatever its type.
enum Original<B> {
    Fresh(B),
    Pinned(Pin<Box<B>>),
}

impl<B: HttpBody> Original<B> {
    fn is_end_stream(&self) -> bool {
        match self {
            Original::Fresh(body) => body.is_end_stream(),
            Original::Pinned(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Original::Fresh(body) => body.size_hint(),
            Original::Pinned(body) => body.size_hint(),
        }
    }
}

/// The body in `slot`, pinned (boxing it on its first poll).
fn pinned<B>(slot: &mut Option<Original<B>>) -> Option<Pin<&mut B>> {
    if let Some(Original::Fresh(_)) = slot {
        if let Some(Original::Fresh(body)) = slot.take() {
            *slot = Some(Original::Pinned(Box::pin(body)));
        }
    }
    match slot {
        Some(Original::Pinned(body)) => Some(body.as_mut()),
        Some(Original::Fresh(_)) | None => None,
    }
}

// The caller's body is boxed before it is first polled, and never pinned
// where it lies, so a `ReplayBody` may move whatever the body type.
impl<B> Unpin for ReplayBody<B> {}

struct Shared<B> {
    // The caller's body while no attempt reads it.
    parked: Option<Original<B>>,
    // Woken when an older attempt gives the caller's body back.
    waiting: Option<Waker>,
    chunks: Vec<Bytes>,
    kept_bytes: usize,
    limit: usize,
    // False once more was read than the limit allows (or the size hint
    // said it would be); nothing more is kept then.
    keeping: bool,
    read_any: bool,
    // The caller's body failed: a replay could not send what it would have.
    failed: bool,
    // The response head arrived: no replay follows, so nothing more is kept.
    replays_over: bool,
    finished: bool,
    trailers: Option<HeaderMap>,
    attempt: u64,
    hint: SizeHint,
}

impl<B> ReplayBody<B>
where
    B: HttpBody,
{
    /// Wraps `body`, keeping up to `limit` bytes of it for replays.
    pub fn new(body: B, limit: usize) -> Self {
        if body.is_end_stream() {
            return ReplayBody::with_mode(Mode::Empty, Some(body));
        }
        let hint = body.size_hint();
        let shared = Shared {
            parked: None,
            waiting: None,
            chunks: Vec::new(),
            kept_bytes: 0,
            limit,
            keeping: hint.lower() <= limit as u64,
            read_any: false,
            failed: false,
            replays_over: false,
            finished: false,
            trailers: None,
            attempt: 0,
            hint,
        };
        ReplayBody::with_mode(Mode::Kept(Arc::new(Mutex::new(shared))), Some(body))
    }

    /// Wraps `body` without keeping anything: no replay is possible.
    pub(crate) fn passthrough(body: B) -> Self {
        ReplayBody::with_mode(Mode::Passthrough, Some(body))
    }

    fn with_mode(mode: Mode<B>, body: Option<B>) -> Self {
        ReplayBody {
            mode,
            reading: body.map(Original::Fresh),
            attempt: 0,
            chunks_given: 0,
            bytes_given: 0,
            trailers_given: false,
        }
    }

    /// A body for the next attempt: what was read so far, then the rest of
    /// the caller's body.
    ///
    /// Returns `None` if the body cannot be replayed: more of it was read
    /// than the buffer keeps, or it failed. Making a replay retires every
    /// earlier attempt's body.
    pub fn replay(&self) -> Option<Self> {
        let shared = match &self.mode {
            Mode::Empty => return Some(ReplayBody::with_mode(Mode::Empty, None)),
            Mode::Passthrough => return None,
            Mode::Kept(shared) => shared,
        };
        let mut state = lock(shared);
        if !state.is_replayable() {
            return None;
        }
        state.attempt += 1;
        let mut replay = ReplayBody::with_mode(Mode::Kept(shared.clone()), None);
        replay.attempt = state.attempt;
        Some(replay)
    }

    /// A handle that makes replays but is never sent itself. `None` for a
    /// passthrough body, which cannot be replayed.
    pub(crate) fn detached(&self) -> Option<Self> {
        let mode = match &self.mode {
            Mode::Empty => Mode::Empty,
            Mode::Passthrough => return None,
            Mode::Kept(shared) => Mode::Kept(shared.clone()),
        };
        let mut detached = ReplayBody::with_mode(mode, None);
        detached.attempt = self.attempt;
        Some(detached)
    }

    /// The caller's body, if no attempt has read any of it.
    ///
    /// A request handed back in an error carries a `ReplayBody`; this
    /// unwraps it, so the caller gets the body it sent.
    pub fn into_original(mut self) -> Result<B, Self> {
        if let Some(Original::Fresh(_)) = &self.reading {
            if let Some(Original::Fresh(body)) = self.reading.take() {
                return Ok(body);
            }
        }
        if let Mode::Kept(shared) = &self.mode {
            let mut state = lock(shared);
            if !state.read_any {
                if let Some(Original::Fresh(body)) = state.parked.take() {
                    return Ok(body);
                }
            }
        }
        Err(self)
    }

    /// Says that no replay will follow: the response head arrived. Nothing
    /// more is kept, and what was kept goes once the attempt sending the
    /// body has given it out (a long-lived stream, a gRPC bidi call say,
    /// would otherwise hold it to its end).
    pub(crate) fn end_replays(&self) {
        if let Mode::Kept(shared) = &self.mode {
            lock(shared).replays_over = true;
        }
    }

    /// Returns true while a replay could give every byte read so far.
    pub fn is_replayable(&self) -> bool {
        match &self.mode {
            Mode::Empty => true,
            Mode::Passthrough => false,
            Mode::Kept(shared) => lock(shared).is_replayable(),
        }
    }
}

impl<B> Shared<B> {
    fn is_replayable(&self) -> bool {
        !self.failed && !self.replays_over && (self.keeping || !self.read_any)
    }

    /// Records a chunk read from the caller's body. `owed` when a replay
    /// was made while the chunk was being read: that replay was promised
    /// every byte read, so it gets this one whatever the limit (one chunk
    /// over it at most, per superseded attempt).
    fn keep(&mut self, chunk: &Bytes, owed: bool) {
        self.read_any = true;
        if chunk.is_empty() {
            // Nothing to send again; kept, a stream of empty frames would
            // grow the buffer without ever reaching the limit.
            return;
        }
        let cost = chunk.len().max(MIN_CHUNK_COST);
        if owed {
            self.kept_bytes += cost;
            self.chunks.push(chunk.clone());
            return;
        }
        if !self.keeping || self.replays_over {
            return;
        }
        if self.kept_bytes + cost > self.limit {
            // Committed: the memory goes back now, not when the request ends.
            self.keeping = false;
            self.chunks = Vec::new();
            self.kept_bytes = 0;
            return;
        }
        self.kept_bytes += cost;
        self.chunks.push(chunk.clone());
    }
}

/// The least a kept chunk counts against the limit. Each chunk costs a
/// handle (and, for data that is not `Bytes`, an allocation) besides its
/// bytes; a body of one-byte frames would otherwise keep many times the
/// limit in memory.
const MIN_CHUNK_COST: usize = 64;

impl<B> HttpBody for ReplayBody<B>
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let shared = match &this.mode {
            Mode::Empty => return Poll::Ready(None),
            Mode::Passthrough => {
                let Some(body) = pinned(&mut this.reading) else {
                    return Poll::Ready(None);
                };
                return body.poll_frame(cx).map(|frame| {
                    frame.map(|frame| {
                        frame
                            .map(|frame| {
                                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                            })
                            .map_err(Into::into)
                    })
                });
            }
            Mode::Kept(shared) => shared.clone(),
        };

        {
            let mut state = lock(&shared);
            if state.attempt != this.attempt {
                return Poll::Ready(Some(Err(
                    "request body superseded: the request is being replayed".into(),
                )));
            }
            if let Some(chunk) = state.chunks.get(this.chunks_given).cloned() {
                this.chunks_given += 1;
                this.bytes_given += chunk.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if state.finished {
                if this.trailers_given {
                    return Poll::Ready(None);
                }
                this.trailers_given = true;
                return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            }
            if state.failed {
                // Read by an earlier poll, perhaps of an attempt this one
                // replaced: what follows the kept bytes cannot be had.
                return Poll::Ready(Some(Err(
                    "the request body failed earlier; the rest of it cannot be sent".into(),
                )));
            }
            if state.replays_over && !state.chunks.is_empty() {
                // This attempt gave out every kept chunk, and no other
                // attempt will come for them.
                state.chunks = Vec::new();
                state.kept_bytes = 0;
                this.chunks_given = 0;
            }
            if this.reading.is_none() {
                match state.parked.take() {
                    Some(body) => this.reading = Some(body),
                    None => {
                        // An older attempt still holds it; it gives it back
                        // when dropped, which follows its retirement closely.
                        state.waiting = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            }
        }

        // Poll the caller's body without the lock: it may take its time.
        let Some(body) = pinned(&mut this.reading) else {
            return Poll::Pending;
        };
        let frame = match body.poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        let mut state = lock(&shared);
        // The lock was let go while the caller's body was polled: a replay
        // made meanwhile needs what this poll read.
        let replayed_meanwhile = state.attempt != this.attempt;
        match frame {
            None => {
                state.finished = true;
                this.trailers_given = true;
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                state.failed = true;
                Poll::Ready(Some(Err(error.into())))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    state.keep(&chunk, replayed_meanwhile);
                    this.chunks_given = state.chunks.len();
                    this.bytes_given += chunk.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        // Trailers end the body; kept whatever the limit, as
                        // they are small and a replay needs them.
                        state.finished = true;
                        state.trailers = Some(trailers.clone());
                        this.trailers_given = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // A frame kind this crate does not know: nothing to send.
                    Err(_) => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = match &self.mode {
            Mode::Empty => return true,
            Mode::Passthrough => return self.reading.as_ref().is_none_or(Original::is_end_stream),
            Mode::Kept(shared) => shared,
        };
        let state = lock(shared);
        if self.chunks_given < state.chunks.len() {
            return false;
        }
        if state.finished {
            return self.trailers_given || state.trailers.is_none();
        }
        self.reading.as_ref().is_some_and(Original::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let shared = match &self.mode {
            Mode::Empty => return SizeHint::with_exact(0),
            Mode::Passthrough => {
                return self
                    .reading
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), Original::size_hint)
            }
            Mode::Kept(shared) => shared,
        };
        let state = lock(shared);
        let mut hint = SizeHint::new();
        hint.set_lower(state.hint.lower().saturating_sub(self.bytes_given));
        if let Some(upper) = state.hint.upper() {
            hint.set_upper(upper.saturating_sub(self.bytes_given));
        }
        hint
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        let (Mode::Kept(shared), Some(body)) = (&self.mode, self.reading.take()) else {
            return;
        };
        let mut state = lock(shared);
        state.parked = Some(body);
        if let Some(waker) = state.waiting.take() {
            waker.wake();
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ReplayBody");
        d.field("attempt", &self.attempt);
        match &self.mode {
            Mode::Empty => d.field("mode", &"empty"),
            Mode::Passthrough => d.field("mode", &"passthrough"),
            Mode::Kept(shared) => {
                let state = lock(shared);
                d.field("kept_bytes", &state.kept_bytes)
                    .field("replayable", &state.is_replayable())
            }
        };
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn chunks(parts: &[&'static str]) -> impl HttpBody<Data = Bytes, Error = BoxError> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|part| Ok(Frame::data(Bytes::from_static(part.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_replay_after_a_partial_read_gives_the_same_bytes_then_the_rest() {
        let mut first = ReplayBody::new(chunks(&["ab", "cd", "ef"]), 1024);
        let frame = first.frame().await.expect("a frame").expect("no error");
        assert_eq!(frame.into_data().expect("data"), "ab");

        let second = first.replay().expect("replayable");
        drop(first); // the retired attempt gives the original back
        assert_eq!(second.collect().await.expect("body").to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn a_retired_attempt_fails_at_its_next_poll() {
        let mut first = ReplayBody::new(chunks(&["ab", "cd"]), 1024);
        let _second = first.replay().expect("replayable");
        assert!(first.frame().await.expect("a frame").is_err());
    }

    #[tokio::test]
    async fn trailers_are_replayed() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "42".parse().expect("valid value"));
        let body =
            Full::new(Bytes::from_static(b"data")).with_trailers(std::future::ready(Some(Ok::<
                _,
                std::convert::Infallible,
            >(
                trailers.clone(),
            ))));
        let mut first = ReplayBody::new(body, 1024);
        let collected = (&mut first).collect().await.expect("body");
        assert_eq!(collected.trailers(), Some(&trailers));
        let again = first.replay().expect("replayable");
        drop(first);
        let collected = again.collect().await.expect("body");
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "data");
    }

    /// A body that runs `hook` in its poll of frame `at`, before it yields
    /// that frame: the moment an attempt reads the caller's body with the
    /// replay state unlocked, when another task may make a replay.
    struct Hooked {
        frames: std::collections::VecDeque<Result<Frame<Bytes>, BoxError>>,
        polls: usize,
        at: usize,
        hook: Option<Box<dyn FnOnce() + Send>>,
    }

    impl Hooked {
        fn new(
            frames: Vec<Result<Frame<Bytes>, BoxError>>,
            at: usize,
            hook: impl FnOnce() + Send + 'static,
        ) -> Self {
            Hooked {
                frames: frames.into(),
                polls: 0,
                at,
                hook: Some(Box::new(hook)),
            }
        }
    }

    impl HttpBody for Hooked {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.polls == self.at {
                if let Some(hook) = self.hook.take() {
                    hook();
                }
            }
            self.polls += 1;
            Poll::Ready(self.frames.pop_front())
        }
    }

    fn data(bytes: &'static [u8]) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    /// Runs `frames` through a first attempt that reads `reads` of them, a
    /// replay being made during the last of those reads; returns the replay
    /// and the first attempt (to drop, as the replay layer does).
    async fn replayed_during_a_read(
        frames: Vec<Result<Frame<Bytes>, BoxError>>,
        limit: usize,
        reads: usize,
    ) -> (ReplayBody<Hooked>, ReplayBody<Hooked>) {
        let made: Arc<Mutex<Option<ReplayBody<Hooked>>>> = Arc::default();
        let replays: Arc<Mutex<Option<ReplayBody<Hooked>>>> = Arc::default();
        let (made_in_hook, replays_in_hook) = (made.clone(), replays.clone());
        let body = Hooked::new(frames, reads - 1, move || {
            let detached = replays_in_hook.lock().expect("not poisoned").take();
            let replay = detached.and_then(|detached| detached.replay());
            *made_in_hook.lock().expect("not poisoned") = replay;
        });
        let mut first = ReplayBody::new(body, limit);
        *replays.lock().expect("not poisoned") = first.detached();
        for _ in 0..reads {
            let _ = first.frame().await;
        }
        let replay = made.lock().expect("not poisoned").take();
        (replay.expect("replayable when the replay was made"), first)
    }

    #[tokio::test]
    async fn a_chunk_read_past_the_limit_while_a_replay_was_made_still_goes_to_it() {
        let (replay, first) =
            replayed_during_a_read(vec![data(&[1; 64]), data(&[2; 64]), data(&[3; 64])], 128, 3)
                .await;
        drop(first);
        let sent = replay.collect().await.expect("the whole body").to_bytes();
        let mut expected = vec![1u8; 64];
        expected.extend([2u8; 64]);
        expected.extend([3u8; 64]);
        assert_eq!(sent, expected, "the replay sends every byte, in order");
    }

    #[tokio::test]
    async fn a_first_chunk_that_commits_the_body_while_a_replay_was_made_goes_to_it() {
        // With no room at all, the first read commits the body: a replay
        // is possible only until then, and this one was made during it.
        let frames = vec![data(b"first"), data(b"second")];
        let (replay, first) = replayed_during_a_read(frames, 0, 1).await;
        drop(first);
        let sent = replay.collect().await.expect("the whole body").to_bytes();
        assert_eq!(sent, "firstsecond");
    }

    #[tokio::test]
    async fn a_body_that_failed_while_a_replay_was_made_fails_the_replay() {
        let frames = vec![data(b"first"), Err("the caller's body broke".into())];
        let (replay, first) = replayed_during_a_read(frames, 1024, 2).await;
        drop(first);
        assert!(
            replay.collect().await.is_err(),
            "the replay must not end as if the body were complete"
        );
    }

    #[tokio::test]
    async fn empty_frames_are_not_kept() {
        let frames: Vec<_> = (0..1000).map(|_| data(b"")).chain([data(b"x")]).collect();
        let mut body = ReplayBody::new(Hooked::new(frames, usize::MAX, || {}), 1024);
        while body.frame().await.is_some() {}
        let Mode::Kept(shared) = &body.mode else {
            panic!("a body with data is kept");
        };
        assert_eq!(lock(shared).chunks.len(), 1);
    }

    #[tokio::test]
    async fn tiny_frames_count_at_least_their_handle_against_the_limit() {
        let frames: Vec<_> = (0..100).map(|_| data(b"x")).collect();
        let mut body = ReplayBody::new(Hooked::new(frames, usize::MAX, || {}), 1024);
        while body.frame().await.is_some() {}
        assert!(
            !body.is_replayable(),
            "100 one-byte frames keep 100 handles, more than a 1 KiB limit allows"
        );
    }

    #[tokio::test]
    async fn once_replays_are_over_kept_chunks_go_when_given_out() {
        let frames = vec![data(&[1; 64]), data(&[2; 64])];
        let mut body = ReplayBody::new(Hooked::new(frames, usize::MAX, || {}), 1024);
        body.frame().await.expect("a frame").expect("no error");
        body.end_replays();
        assert!(!body.is_replayable());
        body.frame().await.expect("a frame").expect("no error");
        let Mode::Kept(shared) = &body.mode else {
            panic!("a body with data is kept");
        };
        assert!(
            lock(shared).chunks.is_empty(),
            "nothing is held for a replay that cannot come"
        );
    }

    #[tokio::test]
    async fn past_the_limit_the_body_is_committed() {
        const CHUNK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut body = ReplayBody::new(chunks(&[CHUNK, CHUNK]), 100);
        assert!(body.is_replayable());
        body.frame().await.expect("a frame").expect("no error");
        assert!(body.is_replayable());
        body.frame().await.expect("a frame").expect("no error");
        assert!(!body.is_replayable());
        assert!(body.replay().is_none());
    }

    #[tokio::test]
    async fn a_body_hinted_above_the_limit_replays_only_until_read() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"too long")), 4);
        let untouched = body.replay().expect("nothing read yet");
        drop(body);
        assert!(untouched.is_replayable());
        let mut reading = untouched.replay().expect("still nothing read");
        drop(untouched);
        reading.frame().await.expect("a frame").expect("no error");
        assert!(reading.replay().is_none());
    }

    #[tokio::test]
    async fn kept_chunks_share_the_original_bytes() {
        let original = Bytes::from(vec![7u8; 1000]);
        let mut body = ReplayBody::new(Full::new(original.clone()), 4096);
        let given = body
            .frame()
            .await
            .expect("a frame")
            .expect("no error")
            .into_data()
            .expect("data");
        assert_eq!(given.as_ptr(), original.as_ptr(), "no copy was made");
    }
}
