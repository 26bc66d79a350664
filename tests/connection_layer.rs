//! A user's own per-connection layer, stacked by the pool on every
//! connection it makes.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::join_all;
use h2pool::connection::HasHandle;
use h2pool::pool::{LayeredConnection, RequestBody};
use h2pool::{ErrorKind, Pool};
use http::Request;
use support::{body_bytes, get, ServerConfig, TestServer};
use tower::limit::ConcurrencyLimitLayer;
use tower::util::MapRequestLayer;
use tower::{Layer, Service, ServiceExt};

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

/// A per-connection layer whose service refuses every request in `poll_ready`.
#[derive(Clone)]
struct ClosedForMaintenance;

impl<S: Clone> Layer<S> for ClosedForMaintenance {
    type Service = RefusingService<S>;

    fn layer(&self, inner: S) -> RefusingService<S> {
        RefusingService(inner)
    }
}

#[derive(Clone)]
struct RefusingService<S>(S);

impl<S> tower::Service<Request<RequestBody>> for RefusingService<S>
where
    S: tower::Service<Request<RequestBody>>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures_util::future::Ready<Result<S::Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tower::BoxError>> {
        std::task::Poll::Ready(Err("closed for maintenance".into()))
    }

    fn call(&mut self, _request: Request<RequestBody>) -> Self::Future {
        futures_util::future::ready(Err("called without readiness".into()))
    }
}

#[tokio::test]
async fn a_layer_that_fails_readiness_fails_the_request_at_once_with_its_error() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .pending_timeout(Some(Duration::from_secs(30)))
        .connection_layer(ClosedForMaintenance)
        .build();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        pool.clone().oneshot(get(server.url("/"))),
    )
    .await
    .expect("the request ends without waiting out the pending timeout")
    .expect_err("the layer refuses it");
    assert_eq!(error.kind(), ErrorKind::ConnectionLayer);
    assert!(
        error.to_string().contains("per-connection layer"),
        "{error}"
    );
    let source = std::error::Error::source(&error).expect("the layer's error");
    assert_eq!(source.to_string(), "closed for maintenance");
}

/// A per-connection layer that closes its connection as a request arrives.
#[derive(Clone)]
struct ClosingLayer;

impl Layer<LayeredConnection> for ClosingLayer {
    type Service = Closing;

    fn layer(&self, connection: LayeredConnection) -> Closing {
        Closing(connection)
    }
}

#[derive(Clone)]
struct Closing(LayeredConnection);

impl tower::Service<Request<RequestBody>> for Closing {
    type Response = <LayeredConnection as tower::Service<Request<RequestBody>>>::Response;
    type Error = <LayeredConnection as tower::Service<Request<RequestBody>>>::Error;
    type Future = <LayeredConnection as tower::Service<Request<RequestBody>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<Request<RequestBody>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        self.0
            .handle()
            .mark_closed(ErrorKind::ConnectionClosed, "closed by the test's layer");
        self.0.call(request)
    }
}

#[tokio::test]
async fn a_request_that_never_left_comes_back_with_its_body_boxed_for_the_layer() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .connection_layer(ClosingLayer)
        .replay(None)
        .build();
    let mut error = pool
        .oneshot(get(server.url("/")))
        .await
        .expect_err("the layer closed the connection");
    assert!(error.is_never_sent(), "{error:?}");
    let request = error
        .take_request::<Request<RequestBody>>()
        .expect("the request, its body boxed");
    assert_eq!(request.uri().path(), "/");
    assert_eq!(server.counters().requests.load(Ordering::SeqCst), 0);
}

/// A user's per-connection layer that is not ready while closed (a circuit
/// breaker, an admission check), whatever the connection's stream slots.
#[derive(Clone, Default)]
struct Gate {
    closed: Arc<AtomicBool>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

#[derive(Clone)]
struct Gated<S> {
    gate: Gate,
    inner: S,
}

impl<S> Layer<S> for Gate {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            gate: self.clone(),
            inner,
        }
    }
}

impl<S: Service<Request<RequestBody>>> Service<Request<RequestBody>> for Gated<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.gate.closed.load(Ordering::SeqCst) {
            *self.gate.waiting.lock().unwrap() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> S::Future {
        self.inner.call(request)
    }
}

/// Lets every spawned task run as far as it can.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A request that waits both for a slot and on a connection it holds (whose
/// layer was not ready) is registered twice for the origin's slot wake-ups.
/// When two slots free at once, both wake-ups may go to it; it takes one
/// slot and must pass the other wake-up on to the next waiter, which would
/// otherwise sleep with a slot free (here, with no pending timeout, for
/// ever).
#[tokio::test]
async fn a_waiter_woken_twice_for_one_slot_passes_the_other_wake_up_on() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(2),
        ..ServerConfig::default()
    })
    .await;
    let gate = Gate::default();
    let pool = Pool::builder()
        .max_connections_per_origin(1)
        .pending_timeout(None)
        .connection_layer(gate.clone())
        .build();
    let response = pool.clone().oneshot(get(server.url("/"))).await;
    body_bytes(response.unwrap()).await.unwrap();
    // Slot 1: a download whose body is held unread.
    let first = pool
        .clone()
        .oneshot(get(server.url("/download/1000000")))
        .await;

    // The twice-registered request: it finds the free slot, but the gate is
    // closed, so it holds that connection and waits on it.
    gate.closed.store(true, Ordering::SeqCst);
    let held = tokio::spawn(pool.clone().oneshot(get(server.url("/delay/10000"))));
    settle().await;
    gate.closed.store(false, Ordering::SeqCst);
    // Slot 2 goes to another download; then the gate wakes the held request,
    // whose connection now has no slot: it waits for one there too.
    let second = pool
        .clone()
        .oneshot(get(server.url("/download/1000000")))
        .await;
    let wake = gate.waiting.lock().unwrap().take();
    wake.expect("the held request waits on the gate").wake();
    settle().await;

    let next = tokio::spawn(pool.clone().oneshot(get(server.url("/"))));
    settle().await;
    assert_eq!(pool.stats().total().requests_waiting, 2);
    drop((first, second));

    let next = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the next request gets the second free slot")
        .unwrap();
    assert_eq!(body_bytes(next.unwrap()).await.unwrap(), "ok");
    held.abort();
}
