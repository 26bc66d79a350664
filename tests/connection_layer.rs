//! A user's own per-connection layer, stacked by the pool on every
//! connection it makes.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use h2pool::pool::{LayeredConnection, RequestBody};
use h2pool::{ErrorKind, Pool};
use http::Request;
use support::{body_bytes, get, ServerConfig, TestServer};
use tower::limit::ConcurrencyLimitLayer;
use tower::util::MapRequestLayer;
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn a_concurrency_limit_per_connection_holds_below_the_servers_stream_limit() {
    let server = TestServer::start(ServerConfig {
        handler_delay: Duration::from_millis(50),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder()
        .max_connections_per_origin(1)
        .connection_layer(ConcurrencyLimitLayer::new(2))
        .build();
    let requests = (0..8).map(|_| pool.clone().oneshot(get(server.url("/"))));
    for outcome in join_all(requests).await {
        let response = outcome.expect("served in turn");
        assert_eq!(body_bytes(response).await.expect("body"), "ok");
    }
    let counters = server.counters();
    assert_eq!(counters.max_streams_active.load(Ordering::SeqCst), 2);
    assert_eq!(server.connections_accepted(), 1);
}

/// Counts the connections it wraps, and stamps each request.
#[derive(Clone, Default)]
struct CountingLayer {
    wrapped: Arc<AtomicUsize>,
}

impl Layer<LayeredConnection> for CountingLayer {
    type Service = tower::util::MapRequest<
        LayeredConnection,
        fn(Request<RequestBody>) -> Request<RequestBody>,
    >;

    fn layer(&self, connection: LayeredConnection) -> Self::Service {
        self.wrapped.fetch_add(1, Ordering::SeqCst);
        let stamp: fn(Request<RequestBody>) -> Request<RequestBody> = |mut request| {
            request
                .headers_mut()
                .insert("x-request-id", http::HeaderValue::from_static("stamped"));
            request
        };
        MapRequestLayer::new(stamp).layer(connection)
    }
}

#[tokio::test]
async fn the_layer_wraps_each_new_connection_once_and_sees_every_request() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(2),
        handler_delay: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let layer = CountingLayer::default();
    let pool = Pool::builder().connection_layer(layer.clone()).build();
    let requests = (0..8).map(|_| pool.clone().oneshot(get(server.url("/"))));
    for outcome in join_all(requests).await {
        body_bytes(outcome.expect("served")).await.expect("body");
    }
    let connections = server.connections_accepted();
    assert!(connections >= 2, "the stream limit needed more than one");
    assert_eq!(layer.wrapped.load(Ordering::SeqCst) as u64, connections);
    assert_eq!(server.times_processed("stamped"), 8);
}

#[tokio::test]
async fn an_error_of_the_layers_own_is_a_connection_layer_error() {
    let server = TestServer::start(ServerConfig {
        handler_delay: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder()
        .connection_layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(20)))
        .build();
    let error = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect_err("the layer's timeout fires first");
    assert_eq!(error.kind(), ErrorKind::ConnectionLayer);
    assert!(!error.is_safe_to_replay());
    let source = std::error::Error::source(&error).expect("the layer's error is the source");
    assert!(source.is::<tower::timeout::error::Elapsed>(), "{source:?}");
}
