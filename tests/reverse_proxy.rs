//! The axum reverse proxy of `examples/reverse_proxy`, driven by hyper-util's
//! client in front of the HTTP/2 test server: streaming both ways, hop-by-hop
//! headers, and pool errors as gateway statuses.

#[path = "../examples/reverse_proxy/proxy.rs"]
mod proxy;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxy::Proxy;
use support::{ServerConfig, TestServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Serves the proxy's router on a loopback port until the test ends.
async fn serve(proxy: Proxy) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the proxy");
    let addr = listener.local_addr().expect("listener has an address");
    tokio::spawn(async move { axum::serve(listener, proxy.router()).await });
    addr
}

fn client<B>(http2: bool) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

fn upstream_uri(server: &TestServer) -> http::Uri {
    format!("http://{}", server.addr())
        .parse()
        .expect("a valid origin")
}

fn closed_port_uri() -> http::Uri {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("listener has an address");
    drop(listener);
    format!("http://{addr}").parse().expect("a valid origin")
}

/// A GET through the proxy; returns the status and the body as text.
async fn get_text(proxy: SocketAddr, path: &str) -> (StatusCode, String) {
    let response = client::<Empty<Bytes>>(false)
        .get(
            format!("http://{proxy}{path}")
                .parse()
                .expect("a valid URI"),
        )
        .await
        .expect("the proxy answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Starts a slow request through `pool` and waits until the pool's stats
/// show it as `counted` (in flight, or waiting for a stream slot).
async fn slow_request(
    pool: &h2pool::Pool,
    server: &TestServer,
    counted: impl Fn(&h2pool::OriginStats) -> bool,
) -> tokio::task::JoinHandle<()> {
    use tower::ServiceExt;
    let request = support::get(server.url("/delay/30000"));
    let sender = pool.clone();
    let call = tokio::spawn(async move {
        let _ = sender.oneshot(request).await;
    });
    assert!(
        support::eventually(Duration::from_secs(10), || counted(&pool.stats().total())).await,
        "the slow request shows in the pool's stats: {:?}",
        pool.stats().total()
    );
    call
}

#[tokio::test]
async fn request_and_response_bodies_stream_through_the_proxy_chunk_by_chunk() {
    let upstream = TestServer::start(ServerConfig::default()).await;
    let proxy = serve(Proxy::new(h2pool::Pool::new(), upstream_uri(&upstream))).await;

    let (sender, chunks) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(ReceiverStream::new(chunks));
    let request = Request::post(format!("http://{proxy}/echo"))
        .body(body)
        .expect("a valid request");
    let response = client(true)
        .request(request)
        .await
        .expect("response headers before the request body ends");
    assert_eq!(response.status(), StatusCode::OK);
    let mut echo = response.into_body();

    // Lock-step: each chunk comes back before the next is sent, so neither
    // body is buffered whole anywhere on the way.
    let mut total = 0;
    for i in 0..20 {
        let chunk = Bytes::from(format!("chunk {i};"));
        total += chunk.len();
        sender
            .send(Ok(Frame::data(chunk.clone())))
            .await
            .expect("the request body is still being read");
        let mut received = Vec::new();
        while received.len() < chunk.len() {
            let frame = echo
                .frame()
                .await
                .expect("the echo of the chunk")
                .expect("no error");
            received.extend_from_slice(&frame.into_data().expect("a data frame"));
        }
        assert_eq!(received, chunk);
    }
    drop(sender);
    let rest = echo.collect().await.expect("the end of the echo");
    let trailers = rest.trailers().expect("the upstream's trailers passed on");
    assert_eq!(
        trailers.get("x-echo-bytes").map(|v| v.as_bytes()),
        Some(total.to_string().as_bytes())
    );
}

#[tokio::test]
async fn http1_clients_upload_and_download_megabytes_through_the_proxy() {
    let upstream = TestServer::start(ServerConfig::default()).await;
    let proxy = serve(Proxy::new(h2pool::Pool::new(), upstream_uri(&upstream))).await;
    const SIZE: usize = 8 * 1024 * 1024;

    let upload = Request::post(format!("http://{proxy}/upload"))
        .body(Full::new(Bytes::from(vec![7u8; SIZE])))
        .expect("a valid request");
    let response = client(false).request(upload).await.expect("upload");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, SIZE.to_string().as_bytes());

    let (status, body) = get_text(proxy, &format!("/download/{SIZE}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), SIZE);
}

#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let upstream = TestServer::start(ServerConfig::default()).await;
    let proxy = serve(Proxy::new(h2pool::Pool::new(), upstream_uri(&upstream))).await;

    let request = Request::get(format!("http://{proxy}/headers"))
        .header("connection", "keep-alive, x-hop")
        .header("keep-alive", "timeout=5")
        .header("x-hop", "for the proxy only")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-end-to-end", "kept")
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let response = client(false).request(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let seen = String::from_utf8_lossy(&seen).into_owned();

    assert!(seen.contains("x-end-to-end: kept"), "{seen}");
    for name in [
        "connection",
        "keep-alive",
        "x-hop",
        "proxy-authorization",
        "host",
    ] {
        assert!(
            !seen
                .lines()
                .any(|line| line.starts_with(&format!("{name}:"))),
            "{name} reached the upstream:\n{seen}"
        );
    }
}

#[tokio::test]
async fn a_refused_connect_is_a_502_that_says_why() {
    let proxy = serve(Proxy::new(h2pool::Pool::new(), closed_port_uri())).await;

    let (status, body) = get_text(proxy, "/").await;

    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("could not connect"), "{body}");
}

#[tokio::test]
async fn a_connect_timeout_is_a_504() {
    // A network that never answers: the connect neither succeeds nor fails.
    let blackhole = tower::service_fn(|_: http::Uri| {
        std::future::pending::<Result<tokio::net::TcpStream, std::io::Error>>()
    });
    let pool = h2pool::Pool::builder()
        .connector(blackhole)
        .connect_timeout(Duration::from_millis(100))
        .build();
    let proxy = serve(Proxy::new(pool, "http://127.0.0.1:9".parse().expect("uri"))).await;

    let (status, body) = get_text(proxy, "/").await;

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        body.contains("connecting to the server timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn a_full_pending_queue_is_a_503() {
    let upstream = TestServer::start(ServerConfig::default()).await;
    let pool = h2pool::Pool::builder()
        .max_connections_per_origin(1)
        .max_concurrent_streams(Some(1))
        .max_pending_requests(1)
        .build();
    let proxy = serve(Proxy::new(pool.clone(), upstream_uri(&upstream))).await;
    // One request holds the only stream, one waits: the queue is full.
    let busy = slow_request(&pool, &upstream, |s| s.streams_in_flight == 1).await;
    let waiting = slow_request(&pool, &upstream, |s| s.requests_waiting == 1).await;

    let (status, body) = get_text(proxy, "/").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("too many requests"), "{body}");
    busy.abort();
    waiting.abort();
}

#[tokio::test]
async fn a_pending_timeout_is_a_503() {
    let upstream = TestServer::start(ServerConfig::default()).await;
    let pool = h2pool::Pool::builder()
        .max_connections_per_origin(1)
        .max_concurrent_streams(Some(1))
        .pending_timeout(Some(Duration::from_millis(100)))
        .build();
    let proxy = serve(Proxy::new(pool.clone(), upstream_uri(&upstream))).await;
    let busy = slow_request(&pool, &upstream, |s| s.streams_in_flight == 1).await;

    let (status, body) = get_text(proxy, "/").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no stream slot became free"), "{body}");
    busy.abort();
}

#[tokio::test]
async fn an_upstream_slower_than_the_proxy_timeout_is_a_504_and_the_proxy_carries_on() {
    let upstream = TestServer::start(ServerConfig::default()).await;
    let proxy = Proxy::new(h2pool::Pool::new(), upstream_uri(&upstream))
        .timeout(Duration::from_millis(200));
    let proxy = serve(proxy).await;

    let (status, body) = get_text(proxy, "/delay/30000").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.contains("no response within"), "{body}");

    let (status, body) = get_text(proxy, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
}
