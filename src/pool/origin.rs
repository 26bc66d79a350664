//! The connections of one origin, and how a request gets a stream slot on one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tower::ServiceExt;

use super::config::Config;
use super::stats::OriginStats;
use crate::connection::{lock, Connection, ConnectionHandle, Phase, DEFAULT_PEER_MAX_STREAMS};
use crate::connector::{BoxedConnector, UnsupportedScheme};
use crate::error::{Delivery, Error, ErrorKind};

/// Requests to the same scheme and authority share connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OriginKey {
    scheme: Scheme,
    authority: Authority,
}

impl OriginKey {
    pub(crate) fn from_uri(uri: &Uri) -> Result<OriginKey, Error> {
        match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => Ok(OriginKey {
                scheme: scheme.clone(),
                authority: authority.clone(),
            }),
            _ => Err(Error::new(ErrorKind::InvalidUri, Delivery::NeverSent)
                .with_detail(format!("{uri:?} has no scheme or no authority"))),
        }
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
    /// Woken once per freed stream slot, and for everyone on new capacity.
    notify: Arc<Notify>,
    state: Mutex<OriginState>,
    counters: Counters,
    this: Weak<OriginPool>,
}

#[derive(Default)]
struct OriginState {
    connections: Vec<Connection>,
    connecting: usize,
    waiting: usize,
    connect_failures: u64,
    last_connect_error: Option<Error>,
    /// The stream limit of the last connection made, for when none is open.
    last_max_streams: Option<usize>,
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
    notified: Option<Pin<Box<OwnedNotified>>>,
    // Set while counted in `OriginState::waiting`, to undo on drop.
    registered: Option<Arc<OriginPool>>,
    // Connect failures already seen when the request started waiting: only a
    // failure after that is the request's to report.
    seen_failures: Option<u64>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(origin) = self.registered.take() {
            lock(&origin.state).waiting -= 1;
        }
    }
}

impl OriginPool {
    pub(crate) fn new(
        key: OriginKey,
        config: Arc<Config>,
        connector: BoxedConnector,
    ) -> Result<Arc<Self>, Error> {
        let uri = key.to_uri()?;
        Ok(Arc::new_cyclic(|this| OriginPool {
            key,
            uri,
            config,
            connector,
            notify: Arc::new(Notify::new()),
            state: Mutex::new(OriginState::default()),
            counters: Counters::default(),
            this: this.clone(),
        }))
    }

    pub(crate) fn key(&self) -> &OriginKey {
        &self.key
    }

