//! The connections of one origin, and how a request gets a stream slot on one.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Buf;
use http::uri::{Authority, Scheme};
use http::Request;
use http::Uri;
use http_body::Body as HttpBody;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::config::Config;
use super::lifetime::{half_life, near_end, Lifetimes};
use super::pooled::{PooledConnection, PooledFuture};
use super::stats::OriginStats;
use crate::connection::{
    lock, Connection, ConnectionHandle, Phase, SlotWait, SlotWaiters, DEFAULT_PEER_MAX_STREAMS,
};
use crate::connector::{self, has_valid_port, BoxedConnector};
use crate::drain::DrainLayer;
use crate::error::{BoxError, Delivery, Error, ErrorKind};
use crate::readiness::ReadinessLayer;

/// How many idle service instances an origin keeps. A request holds one
/// only while it sends its headers, so a few serve any concurrency.
const MAX_SPARES: usize = 16;

/// Requests to the same scheme and authority share connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OriginKey {
    scheme: Scheme,
    authority: Authority,
}

impl OriginKey {
    pub(crate) fn from_uri(uri: &Uri) -> Result<OriginKey, Error> {
        match (uri.scheme(), uri.authority()) {
            (Some(_), Some(authority)) if !has_valid_port(authority) => {
                // `http` takes any text after the colon, and reads a port
                // it cannot parse as none: the default port, someone
                // else's service, would get the request.
                Err(
                    Error::new(ErrorKind::InvalidUri, Delivery::NeverSent).with_detail(format!(
                        "{uri:?} has a port that is not a number from 0 to 65535"
                    )),
                )
            }
            (Some(scheme), Some(authority)) => Ok(OriginKey {
                scheme: scheme.clone(),
                authority: authority.clone(),
            }),
            _ => Err(Error::new(ErrorKind::InvalidUri, Delivery::NeverSent)
                .with_detail(format!("{uri:?} has no scheme or no authority"))),
        }
    }

    /// Returns true if `uri` is on this origin (without copying its parts).
    pub(crate) fn matches(&self, uri: &Uri) -> bool {
        let same_authority = uri.authority().is_some_and(|authority| {
            // Byte-equal is the common case and a plain memcmp; `Authority`'s
            // own `==` ignores ASCII case byte by byte, which costs several
            // times more per request.
            authority.as_str() == self.authority.as_str() || *authority == self.authority
        });
        same_authority && uri.scheme() == Some(&self.scheme)
    }

    pub(crate) fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    fn to_uri(&self) -> Result<Uri, Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|error| {
                Error::new(ErrorKind::InvalidUri, Delivery::NeverSent).with_source(error)
            })
    }
}

impl fmt::Display for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// The pool's share of one origin: its connections and waiting requests.
pub(crate) struct OriginPool {
    key: OriginKey,
    uri: Uri,
    config: Arc<Config>,
    connector: BoxedConnector,
    readiness: ReadinessLayer,
    drain: DrainLayer,
    /// Woken once per freed stream slot, and all at once on new capacity.
    slot_waiters: Arc<SlotWaiters>,
    state: Mutex<OriginState>,
    counters: Counters,
    this: Weak<OriginPool>,
}

/// How many connects' time of requests a busy connection keeps in hand
/// for its replacement: a connect measured on a quiet moment takes longer
/// under the load that makes a connection run out fast (the benchmark's
/// server, retiring connections every 100 requests at concurrency 64, had
/// requests waiting for the connect with a quarter of a life in hand).
const REPLACEMENT_LEAD_CONNECTS: u32 = 4;

/// Whether the requests waiting need more than `connecting` connects of
/// `per_connection` streams each will give. Saturating: a server with no
/// stream limit gives usize::MAX streams a connection.
fn more_waiting_than_connects_serve(
    waiting: usize,
    connecting: usize,
    per_connection: usize,
) -> bool {
    waiting > connecting.saturating_mul(per_connection)
}

/// Whether a connection that started `streams` in its `age`, at that pace,
/// uses up the rest of its `limit` streams within `lead`.
fn runs_out_within(streams: u64, age: Duration, limit: u64, lead: Duration) -> bool {
    if streams == 0 {
        return false;
    }
    let left = limit.saturating_sub(streams);
    age.mul_f64(left as f64 / streams as f64) <= lead
}

