use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::io::GoAwaySeen;
use crate::error::ErrorKind;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Takes new streams.
    Open,
    /// Takes no new stream; the streams it has run to their end.
    Draining,
    /// Gone: no stream runs on it any more.
    Closed,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Open,
            1 => Phase::Draining,
            _ => Phase::Closed,
        }
    }
}

/// Why a connection stopped taking streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The kind of error that new requests on it would see.
    pub kind: ErrorKind,
    /// Who or what decided, in words (for logs).
    pub detail: String,
    /// The HTTP/2 error code of the GOAWAY or connection error, if any.
    pub h2_reason: Option<h2::Reason>,
}

/// A cheap handle onto one connection's shared state.
///
/// The connection's service clones, its driver task and whoever watches it
/// (the pool, the readiness and drain layers) all see the same state: phase,
/// streams in flight against the stream limit, and the requests waiting for
/// one of its stream slots.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    id: u64,
    phase: AtomicU8,
    /// Streams reserved by `poll_ready` or running; never above the limit.
    load: AtomicUsize,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS as h2 last reported it.
    peer_max_streams: AtomicUsize,
    /// The user's own cap on concurrent streams.
    local_max_streams: usize,
    streams_started: AtomicU64,
    /// Streams h2 opened: client stream ids run 1, 3, 5... in that order.
    streams_sent: AtomicU32,
    /// Streams opened that have since ended both ways. `load` also counts
    /// slots reserved for a request not yet sent, which tower's `Balance`
    /// may hold for as long as an endpoint stays ready: idleness and the
    /// keep-alive go by the streams actually running.
    streams_ended: AtomicU32,
    /// Streams the server refused with its GOAWAY (above its last stream id).
    streams_refused_by_goaway: AtomicU64,
    created: Instant,
    /// When the connection was last seen to have no stream running: the
    /// ended count then, and milliseconds after `created`. See `Shared::now`.
    idle_since: Mutex<IdleSince>,
    /// Raised by the connection's task when it reads bytes; lowered by the
    /// look that dates the read (to itself) in `last_heard_ms`.
    heard: AtomicBool,
    /// Milliseconds after `created` at which a look last found `heard` raised.
    last_heard_ms: Mutex<u64>,
    /// Whether any response head arrived: a connection the server ends
    /// before answering anything is a failed connect, for the backoff.
    answered: AtomicBool,
    /// Whether a GOAWAY frame came in (seen in the bytes read).
    goaway_received: AtomicBool,
    /// Whether the server (or the network) ended the connection, rather
    /// than this client: for the connect backoff.
    ended_by_server: AtomicBool,
    /// Whether h2 has applied a SETTINGS from the server (or its ACK of
    /// ours) that the connection's task has not read the stream limit since.
    settings_applied: AtomicBool,
    /// Whether h2 has applied a SETTINGS of the server's, and its ACK of
    /// ours: the handshake is over once both are in.
    server_settings_in: AtomicBool,
    settings_acked: AtomicBool,
    driver: Mutex<Option<tokio::task::AbortHandle>>,
    close_reason: Mutex<Option<CloseReason>>,
    pub(crate) slot_waiters: Arc<SlotWaiters>,
    /// Fires on phase changes only, for watchers that must not swallow the
    /// slot wake-ups `slot_waiters` hands out one at a time.
    phase_changed: Notify,
    /// Set by a keep-alive task that sleeps until a stream starts; the
    /// stream that finds it set wakes the task through `became_busy`.
    keep_alive_dormant: AtomicBool,
    became_busy: Notify,
    /// The PING handle, taken from h2 by the connection's task when
    /// someone asks for it (see `take_ping_pong`), until they pick it up.
    ping_pong: Mutex<Option<h2::PingPong>>,
    ping_pong_claimed: AtomicBool,
    ping_pong_wanted: AtomicBool,
    ping_pong_handed_over: Notify,
    /// The connection task's waker, for an ask that must reach the task.
    driver_waker: Mutex<Option<Waker>>,
}

#[derive(Default)]
struct IdleSince {
    streams_ended: u32,
    ms: u64,
}

