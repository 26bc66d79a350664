//! How the pool spreads requests over connections.

mod support;

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2pool::{ErrorKind, Pool};
use http_body_util::Empty;
use support::{body_bytes, get, ServerConfig, TestServer};
use tower::{Service, ServiceExt};

async fn run_concurrently(
    pool: &Pool,
    server: &TestServer,
    path: &str,
    count: usize,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let pool = pool.clone();
        let request = get(server.url(path));
        tasks.push(tokio::spawn(async move {
            let response = pool.oneshot(request).await?;
            let connection = response.headers()["x-connection-id"]
                .to_str()
                .unwrap_or("")
                .to_owned();
            body_bytes(response).await?;
            Ok::<_, h2pool::Error>(connection)
        }));
    }
    let mut connections = Vec::new();
    for task in tasks {
        connections.push(task.await.expect("task").expect("request succeeds"));
    }
    connections
}

#[tokio::test]
async fn sixty_four_slow_requests_open_exactly_as_many_connections_as_the_stream_limit_needs() {
    support::init_tracing();
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(8),
        handler_delay: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder().max_connections_per_origin(16).build();

    let served_by = run_concurrently(&pool, &server, "/", 64).await;

    assert_eq!(served_by.len(), 64);
    assert_eq!(server.connections_accepted(), 8);
    // Never past the server's limit: h2's server refuses a stream over it
    // (REFUSED_STREAM), which the replay layer would have replayed.
    assert_eq!(pool.stats().replay.replays(), 0);
    let stats = pool.stats().total();
    assert_eq!(stats.connections_opened, 8);
    assert_eq!(stats.requests, 64);
    assert_eq!(stats.errors_total(), 0);
}

#[tokio::test]
async fn our_own_stream_cap_spreads_load_over_connections_to_a_server_with_no_limit() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: None,
        handler_delay: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder()
        .max_concurrent_streams(Some(8))
        .max_connections_per_origin(16)
        .build();

    run_concurrently(&pool, &server, "/", 64).await;

    // Uncapped, one connection would carry all 64.
    assert_eq!(server.connections_accepted(), 8);
    let per_connection = server
        .counters()
        .per_connection
        .lock()
        .expect("per-connection lock")
        .clone();
    assert_eq!(per_connection.len(), 8, "{per_connection:?}");
    assert!(
        per_connection.values().all(|&served| served == 8),
        "{per_connection:?}"
    );
}

#[tokio::test]
async fn with_two_connections_allowed_the_rest_queue_and_all_succeed() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(8),
        handler_delay: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder().max_connections_per_origin(2).build();

    let served_by = run_concurrently(&pool, &server, "/", 64).await;

    assert_eq!(served_by.len(), 64);
    assert_eq!(server.connections_accepted(), 2);
    // Never more streams at once than two connections of eight allow.
    assert!(server.counters().max_streams_active.load(Ordering::SeqCst) <= 16);
}

#[tokio::test]
async fn each_request_goes_to_the_least_loaded_connection() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(4),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder().max_connections_per_origin(2).build();
    // Fill both connections, so both exist.
    run_concurrently(&pool, &server, "/delay/200", 8).await;
    assert_eq!(server.connections_accepted(), 2);

    // One slow request loads one connection; the next must go to the other.
    let slow = tokio::spawn({
        let pool = pool.clone();
        let request = get(server.url("/delay/500"));
        async move { pool.oneshot(request).await }
    });
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .streams_in_flight
            == 1)
        .await
    );
    let quick = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("quick request");
    let quick_connection = quick.headers()["x-connection-id"].clone();
    let slow = slow.await.expect("task").expect("slow request");
    assert_ne!(slow.headers()["x-connection-id"], quick_connection);
}

#[tokio::test]
async fn origin_service_is_pending_while_every_slot_is_taken_and_ready_when_one_frees() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(2),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder().max_connections_per_origin(1).build();
    let origin = pool
        .origin(server.url("/").parse().unwrap())
        .expect("origin");

    let mut first = origin.clone();
    let mut second = origin.clone();
    let first_response = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut first)
        .await
        .unwrap()
        .call(get("/delay/300".into()));
    let second_response = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut second)
        .await
        .unwrap()
        .call(get("/delay/300".into()));

    let mut third = origin.clone();
    let readiness = poll_fn(|cx| {
        Poll::Ready(Service::<http::Request<Empty<Bytes>>>::poll_ready(
            &mut third, cx,
        ))
    })
    .await;
    assert!(
        readiness.is_pending(),
        "no slot may be had while both are taken"
    );

    let first_response = first_response.await.expect("first");
    body_bytes(first_response).await.expect("first body");
    tokio::time::timeout(
        Duration::from_secs(5),
        ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut third),
    )
    .await
    .expect("a slot frees when the first response ends")
    .expect("ready");
    // Path-only URIs are pointed at the origin, as tonic sends them.
    let third_response = third.call(get("/".into())).await.expect("third");
    assert_eq!(body_bytes(third_response).await.unwrap(), "ok");
    second_response.await.expect("second");
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn one_pool_serves_many_origins_and_reports_each() {
    let first = TestServer::start(ServerConfig::default()).await;
    let second = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    for server in [&first, &second, &first] {
        let response = pool
            .clone()
            .oneshot(get(server.url("/")))
            .await
            .expect("response");
        body_bytes(response).await.expect("body");
    }
    let stats = pool.stats();
    assert_eq!(stats.origins.len(), 2);
    let first_stats = stats
        .origin(&format!("http://{}", first.addr()))
        .expect("first origin");
    assert_eq!(first_stats.requests, 2);
    assert_eq!(first_stats.connections_open, 1);
    assert_eq!(stats.total().requests, 3);
}

