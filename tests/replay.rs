//! The replay layer: requests the server provably did not process go again,
//! byte for byte; requests it may have processed do not.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use h2pool::connection::Connection;
use h2pool::replay::{Attempts, ReplayBody, ReplayLayer, TpsBudget};
use h2pool::{Delivery, ErrorKind, Pool};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use support::raw::{code, kind, RawServer};
use support::server::Fnv1a64;
use support::{body_bytes, get_with_id, Faults, ServerConfig, TestServer};
use tower::{Layer, Service, ServiceExt};

type ChunkedBody =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

/// A one-shot body: `bytes` in chunks of `chunk` bytes, from a stream that
/// cannot be rewound.
fn chunked(bytes: &Bytes, chunk: usize) -> ChunkedBody {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = bytes
        .chunks(chunk)
        .map(|part| Ok(Frame::data(bytes.slice_ref(part))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames).boxed())
}

/// Bytes that differ from offset to offset, so a reordered or repeated
/// chunk changes the checksum.
fn patterned(length: usize) -> Bytes {
    (0..length)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn post<B>(url: String, id: &str, body: B) -> Request<B> {
    Request::post(url)
        .header("x-request-id", id)
        .body(body)
        .expect("valid request")
}

#[tokio::test]
async fn a_refused_request_goes_again_until_the_server_takes_it() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let response = pool
        .clone()
        .oneshot(get_with_id(server.url("/refuse-first/2"), "twice"))
        .await
        .expect("the third attempt is taken");
    assert_eq!(Attempts::of(&response), 3);
    assert_eq!(body_bytes(response).await.expect("body"), "ok");
    assert_eq!(server.times_seen("twice"), 3);
    assert_eq!(server.times_processed("twice"), 1);
    let stats = pool.stats().replay;
    assert_eq!(stats.replayed_refused, 2);
    assert_eq!(stats.replays(), 2);
}

#[tokio::test]
async fn a_request_refused_every_time_fails_after_five_attempts() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let error = pool
        .clone()
        .oneshot(get_with_id(server.url("/refuse"), "always"))
        .await
        .expect_err("refused every time");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(error.delivery(), Delivery::Refused);
    assert_eq!(server.counters().refused.load(Ordering::SeqCst), 5);
    let stats = pool.stats().replay;
    assert_eq!(stats.replayed_refused, 4);
    assert_eq!(stats.gave_up_attempts, 1);
}

/// The first replay goes at once; a request refused again waits before
/// each later replay, longer each time: at least half of 40, 80 and 160 ms.
#[tokio::test]
async fn a_request_refused_again_waits_a_growing_backoff_before_each_later_replay() {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let server = RawServer::start({
        let arrivals = arrivals.clone();
        move |mut conn| {
            let arrivals = arrivals.clone();
            async move {
                conn.handshake(&[]).await?;
                loop {
                    let frame = conn.read_frame().await?;
                    if frame.kind == kind::HEADERS {
                        arrivals.lock().unwrap().push(Instant::now());
                        conn.send_rst_stream(frame.stream_id, code::REFUSED_STREAM)
                            .await?;
                    } else {
                        conn.answer_housekeeping(&frame).await?;
                    }
                }
            }
        }
    })
    .await;
    let base = Duration::from_millis(40);
    let pool = Pool::builder()
        .replay(Some(
            ReplayLayer::new().backoff(base, Duration::from_secs(1)),
        ))
        .build();
    let error = pool
        .clone()
        .oneshot(get_with_id(server.url("/"), "always"))
        .await
        .expect_err("refused every time");
    assert_eq!(error.kind(), ErrorKind::Refused);
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 5, "five attempts");
    // Lower bounds only: a loaded machine can only stretch the gaps.
    for (gap, least) in [(2, base / 2), (3, base), (4, base * 2)] {
        let waited = arrivals[gap] - arrivals[gap - 1];
        assert!(
            waited >= least,
            "attempt {} came {waited:?} after the one before; it should have waited {least:?} or more",
            gap + 1
        );
    }
}