#[derive(Default)]
struct OriginState {
    /// Connections that take new streams (or did at the last look).
    connections: Vec<PooledConnection>,
    /// Service instances of open connections, idle between requests. A
    /// request takes one rather than cloning its connection's: a clone and
    /// its drop each take h2's lock (which the connection's task needs for
    /// every frame) and count up and down every shared part.
    spares: Vec<PooledConnection>,
    /// Connections finishing their streams; the pool no longer holds their
    /// send handles, so h2 closes each once its last stream ends.
    draining: Vec<ConnectionHandle>,
    connecting: usize,
    waiting: usize,
    connect_failures: u64,
    last_connect_error: Option<Error>,
    /// The stream limit of the last connection made, for when none is open.
    last_max_streams: Option<usize>,
    /// Consecutive connect failures, for the backoff.
    failures_in_a_row: u32,
    /// Connections in a row that the server ended with GOAWAY before
    /// answering a request (an overloaded server shedding connections):
    /// each is a failed connect too, or the pool would reconnect as fast as
    /// the server can refuse.
    refused_connections_in_a_row: u32,
    /// No connect starts before this, after a failure.
    next_connect_at: Option<Instant>,
    /// How many streams recent connections lived for, to retire ours at a
    /// server's limit and to replace them ahead of its GOAWAYs.
    lifetimes: Lifetimes,
    /// How long the last successful connect took, handshake included: the
    /// lead a replacement needs.
    last_connect_took: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    connections_opened: AtomicU64,
    connect_failures: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
}

/// A request's place in line for a stream slot.
#[derive(Default)]
pub(crate) struct Waiter {
    notified: Option<SlotWait>,
    // Set while counted in `OriginState::waiting`, to undo on drop.
    registered: Option<Arc<OriginPool>>,
    // Connect failures already seen when the request started waiting: only a
    // failure after that is the request's to report.
    seen_failures: Option<u64>,
    // A connection picked for the request that was not ready yet (a user's
    // connection layer at its limit, say): kept, with whatever it reserved
    // and the wake-up it registered, until it or another one is ready.
    // Boxed: rare, and large next to the rest of the waiter.
    candidate: Option<Box<PooledConnection>>,
}