#[tokio::test]
async fn one_pool_handle_alternating_origins_sends_each_request_to_its_own() {
    // The same handle, not clones: it remembers the last origin it used,
    // and must not send to it a request for another.
    let first = TestServer::start(ServerConfig::default()).await;
    let second = TestServer::start(ServerConfig::default()).await;
    let mut pool = Pool::new();
    for server in [&first, &second, &first, &second, &second] {
        let response = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut pool)
            .await
            .expect("the pool is always ready")
            .call(get(server.url("/")))
            .await
            .expect("response");
        body_bytes(response).await.expect("body");
    }
    let requests = |server: &TestServer| server.counters().requests.load(Ordering::SeqCst);
    assert_eq!((requests(&first), requests(&second)), (2, 3));
}

#[test]
fn pool_and_origin_service_are_clone_send_sync_and_errors_box() {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn boxable<E: Into<h2pool::BoxError>>() {}
    clone_send_sync::<Pool>();
    clone_send_sync::<h2pool::OriginService>();
    boxable::<h2pool::Error>();
}

#[tokio::test]
async fn an_origin_nothing_uses_any_more_is_forgotten_when_a_new_one_comes() {
    let first = TestServer::start(ServerConfig::default()).await;
    let second = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .build();
    let response = pool
        .clone()
        .oneshot(get(first.url("/")))
        .await
        .expect("first origin");
    body_bytes(response).await.expect("body");
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .connections_open
            == 0)
        .await,
        "the idle connection closes"
    );

    let response = pool
        .clone()
        .oneshot(get(second.url("/")))
        .await
        .expect("second origin");
    body_bytes(response).await.expect("body");
    let stats = pool.stats();
    let origins: Vec<&str> = stats.origins.iter().map(|o| o.origin.as_str()).collect();
    assert_eq!(origins, [format!("http://{}", second.addr())]);

    // A forgotten origin is simply made again when it is needed.
    let response = pool
        .clone()
        .oneshot(get(first.url("/")))
        .await
        .expect("first origin again");
    assert_eq!(body_bytes(response).await.expect("body"), "ok");
}

/// Requests queued behind a one-stream connection, from both worker
/// threads at once: each freed slot must wake a waiting request, even when
/// it frees while that request is still registering (a lost wake-up hangs
/// the run, which the timeout turns into a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_queued_for_a_single_stream_slot_is_woken_in_turn() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(1),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder().max_connections_per_origin(1).build();
    let url = server.url("/");

    let failures = tokio::time::timeout(
        Duration::from_secs(60),
        support::load(&pool, &url, 2_000, 16, |_| {}),
    )
    .await
    .expect("every queued request is woken and answered");

    assert!(failures.is_empty(), "failures: {failures:?}");
    assert_eq!(server.connections_accepted(), 1);
    assert!(server.counters().max_streams_active.load(Ordering::SeqCst) <= 1);
}

/// The same on a connection outside any pool: clones wait in `poll_ready`
/// for the one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_one_stream_connection_take_turns_without_a_lost_wake_up() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(1),
        ..ServerConfig::default()
    })
    .await;
    let connection = support::bare_connection(&server).await;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut connection = connection.clone();
        let url = server.url("/");
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let response = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut connection)
                    .await?
                    .call(get(url.clone()))
                    .await?;
                body_bytes(response).await?;
            }
            Ok::<_, h2pool::Error>(())
        }));
    }
    let all = futures_util::future::join_all(tasks);
    let outcomes = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every clone gets its turns");

    for outcome in outcomes {
        outcome.expect("task").expect("request succeeds");
    }
    assert!(server.counters().max_streams_active.load(Ordering::SeqCst) <= 1);
}

/// Thread ids of the panics seen anywhere in this test binary; a test on a
/// current-thread runtime looks for its own thread, where its spawned
/// tasks (which tokio catches the panics of) run too.
fn panicked_threads() -> &'static std::sync::Mutex<Vec<std::thread::ThreadId>> {
    static PANICKED: std::sync::OnceLock<std::sync::Mutex<Vec<std::thread::ThreadId>>> =
        std::sync::OnceLock::new();
    PANICKED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut threads) = panicked_threads().lock() {
                threads.push(std::thread::current().id());
            }
            previous(info);
        }));
        std::sync::Mutex::new(Vec::new())
    })
}