#[tokio::test]
async fn a_32_kib_post_refused_after_its_body_went_out_is_replayed_byte_for_byte() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let bytes = patterned(32 * 1024);
    let request = post(
        server.url("/refuse-after/32768/1"),
        "post-32k",
        chunked(&bytes, 4096),
    );
    let response = pool.clone().oneshot(request).await.expect("replayed");
    assert_eq!(Attempts::of(&response), 2);
    let answer = body_bytes(response).await.expect("body");
    assert_eq!(answer, Fnv1a64::answer(&bytes), "the same bytes arrived");
    assert_eq!(server.times_seen("post-32k"), 2);
    assert_eq!(server.times_processed("post-32k"), 1);
}

#[tokio::test]
async fn a_1_mib_post_refused_after_100_kib_fails_as_too_large_to_replay() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let bytes = patterned(1024 * 1024);
    let request = post(
        server.url("/refuse-after/102400/1"),
        "post-1m",
        chunked(&bytes, 16 * 1024),
    );
    let error = pool.clone().oneshot(request).await.expect_err("too large");
    assert_eq!(error.kind(), ErrorKind::BodyTooLargeToReplay);
    assert_eq!(error.delivery(), Delivery::Refused);
    let text = error.to_string();
    assert!(text.contains("replay buffer"), "{text}");
    assert!(
        text.contains("REFUSED_STREAM"),
        "the cause is named: {text}"
    );
    assert_eq!(server.times_seen("post-1m"), 1);
    assert_eq!(server.times_processed("post-1m"), 0);
    assert_eq!(pool.stats().replay.gave_up_body_too_large, 1);
}

#[tokio::test]
async fn a_larger_buffer_limit_replays_the_same_1_mib_post() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .replay(Some(ReplayLayer::new().buffer_limit(2 * 1024 * 1024)))
        .build();
    let bytes = patterned(1024 * 1024);
    let request = post(
        server.url("/refuse-after/102400/1"),
        "post-1m-kept",
        chunked(&bytes, 16 * 1024),
    );
    let response = pool.clone().oneshot(request).await.expect("replayed");
    assert_eq!(
        body_bytes(response).await.expect("body"),
        Fnv1a64::answer(&bytes)
    );
}

/// A connection to `server` that the server has closed, once the client
/// has noticed.
async fn closed_connection(server: &TestServer) -> Connection {
    let closed = support::bare_connection(server).await;
    server.close_all();
    assert!(
        support::eventually(Duration::from_secs(5), || !closed.handle().is_open()).await,
        "the client notices the close"
    );
    closed
}

/// Sends its first request to `first` and every later one to `second`.
#[derive(Clone)]
struct FirstThenSecond {
    first: Connection,
    second: Connection,
    calls: Arc<AtomicUsize>,
}

