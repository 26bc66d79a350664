//! Test support: the fault-injecting HTTP/2 server and small helpers.
#![allow(dead_code, unused_imports)]

pub mod apache;
pub mod nginx;
pub mod raw;
pub mod real_server;
pub mod server;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use h2pool::Pool;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use server::{Faults, ServerConfig, TestServer};

/// Reads a response body to its end.
pub async fn body_bytes(response: http::Response<h2pool::Body>) -> Result<Bytes, h2pool::Error> {
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Polls `condition` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Waits (up to 5 s) until `server` runs exactly one stream.
pub async fn wait_for_one_active_stream(server: &TestServer) {
    assert!(
        eventually(Duration::from_secs(5), || server
            .counters()
            .streams_active
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1)
        .await,
        "the server never ran exactly one stream"
    );
}

/// Waits (up to 5 s) until exactly one request waits for a slot in `pool`.
pub async fn wait_for_one_waiting_request(pool: &h2pool::Pool) {
    assert!(
        eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .requests_waiting
            == 1)
        .await,
        "no request ever waited for a slot alone"
    );
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A GET with an `x-request-id`, for the server's ledger.
pub fn get_with_id(url: String, id: &str) -> http::Request<http_body_util::Empty<Bytes>> {
    http::Request::get(url)
        .header("x-request-id", id)
        .body(http_body_util::Empty::new())
        .expect("valid request")
}

/// A plain GET.
pub fn get(url: String) -> http::Request<http_body_util::Empty<Bytes>> {
    http::Request::get(url)
        .body(http_body_util::Empty::new())
        .expect("valid request")
}

/// A bare `Connection` to the test server, outside any pool.
pub async fn bare_connection(server: &TestServer) -> h2pool::connection::Connection {
    bare_connection_to(server.addr()).await
}

/// A bare `Connection` to the server at `addr` (the test server or a raw
/// one), with default settings, outside any pool.
pub async fn bare_connection_to(addr: std::net::SocketAddr) -> h2pool::connection::Connection {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    h2pool::connection::Connection::handshake(tcp, &h2pool::connection::Http2Settings::default())
        .await
        .expect("HTTP/2 handshake with the server")
}

/// Sends `count` GETs at `concurrency` to `url`; each response must pass
/// `check` and have the body "ok". Returns the failures.
pub async fn load(
    pool: &Pool,
    url: &str,
    count: usize,
    concurrency: usize,
    check: fn(&http::Response<h2pool::Body>),
) -> Vec<h2pool::Error> {
    futures_util::stream::iter(0..count)
        .map(|_| {
            let pool = pool.clone();
            let request = get(url.to_owned());
            async move {
                let response = pool.oneshot(request).await?;
                check(&response);
                let body = body_bytes(response).await?;
                assert_eq!(body, "ok");
                Ok::<_, h2pool::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|outcome| async move { outcome.err() })
        .collect()
        .await
}
