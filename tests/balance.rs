//! Many endpoints: `OriginService`s of one pool behind tower's p2c
//! `Balance`, fed by a discovery channel that adds and removes endpoints
//! under load.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use h2pool::{OriginService, Pool};
use http_body_util::Empty;
use support::{eventually, ServerConfig, TestServer};
use tokio::sync::mpsc;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::{BoxError, Service, ServiceExt};

type Request = http::Request<Empty<Bytes>>;
type Discovery = BoxStream<'static, Result<Change<&'static str, OriginService>, Infallible>>;
type Balanced = Buffer<Request, <Balance<Discovery, Request> as Service<Request>>::Future>;

/// A discovery stream the test feeds by hand, and the balancer on it.
fn balancer() -> (
    mpsc::UnboundedSender<Change<&'static str, OriginService>>,
    Balanced,
) {
    let (changes, receiver) = mpsc::unbounded_channel();
    let discovery: Discovery = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let change = receiver.recv().await?;
        Some((Ok(change), receiver))
    })
    .boxed();
    (changes, Buffer::new(Balance::new(discovery), 1024))
}

fn origin(pool: &Pool, server: &TestServer) -> OriginService {
    pool.origin(server.url("/").parse().expect("the server's URL"))
        .expect("an origin service")
}

/// Path-only, as a balancer's caller sends it: the endpoint fills in its
/// own scheme and authority.
fn request(path: &str) -> Request {
    http::Request::get(path)
        .body(Empty::new())
        .expect("valid request")
}

/// Workers that send requests through `service` until told to stop,
/// counting successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(service: Balanced, concurrency: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let workers = (0..concurrency)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let mut service = service.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let outcome: Result<_, BoxError> = async {
                            let response = service.ready().await?.call(request(path)).await?;
                            support::body_bytes(response).await?;
                            Ok(())
                        }
                        .await;
                        match outcome {
                            Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(error) => {
                                eprintln!("request failed: {error}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            workers,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("worker task");
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

fn requests(server: &TestServer) -> u64 {
    server.counters().requests.load(Ordering::SeqCst)
}

fn streams_active(server: &TestServer) -> usize {
    server.counters().streams_active.load(Ordering::SeqCst)
}

/// Long enough for a slow CI machine; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_removed_and_added_under_load_fail_no_request() {
    support::init_tracing();
    // Handlers take a moment, so requests are in flight when an endpoint goes.
    let config = ServerConfig {
        handler_delay: Duration::from_millis(10),
        ..ServerConfig::default()
    };
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config.clone()).await;
    let c = TestServer::start(config.clone()).await;
    let d = TestServer::start(config).await;
    let pool = Pool::new();
    let (changes, balanced) = balancer();
    for (key, server) in [("a", &a), ("b", &b), ("c", &c)] {
        changes
            .send(Change::Insert(key, origin(&pool, server)))
            .expect("the balancer is running");
    }

    let load = Load::start(balanced, 24, "/");
    assert!(
        eventually(PATIENCE, || [&a, &b, &c].iter().all(|s| requests(s) >= 50)).await,
        "every endpoint gets requests"
    );

    // Remove `a` while it has streams in flight.
    assert!(eventually(PATIENCE, || streams_active(&a) > 0).await);
    changes
        .send(Change::Remove("a"))
        .expect("the balancer is running");
    // Its in-flight requests finish; after that it gets no new one.
    let a_origin = a.url("");
    assert!(
        eventually(PATIENCE, || {
            streams_active(&a) == 0
                && pool
                    .stats()
                    .origin(&a_origin)
                    .is_some_and(|stats| stats.streams_in_flight == 0)
        })
        .await,
        "the removed endpoint drains"
    );
    let a_drained = requests(&a);

    changes
        .send(Change::Insert("d", origin(&pool, &d)))
        .expect("the balancer is running");
    let (b_before, c_before) = (requests(&b), requests(&c));
    assert!(
        eventually(PATIENCE, || requests(&d) >= 100
            && requests(&b) >= b_before + 100
            && requests(&c) >= c_before + 100)
        .await,
        "the added endpoint and the remaining ones serve the load"
    );

    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "no request fails when endpoints come and go");
    assert_eq!(
        requests(&a),
        a_drained,
        "no request reaches an endpoint after its removal drained"
    );
    let served: u64 = [&a, &b, &c, &d].iter().map(|s| requests(s)).sum();
    assert_eq!(served, ok);

    // The pool is shared: removing `a` from the balancer did not close its
    // connection, which other users of the pool go on using.
    let response = pool
        .clone()
        .oneshot(support::get(a.url("/")))
        .await
        .expect("the pool still serves the removed endpoint's origin");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(a.connections_accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_gets_at_most_half_of_the_requests_in_flight() {
    let stalled = TestServer::start(ServerConfig::default()).await;
    let healthy = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let (changes, balanced) = balancer();
    changes
        .send(Change::Insert("stalled", origin(&pool, &stalled)))
        .expect("the balancer is running");
    changes
        .send(Change::Insert("healthy", origin(&pool, &healthy)))
        .expect("the balancer is running");
    // Both connections up before the stall, so neither is a connect away.
    let mut warm_up = balanced.clone();
    while requests(&stalled) == 0 || requests(&healthy) == 0 {
        warm_up
            .ready()
            .await
            .expect("balancer ready")
            .call(request("/"))
            .await
            .expect("warm-up request");
    }
    let stalled_before = pool
        .stats()
        .origin(&stalled.url(""))
        .map_or(0, |stats| stats.requests);

    stalled.stall();
    const CONCURRENCY: usize = 8;
    let load = Load::start(balanced, CONCURRENCY, "/");
    // p2c sends a request to the stalled endpoint only while its load (its
    // stuck streams) is no higher than the healthy one's (the streams it is
    // serving), so at most half the workers can ever be stuck there.
    let healthy_before = requests(&healthy);
    assert!(
        eventually(PATIENCE, || requests(&healthy) >= healthy_before + 500).await,
        "the healthy endpoint keeps serving while the other is stalled"
    );
    let stuck = pool
        .stats()
        .origin(&stalled.url(""))
        .map_or(0, |stats| stats.requests)
        - stalled_before;
    assert!(
        stuck as usize <= CONCURRENCY / 2,
        "{stuck} requests went to the stalled endpoint"
    );

    stalled.resume();
    let (_, failed) = load.stop().await;
    assert_eq!(failed, 0);
}