impl<B> Service<Request<B>> for FirstThenSecond
where
    Connection: Service<Request<B>, Response = Response<h2pool::Body>, Error = h2pool::Error>,
{
    type Response = Response<h2pool::Body>;
    type Error = h2pool::Error;
    type Future = <Connection as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2pool::Error>> {
        match self.calls.load(Ordering::SeqCst) {
            0 => Service::<Request<B>>::poll_ready(&mut self.first, cx),
            _ => Service::<Request<B>>::poll_ready(&mut self.second, cx),
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.calls.fetch_add(1, Ordering::SeqCst) {
            0 => self.first.call(request),
            _ => self.second.call(request),
        }
    }
}

#[tokio::test]
async fn a_never_sent_request_goes_again_with_its_one_shot_body_untouched() {
    let server = TestServer::start(ServerConfig::default()).await;
    let closed = closed_connection(&server).await;
    let open = support::bare_connection(&server).await;
    let layer = ReplayLayer::new();
    let service = layer.layer(FirstThenSecond {
        first: closed,
        second: open,
        calls: Arc::default(),
    });

    let bytes = patterned(100 * 1024);
    let request = post(server.url("/upload"), "one-shot", chunked(&bytes, 8192));
    let response = service
        .oneshot(request)
        .await
        .expect("sent on the open one");
    assert_eq!(Attempts::of(&response), 2);
    assert_eq!(
        body_bytes(response).await.expect("body"),
        bytes.len().to_string(),
        "the whole body arrived, though it is larger than the replay buffer"
    );
    assert_eq!(server.times_processed("one-shot"), 1);
    let stats = layer.stats();
    assert_eq!(stats.replayed_never_sent, 1);
    assert_eq!(stats.replays(), 1);
}

#[tokio::test]
async fn replays_go_out_on_the_inner_service_as_changed_through_get_mut() {
    let server = TestServer::start(ServerConfig::default()).await;
    let closed = closed_connection(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ReplayLayer::new().layer(FirstThenSecond {
        first: closed.clone(),
        second: closed,
        calls: calls.clone(),
    });
    let error = (&mut service)
        .oneshot(get_with_id(server.url("/"), "before"))
        .await
        .expect_err("every attempt meets a closed connection");
    assert_eq!(error.delivery(), Delivery::NeverSent);

    service.get_mut().second = support::bare_connection(&server).await;
    calls.store(0, Ordering::SeqCst);
    let response = (&mut service)
        .oneshot(get_with_id(server.url("/"), "after"))
        .await
        .expect("the replay goes out on the service as changed, not as first seen");
    assert_eq!(Attempts::of(&response), 2);
    assert_eq!(server.times_processed("after"), 1);
}

#[tokio::test]
async fn a_request_that_may_have_been_processed_is_not_replayed_by_default() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let error = pool
        .clone()
        .oneshot(get_with_id(server.url("/reset"), "reset"))
        .await
        .expect_err("reset after processing");
    assert_eq!(error.kind(), ErrorKind::StreamReset);
    assert_eq!(error.delivery(), Delivery::MaybeProcessed);
    assert_eq!(server.times_processed("reset"), 1);
    assert_eq!(pool.stats().replay.replays(), 0);
}

#[tokio::test]
async fn idempotent_retries_are_opt_in_and_skip_post() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .replay(Some(ReplayLayer::new().retry_idempotent(true)))
        .build();
    let error = pool
        .clone()
        .oneshot(get_with_id(server.url("/reset"), "get"))
        .await
        .expect_err("reset every time");
    assert_eq!(error.kind(), ErrorKind::StreamReset);
    assert_eq!(server.times_processed("get"), 5, "GET is retried");

    let request = post(server.url("/reset"), "post", Full::new(Bytes::from("x")));
    pool.clone().oneshot(request).await.expect_err("reset");
    assert_eq!(server.times_processed("post"), 1, "POST is not");
    assert_eq!(pool.stats().replay.retried_maybe_processed, 4);
}

#[tokio::test]
async fn the_retry_budget_stops_a_replay_storm_against_a_server_that_refuses_everything() {
    let server = TestServer::start(ServerConfig::default()).await;
    // One replay per second, and none earned by requests.
    let budget = TpsBudget::new(Duration::from_secs(1), 1, 0.0);
    let pool = Pool::builder()
        .replay(Some(ReplayLayer::new().retry_budget(budget)))
        .build();
    for i in 0..20 {
        let error = pool
            .clone()
            .oneshot(get_with_id(server.url("/refuse"), &format!("storm-{i}")))
            .await
            .expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Refused);
    }
    let stats = pool.stats().replay;
    assert!(stats.replays() <= 2, "{stats:?}");
    assert!(stats.gave_up_budget >= 18, "{stats:?}");
    assert!(server.counters().refused.load(Ordering::SeqCst) <= 22);
}