#[tokio::test]
async fn connections_to_a_server_with_no_stream_limit_retire_while_busy_without_a_panic() {
    // A server that sets no SETTINGS_MAX_CONCURRENT_STREAMS gives each
    // connection usize::MAX free slots. A burst of 250 on a new pool opens
    // three connections at once (the pool guesses 100 streams each before
    // SETTINGS arrive); each retires at 100 requests with the others open
    // and busy, and the pool looks at the slots left. Summed, two such
    // connections overflowed, which panicked in debug builds.
    panicked_threads();
    let server = TestServer::start(ServerConfig {
        handler_delay: Duration::from_millis(20),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::builder()
        .max_requests_per_connection(Some(100))
        .build();

    let failures = support::load(&pool, &server.url("/"), 1_000, 250, |_| {}).await;

    assert!(failures.is_empty(), "failures: {failures:?}");
    let opened = pool.stats().total().connections_opened;
    assert!(
        opened >= 10,
        "1000 requests at 100 per connection took {opened} connections"
    );
    let this_thread = std::thread::current().id();
    let panics = panicked_threads()
        .lock()
        .map(|threads| threads.iter().filter(|&&id| id == this_thread).count())
        .unwrap_or(0);
    assert_eq!(panics, 0, "the pool's tasks panicked");
}

/// A pool used from a runtime that is shutting down: tokio drops the
/// connect task without ever polling it. The origin must count that
/// connect as failed, or it would wait for it forever, and so would
/// every request to the origin.
#[test]
fn a_connect_task_the_runtime_drops_unpolled_fails_the_request_instead_of_stalling_it() {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let handle = runtime.handle().clone();
        drop(runtime);
        let _entered = handle.enter();
        let pool = Pool::builder().pending_timeout(None).build();
        let request = get("http://127.0.0.1:9/".to_owned());
        let _ = done.send(futures_util::FutureExt::now_or_never(pool.oneshot(request)));
    });
    let outcome = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("the request ended");
    let error = outcome
        .expect("the first poll ends the request")
        .expect_err("no connection could start");
    assert_eq!(error.kind(), h2pool::ErrorKind::Connect);
    assert!(
        error.to_string().contains("shutting down"),
        "the error says why: {error}"
    );
}

/// A future made where no runtime is current, and awaited on one (as
/// `block_on` callers do): the task that sends the request body goes to the
/// connection's runtime rather than panicking for want of a current one.
#[test]
fn a_request_with_a_body_sent_from_outside_the_runtime_goes_out() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(TestServer::start(ServerConfig::default()));
    let mut pool = Pool::new();
    // A connection first, so the next call sends at once, from `call`.
    let warm = runtime.block_on(pool.clone().oneshot(get(server.url("/"))));
    assert!(warm.is_ok(), "{warm:?}");

    let request = http::Request::post(server.url("/upload"))
        .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
        .expect("valid request");
    let ready = futures_util::FutureExt::now_or_never(poll_fn(|cx| {
        Service::<http::Request<http_body_util::Full<Bytes>>>::poll_ready(&mut pool, cx)
    }));
    assert!(matches!(ready, Some(Ok(()))), "a pool is always ready");
    let response = pool.call(request);
    let length = runtime.block_on(async {
        body_bytes(response.await.expect("response"))
            .await
            .expect("body")
    });
    assert_eq!(length, "5");
}

/// A request that names another origin goes to the service's own, with the
/// origin's scheme and authority, as tonic's `Channel` sends it (a proxy
/// forwarding a request addressed to itself relies on this).
#[tokio::test]
async fn an_origin_service_points_a_request_for_another_origin_at_its_own() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let origin = pool
        .origin(server.url("/").parse().expect("a valid origin"))
        .expect("origin");

    let response = origin
        .oneshot(get("http://elsewhere.invalid:1/headers".to_owned()))
        .await
        .expect("response");
    let seen = String::from_utf8(body_bytes(response).await.expect("body").to_vec()).expect("text");

    let authority = format!(":authority: {}", server.addr());
    assert!(seen.lines().any(|line| line == authority), "{seen}");
    assert!(seen.lines().any(|line| line == ":scheme: http"), "{seen}");
}

#[tokio::test]
async fn an_origin_services_failed_connect_counts_as_a_request_and_an_error() {
    // As the keyed pool counts them: stats never show more errors than
    // requests.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("its address");
    drop(listener);
    let pool = Pool::new();
    let origin = pool
        .origin(format!("http://{addr}").parse().expect("a URI"))
        .expect("an origin");
    let error = origin
        .oneshot(get(format!("http://{addr}/")))
        .await
        .expect_err("nothing listens");
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let stats = pool.stats().total();
    assert_eq!(stats.errors_of(ErrorKind::Connect), 1);
    assert_eq!(stats.requests, 1);
}
