//! A minimal in-process HTTP/2 server for the benchmarks, on h2's server side.
//!
//! The test server (`tests/support/server.rs`) keeps a ledger of request ids
//! and per-connection counts behind mutexes and formats an `x-connection-id`
//! header for every answer; all clients pay for that equally, but it is
//! server time that hides the clients' differences. This one does only what
//! a scenario needs (`H2POOL_BENCH_SERVER=test` runs the plain-HTTP
//! scenarios against the test server instead, for comparison).
//!
//! Routes:
//! - `/`: 200 with body `ok`
//! - `/upload`: reads the whole body, answers 200 with no body
//! - `/download/{bytes}`: sends that many bytes, honouring flow control
//! - anything under `/bench.Echo/`: a gRPC unary echo (the framed request
//!   message comes back as the response message, then `grpc-status: 0`)

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS; `None` sets no limit.
    pub max_concurrent_streams: Option<u32>,
    /// Waits this long in every handler before answering.
    pub handler_delay: Duration,
    /// Sends a graceful GOAWAY on a connection once it has accepted this
    /// many streams (deterministic, unlike the test server's random faults).
    pub goaway_every: Option<u64>,
}

/// Windows as large as the clients' defaults (hyper's and h2pool's), so
/// uploads are not throttled by the server.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

static BLOCK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A running server; it stops accepting when dropped (open connections end
/// with the runtime).
pub struct BenchServer {
    addr: std::net::SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl BenchServer {
    pub async fn start(config: Config) -> BenchServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the bench server");
        let addr = listener.local_addr().expect("listener has an address");
        let config = Arc::new(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(tcp, config.clone()));
            }
        });
        BenchServer { addr, accept_task }
    }

    /// `http://127.0.0.1:port`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn serve_connection(tcp: TcpStream, config: Arc<Config>) {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(max) = config.max_concurrent_streams {
        builder.max_concurrent_streams(max);
    }
    let Ok(mut connection) = builder.handshake::<_, Bytes>(tcp).await else {
        return;
    };
    let mut accepted = 0u64;
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(handle(request, respond, config.handler_delay));
        accepted += 1;
        if config.goaway_every == Some(accepted) {
            // h2's two-step graceful shutdown: GOAWAY(2^31-1), PING, then
            // GOAWAY(last id); the connection ends with its last stream.
            connection.graceful_shutdown();
        }
    }
}

async fn handle(request: Request<RecvStream>, mut respond: SendResponse<Bytes>, delay: Duration) {
    let (head, body) = request.into_parts();
    let path = head.uri.path();
    if path.starts_with("/bench.Echo/") {
        return grpc_echo(body, respond).await;
    }
    let download = path
        .strip_prefix("/download/")
        .map(|n| n.parse().unwrap_or(0));
    let upload = path == "/upload";
    let Ok(_) = read_all(body).await else { return };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let ok = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .expect("static response head");
    match download {
        Some(total) => {
            if let Ok(mut send) = respond.send_response(ok, total == 0) {
                send_bytes(&mut send, total).await;
            }
        }
        None if upload => {
            let _ = respond.send_response(ok, true);
        }
        None => {
            if let Ok(mut send) = respond.send_response(ok, false) {
                let _ = send.send_data(Bytes::from_static(b"ok"), true);
            }
        }
    }
}

async fn grpc_echo(mut body: RecvStream, mut respond: SendResponse<Bytes>) {
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let head = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/grpc")
        .body(())
        .expect("static response head");
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let _ = send.send_data(message.freeze(), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

/// Reads a request body to its end, giving the window back as it goes.
async fn read_all(mut body: RecvStream) -> Result<u64, h2::Error> {
    if body.is_end_stream() {
        return Ok(0);
    }
    let mut total = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        total += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(total)
}

/// Sends `total` bytes as fast as the client's window allows, then ends
/// the stream.
async fn send_bytes(send: &mut h2::SendStream<Bytes>, total: u64) {
    let mut left = total;
    while left > 0 {
        let want = left.min(BLOCK.len() as u64) as usize;
        send.reserve_capacity(want);
        let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted.min(want),
            _ => return,
        };
        if granted == 0 {
            continue;
        }
        left -= granted as u64;
        if send
            .send_data(Bytes::from_static(&BLOCK[..granted]), left == 0)
            .is_err()
        {
            return;
        }
    }
}