#[tokio::test]
async fn connect_failures_are_replayed_only_when_asked_so_a_restarting_server_costs_no_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let pool = Pool::builder()
        .connect_backoff(Duration::from_millis(100), Duration::from_millis(400))
        .replay(Some(ReplayLayer::new().replay_connect_failures(true)))
        .build();
    let request = get_with_id(format!("http://{addr}/"), "early");
    let waiting = tokio::spawn(pool.clone().oneshot(request));
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .connect_failures
            >= 1)
        .await
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the port is still free");
    let server = TestServer::start_on(listener, ServerConfig::default());
    let response = waiting
        .await
        .expect("task")
        .expect("served once the server is up");
    assert!(Attempts::of(&response) >= 2);
    assert_eq!(server.times_processed("early"), 1);
    assert!(pool.stats().replay.replayed_never_sent >= 1);
}

#[tokio::test]
async fn ten_thousand_mixed_requests_under_faults_lose_nothing_and_run_no_post_twice() {
    support::init_tracing();
    let server = TestServer::start(ServerConfig {
        faults: Faults {
            goaway: 0.005,
            refuse: 0.01,
            close: 0.001,
            ..Faults::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::new();
    let outcomes = futures_util::stream::iter(0..10_000u32)
        .map(|i| {
            let pool = pool.clone();
            let id = format!("mixed-{i}");
            let (request, expected) = if i % 2 == 0 {
                (
                    get_with_id(server.url("/"), &id).map(|_| Full::default()),
                    "ok".to_owned(),
                )
            } else {
                let length = (i as usize).wrapping_mul(7919) % (48 * 1024);
                let request = post(server.url("/upload"), &id, Full::new(patterned(length)));
                (request, length.to_string())
            };
            async move {
                let outcome = match pool.oneshot(request).await {
                    Ok(response) => body_bytes(response).await,
                    Err(error) => Err(error),
                };
                (id, expected, outcome)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;

    let mut maybe_processed = 0;
    for (id, expected, outcome) in outcomes {
        match outcome {
            Ok(body) => {
                assert_eq!(body, expected, "{id}");
                assert_eq!(server.times_processed(&id), 1, "{id} ran once");
            }
            Err(error) => {
                assert_eq!(
                    error.delivery(),
                    Delivery::MaybeProcessed,
                    "{id}: only a request the server may have processed may fail: {error:?}"
                );
                assert!(server.times_processed(&id) <= 1, "{id} not replayed");
                maybe_processed += 1;
            }
        }
    }
    let counters = server.counters();
    let stats = pool.stats();
    eprintln!(
        "10,000 requests: {maybe_processed} maybe-processed failures; faults: {} refused, {} goaways, {} closes; replays: {:?}; connections: {}",
        counters.refused.load(Ordering::SeqCst),
        counters.goaways.load(Ordering::SeqCst),
        counters.closes.load(Ordering::SeqCst),
        stats.replay,
        server.connections_accepted(),
    );
    assert!(server.duplicates().is_empty(), "{:?}", server.duplicates());
    assert!(counters.refused.load(Ordering::SeqCst) > 0);
    assert!(counters.goaways.load(Ordering::SeqCst) > 0);
    assert!(stats.replay.replayed_refused > 0);
}

#[tokio::test]
async fn the_layer_replays_over_hyper_utils_client_too() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<ReplayBody<Full<Bytes>>>();
    let layer = ReplayLayer::new();
    let service = layer.layer(client);
    let request = post(
        server.url("/refuse-first/1"),
        "through-hyper",
        Full::new(Bytes::from_static(b"payload")),
    );
    let response = service
        .oneshot(request)
        .await
        .expect("the classifier finds h2's REFUSED_STREAM in hyper's error chain");
    assert_eq!(Attempts::of(&response), 2);
    assert_eq!(server.times_seen("through-hyper"), 2);
    assert_eq!(server.times_processed("through-hyper"), 1);
    assert_eq!(layer.stats().replayed_refused, 1);
}
