//! An in-process HTTP/2 test server on h2's server side, with knobs for the
//! faults a pool must survive. Shared by the integration tests and the
//! `load` example (through `#[path]`), so it depends only on crates both have.
//!
//! Routes (the path picks the behaviour; `x-request-id` feeds the ledger):
//! - `/` and anything unknown: 200 with body `ok`
//! - `/delay/{ms}`: waits, then 200 `ok`
//! - `/echo`: answers at once and streams the request body back, then
//!   trailers `x-echo-bytes`
//! - `/bidi`: waits for the first request DATA before it sends headers,
//!   then echoes (the gRPC bidi pattern that deadlocks half-duplex clients)
//! - `/download/{bytes}`: sends that many bytes, honouring flow control
//! - `/upload`: reads the whole body and answers with its length
//! - `/headers`: answers with the request's headers, one `name: value` a line,
//!   `:scheme` and `:authority` first
//! - `/refuse`: RST_STREAM(REFUSED_STREAM) before any processing
//! - `/refuse-after-body`: reads the whole body, then REFUSED_STREAM
//! - `/refuse-first/{n}`: REFUSED_STREAM for the first `n` arrivals of the
//!   request's `x-request-id`, then 200 `ok`
//! - `/refuse-after/{bytes}/{n}`: reads `bytes` of the body (or all of it),
//!   then REFUSED_STREAM for the first `n` arrivals of the request id; after
//!   that reads it all and answers `{length} {fnv1a64 as hex}`
//! - `/reset`: RST_STREAM(INTERNAL_ERROR) after processing
//! - `/close`: drops the TCP connection abruptly after processing
//!
//! [`Faults`] add random trouble on any route: refusals, GOAWAYs (graceful
//! or with an error code), resets and TCP closes after processing, stalled
//! handlers, slow reads of request bodies, and connections with tiny
//! flow-control windows.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Notify};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// SETTINGS_MAX_CONCURRENT_STREAMS; `None` leaves h2's default (no limit).
    pub max_concurrent_streams: Option<u32>,
    /// Waits this long in every handler before answering.
    pub handler_delay: Duration,
    /// SETTINGS_INITIAL_WINDOW_SIZE for request bodies.
    pub initial_window_size: u32,
    /// The connection-level receive window.
    pub connection_window_size: u32,
    /// Random faults, each a probability per request in 0.0..=1.0.
    pub faults: Faults,
    /// Ends every connection with a graceful GOAWAY once it has accepted
    /// this many streams, like nginx's `keepalive_requests`, but in h2's
    /// two steps (GOAWAY with the highest id, a PING, then the last id), so
    /// the streams in flight meanwhile are served too and the count a
    /// client sees varies.
    pub goaway_after: Option<u64>,
}

/// Fault probabilities, per request unless said otherwise. All zero by
/// default, so a test sees only the faults it asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// GOAWAY (graceful) on the connection of the request.
    pub goaway: f64,
    /// GOAWAY with an error code (INTERNAL_ERROR or ENHANCE_YOUR_CALM, at
    /// random) on the connection of the request, after processing it: h2's
    /// abrupt shutdown, which closes the connection under its open streams.
    pub goaway_error: f64,
    /// REFUSED_STREAM instead of processing.
    pub refuse: f64,
    /// RST_STREAM with INTERNAL_ERROR or CANCEL (at random) after
    /// processing, instead of an answer.
    pub reset: f64,
    /// The handler waits before answering: `stall_for / 10` or the whole
    /// `stall_for`, at random, so a test whose deadline lies between the two
    /// sees both a stall it outlasts and one it gives up on.
    pub stall: f64,
    /// The longer of the two stalls.
    pub stall_for: Duration,
    /// The request body is read slowly: a pause of 1 ms before each chunk's
    /// window goes back, so the client's sender waits on flow control.
    pub slow_read: f64,
    /// Per connection: serve it with a tiny stream window (1, 4 or 16 KiB,
    /// at random) and the smallest connection window HTTP/2 has (64 KiB).
    pub tiny_window: f64,
    /// Drop the TCP connection after processing, without answering.
    pub close: f64,
}

