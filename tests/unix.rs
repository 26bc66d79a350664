//! The pool over a Unix domain socket: `UnixConnector` with a real h2
//! server on a `UnixListener` in a temporary directory.
#![cfg(unix)]

mod support;

use std::sync::atomic::Ordering;

use h2pool::connector::UnixConnector;
use h2pool::{ErrorKind, Pool};
use support::{body_bytes, get, ServerConfig, TestServer};
use tokio::net::UnixListener;
use tower::ServiceExt;

struct UnixServer {
    server: TestServer,
    // Removes the socket's directory when the test ends.
    _dir: tempfile::TempDir,
    connector: UnixConnector,
}

fn unix_server(config: ServerConfig) -> UnixServer {
    let dir = tempfile::tempdir().expect("a temporary directory for the socket");
    let path = dir.path().join("h2.sock");
    let listener =
        UnixListener::bind(&path).expect("bind a Unix socket in the temporary directory");
    UnixServer {
        server: TestServer::start_unix(listener, config),
        _dir: dir,
        connector: UnixConnector::new(path),
    }
}

#[tokio::test]
async fn concurrent_requests_share_one_connection_over_the_socket() {
    support::init_tracing();
    let unix = unix_server(ServerConfig::default());
    let pool = Pool::builder().connector(unix.connector.clone()).build();

    let requests = (0..32).map(|i| {
        let pool = pool.clone();
        async move {
            let response = pool
                .oneshot(get(format!("http://localhost/delay/{}", i % 4)))
                .await?;
            body_bytes(response).await
        }
    });
    for body in futures_util::future::join_all(requests).await {
        assert_eq!(body.expect("request over the Unix socket"), "ok");
    }

    let counters = unix.server.counters();
    assert_eq!(counters.requests.load(Ordering::SeqCst), 32);
    assert_eq!(unix.server.connections_accepted(), 1);
    let stats = pool.stats();
    let origin = stats
        .origin("http://localhost")
        .expect("the pool keys the socket's connections by the URI's origin");
    assert_eq!(origin.connections_opened, 1);
}

#[tokio::test]
async fn a_request_body_streams_both_ways_over_the_socket() {
    let unix = unix_server(ServerConfig::default());
    let pool = Pool::builder().connector(unix.connector.clone()).build();
    let payload = bytes::Bytes::from(vec![b'u'; 3 * 1024 * 1024]);
    let request = http::Request::post("http://localhost/echo")
        .body(http_body_util::Full::new(payload.clone()))
        .expect("valid request");

    let response = pool.oneshot(request).await.expect("echo over the socket");
    assert_eq!(body_bytes(response).await.expect("echoed body"), payload);
}

#[tokio::test]
async fn every_authority_reaches_the_one_socket_on_connections_of_its_own() {
    let unix = unix_server(ServerConfig::default());
    let pool = Pool::builder().connector(unix.connector.clone()).build();

    for authority in ["localhost", "api.internal:8080"] {
        let response = pool
            .clone()
            .oneshot(get(format!("http://{authority}/")))
            .await
            .unwrap_or_else(|error| panic!("request to {authority} over the socket: {error}"));
        assert_eq!(body_bytes(response).await.expect("body"), "ok");
    }

    assert_eq!(unix.server.connections_accepted(), 2);
    let stats = pool.stats();
    assert!(stats.origin("http://localhost").is_some());
    assert!(stats.origin("http://api.internal:8080").is_some());
}

#[tokio::test]
async fn https_is_refused_by_the_unix_connector_without_connecting() {
    let unix = unix_server(ServerConfig::default());
    let pool = Pool::builder().connector(unix.connector.clone()).build();

    let error = pool
        .oneshot(get("https://localhost/".to_owned()))
        .await
        .expect_err("the Unix connector speaks cleartext HTTP/2 only");
    assert_eq!(error.kind(), ErrorKind::UnsupportedScheme);
    assert!(error.is_never_sent());
    assert_eq!(unix.server.connections_accepted(), 0);
}

#[tokio::test]
async fn a_missing_socket_fails_with_a_connect_error_that_names_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("nobody-listens.sock");
    let pool = Pool::builder().connector(UnixConnector::new(&path)).build();

    let error = pool
        .oneshot(get("http://localhost/".to_owned()))
        .await
        .expect_err("no server on that socket");
    assert_eq!(error.kind(), ErrorKind::Connect);
    let cause = std::error::Error::source(&error)
        .expect("the connector's error is kept as the source")
        .to_string();
    assert!(cause.contains(&path.display().to_string()), "{cause}");
}