impl Waiter {
    fn unregister(&mut self) {
        if let Some(origin) = self.registered.take() {
            lock(&origin.state).waiting -= 1;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl OriginPool {
    pub(crate) fn new(
        key: OriginKey,
        config: Arc<Config>,
        connector: BoxedConnector,
        readiness: ReadinessLayer,
    ) -> Result<Arc<Self>, Error> {
        let uri = key.to_uri()?;
        let drain = DrainLayer::new(config.drain.clone());
        Ok(Arc::new_cyclic(|this| OriginPool {
            key,
            uri,
            config,
            connector,
            readiness,
            drain,
            slot_waiters: SlotWaiters::new(),
            state: Mutex::new(OriginState::default()),
            counters: Counters::default(),
            this: this.clone(),
        }))
    }

    pub(crate) fn key(&self) -> &OriginKey {
        &self.key
    }

    /// `scheme://authority/`, as the connector gets it.
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Gets a connection with a reserved stream slot: the least-loaded open
    /// one, or a new one if all are full and the origin may have more.
    ///
    /// `limit_pending` applies `max_pending_requests` to a request that
    /// would have to wait (the keyed pool's rule; the single-origin service
    /// pushes back through `poll_ready` instead).
    pub(crate) fn poll_acquire<B>(
        &self,
        cx: &mut Context<'_>,
        waiter: &mut Waiter,
        limit_pending: bool,
    ) -> Poll<Result<PooledConnection, Error>>
    where
        B: HttpBody + Send + 'static,
        B::Data: Buf + Send,
        B::Error: Into<BoxError>,
    {
        loop {
            // Most requests find a free slot at the first look, so they look
            // before registering for wake-ups: registering boxes a `Notified`
            // and locks the origin's `Notify` (shared by every request and
            // connection of the origin) to enter and again to leave its list.
            // A request that finds nothing registers, then looks again
            // before it sleeps, so capacity freed in between still wakes it.
            if let Some(notified) = waiter.notified.as_mut() {
                notified.enable();
            }
            if let Some(mut candidate) = waiter.candidate.take() {
                match poll_candidate::<B>(&mut candidate, cx) {
                    Candidate::Ready => return Poll::Ready(Ok(self.acquired(waiter, *candidate))),
                    Candidate::Failed(error) => {
                        waiter.unregister();
                        return Poll::Ready(Err(error));
                    }
                    Candidate::NotYet => waiter.candidate = Some(candidate),
                    Candidate::Gone => {}
                }
            }
            // Pick under the lock, but poll outside it: the connection's
            // layers (a user's among them) may take their own locks, or ask
            // the pool for its stats.
            let held = waiter.candidate.as_ref().map(|held| held.handle().id());
            let (best, connect_failures) = self.pick(held);
            waiter.seen_failures.get_or_insert(connect_failures);
            if let Some(mut candidate) = best {
                // The layers check the connection right before dispatch: this
                // is where a GOAWAY, an age limit or a dead PING shows up.
                match poll_candidate::<B>(&mut candidate, cx) {
                    Candidate::Ready => return Poll::Ready(Ok(self.acquired(waiter, candidate))),
                    Candidate::Failed(error) => {
                        waiter.unregister();
                        return Poll::Ready(Err(error));
                    }
                    Candidate::NotYet => {
                        if waiter.candidate.is_none() {
                            waiter.candidate = Some(Box::new(candidate));
                        }
                    }
                    // Retired meanwhile: look again.
                    Candidate::Gone => continue,
                }
            }
            {
                let mut state = lock(&self.state);
                let open = state.connections.len();
                let seen_failures = *waiter.seen_failures.get_or_insert(state.connect_failures);
                if waiter.registered.is_none() {
                    if limit_pending && state.waiting >= self.config.max_pending_requests {
                        return Poll::Ready(Err(Error::new(
                            ErrorKind::PendingLimit,
                            Delivery::NeverSent,
                        )
                        .with_detail(format!(
                            "{} requests already waiting for {}",
                            state.waiting, self.key
                        ))));
                    }
                    state.waiting += 1;
                    waiter.registered = self.this.upgrade();
                }
                if open == 0 && state.connecting == 0 && state.connect_failures > seen_failures {
                    if let Some(failure) = &state.last_connect_error {
                        return Poll::Ready(Err(failure.share()));
                    }
                }
                if self.should_connect(&state, open) {
                    self.spawn_connect(&mut state);
                }
            }
            let Some(notified) = waiter.notified.as_mut() else {
                waiter.notified = Some(self.slot_waiters.wait());
                continue;
            };
            match notified.poll(cx) {
                Poll::Ready(()) => waiter.notified = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends `request` now if a connection takes it without waiting, with
    /// no task to wake: the keyed pool's first look, made in `call` so that
    /// a request that finds a slot goes out at once and its future never
    /// holds one. If the first look finds nothing ready, the request comes
    /// back to wait in its future, through [`poll_acquire`](Self::poll_acquire).
    #[inline]
    pub(crate) fn try_send<B>(&self, request: Request<B>) -> FirstLook<B>
    where
        B: HttpBody + Send + 'static,
        B::Data: Buf + Send,
        B::Error: Into<BoxError>,
    {
        // Whatever a connection that is not ready registers with this waker
        // goes with it; the request then registers its own in `poll_acquire`.
        let mut cx = Context::from_waker(noop_waker());
        let mut state = lock(&self.state);
        let Some(best) = self.pick_index(&mut state, None) else {
            return FirstLook::Wait(request);
        };
        if let candidate @ PooledConnection::Standard(_) = &mut state.connections[best] {
            // The pool's own layers take none of its locks, so the request
            // goes out under this one, on the connection's own instance:
            // nothing to take out of the spares and give back under a
            // second lock.
            return match poll_candidate::<B>(candidate, &mut cx) {
                Candidate::Ready => FirstLook::Sent(Service::call(candidate, request)),
                Candidate::Failed(error) => FirstLook::Failed(error, request),
                Candidate::NotYet | Candidate::Gone => {
                    // A fresh instance, so no slot or wake-up stays
                    // reserved in the one every first look uses.
                    *candidate = candidate.clone();
                    FirstLook::Wait(request)
                }
            };
        }
        // A user's layer may take locks of its own, or ask for the pool's
        // stats: it is polled outside the lock, on an instance of its own.
        let mut candidate = self.take_instance(&mut state, best);
        drop(state);
        match poll_candidate::<B>(&mut candidate, &mut cx) {
            Candidate::Ready => {
                let response = Service::call(&mut candidate, request);
                self.check_in(candidate);
                FirstLook::Sent(response)
            }
            Candidate::Failed(error) => FirstLook::Failed(error, request),
            Candidate::NotYet | Candidate::Gone => FirstLook::Wait(request),
        }
    }

    /// Hands `connection` to the request, which stops waiting.
    fn acquired(&self, waiter: &mut Waiter, connection: PooledConnection) -> PooledConnection {
        let waited = waiter.registered.is_some();
        waiter.notified = None;
        // A connection held while it was not ready gives back what it reserved.
        waiter.candidate = None;
        waiter.unregister();
        // A request that waited may have taken two wake-ups for one slot: one
        // for its own registration and one for its held candidate's (whose
        // connection waits for a slot too). A wake-up taken is not passed on
        // when the registration goes, so pass one on while a slot is free,
        // or another request would sleep beside it.
        if waited && has_free_slot(&lock(&self.state)) {
            self.slot_waiters.wake_one();
        }
        connection
    }

    /// The least-loaded open connection with a free slot (other than the
    /// one `held`), and the count of failed connects, read under one lock.
    fn pick(&self, held: Option<u64>) -> (Option<PooledConnection>, u64) {
        let mut state = lock(&self.state);
        let best = self
            .pick_index(&mut state, held)
            .map(|best| self.take_instance(&mut state, best));
        (best, state.connect_failures)
    }

    /// Where in `connections` the least-loaded open connection with a free
    /// slot (other than the one `held`) is.
    fn pick_index(&self, state: &mut OriginState, held: Option<u64>) -> Option<usize> {
        self.retire_not_open(state);
        self.replace_ahead(state);
        state
            .connections
            .iter()
            .enumerate()
            .filter(|(_, connection)| Some(connection.handle().id()) != held)
            .filter(|(_, connection)| connection.handle().free_slots() > 0)
            .min_by_key(|(_, connection)| connection.handle().load())
            .map(|(index, _)| index)
    }

    /// A service instance of `connections[index]` for one request: a spare
    /// if there is one, else a clone.
    fn take_instance(&self, state: &mut OriginState, index: usize) -> PooledConnection {
        let connection = &state.connections[index];
        let id = connection.handle().id();
        match state
            .spares
            .iter()
            .position(|spare| spare.handle().id() == id)
        {
            Some(spare) => state.spares.swap_remove(spare),
            None => connection.clone(),
        }
    }

    /// Takes back a connection's service instance once a request has been
    /// sent on it, for the next request to use.
    pub(crate) fn check_in(&self, instance: PooledConnection) {
        let mut state = lock(&self.state);
        // Only for an open connection: the pool must let go of a retired
        // one's send handles, or h2 would never close it.
        if instance.handle().is_open() && state.spares.len() < MAX_SPARES {
            state.spares.push(instance);
            return;
        }
        drop(state);
        // Dropped outside the lock: it takes h2's.
        drop(instance);
    }

    /// Moves connections that stopped taking streams out of the rotation.
    fn retire_not_open(&self, state: &mut OriginState) {
        let mut retired = false;
        let mut busy_retired = false;
        let mut index = 0;
        while index < state.connections.len() {
            if state.connections[index].handle().is_open() {
                index += 1;
                continue;
            }
            let handle = state.connections.swap_remove(index).handle().clone();
            busy_retired |= handle.streams_running() > 0;
            if handle.phase() == Phase::Draining {
                state.draining.push(handle);
            }
            retired = true;
        }
        // Checked first: this runs for every request, and there is rarely
        // a draining connection to look at.
        if !state.draining.is_empty() {
            state
                .draining
                .retain(|handle| handle.phase() != Phase::Closed);
        }
        if retired {
            state.spares.retain(|spare| spare.handle().is_open());
            // A replacement before waiting requests need one, when the retired
            // connection was in use and those left have no room. (An idle one
            // that retires is not replaced: that would churn forever.)
            let in_demand = busy_retired || state.waiting > 0;
            if in_demand
                && !has_free_slot(state)
                && self.should_connect(state, state.connections.len())
            {
                self.spawn_connect(state);
            }
            self.slot_waiters.wake_all();
        }
    }

    /// One connect at a time, unless the requests waiting need more than
    /// the connects under way will give.
    fn should_connect(&self, state: &OriginState, open: usize) -> bool {
        if open + state.connecting >= self.config.max_connections_per_origin {
            return false;
        }
        if state.next_connect_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        if open > 0 && allows_no_streams(state) {
            // A server that allows no streams on the connections it has will
            // not allow any on another: wait for it to raise the limit, up to
            // the pending timeout, rather than open connection after connection.
            return false;
        }
        if state.connecting == 0 {
            return true;
        }
        // Until a server's SETTINGS are known, assume the protocol's 100
        // (or our own cap), not 1: guessing low would open a storm of
        // connections for the first burst of requests.
        let per_connection = state
            .connections
            .iter()
            .map(|connection| connection.handle().max_streams())
            .max()
            .or(state.last_max_streams)
            .unwrap_or_else(|| {
                self.config
                    .http2
                    .max_concurrent_streams
                    .unwrap_or(DEFAULT_PEER_MAX_STREAMS)
                    .min(DEFAULT_PEER_MAX_STREAMS)
            })
            .max(1);
        more_waiting_than_connects_serve(state.waiting, state.connecting, per_connection)
    }

    /// Starts a connect in a task of its own; `state` counts it.
    fn spawn_connect(&self, state: &mut OriginState) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No connection can run without a runtime.
            self.connect_not_started(
                state,
                "no tokio runtime: h2pool must be used from within a tokio runtime",
            );
            return;
        };
        state.connecting += 1;
        let origin = self.this.clone();
        let connector = self.connector.clone();
        let uri = self.uri.clone();
        let config = self.config.clone();
        let slot_waiters = self.slot_waiters.clone();
        let span = tracing::debug_span!("h2pool::connection", origin = %self.key, id = tracing::field::Empty);
        let task = runtime.spawn(async move {
            // Reports a connect that ends without an outcome (a connector
            // that panicked, a runtime shutting down), so `connecting` does
            // not stay counted and stall the origin.
            let mut unfinished = UnfinishedConnect(Some(origin));
            let started = Instant::now();
            let outcome = connect(connector, uri, &config, slot_waiters, span)
                .await
                .map(|connection| (connection, started.elapsed()));
            if let Some(origin) = unfinished.0.take().and_then(|origin| origin.upgrade()) {
                origin.finish_connect(outcome);
            }
        });
        // A runtime that is shutting down drops the task without polling it,
        // so the guard above never exists. A task that did run cannot have
        // finished yet: its outcome waits for the lock held here.
        if task.is_finished() {
            state.connecting -= 1;
            self.connect_not_started(state, "the tokio runtime is shutting down");
        }
    }

    /// Counts a connect that could not start as failed: the waiting
    /// requests get `detail` as their connect error.
    fn connect_not_started(&self, state: &mut OriginState, detail: &'static str) {
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        state.connect_failures += 1;
        state.last_connect_error = Some(
            Error::new(ErrorKind::Connect, Delivery::NeverSent)
                .with_detail(detail)
                .into_shared(),
        );
    }

    /// Takes in a connect's outcome: the connection and how long it took
    /// to open, or why it failed.
    fn finish_connect(&self, outcome: Result<(Connection, Duration), Error>) {
        let mut state = lock(&self.state);
        state.connecting -= 1;
        match outcome {
            Ok((connection, took)) => {
                state.last_connect_took = Some(took);
                self.counters
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(origin = %self.key, connection = connection.handle().id(), "connected");
                state.failures_in_a_row = 0;
                // The connect worked, so its backoff is over; not so one
                // for a server that turns connections away after the
                // handshake, where a handshake proves nothing: that one
                // runs its course (and the count behind it restarts once a
                // connection that answered has closed).
                if state.refused_connections_in_a_row == 0 {
                    state.next_connect_at = None;
                }
                let handle = connection.handle().clone();
                state.last_max_streams = Some(handle.max_streams());
                let layered = match state.lifetimes.server_limit() {
                    Some(learned) => {
                        let max = self
                            .config
                            .drain
                            .max_requests
                            .map_or(learned, |max| max.min(learned));
                        let policy = self.config.drain.clone().max_requests(Some(max));
                        self.readiness
                            .layer(DrainLayer::new(policy).layer(connection))
                    }
                    None => self.readiness.layer(self.drain.layer(connection)),
                };
                let layer = self.config.connection_layer.as_ref();
                state
                    .connections
                    .push(PooledConnection::new(layered, layer));
                drop(state);
                tokio::spawn(watch(self.this.clone(), handle));
            }
            Err(error) if error.kind() == ErrorKind::UnsupportedScheme => {
                // Not a failure that waiting cures: no backoff, so every
                // request learns at once that the scheme is not served.
                self.counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                state.connect_failures += 1;
                state.last_connect_error = Some(error.into_shared());
            }
            Err(error) => {
                self.counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                state.connect_failures += 1;
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                let failures = state.failures_in_a_row;
                let backoff = self.back_off(&mut state, failures);
                tracing::debug!(origin = %self.key, %error, ?backoff, "connect failed");
                state.last_connect_error = Some(error.into_shared());
            }
        }
        self.slot_waiters.wake_all();
    }

    /// Holds new connects back for the backoff after `failures` in a row,
    /// and wakes the waiting requests when it ends, so one of them connects.
    fn back_off(&self, state: &mut OriginState, failures: u32) -> Duration {
        let backoff = self.backoff(failures);
        let now = Instant::now();
        state.next_connect_at = Some(now.checked_add(backoff).unwrap_or(now));
        let slot_waiters = self.slot_waiters.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(backoff).await;
                slot_waiters.wake_all();
            });
        }
        backoff
    }

    fn backoff(&self, failures_in_a_row: u32) -> Duration {
        crate::jitter::backoff(
            self.config.connect_backoff,
            self.config.max_connect_backoff,
            failures_in_a_row.saturating_sub(1),
        )
    }

    /// Called by a connection's watcher once it has closed and its last
    /// stream has ended.
    fn connection_closed(&self, handle: &ConnectionHandle) {
        let mut state = lock(&self.state);
        // With GOAWAY, without a word, or failing: not a drain of ours.
        let ended_by_server = handle.ended_by_server();
        // Requests were sent to it, or are waiting for one: the server
        // turned them away. (An unused spare the server retires is not a
        // failure.)
        let wanted = handle.highest_stream_id() > 0 || state.waiting > 0;
        if handle.has_answered() {
            state.refused_connections_in_a_row = 0;
        } else if ended_by_server && wanted {
            let refused = state.refused_connections_in_a_row.saturating_add(1);
            state.refused_connections_in_a_row = refused;
            let backoff = self.back_off(&mut state, refused);
            tracing::debug!(
                origin = %self.key,
                connection = handle.id(),
                ?backoff,
                "the server ended the connection before answering any request; backing off before the next connect"
            );
        }
        let Some(taken) = handle.streams_taken_before_goaway() else {
            return;
        };
        let limit_before = state.lifetimes.server_limit();
        state.lifetimes.record(taken);
        let limit = state.lifetimes.server_limit();
        if limit != limit_before {
            match limit {
                Some(requests) => tracing::debug!(
                    origin = %self.key,
                    requests,
                    "the server ends connections after this many requests; retiring ours at it"
                ),
                None => tracing::debug!(
                    origin = %self.key,
                    requests = taken,
                    "the server ended a connection after another number of requests; no longer retiring ours early"
                ),
            }
        }
    }

    /// Opens the replacement of a connection near its end before the end
    /// comes, so the requests after it do not wait for a connect and a
    /// handshake: when every open connection is near the end of its
    /// expected life (the per-connection request limit the user set, or the
    /// shortest of the server's recent GOAWAYs) and no connect is under way.
    ///
    /// Near the end is three quarters of the life, or from half on once
    /// the streams left would be used up within
    /// [`REPLACEMENT_LEAD_CONNECTS`] connects' time at the connection's own
    /// pace: a busy connection needs its replacement early, while an idle
    /// one's would only sit unused, or idle out before its turn. (Against
    /// a server that retires connections by age rather than by count, the
    /// overlap of a busy connection and its replacement shortens the lives
    /// the pool sees, so it opens somewhat more connections than the
    /// server's schedule needs.)
    ///
    /// At most one connection is young at a time, and the prediction is
    /// dropped once a connection outlives it twice over, so a server whose
    /// GOAWAYs follow no schedule does not grow the pool.
    fn replace_ahead(&self, state: &mut OriginState) {
        if state.connecting > 0 || state.connections.is_empty() {
            return;
        }
        // Only with a prediction to check: this runs for every request.
        if state.lifetimes.shortest().is_some() {
            let outlived = state
                .connections
                .iter()
                .map(|connection| connection.handle().streams_started())
                .find(|&streams| state.lifetimes.outlived_by(streams));
            if let Some(streams) = outlived {
                state.lifetimes.forget();
                tracing::debug!(origin = %self.key, streams, "a connection outlived the server's recent GOAWAYs; no longer replacing ahead of them");
            }
        }
        let Some(life) = self
            .config
            .drain
            .max_requests
            .into_iter()
            .chain(state.lifetimes.expected())
            .min()
        else {
            return;
        };
        let lead = state
            .last_connect_took
            .map(|took| took.saturating_mul(REPLACEMENT_LEAD_CONNECTS));
        let all_near_their_end = state.connections.iter().all(|connection| {
            let handle = connection.handle();
            let streams = handle.streams_started();
            streams >= near_end(life)
                || (streams >= half_life(life)
                    && lead.is_some_and(|lead| runs_out_within(streams, handle.age(), life, lead)))
        });
        if all_near_their_end && self.should_connect(state, state.connections.len()) {
            tracing::debug!(origin = %self.key, "connections near their end; opening a replacement ahead of it");
            self.spawn_connect(state);
        }
    }

    /// Called by a connection's watcher when its phase changed.
    fn phase_changed(&self) {
        let mut state = lock(&self.state);
        self.retire_not_open(&mut state);
    }

    /// Returns true if the origin has no connection, connect or waiting
    /// request left, so forgetting it loses nothing but its counters.
    pub(crate) fn is_unused(&self) -> bool {
        let state = lock(&self.state);
        state.connections.is_empty()
            && state.draining.is_empty()
            && state.connecting == 0
            && state.waiting == 0
    }

    /// Streams reserved or running on every connection (draining ones too),
    /// plus the requests waiting for a slot: the work this origin has now.
    pub(crate) fn load(&self) -> usize {
        let state = lock(&self.state);
        let streams: usize = state
            .connections
            .iter()
            .map(|connection| connection.handle().load())
            .chain(state.draining.iter().map(ConnectionHandle::load))
            .sum();
        streams + state.waiting
    }

    /// Why a request found no stream slot in `waited`, for its error.
    pub(crate) fn no_slot_detail(&self, waited: Duration) -> String {
        let state = lock(&self.state);
        if !state.connections.is_empty() && allows_no_streams(&state) {
            format!(
                "waited {waited:?} for {}, whose server allows no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0)",
                self.key
            )
        } else {
            format!("waited {waited:?} for {}", self.key)
        }
    }

    pub(crate) fn record_request(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self, kind: ErrorKind) {
        self.counters.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> OriginStats {
        let state = lock(&self.state);
        let mut stats = OriginStats {
            origin: self.key.to_string(),
            requests: self.counters.requests.load(Ordering::Relaxed),
            requests_waiting: state.waiting,
            connecting: state.connecting,
            connections_opened: self.counters.connections_opened.load(Ordering::Relaxed),
            connect_failures: self.counters.connect_failures.load(Ordering::Relaxed),
            ..OriginStats::default()
        };
        let handles = state
            .connections
            .iter()
            .map(PooledConnection::handle)
            .chain(&state.draining);
        for handle in handles {
            match handle.phase() {
                Phase::Open => stats.connections_open += 1,
                Phase::Draining => stats.connections_draining += 1,
                Phase::Closed => continue,
            }
            stats.streams_in_flight += handle.load();
        }
        stats.errors = ErrorKind::ALL
            .iter()
            .zip(&self.counters.errors)
            .map(|(kind, count)| (*kind, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        stats
    }
}

impl fmt::Debug for OriginPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginPool")
            .field("origin", &self.key)
            .finish()
    }
}

/// Whether any open connection has a free stream slot. (Whether any, not how
/// many: a connection to a server with no stream limit has usize::MAX of
/// them, and two such would overflow a sum.)
fn has_free_slot(state: &OriginState) -> bool {
    state
        .connections
        .iter()
        .any(|connection| connection.handle().free_slots() > 0)
}

/// Whether every open connection has a stream limit of zero.
fn allows_no_streams(state: &OriginState) -> bool {
    state
        .connections
        .iter()
        .all(|connection| connection.handle().max_streams() == 0)
}

async fn connect(
    connector: BoxedConnector,
    uri: Uri,
    config: &Config,
    slot_waiters: Arc<SlotWaiters>,
    span: tracing::Span,
) -> Result<Connection, Error> {
    let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
    let io = match tokio::time::timeout(config.connect_timeout, connector.oneshot(uri)).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => return Err(connector::connect_error(error)),
        Err(_) => {
            return Err(
                Error::new(ErrorKind::ConnectTimeout, Delivery::NeverSent).with_detail(format!(
                    "no connection to {authority} within {:?}",
                    config.connect_timeout
                )),
            )
        }
    };
    Connection::handshake_with(io, &config.http2, slot_waiters, span).await
}

/// Tells the origin when a connection stops taking streams or closes, so it
/// leaves the rotation (and gets a replacement) without waiting for a request.
async fn watch(origin: Weak<OriginPool>, handle: ConnectionHandle) {
    let mut retired = false;
    loop {
        let phase_changed = handle.phase_changed_notify().notified();
        tokio::pin!(phase_changed);
        phase_changed.as_mut().enable();
        let phase = handle.phase();
        if phase != Phase::Open {
            let Some(origin) = origin.upgrade() else {
                return;
            };
            if !retired {
                origin.phase_changed();
                retired = phase == Phase::Closed;
            }
            // Each stream records how it ended before it gives its slot
            // back, so the connection's account is complete at zero load.
            if phase == Phase::Closed && handle.load() == 0 {
                origin.connection_closed(&handle);
                return;
            }
        }
        phase_changed.await;
    }
}

/// What the keyed pool's first look did with a request.
pub(crate) enum FirstLook<B> {
    /// Sent: the response is on its way.
    Sent(PooledFuture),
    /// A user's connection layer failed it.
    Failed(Error, Request<B>),
    /// No connection could take it at once: it waits for a slot.
    Wait(Request<B>),
}

/// What polling a picked connection said.
enum Candidate {
    Ready,
    /// Open, but its layers cannot take the request yet; they will wake us.
    NotYet,
    /// It stopped taking streams.
    Gone,
    /// A user's connection layer failed the request.
    Failed(Error),
}

fn poll_candidate<B>(candidate: &mut PooledConnection, cx: &mut Context<'_>) -> Candidate
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    match Service::<Request<B>>::poll_ready(candidate, cx) {
        Poll::Ready(Err(error)) => Candidate::Failed(error),
        _ if !candidate.handle().is_open() => Candidate::Gone,
        Poll::Ready(Ok(())) => Candidate::Ready,
        Poll::Pending => Candidate::NotYet,
    }
}

/// Finishes a connect task's account if the task ends without doing so.
struct UnfinishedConnect(Option<Weak<OriginPool>>);

impl Drop for UnfinishedConnect {
    fn drop(&mut self) {
        if let Some(origin) = self.0.take().and_then(|origin| origin.upgrade()) {
            origin.finish_connect(Err(Error::new(ErrorKind::Connect, Delivery::NeverSent)
                .with_detail(
                    "the connect ended without an outcome (did the connector panic?)",
                )));
        }
    }
}

/// A waker that does nothing, for a look that must not wait.
fn noop_waker() -> &'static Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    static NOOP: OnceLock<Waker> = OnceLock::new();
    NOOP.get_or_init(|| Waker::from(Arc::new(Noop)))
}