/// The pause before each chunk's window goes back, on a slow read.
const SLOW_READ_PAUSE: Duration = Duration::from_millis(1);
/// The stream windows of a connection with a tiny window.
const TINY_WINDOWS: [u32; 3] = [1024, 4 * 1024, 16 * 1024];
/// The connection window every HTTP/2 connection starts with; h2 cannot go
/// below it.
const SMALLEST_CONNECTION_WINDOW: u32 = 65_535;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent_streams: None,
            handler_delay: Duration::ZERO,
            initial_window_size: 1024 * 1024,
            connection_window_size: 4 * 1024 * 1024,
            faults: Faults::default(),
            goaway_after: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Command {
    GoAway,
    GoAwayWithError(Reason),
    Close,
}

/// Counters and the ledger, shared by the server's tasks.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicUsize,
    pub requests: AtomicU64,
    pub streams_active: AtomicUsize,
    pub max_streams_active: AtomicUsize,
    pub refused: AtomicU64,
    /// Graceful GOAWAYs and GOAWAYs with an error code, as sent.
    pub goaways: AtomicU64,
    /// GOAWAYs with an error code (the `goaway_error` fault), as requested.
    pub goaway_errors: AtomicU64,
    pub closes: AtomicU64,
    /// Streams reset after processing (the `reset` fault).
    pub resets: AtomicU64,
    /// Handlers that stalled (the `stall` fault).
    pub stalls: AtomicU64,
    /// Request bodies read slowly (the `slow_read` fault).
    pub slow_reads: AtomicU64,
    /// Connections served with a tiny stream window (the `tiny_window` fault).
    pub tiny_window_connections: AtomicU64,
    /// How long the handler of each stalled `x-request-id` waited.
    pub stalled: Mutex<HashMap<String, Duration>>,
    /// How often each `x-request-id` reached a handler that processed it.
    pub ledger: Mutex<HashMap<String, u64>>,
    /// How often each `x-request-id` reached the server at all, refusals included.
    pub arrivals: Mutex<HashMap<String, u64>>,
    /// Requests served per connection id.
    pub per_connection: Mutex<HashMap<u64, u64>>,
    /// `goaway_after` GOAWAYs sent when the client had already opened
    /// another connection: one it can move to at once.
    pub goaways_with_successor: AtomicU64,
}

struct Shared {
    config: ServerConfig,
    counters: Arc<Counters>,
    stalled: AtomicBool,
    unstalled: Notify,
    commands: broadcast::Sender<Command>,
    next_connection: AtomicU64,
    rng: Mutex<u64>,
}

impl Shared {
    fn new(config: ServerConfig) -> Arc<Shared> {
        let (commands, _) = broadcast::channel(64);
        Arc::new(Shared {
            config,
            counters: Arc::new(Counters::default()),
            stalled: AtomicBool::new(false),
            unstalled: Notify::new(),
            commands,
            next_connection: AtomicU64::new(1),
            rng: Mutex::new(0x2545_F491_4F6C_DD1D),
        })
    }
}

/// A running test server; it stops when dropped.
pub struct TestServer {
    /// `None` for a server on a Unix socket.
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on a free loopback port.
    pub async fn start(config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the test server");
        Self::start_on(listener, config)
    }

    /// Starts a server on a listener the caller bound (to reuse a port).
    pub fn start_on(listener: TcpListener, config: ServerConfig) -> TestServer {
        Self::start_with_acceptor(listener, config, |tcp| async move { Ok(tcp) })
    }