impl Shared {
    /// Milliseconds after `created`.
    ///
    /// Only the watchers of idleness and silence read the clock, when they
    /// look; the reads and stream ends they watch leave a mark (a flag, a
    /// count) and no time. A clock read on each of those was about a
    /// twentieth of a small request's cost in the pool (callgrind). A look
    /// that finds a new mark dates it to itself, so a time is late by at
    /// most the gap between looks, which the watchers keep to an eighth of
    /// their limit (see `LOOKS_PER_LIMIT`).
    fn now(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// How often, at least, the keep-alive and the idle timer look at a
/// connection over one interval (or timeout) of theirs: a time they see is
/// late by at most this fraction of it.
const LOOKS_PER_LIMIT: u32 = 8;

/// The longest a watcher with `limit` may go without a look (see
/// [`Shared::now`]); at least a millisecond, the clock's grain here.
pub(crate) fn between_looks(limit: Duration) -> Duration {
    (limit / LOOKS_PER_LIMIT).max(Duration::from_millis(1))
}

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

/// Until the peer's SETTINGS arrive, RFC 9113 lets us assume 100 streams.
pub(crate) const DEFAULT_PEER_MAX_STREAMS: usize = 100;

impl ConnectionHandle {
    pub(crate) fn new(id: u64, local_max_streams: usize, slot_waiters: Arc<SlotWaiters>) -> Self {
        ConnectionHandle {
            shared: Arc::new(Shared {
                id,
                phase: AtomicU8::new(OPEN),
                load: AtomicUsize::new(0),
                peer_max_streams: AtomicUsize::new(DEFAULT_PEER_MAX_STREAMS),
                local_max_streams: local_max_streams.max(1),
                streams_started: AtomicU64::new(0),
                streams_sent: AtomicU32::new(0),
                streams_ended: AtomicU32::new(0),
                streams_refused_by_goaway: AtomicU64::new(0),
                created: Instant::now(),
                idle_since: Mutex::new(IdleSince::default()),
                heard: AtomicBool::new(false),
                last_heard_ms: Mutex::new(0),
                answered: AtomicBool::new(false),
                goaway_received: AtomicBool::new(false),
                ended_by_server: AtomicBool::new(false),
                settings_applied: AtomicBool::new(false),
                server_settings_in: AtomicBool::new(false),
                settings_acked: AtomicBool::new(false),
                driver: Mutex::new(None),
                close_reason: Mutex::new(None),
                slot_waiters,
                phase_changed: Notify::new(),
                keep_alive_dormant: AtomicBool::new(false),
                became_busy: Notify::new(),
                ping_pong: Mutex::new(None),
                ping_pong_claimed: AtomicBool::new(false),
                ping_pong_wanted: AtomicBool::new(false),
                ping_pong_handed_over: Notify::new(),
                driver_waker: Mutex::new(None),
            }),
        }
    }

    /// A process-unique id, for logs and stats.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The connection's phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.shared.phase.load(Ordering::Acquire))
    }

    /// Returns true while the connection takes new streams.
    pub fn is_open(&self) -> bool {
        self.phase() == Phase::Open
    }

    /// Streams reserved or running on the connection.
    pub fn load(&self) -> usize {
        // SeqCst, as every access to the count: see `SlotWaiters`.
        self.shared.load.load(Ordering::SeqCst)
    }

    /// How many streams may run at once: the peer's limit, capped by ours.
    pub fn max_streams(&self) -> usize {
        self.shared
            .peer_max_streams
            .load(Ordering::Acquire)
            .min(self.shared.local_max_streams)
    }

    /// Stream slots free now (zero when not open).
    pub fn free_slots(&self) -> usize {
        if !self.is_open() {
            return 0;
        }
        self.max_streams().saturating_sub(self.load())
    }

    /// Streams started on the connection, and those reserved to start now
    /// (a reservation given back unused is taken back out).
    pub fn streams_started(&self) -> u64 {
        self.shared.streams_started.load(Ordering::Relaxed)
    }

    /// The highest stream id used so far (0 before the first stream).
    pub fn highest_stream_id(&self) -> u32 {
        let sent = self.shared.streams_sent.load(Ordering::Relaxed);
        sent.saturating_mul(2).saturating_sub(1)
    }

    /// How long ago the connection was established.
    pub fn age(&self) -> Duration {
        self.shared.created.elapsed()
    }

    /// How long the connection has had no stream running, or `None` while
    /// it has some. A slot reserved for a request not yet sent (by a service
    /// that tower's `Balance` keeps ready, say) does not count.
    ///
    /// Counted from the first call that found it idle after its last stream
    /// ended: the pool's idle timer calls at least every eighth of the idle
    /// timeout, so an idle connection drains at most that late.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.streams_running() > 0 {
            return None;
        }
        let streams_ended = self.shared.streams_ended.load(Ordering::SeqCst);
        let now = self.shared.now();
        let mut since = lock(&self.shared.idle_since);
        if since.streams_ended != streams_ended {
            *since = IdleSince {
                streams_ended,
                ms: now,
            };
        }
        Some(Duration::from_millis(now.saturating_sub(since.ms)))
    }

    /// Why the connection stopped taking streams, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared.close_reason).clone()
    }

    /// Who waits for a slot on this connection (and, in a pool, on the
    /// other connections of its origin).
    pub(crate) fn slot_waiters(&self) -> &Arc<SlotWaiters> {
        &self.shared.slot_waiters
    }

    /// Stops new streams on the connection; running streams go on.
    ///
    /// Returns true if this call moved it out of [`Phase::Open`].
    pub fn start_draining(&self, kind: ErrorKind, detail: impl Into<String>) -> bool {
        self.start_draining_with(kind, detail.into(), None)
    }

    pub(crate) fn start_draining_with(
        &self,
        kind: ErrorKind,
        detail: String,
        h2_reason: Option<h2::Reason>,
    ) -> bool {
        let moved = self
            .shared
            .phase
            .compare_exchange(OPEN, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            self.set_reason(kind, detail, h2_reason);
            self.phase_changed();
        }
        moved
    }

    /// Marks the connection gone. Returns true if it was not closed before.
    pub fn mark_closed(&self, kind: ErrorKind, detail: impl Into<String>) -> bool {
        self.mark_closed_with(kind, detail.into(), None)
    }

    pub(crate) fn mark_closed_with(
        &self,
        kind: ErrorKind,
        detail: String,
        h2_reason: Option<h2::Reason>,
    ) -> bool {
        let before = self.shared.phase.swap(CLOSED, Ordering::AcqRel);
        if before != CLOSED {
            self.set_reason(kind, detail, h2_reason);
            self.phase_changed();
        }
        before != CLOSED
    }

    /// Resolves on the next phase change (create it before checking the phase).
    pub fn phase_changed_notify(&self) -> &Notify {
        &self.shared.phase_changed
    }

    fn phase_changed(&self) {
        self.shared.slot_waiters.wake_all();
        self.shared.phase_changed.notify_waiters();
    }

    /// Takes the connection's PING handle, once: `None` after the first
    /// call, or once the connection has closed.
    ///
    /// The connection's task takes the handle from h2 only when asked, and
    /// this waits for that turn of the task: once taken, h2 looks for a
    /// user's PING at every turn, which costs every request a little.
    pub async fn take_ping_pong(&self) -> Option<h2::PingPong> {
        let shared = &self.shared;
        if shared.ping_pong_claimed.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SeqCst, as the task's read of it after storing its waker: either
        // the task sees the ask, or this sees the waker that wakes it.
        shared.ping_pong_wanted.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&shared.driver_waker).as_ref() {
            waker.wake_by_ref();
        }
        loop {
            let handed_over = shared.ping_pong_handed_over.notified();
            let phase_changed = shared.phase_changed.notified();
            tokio::pin!(handed_over, phase_changed);
            handed_over.as_mut().enable();
            phase_changed.as_mut().enable();
            if !shared.ping_pong_wanted.load(Ordering::SeqCst) {
                // The task has answered.
                return lock(&shared.ping_pong).take();
            }
            if self.phase() == Phase::Closed {
                return None;
            }
            tokio::select! {
                _ = handed_over => {}
                _ = phase_changed => {}
            }
        }
    }

    /// For the connection's task, at the start of each turn: keeps its
    /// waker where `take_ping_pong` finds it (`kept` is the one kept last),
    /// and says whether the PING handle is wanted.
    #[inline]
    pub(crate) fn driver_turn(&self, kept: &mut Option<Waker>, waker: &Waker) -> bool {
        if !kept.as_ref().is_some_and(|kept| kept.will_wake(waker)) {
            *kept = Some(waker.clone());
            *lock(&self.shared.driver_waker) = Some(waker.clone());
        }
        self.shared.ping_pong_wanted.load(Ordering::SeqCst)
    }

    /// For the connection's task: hands over the PING handle it was asked for.
    pub(crate) fn hand_over_ping_pong(&self, ping_pong: Option<h2::PingPong>) {
        self.shared.ping_pong_wanted.store(false, Ordering::SeqCst);
        *lock(&self.shared.ping_pong) = ping_pong;
        self.shared.ping_pong_handed_over.notify_waiters();
    }

    /// Stores the server's stream limit as h2 reports it now. Only the
    /// connection's task does this, after h2 applied a SETTINGS: stores
    /// come in the order of h2's reads, so an older limit (a 0 the server
    /// has since raised, say) never overwrites a newer one.
    pub(crate) fn set_peer_max_streams(&self, max: usize) {
        // Read first: the limit rarely changes, and a write on every call
        // would bounce the cache line between the threads sending requests.
        if self.shared.peer_max_streams.load(Ordering::Acquire) == max {
            return;
        }
        let before = self.shared.peer_max_streams.swap(max, Ordering::AcqRel);
        if max > before {
            self.shared.slot_waiters.wake_all();
        }
    }

    /// Reserves a stream slot if one is free and the connection is open.
    pub(crate) fn try_reserve(&self) -> Option<StreamSlot> {
        if !self.is_open() {
            return None;
        }
        let max = self.max_streams();
        let mut load = self.load();
        loop {
            if load >= max {
                return None;
            }
            match self.shared.load.compare_exchange_weak(
                load,
                load + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    self.shared.streams_started.fetch_add(1, Ordering::Relaxed);
                    return Some(StreamSlot {
                        handle: self.clone(),
                        sent: false,
                    });
                }
                Err(now) => load = now,
            }
        }
    }

    /// Notes that h2 opened a stream. Counted rather than read from h2,
    /// where reading a stream's id takes the connection's lock.
    fn record_sent(&self) {
        // SeqCst, paired with the keep-alive's store of `keep_alive_dormant`
        // and read of the count: one of the two sees the other.
        self.shared.streams_sent.fetch_add(1, Ordering::SeqCst);
        let dormant = &self.shared.keep_alive_dormant;
        // A plain read first: the task is dormant at most once an interval.
        if dormant.load(Ordering::SeqCst) && dormant.swap(false, Ordering::SeqCst) {
            self.shared.became_busy.notify_one();
        }
    }

    /// Notes that a stream opened by [`record_sent`](Self::record_sent)
    /// has ended both ways.
    pub(crate) fn record_stream_ended(&self) {
        self.shared.streams_ended.fetch_add(1, Ordering::SeqCst);
    }

    /// Streams sent and not yet ended, not counting reserved slots.
    pub fn streams_running(&self) -> usize {
        // Ended first: a stream counts as sent before it can end, so the
        // later read of the sent count is never below it.
        let ended = self.shared.streams_ended.load(Ordering::SeqCst);
        let sent = self.shared.streams_sent.load(Ordering::SeqCst);
        sent.wrapping_sub(ended) as usize
    }

    /// Waits until a stream starts, for a keep-alive task with nothing to
    /// watch. Returns at once if one is running.
    pub(crate) async fn until_busy(&self) {
        let dormant = &self.shared.keep_alive_dormant;
        dormant.store(true, Ordering::SeqCst);
        if self.streams_running() > 0 {
            dormant.store(false, Ordering::SeqCst);
            return;
        }
        self.shared.became_busy.notified().await;
    }

    pub(crate) fn record_refused_by_goaway(&self) {
        self.shared
            .streams_refused_by_goaway
            .fetch_add(1, Ordering::Relaxed);
    }

    /// How many streams the server took before it ended the connection with
    /// a graceful GOAWAY; `None` until the connection has closed after one.
    pub(crate) fn streams_taken_before_goaway(&self) -> Option<u64> {
        if self.phase() != Phase::Closed {
            return None;
        }
        let refused = self
            .shared
            .streams_refused_by_goaway
            .load(Ordering::Relaxed);
        // The connection task may end (cleanly) before the refused streams
        // report the GOAWAY; then the refusals are the sign of it.
        let graceful = self
            .close_reason()
            .is_some_and(|reason| match reason.h2_reason {
                Some(code) => reason.kind == ErrorKind::GoAway && code == h2::Reason::NO_ERROR,
                None => refused > 0,
            });
        if !graceful {
            return None;
        }
        let sent = u64::from(self.shared.streams_sent.load(Ordering::Relaxed));
        Some(sent.saturating_sub(refused))
    }

    fn set_reason(&self, kind: ErrorKind, detail: String, h2_reason: Option<h2::Reason>) {
        let mut reason = lock(&self.shared.close_reason);
        if reason.is_none() {
            *reason = Some(CloseReason {
                kind,
                detail,
                h2_reason,
            });
        }
    }

    /// Closes the connection at once: its task stops, its streams fail with
    /// an error of `kind`, and no new stream starts on it.
    pub fn abort(&self, kind: ErrorKind, detail: impl Into<String>) {
        self.mark_closed(kind, detail);
        if let Some(driver) = lock(&self.shared.driver).take() {
            driver.abort();
        }
    }

    pub(crate) fn set_driver(&self, driver: tokio::task::AbortHandle) {
        *lock(&self.shared.driver) = Some(driver);
    }

    /// Notes that the server was just heard from: bytes arrived.
    pub(crate) fn heard_from_server(&self) {
        // Stored only when lowered, at most once between two looks: a store
        // on every read would take this cache line away from the cores
        // whose requests read and count the handle's other fields.
        if !self.shared.heard.load(Ordering::Relaxed) {
            self.shared.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Notes that a GOAWAY came in, and drains the connection: no new
    /// stream may start on it. Called as the frame is read, before h2
    /// decodes it and wakes the streams it refuses, so the close reason
    /// keeps the server's words ("too_many_pings", say): a refused stream's
    /// report of the GOAWAY has only its code.
    pub(crate) fn note_goaway_received(&self, goaway: GoAwaySeen) {
        self.shared.goaway_received.store(true, Ordering::Release);
        let reason = h2::Reason::from(goaway.code);
        let debug_data = String::from_utf8_lossy(&goaway.debug_data);
        let detail = if debug_data.is_empty() {
            format!("server sent GOAWAY ({reason:?})")
        } else {
            format!("server sent GOAWAY ({reason:?}): {debug_data:?}")
        };
        if self.start_draining_with(ErrorKind::GoAway, detail, Some(reason)) {
            tracing::debug!(connection = self.id(), ?reason, %debug_data, "received GOAWAY, draining");
        }
    }

    /// Whether the server has sent GOAWAY on this connection.
    pub(crate) fn goaway_received(&self) -> bool {
        self.shared.goaway_received.load(Ordering::Acquire)
    }

    /// Notes that the server (or the network) ended the connection.
    pub(crate) fn note_ended_by_server(&self) {
        self.shared.ended_by_server.store(true, Ordering::Release);
    }

    /// Whether the server (or the network) ended the connection: with
    /// GOAWAY, a bare close or a failure, not a close of this client's.
    pub(crate) fn ended_by_server(&self) -> bool {
        self.shared.ended_by_server.load(Ordering::Acquire)
    }

    /// Notes that h2 has applied a SETTINGS from the server.
    pub(crate) fn note_settings_applied(&self) {
        self.shared
            .server_settings_in
            .store(true, Ordering::Release);
        self.shared.settings_applied.store(true, Ordering::Release);
    }

    /// Whether h2 has applied a SETTINGS (or the ACK of ours) since the
    /// last call (which clears it).
    pub(crate) fn take_settings_applied(&self) -> bool {
        // A plain read first: this runs on every turn of the connection task.
        self.shared.settings_applied.load(Ordering::Acquire)
            && self.shared.settings_applied.swap(false, Ordering::AcqRel)
    }

    /// Notes that h2 has applied the server's ACK of our SETTINGS; the
    /// connection's task takes it as it takes a SETTINGS.
    pub(crate) fn note_settings_acked(&self) {
        self.shared.settings_acked.store(true, Ordering::Release);
        self.shared.settings_applied.store(true, Ordering::Release);
    }

    /// Whether h2 has applied a SETTINGS of the server's and its ACK of ours.
    pub(crate) fn settings_settled(&self) -> bool {
        self.shared.server_settings_in.load(Ordering::Acquire)
            && self.shared.settings_acked.load(Ordering::Acquire)
    }

    /// Notes that a response head arrived on the connection.
    pub(crate) fn record_answer(&self) {
        // Read first: after the first answer this is a shared read only.
        if !self.shared.answered.load(Ordering::Relaxed) {
            self.shared.answered.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the server has answered any request on the connection.
    pub fn has_answered(&self) -> bool {
        self.shared.answered.load(Ordering::Relaxed)
    }

    /// How long ago the server was last heard from: bytes read from the
    /// connection, whatever frame they carried.
    ///
    /// Counted from the first call after the last read: the keep-alive
    /// calls at least every eighth of its interval while it watches, so it
    /// sees a silence at most that late.
    pub fn silent_for(&self) -> Duration {
        let now = self.shared.now();
        let mut last_heard = lock(&self.shared.last_heard_ms);
        if self.shared.heard.swap(false, Ordering::Relaxed) {
            *last_heard = now;
        }
        Duration::from_millis(now.saturating_sub(*last_heard))
    }
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.id())
            .field("phase", &self.phase())
            .field("load", &self.load())
            .field("max_streams", &self.max_streams())
            .finish()
    }
}

/// One reserved stream slot; gives it back when dropped.
pub(crate) struct StreamSlot {
    handle: ConnectionHandle,
    // Whether a stream went out on it; one that did not is no longer
    // counted as started once the slot is given back.
    sent: bool,
}

impl StreamSlot {
    pub(crate) fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }

    /// Notes that h2 opened a stream on this slot.
    pub(crate) fn record_sent(&mut self) {
        self.sent = true;
        self.handle.record_sent();
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        if !self.sent {
            // Refused before h2 took it, or never asked for: the count of
            // streams started (which drains a connection at its request
            // limit, and learns how many streams a server allows) must not
            // grow with reservations that came to nothing.
            shared.streams_started.fetch_sub(1, Ordering::Relaxed);
        }
        // The last stream of a closed connection has reported how it
        // ended: watchers may now draw conclusions.
        if shared.load.fetch_sub(1, Ordering::SeqCst) == 1 && self.handle.phase() == Phase::Closed {
            shared.phase_changed.notify_waiters();
        }
        shared.slot_waiters.wake_one();
    }
}