#[cfg(test)]
mod tests {
    use super::{more_waiting_than_connects_serve, OriginKey};
    use crate::connector::has_valid_port;
    use crate::ErrorKind;

    #[test]
    fn ports_that_are_not_numbers_are_refused_not_taken_for_the_default() {
        for uri in [
            "https://api.internal:84430/",
            "http://h:8o80/",
            "http://[::1]:99999/",
            "http://user@h:x/",
        ] {
            let uri: http::Uri = uri.parse().expect("http accepts it");
            let error = OriginKey::from_uri(&uri).expect_err(&format!("{uri} is refused"));
            assert_eq!(error.kind(), ErrorKind::InvalidUri);
        }
        for uri in [
            "https://api.internal/",
            "https://api.internal:8443/",
            "http://[::1]:8080/",
            "http://[::1]/",
            "http://user:secret@h:80/",
            "http://h:/",
        ] {
            let uri: http::Uri = uri.parse().expect("valid");
            let authority = uri.authority().expect("an authority");
            assert!(has_valid_port(authority), "{uri} is accepted");
        }
    }

    #[test]
    fn connects_to_a_server_with_no_stream_limit_serve_any_number_waiting() {
        assert!(!more_waiting_than_connects_serve(1_000, 2, usize::MAX));
        assert!(more_waiting_than_connects_serve(201, 2, 100));
        assert!(!more_waiting_than_connects_serve(200, 2, 100));
    }
}