    /// Starts a server on `listener` that first runs `accept` on each TCP
    /// connection (a TLS handshake, say) and serves HTTP/2 over what it
    /// returns. A connection `accept` fails is dropped.
    pub fn start_with_acceptor<A, F, S>(
        listener: TcpListener,
        config: ServerConfig,
        accept: A,
    ) -> TestServer
    where
        A: Fn(TcpStream) -> F + Send + Sync + 'static,
        F: Future<Output = std::io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = listener.local_addr().expect("listener has an address");
        let shared = Shared::new(config);
        let accept_shared = shared.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                spawn_serving(accept(tcp), accept_shared.clone());
            }
        });
        TestServer {
            addr: Some(addr),
            shared,
            accept_task,
        }
    }

    /// Starts a server on a Unix domain socket listener.
    #[cfg(unix)]
    pub fn start_unix(listener: tokio::net::UnixListener, config: ServerConfig) -> TestServer {
        Self::start_unix_with_acceptor(listener, config, |stream| async move { Ok(stream) })
    }

    /// Starts a server on a Unix domain socket listener that first runs
    /// `accept` on each connection (a TLS handshake, say).
    #[cfg(unix)]
    pub fn start_unix_with_acceptor<A, F, S>(
        listener: tokio::net::UnixListener,
        config: ServerConfig,
        accept: A,
    ) -> TestServer
    where
        A: Fn(tokio::net::UnixStream) -> F + Send + Sync + 'static,
        F: Future<Output = std::io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Shared::new(config);
        let accept_shared = shared.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                spawn_serving(accept(stream), accept_shared.clone());
            }
        });
        TestServer {
            addr: None,
            shared,
            accept_task,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("a TCP test server (this one listens on a Unix socket)")
    }

    /// `http://127.0.0.1:port`, followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// The server's counters and ledger.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.shared.counters
    }

    /// Connections the server has accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared
            .counters
            .connections_accepted
            .load(Ordering::SeqCst)
    }

    /// Sends a graceful GOAWAY on every open connection (h2's two-step:
    /// last_stream_id 2^31-1 first, then the real one after a PING).
    pub fn goaway_all(&self) {
        let _ = self.shared.commands.send(Command::GoAway);
    }

    /// Sends GOAWAY with an error code on every open connection and closes them.
    pub fn goaway_with_error_all(&self, reason: Reason) {
        let _ = self.shared.commands.send(Command::GoAwayWithError(reason));
    }

    /// Drops every open TCP connection at once, without GOAWAY.
    pub fn close_all(&self) {
        let _ = self.shared.commands.send(Command::Close);
    }

    /// Stops reading from every connection (no frames, no PING answers) until
    /// [`resume`](Self::resume).
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Undoes [`stall`](Self::stall).
    pub fn resume(&self) {
        self.shared.stalled.store(false, Ordering::SeqCst);
        self.shared.unstalled.notify_waiters();
    }

    /// Enters `ids` into the ledger with no arrival yet, so that a soak's
    /// memory figures, taken after this, do not count the ledger's growth:
    /// during the run only the counts change.
    pub fn preregister(&self, ids: impl IntoIterator<Item = String>) {
        let mut ledger = self.shared.counters.ledger.lock().expect("ledger lock");
        let mut arrivals = self.shared.counters.arrivals.lock().expect("arrivals lock");
        for id in ids {
            ledger.insert(id.clone(), 0);
            arrivals.insert(id, 0);
        }
    }

    /// Times each request id reached a handler, for ids seen more than once.
    pub fn duplicates(&self) -> Vec<(String, u64)> {
        let ledger = self.shared.counters.ledger.lock().expect("ledger lock");
        ledger
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(id, count)| (id.clone(), *count))
            .collect()
    }

    /// Times `id` reached a handler.
    pub fn times_processed(&self, id: &str) -> u64 {
        let ledger = self.shared.counters.ledger.lock().expect("ledger lock");
        ledger.get(id).copied().unwrap_or(0)
    }

    /// How often a request id reached the server at all, refusals included.
    pub fn times_seen(&self, id: &str) -> u64 {
        let arrivals = self.shared.counters.arrivals.lock().expect("arrivals lock");
        arrivals.get(id).copied().unwrap_or(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        let _ = self.shared.commands.send(Command::Close);
    }
}

/// Serves HTTP/2 over what `handshake` gives, in a task of its own: a slow
/// or failing handshake must not hold up the next connection.
fn spawn_serving<F, S>(handshake: F, shared: Arc<Shared>)
where
    F: Future<Output = std::io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Ok(io) = handshake.await {
            serve_connection(io, shared).await;
        }
    });
}