    /// Gets a connection with a reserved stream slot: the least-loaded open
    /// one, or a new one if all are full and the origin may have more.
    ///
    /// `limit_pending` applies `max_pending_requests` to a request that
    /// would have to wait (the keyed pool's rule; the single-origin service
    /// pushes back through `poll_ready` instead).
    pub(crate) fn poll_acquire(
        &self,
        cx: &mut Context<'_>,
        waiter: &mut Waiter,
        limit_pending: bool,
    ) -> Poll<Result<Connection, Error>> {
        loop {
            let notified = waiter
                .notified
                .get_or_insert_with(|| Box::pin(self.notify.clone().notified_owned()));
            // Register first, so capacity that appears while we look wakes us.
            notified.as_mut().enable();
            {
                let mut state = lock(&self.state);
                let seen_failures = *waiter.seen_failures.get_or_insert(state.connect_failures);
                state
                    .connections
                    .retain(|connection| connection.handle().phase() != Phase::Closed);
                if let Some(connection) = self.try_reserve(&mut state, cx) {
                    drop(state);
                    waiter.notified = None;
                    if let Some(origin) = waiter.registered.take() {
                        lock(&origin.state).waiting -= 1;
                    }
                    return Poll::Ready(Ok(connection));
                }
                let open = state
                    .connections
                    .iter()
                    .filter(|connection| connection.handle().is_open())
                    .count();
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
                    state.connecting += 1;
                    drop(state);
                    self.spawn_connect();
                }
            }
            let Some(notified) = waiter.notified.as_mut() else {
                continue;
            };
            match notified.as_mut().poll(cx) {
                Poll::Ready(()) => waiter.notified = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reserves a slot on the open connection with the most free slots.
    fn try_reserve(&self, state: &mut OriginState, cx: &mut Context<'_>) -> Option<Connection> {
        loop {
            let best = state
                .connections
                .iter()
                .filter(|connection| connection.handle().free_slots() > 0)
                .min_by_key(|connection| connection.handle().load())?;
            let mut candidate = best.clone();
            // Checked right before dispatch: this is where a GOAWAY that came
            // in since the last request shows up and the connection drains.
            match candidate.poll_reserve(cx) {
                Poll::Ready(()) if candidate.is_reserved() => return Some(candidate),
                // Not open after all, or h2 has a stream of ours pending open;
                // either way the handle no longer offers a free slot.
                Poll::Ready(()) | Poll::Pending => {
                    if candidate.handle().free_slots() > 0 {
                        return None;
                    }
                }
            }
        }
    }

    /// One connect at a time, unless the requests waiting need more than
    /// the connects under way will give.
    fn should_connect(&self, state: &OriginState, open: usize) -> bool {
        if open + state.connecting >= self.config.max_connections_per_origin {
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
        state.waiting > state.connecting * per_connection
    }

    fn spawn_connect(&self) {
        let origin = self.this.clone();
        let connector = self.connector.clone();
        let uri = self.uri.clone();
        let config = self.config.clone();
        let notify = self.notify.clone();
        let span = tracing::debug_span!("h2pool::connection", origin = %self.key, id = tracing::field::Empty);
        let task = async move {
            let outcome = connect(connector, uri, &config, notify, span).await;
            if let Some(origin) = origin.upgrade() {
                origin.finish_connect(outcome);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(task);
            }
            Err(_) => self.finish_connect(Err(Error::new(ErrorKind::Connect, Delivery::NeverSent)
                .with_detail("no tokio runtime: h2pool must be used from within a tokio runtime"))),
        }
    }

    fn finish_connect(&self, outcome: Result<Connection, Error>) {
        let mut state = lock(&self.state);
        state.connecting -= 1;
        match outcome {
            Ok(connection) => {
                self.counters
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(origin = %self.key, connection = connection.handle().id(), "connected");
                let handle = connection.handle().clone();
                state.last_max_streams = Some(handle.max_streams());
                state.connections.push(connection);
                drop(state);
                tokio::spawn(watch(self.this.clone(), handle, self.config.idle_timeout));
            }
            Err(error) => {
                self.counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(origin = %self.key, %error, "connect failed");
                state.connect_failures += 1;
                state.last_connect_error = Some(error.into_shared());
                drop(state);
            }
        }
        self.notify.notify_waiters();
    }

    fn remove(&self, id: u64) {
        lock(&self.state)
            .connections
            .retain(|connection| connection.handle().id() != id);
        self.notify.notify_waiters();
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
        for connection in &state.connections {
            let handle = connection.handle();
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

async fn connect(
    connector: BoxedConnector,
    uri: Uri,
    config: &Config,
    notify: Arc<Notify>,
    span: tracing::Span,
) -> Result<Connection, Error> {
    let io = match tokio::time::timeout(config.connect_timeout, connector.oneshot(uri)).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => {
            let kind = if error.is::<UnsupportedScheme>() {
                ErrorKind::UnsupportedScheme
            } else {
                ErrorKind::Connect
            };
            return Err(Error::new(kind, Delivery::NeverSent).with_source(error));
        }
        Err(_) => {
            return Err(Error::new(ErrorKind::ConnectTimeout, Delivery::NeverSent)
                .with_detail(format!("no connection within {:?}", config.connect_timeout)))
        }
    };
    Connection::handshake_with(io, &config.http2, notify, span).await
}

/// Takes a connection out of its origin once it closes, and closes it when
/// it has been idle for the idle timeout.
async fn watch(origin: Weak<OriginPool>, handle: ConnectionHandle, idle_timeout: Option<Duration>) {
    const NO_TIMEOUT: Duration = Duration::from_secs(3600);
    loop {
        let phase_changed = handle.phase_changed_notify().notified();
        tokio::pin!(phase_changed);
        phase_changed.as_mut().enable();
        if handle.phase() == Phase::Closed {
            break;
        }
        let wait = match (idle_timeout, handle.idle_for()) {
            (Some(timeout), Some(idle)) if idle >= timeout => {
                if handle.start_draining(ErrorKind::ConnectionClosed, "idle timeout") {
                    tracing::debug!(connection = handle.id(), ?idle, "closing idle connection");
                }
                break;
            }
            (Some(timeout), Some(idle)) => timeout - idle,
            (Some(timeout), None) => timeout,
            (None, _) => NO_TIMEOUT,
        };
        tokio::select! {
            _ = phase_changed => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(origin) = origin.upgrade() {
        origin.remove(handle.id());
    }
}