impl fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSlot")
            .field("connection", &self.handle.id())
            .finish()
    }
}

/// The requests waiting for a stream slot: on one connection, or in a pool
/// on any connection of one origin.
///
/// It counts its waiters, so that a freed slot with nobody waiting (the
/// usual case) costs a read, not a compare-and-swap on a [`Notify`] that
/// every request of the origin touches (and a stored wake-up that the next
/// waiter would take for a freed slot).
///
/// A waiter registers with [`wait`](Self::wait), then looks for a free slot
/// before it sleeps; whoever frees a slot counts it free, then looks for
/// waiters. With every access to both counts sequentially consistent,
/// either the waiter sees the slot or the one freeing it sees the waiter.
pub(crate) struct SlotWaiters {
    notify: Arc<Notify>,
    waiting: AtomicUsize,
}

impl SlotWaiters {
    pub(crate) fn new() -> Arc<SlotWaiters> {
        Arc::new(SlotWaiters {
            notify: Arc::new(Notify::new()),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Registers for the next freed slot. Look for one again afterwards: a
    /// slot freed before this call wakes nobody.
    pub(crate) fn wait(self: &Arc<Self>) -> SlotWait {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        SlotWait {
            notified: Box::pin(self.notify.clone().notified_owned()),
            waiters: self.clone(),
        }
    }

    /// Wakes one waiter, if any, for one freed slot.
    pub(crate) fn wake_one(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// Wakes every waiter: the phase or the stream limit changed, or a
    /// connection opened.
    pub(crate) fn wake_all(&self) {
        self.notify.notify_waiters();
    }
}

/// A registration with [`SlotWaiters`]; dropping it gives it up.
pub(crate) struct SlotWait {
    notified: Pin<Box<OwnedNotified>>,
    waiters: Arc<SlotWaiters>,
}

impl SlotWait {
    /// Enters the wait list now, so that a wake-up before the first poll
    /// is not lost.
    pub(crate) fn enable(&mut self) {
        self.notified.as_mut().enable();
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.notified.as_mut().poll(cx)
    }
}

impl Drop for SlotWait {
    fn drop(&mut self) {
        self.waiters.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
