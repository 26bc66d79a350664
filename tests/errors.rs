//! Bad input and unreachable servers give clear, typed errors; nothing panics.

mod support;

use std::time::Duration;

use bytes::Bytes;
use h2pool::{Delivery, ErrorKind, Pool};
use http_body_util::Empty;
use tower::ServiceExt;

async fn get(pool: &Pool, uri: &str) -> Result<http::Response<h2pool::Body>, h2pool::Error> {
    let request = http::Request::get(uri)
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    pool.clone().oneshot(request).await
}

#[tokio::test]
async fn a_relative_uri_is_an_invalid_uri_error_that_hands_the_request_back() {
    let pool = Pool::new();
    let mut error = get(&pool, "/just/a/path").await.expect_err("no origin");
    assert_eq!(error.kind(), ErrorKind::InvalidUri);
    assert_eq!(error.delivery(), Delivery::NeverSent);
    assert!(error.to_string().contains("scheme"), "{error}");
    let request = error
        .take_request::<http::Request<Empty<Bytes>>>()
        .expect("request returned");
    assert_eq!(request.uri().path(), "/just/a/path");
}

#[tokio::test]
async fn an_unsupported_scheme_says_so() {
    let pool = Pool::new();
    // With the `rustls` feature, `Pool::new()` serves https too.
    let uris: &[&str] = if cfg!(feature = "rustls") {
        &["ftp://127.0.0.1:21/file"]
    } else {
        &["ftp://127.0.0.1:21/file", "https://127.0.0.1:1/"]
    };
    for uri in uris {
        let error = get(&pool, uri).await.expect_err("not served");
        assert_eq!(error.kind(), ErrorKind::UnsupportedScheme, "{uri}: {error}");
        assert!(error.is_never_sent());
    }
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_with_the_io_error_as_source() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = Pool::new();
    let error = get(&pool, &format!("http://127.0.0.1:{port}/"))
        .await
        .expect_err("nothing listens");
    assert_eq!(error.kind(), ErrorKind::Connect);
    assert!(error.is_connect() && error.is_safe_to_replay());
    let mut source = std::error::Error::source(&error);
    let mut found_io = false;
    while let Some(cause) = source {
        found_io |= cause.downcast_ref::<std::io::Error>().is_some();
        source = cause.source();
    }
    assert!(
        found_io,
        "the io::Error stays in the source chain: {error:?}"
    );
    assert_eq!(pool.stats().total().connect_failures, 1);
    assert_eq!(pool.stats().total().errors_of(ErrorKind::Connect), 1);
}

#[tokio::test]
async fn a_server_that_does_not_speak_http2_fails_the_handshake_clearly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let pool = Pool::builder()
        .connect_timeout(Duration::from_secs(5))
        .build();
    let error = get(&pool, &format!("http://{addr}/"))
        .await
        .expect_err("not HTTP/2");
    assert_eq!(error.kind(), ErrorKind::Handshake, "{error:?}");
    assert!(error.to_string().contains("HTTP/2"), "{error}");
}

#[tokio::test]
async fn a_silent_server_times_out_the_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let pool = Pool::builder()
        .http2(
            h2pool::connection::Http2Settings::default()
                .handshake_timeout(Duration::from_millis(200)),
        )
        .build();
    let error = get(&pool, &format!("http://{addr}/"))
        .await
        .expect_err("no SETTINGS");
    assert_eq!(error.kind(), ErrorKind::Handshake, "{error:?}");
}

#[tokio::test]
async fn pending_limit_and_pending_timeout_fail_waiting_requests_clearly() {
    let server = support::TestServer::start(support::ServerConfig {
        max_concurrent_streams: Some(1),
        ..Default::default()
    })
    .await;
    let pool = Pool::builder()
        .max_connections_per_origin(1)
        .max_pending_requests(1)
        .pending_timeout(Some(Duration::from_millis(300)))
        .build();
    let busy = tokio::spawn({
        let pool = pool.clone();
        let url = server.url("/delay/2000");
        async move { get(&pool, &url).await }
    });
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .streams_in_flight
            == 1)
        .await
    );
    let waiting = tokio::spawn({
        let pool = pool.clone();
        let url = server.url("/");
        async move { get(&pool, &url).await }
    });
    support::wait_for_one_waiting_request(&pool).await;

    let over_limit = get(&pool, &server.url("/"))
        .await
        .expect_err("no room to wait");
    assert_eq!(over_limit.kind(), ErrorKind::PendingLimit);
    let timed_out = waiting.await.unwrap().expect_err("waited too long");
    assert_eq!(timed_out.kind(), ErrorKind::PendingTimeout);
    assert!(timed_out.is_never_sent() && timed_out.is_timeout());
    busy.await
        .unwrap()
        .expect("the busy request itself succeeds");
}

#[tokio::test]
async fn origin_service_rejects_a_uri_without_authority() {
    let pool = Pool::new();
    let error = pool
        .origin("/relative".parse().unwrap())
        .expect_err("no origin");
    assert_eq!(error.kind(), ErrorKind::InvalidUri);
}