async fn serve_connection<S>(io: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let counters = shared.counters.clone();
    counters.connections_accepted.fetch_add(1, Ordering::SeqCst);
    counters.connections_active.fetch_add(1, Ordering::SeqCst);
    let _active = Decrement(&counters.connections_active);

    let mut commands = shared.commands.subscribe();
    let (local_tx, mut local_rx) = mpsc::unbounded_channel::<Command>();
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(shared.config.initial_window_size)
        .initial_connection_window_size(shared.config.connection_window_size);
    if roll(&shared, shared.config.faults.tiny_window) {
        counters
            .tiny_window_connections
            .fetch_add(1, Ordering::SeqCst);
        builder
            .initial_window_size(TINY_WINDOWS[pick(&shared, TINY_WINDOWS.len())])
            .initial_connection_window_size(SMALLEST_CONNECTION_WINDOW);
    }
    if let Some(max) = shared.config.max_concurrent_streams {
        builder.max_concurrent_streams(max);
    }
    let Ok(Ok(mut connection)) =
        tokio::time::timeout(Duration::from_secs(10), builder.handshake::<_, Bytes>(io)).await
    else {
        return;
    };
    let mut streams_accepted = 0u64;
    loop {
        while shared.stalled.load(Ordering::SeqCst) {
            let unstalled = shared.unstalled.notified();
            tokio::pin!(unstalled);
            unstalled.as_mut().enable();
            if !shared.stalled.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                _ = unstalled => {}
                command = commands.recv() => if matches!(command, Ok(Command::Close) | Err(broadcast::error::RecvError::Closed)) { return },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let command = tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    tokio::spawn(handle(request, respond, shared.clone(), id, local_tx.clone()));
                    streams_accepted += 1;
                    if shared.config.goaway_after == Some(streams_accepted) {
                        counters.goaways.fetch_add(1, Ordering::SeqCst);
                        if shared.next_connection.load(Ordering::SeqCst) > id + 1 {
                            counters.goaways_with_successor.fetch_add(1, Ordering::SeqCst);
                        }
                        connection.graceful_shutdown();
                    }
                    continue;
                }
                Some(Err(_)) | None => return,
            },
            command = commands.recv() => match command {
                Ok(command) => command,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(command) = local_rx.recv() => command,
            // Wake up now and then to notice a stall.
            _ = tokio::time::sleep(Duration::from_millis(50)), if !shared.stalled.load(Ordering::SeqCst) => continue,
        };
        match command {
            Command::GoAway => {
                counters.goaways.fetch_add(1, Ordering::SeqCst);
                connection.graceful_shutdown();
            }
            Command::GoAwayWithError(reason) => {
                counters.goaways.fetch_add(1, Ordering::SeqCst);
                connection.abrupt_shutdown(reason);
            }
            Command::Close => {
                counters.closes.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn roll(shared: &Shared, probability: f64) -> bool {
    if probability <= 0.0 {
        return false;
    }
    uniform(shared) < probability
}

/// One of `0..choices`, at random.
fn pick(shared: &Shared, choices: usize) -> usize {
    ((uniform(shared) * choices as f64) as usize).min(choices - 1)
}

/// A number in `0.0..1.0`.
fn uniform(shared: &Shared) -> f64 {
    let mut state = shared.rng.lock().expect("rng lock");
    // xorshift64*: deterministic, good enough to spread faults.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    value as f64 / (1u64 << 53) as f64
}

async fn handle(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<Shared>,
    connection_id: u64,
    control: mpsc::UnboundedSender<Command>,
) {
    let counters = shared.counters.clone();
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let active = counters.streams_active.fetch_add(1, Ordering::SeqCst) + 1;
    counters
        .max_streams_active
        .fetch_max(active, Ordering::SeqCst);
    let _active = Decrement(&counters.streams_active);

    let (head, mut body) = request.into_parts();
    let path = head.uri.path().to_owned();
    let request_id = head
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let arrival = match &request_id {
        Some(id) => {
            let mut arrivals = counters.arrivals.lock().expect("arrivals lock");
            let count = arrivals.entry(id.clone()).or_insert(0);
            *count += 1;
            *count
        }
        None => 1,
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["refuse-first", times] = segments.as_slice() {
        if arrival <= times.parse().unwrap_or(0) {
            counters.refused.fetch_add(1, Ordering::SeqCst);
            respond.send_reset(Reason::REFUSED_STREAM);
            return;
        }
    }
    let mut body_read = None;
    if let ["refuse-after", bytes, times] = segments.as_slice() {
        let mut checksum = Fnv1a64::new();
        let threshold: u64 = bytes.parse().unwrap_or(0);
        while checksum.length < threshold {
            match body.data().await {
                Some(Ok(chunk)) => {
                    checksum.update(&chunk);
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Some(Err(_)) => return,
                None => break,
            }
        }
        if arrival <= times.parse().unwrap_or(0) {
            counters.refused.fetch_add(1, Ordering::SeqCst);
            respond.send_reset(Reason::REFUSED_STREAM);
            return;
        }
        body_read = Some(checksum);
    }
    let faults = shared.config.faults;
    if path == "/refuse" || roll(&shared, faults.refuse) {
        counters.refused.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    }
    if path == "/refuse-after-body" {
        let _ = read_all(body, Duration::ZERO).await;
        counters.refused.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    }

    // From here on the request counts as processed.
    if let Some(id) = request_id.clone() {
        let mut ledger = counters.ledger.lock().expect("ledger lock");
        *ledger.entry(id).or_insert(0) += 1;
    }
    *counters
        .per_connection
        .lock()
        .expect("per-connection lock")
        .entry(connection_id)
        .or_insert(0) += 1;

    if roll(&shared, faults.goaway) {
        let _ = control.send(Command::GoAway);
    }
    if roll(&shared, faults.goaway_error) {
        counters.goaway_errors.fetch_add(1, Ordering::SeqCst);
        let reason = [Reason::INTERNAL_ERROR, Reason::ENHANCE_YOUR_CALM][pick(&shared, 2)];
        let _ = control.send(Command::GoAwayWithError(reason));
    }
    if !shared.config.handler_delay.is_zero() {
        tokio::time::sleep(shared.config.handler_delay).await;
    }
    if roll(&shared, faults.stall) {
        counters.stalls.fetch_add(1, Ordering::SeqCst);
        let stall = [faults.stall_for / 10, faults.stall_for][pick(&shared, 2)];
        if let Some(id) = &request_id {
            let mut stalled = counters.stalled.lock().expect("stalled lock");
            stalled.insert(id.clone(), stall);
        }
        tokio::time::sleep(stall).await;
    }
    let read_pause = if roll(&shared, faults.slow_read) {
        counters.slow_reads.fetch_add(1, Ordering::SeqCst);
        SLOW_READ_PAUSE
    } else {
        Duration::ZERO
    };
    if roll(&shared, faults.reset) {
        counters.resets.fetch_add(1, Ordering::SeqCst);
        let _ = drain(body, read_pause).await;
        respond.send_reset([Reason::INTERNAL_ERROR, Reason::CANCEL][pick(&shared, 2)]);
        return;
    }
    if path == "/close" || roll(&shared, faults.close) {
        let _ = control.send(Command::Close);
        // Hold the stream open so the close, not an answer, ends it.
        tokio::time::sleep(Duration::from_secs(5)).await;
        return;
    }

    // A HEAD answer has no content (RFC 9110, 9.3.2): the headers end the stream.
    let head_only = head.method == http::Method::HEAD;
    match segments.as_slice() {
        ["refuse-after", ..] => {
            let mut checksum = body_read.unwrap_or_else(Fnv1a64::new);
            while let Some(chunk) = body.data().await {
                let Ok(chunk) = chunk else { return };
                checksum.update(&chunk);
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let answer = format!("{} {:016x}", checksum.length, checksum.hash);
            send_text(&mut respond, connection_id, head_only, &answer);
        }
        ["delay", ms] => {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = drain(body, read_pause).await;
            send_text(&mut respond, connection_id, head_only, "ok");
        }
        ["echo"] => echo(body, respond, connection_id, false).await,
        ["bidi"] => echo(body, respond, connection_id, true).await,
        ["download", bytes] => {
            let total: u64 = bytes.parse().unwrap_or(0);
            let _ = drain(body, read_pause).await;
            download(respond, connection_id, total).await;
        }
        ["upload"] => {
            let received = read_all(body, read_pause).await.unwrap_or(0);
            send_text(
                &mut respond,
                connection_id,
                head_only,
                &received.to_string(),
            );
        }
        ["headers"] => {
            let _ = drain(body, read_pause).await;
            let mut lines: Vec<String> = head
                .headers
                .iter()
                .map(|(name, value)| {
                    format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))
                })
                .collect();
            lines.sort();
            let pseudo = [
                format!(":scheme: {}", head.uri.scheme_str().unwrap_or("")),
                format!(
                    ":authority: {}",
                    head.uri
                        .authority()
                        .map_or("", |authority| authority.as_str())
                ),
            ];
            lines.splice(0..0, pseudo);
            send_text(&mut respond, connection_id, head_only, &lines.join("\n"));
        }
        ["reset"] => {
            let _ = drain(body, read_pause).await;
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
        _ => {
            let _ = drain(body, read_pause).await;
            send_text(&mut respond, connection_id, head_only, "ok");
        }
    }
}

/// FNV-1a, 64 bit: a checksum for "the same bytes arrived", computed as
/// they stream in.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64 {
    pub hash: u64,
    pub length: u64,
}

impl Fnv1a64 {
    pub fn new() -> Self {
        Fnv1a64 {
            hash: 0xcbf2_9ce4_8422_2325,
            length: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.hash ^= u64::from(*byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.length += bytes.len() as u64;
    }

    /// The answer `/refuse-after` gives for these bytes.
    pub fn answer(bytes: &[u8]) -> String {
        let mut checksum = Fnv1a64::new();
        checksum.update(bytes);
        format!("{} {:016x}", checksum.length, checksum.hash)
    }
}

fn response_head(connection_id: u64) -> Response<()> {
    Response::builder()
        .status(StatusCode::OK)
        .header("x-connection-id", connection_id.to_string())
        .body(())
        .expect("static response head")
}

/// Text answers say their length (so does a HEAD answer, of the body it
/// would have had), as most servers do.
fn send_text(respond: &mut SendResponse<Bytes>, connection_id: u64, head_only: bool, text: &str) {
    let mut head = response_head(connection_id);
    head.headers_mut()
        .insert(http::header::CONTENT_LENGTH, text.len().into());
    if let Ok(mut stream) = respond.send_response(head, head_only) {
        if !head_only {
            let _ = stream.send_data(Bytes::copy_from_slice(text.as_bytes()), true);
        }
    }
}

/// Reads a request body to its end, giving window back (after `pause` per
/// chunk, for a slow reader); returns its length.
async fn read_all(mut body: RecvStream, pause: Duration) -> Result<u64, h2::Error> {
    let mut total = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        total += chunk.len() as u64;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(total)
}

async fn drain(body: RecvStream, pause: Duration) -> Result<u64, h2::Error> {
    if body.is_end_stream() {
        return Ok(0);
    }
    read_all(body, pause).await
}

async fn echo(
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    connection_id: u64,
    wait_for_data: bool,
) {
    let mut first = None;
    if wait_for_data {
        match body.data().await {
            Some(Ok(chunk)) => first = Some(chunk),
            _ => return,
        }
    }
    let Ok(mut send) = respond.send_response(response_head(connection_id), false) else {
        return;
    };
    let mut total = 0u64;
    loop {
        let chunk = match first.take() {
            Some(chunk) => chunk,
            None => match body.data().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(_)) => return,
                None => break,
            },
        };
        let length = chunk.len();
        total += length as u64;
        if !send_flow_controlled(&mut send, chunk).await {
            return;
        }
        // Only now that the echo went out: the client's window follows our pace.
        let _ = body.flow_control().release_capacity(length);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-echo-bytes", total.into());
    let _ = send.send_trailers(trailers);
}

async fn download(mut respond: SendResponse<Bytes>, connection_id: u64, total: u64) {
    let mut head = response_head(connection_id);
    head.headers_mut()
        .insert(http::header::CONTENT_LENGTH, total.into());
    let Ok(mut send) = respond.send_response(head, total == 0) else {
        return;
    };
    let block = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut left = total;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        if !send_flow_controlled(&mut send, block.slice(..take)).await {
            return;
        }
        left -= take as u64;
    }
    let _ = send.send_data(Bytes::new(), true);
}

async fn send_flow_controlled(send: &mut h2::SendStream<Bytes>, mut data: Bytes) -> bool {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            _ => return false,
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        if send.send_data(chunk, false).is_err() {
            return false;
        }
    }
    true
}
