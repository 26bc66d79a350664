//! Liveness, eviction and connect backoff.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use h2pool::connection::{HasHandle, Phase};
use h2pool::connector::TcpConnector;
use h2pool::readiness::{KeepAlive, Readiness, ReadinessLayer};
use h2pool::{ErrorKind, Pool};
use support::{body_bytes, get, ServerConfig, TestServer};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn a_stalled_server_is_evicted_by_keep_alive_and_its_streams_fail_with_a_timeout() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .keep_alive(Some(KeepAlive::new(
            Duration::from_millis(200),
            Duration::from_millis(300),
        )))
        .build();
    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("first");
    body_bytes(response).await.unwrap();

    let in_flight = tokio::spawn(pool.clone().oneshot(get(server.url("/delay/60000"))));
    support::wait_for_one_active_stream(&server).await;
    server.stall();

    let error = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("evicted within ping interval + timeout, not a minute")
        .expect("task")
        .expect_err("the stream dies with its connection");
    assert_eq!(error.kind(), ErrorKind::KeepAliveTimeout, "{error:?}");
    assert!(error.is_timeout());
    assert_eq!(pool.stats().total().connections_open, 0);

    server.resume();
    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("a new connection");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(server.connections_accepted(), 2);
}

#[tokio::test]
async fn an_abrupt_close_is_noticed_without_waiting_for_a_request() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("first");
    body_bytes(response).await.unwrap();
    assert_eq!(pool.stats().total().connections_open, 1);
    server.close_all();
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .connections_open
            == 0)
        .await
    );
}

#[derive(Clone)]
struct CountingConnector {
    attempts: Arc<AtomicUsize>,
    inner: TcpConnector,
}

impl tower::Service<http::Uri> for CountingConnector {
    type Response = tokio::net::TcpStream;
    type Error = h2pool::BoxError;
    type Future = <TcpConnector as tower::Service<http::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.inner.call(uri)
    }
}

#[tokio::test]
async fn connects_to_a_closed_port_back_off_and_the_pool_recovers_when_the_server_comes_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let attempts = Arc::new(AtomicUsize::new(0));
    let pool = Pool::builder()
        .connector(CountingConnector {
            attempts: attempts.clone(),
            inner: TcpConnector::new(),
        })
        .connect_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .build();

    let mut failures = 0;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let error = pool
            .clone()
            .oneshot(get(format!("http://{addr}/")))
            .await
            .expect_err("nothing listens");
        assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
        assert!(error.to_string().contains("could not connect"), "{error}");
        failures += 1;
    }
    let tried = attempts.load(Ordering::SeqCst);
    eprintln!("{failures} failed requests, {tried} connect attempts in 1.5 s");
    // Waits of 25-50, 50-100, 100-200, then 200-400 ms: at most 11 attempts
    // fit in 1.5 s. Without backoff a refused connect takes microseconds and
    // there would be thousands.
    assert!(tried <= 12, "{tried} connect attempts: no backoff");

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the port again");
    let server = TestServer::start_on(listener, ServerConfig::default());
    let response = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match pool.clone().oneshot(get(server.url("/"))).await {
                Ok(response) => break response,
                Err(error) => assert!(error.is_connect(), "{error:?}"),
            }
        }
    })
    .await
    .expect("the pool recovers by itself");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
}

#[tokio::test]
async fn readiness_layer_on_its_own_rejects_dispatch_after_goaway_and_hands_the_request_back() {
    let server = TestServer::start(ServerConfig::default()).await;
    let connection = support::bare_connection(&server).await;
    let service = ReadinessLayer::new(None).layer(connection);
    let response = service
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("open");
    body_bytes(response).await.unwrap();

    server.goaway_all();
    let mut last = None;
    for _ in 0..50 {
        match service.clone().oneshot(get(server.url("/"))).await {
            Ok(response) => {
                body_bytes(response).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => {
                last = Some(error);
                break;
            }
        }
    }
    let mut error = last.expect("dispatch stops once the GOAWAY is in");
    assert!(error.is_never_sent(), "{error:?}");
    let request = error
        .take_request::<http::Request<http_body_util::Empty<bytes::Bytes>>>()
        .expect("the request is handed back");
    assert_eq!(request.uri().path(), "/");
    assert_ne!(service.handle().phase(), Phase::Open);
}

/// A connection's service that never has a slot: `poll_ready` is Pending.
#[derive(Clone)]
struct NeverReady(h2pool::connection::ConnectionHandle);

impl HasHandle for NeverReady {
    fn handle(&self) -> &h2pool::connection::ConnectionHandle {
        &self.0
    }
}

impl tower::Service<()> for NeverReady {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<(), std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Pending
    }

    fn call(&mut self, _request: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn readiness_is_ready_at_once_for_a_connection_that_is_no_longer_open() {
    // Whatever the service below says: a request must not wait for a slot
    // on a connection that will never give one, but reach its `call`,
    // which turns it away as never sent.
    let server = TestServer::start(ServerConfig::default()).await;
    let connection = support::bare_connection(&server).await;
    let mut service = Readiness::new(NeverReady(connection.handle().clone()));
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(tower::Service::poll_ready(&mut service, &mut cx).is_pending());
    connection
        .handle()
        .start_draining(ErrorKind::GoAway, "the test drains it");
    assert!(matches!(
        tower::Service::poll_ready(&mut service, &mut cx),
        std::task::Poll::Ready(Ok(()))
    ));
}

#[tokio::test]
async fn readiness_layer_keep_alive_retires_a_silent_connection_on_its_own() {
    let server = TestServer::start(ServerConfig::default()).await;
    let connection = support::bare_connection(&server).await;
    let keep_alive =
        KeepAlive::new(Duration::from_millis(100), Duration::from_millis(200)).while_idle(true);
    let service = ReadinessLayer::new(Some(keep_alive)).layer(connection);
    server.stall();
    assert!(
        support::eventually(Duration::from_secs(5), || service.handle().phase()
            == Phase::Closed)
        .await
    );
    let reason = service.handle().close_reason().expect("a reason");
    assert_eq!(reason.kind, ErrorKind::KeepAliveTimeout);
    server.resume();
}

#[tokio::test]
async fn a_connection_the_pool_retires_itself_unanswered_does_not_back_off_the_next_connect() {
    // The connect backoff is for servers that turn connections away. A
    // connection this client retired (here idle after its one request,
    // which the caller gave up on before any answer) is not one: the next
    // request connects at once, not after the backoff (15 s and more here).
    let server = TestServer::start(ServerConfig {
        handler_delay: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .connect_backoff(Duration::from_secs(30), Duration::from_secs(60))
        .build();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        pool.clone().oneshot(get(server.url("/"))),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gives up before the answer");
    let closed = support::eventually(Duration::from_secs(10), || {
        let stats = pool.stats().total();
        stats.connections_open == 0 && stats.connections_draining == 0
    })
    .await;
    assert!(
        closed,
        "the retired connection closes once its stream is reset: {:?}",
        pool.stats()
    );

    let response = tokio::time::timeout(
        Duration::from_secs(10),
        pool.clone().oneshot(get(server.url("/"))),
    )
    .await
    .expect("the next connect is not held back")
    .expect("served");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(server.connections_accepted(), 2);
}
