//! Keep-alive PINGs: when they go out, and against a server that finds
//! them too frequent.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use h2pool::readiness::KeepAlive;
use h2pool::{ErrorKind, Pool};
use http_body_util::Empty;
use support::raw::{code, flag, kind, RawServer};
use support::{body_bytes, eventually, get, ServerConfig, TestServer};
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::{Service, ServiceExt};

/// When each keep-alive PING arrived, per connection (by accept order).
type PingLog = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

const PINGS_BEFORE_GOAWAY: usize = 3;

/// A server that answers requests with 200 and logs PINGs. Policing, on
/// the first connection it answers the third PING with
/// GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and closes, as grpc-go does
/// when pinged too often.
async fn ping_server(log: PingLog, policing: bool) -> RawServer {
    RawServer::start(move |mut conn| {
        let log = log.clone();
        async move {
            conn.handshake(&[]).await?;
            let mut last_stream = 0;
            loop {
                let frame = conn.read_frame().await?;
                match frame.kind {
                    kind::PING if !frame.has_flag(flag::ACK) => {
                        let seen = {
                            let mut log = log.lock().unwrap();
                            let pings = log.entry(conn.index()).or_default();
                            pings.push(Instant::now());
                            pings.len()
                        };
                        if policing && conn.index() == 0 && seen == PINGS_BEFORE_GOAWAY {
                            conn.send_goaway(
                                last_stream,
                                code::ENHANCE_YOUR_CALM,
                                b"too_many_pings",
                            )
                            .await?;
                            conn.close().await;
                            return Ok(());
                        }
                        conn.send_ping(true, &frame.payload).await?;
                    }
                    kind::HEADERS => {
                        last_stream = frame.stream_id;
                        conn.respond_ok(frame.stream_id, b"ok").await?;
                    }
                    _ => {
                        conn.answer_housekeeping(&frame).await?;
                    }
                }
            }
        }
    })
    .await
}

fn pings_on(log: &PingLog, connection: u64) -> Vec<Instant> {
    log.lock()
        .unwrap()
        .get(&connection)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_too_many_pings_doubles_the_ping_interval_for_the_next_connection() {
    support::init_tracing();
    let interval = Duration::from_millis(100);
    let log = PingLog::default();
    let server = ping_server(log.clone(), true).await;
    let keep_alive = KeepAlive::new(interval, Duration::from_secs(5)).while_idle(true);
    let pool = Pool::builder().keep_alive(Some(keep_alive.clone())).build();

    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("first connection");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert!(
        support::eventually(Duration::from_secs(10), || pool
            .stats()
            .total()
            .connections_open
            == 0)
        .await,
        "the server's GOAWAY closes the first connection after {PINGS_BEFORE_GOAWAY} PINGs"
    );
    assert_eq!(pings_on(&log, 0).len(), PINGS_BEFORE_GOAWAY);
    assert!(
        support::eventually(Duration::from_secs(5), || keep_alive.interval()
            == interval * 2)
        .await,
        "the pool's keep-alive interval is {:?}, not doubled",
        keep_alive.interval()
    );

    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("a new connection");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(server.connections_accepted(), 2);
    assert!(
        support::eventually(Duration::from_secs(10), || pings_on(&log, 1).len() >= 4).await,
        "the new connection is pinged too"
    );
    // Scheduling delays only stretch the gaps, so a lower bound is safe:
    // at the old interval the gaps would be about 100 ms.
    let pings = pings_on(&log, 1);
    let shortest = pings
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .min()
        .expect("several PINGs");
    assert!(
        shortest >= interval * 3 / 2,
        "PINGs {shortest:?} apart on the new connection; the interval was {interval:?} and should have doubled"
    );
}

/// tower's p2c `Balance` keeps a ready endpoint ready, and an `OriginService`
/// that is ready holds a stream slot reserved on its connection. Nothing is
/// sent on it, so the connection is idle all the same: it gets no PING (the
/// keep-alive watches streams in flight only), and it idles out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_balance_holds_ready_neither_keeps_its_connection_busy_nor_gets_it_pinged() {
    type Request = http::Request<Empty<Bytes>>;
    let request = || http::Request::get("/").body(Empty::new()).unwrap();
    let log = PingLog::default();
    let server = ping_server(log.clone(), false).await;
    let interval = Duration::from_millis(100);
    let pool = Pool::builder()
        .idle_timeout(Some(Duration::from_millis(300)))
        .keep_alive(Some(KeepAlive::new(interval, Duration::from_secs(5))))
        .build();
    let origin = pool.origin(server.url("/").parse().unwrap()).unwrap();
    let discovery = futures_util::stream::iter([Ok::<_, Infallible>(Change::Insert(0, origin))])
        .chain(futures_util::stream::pending());
    let mut balance: Balance<_, Request> = Balance::new(Box::pin(discovery));

    let response = balance.ready().await.unwrap().call(request()).await;
    assert_eq!(body_bytes(response.unwrap()).await.unwrap(), "ok");
    balance.ready().await.unwrap();
    assert_eq!(
        pool.stats().total().streams_in_flight,
        1,
        "the ready endpoint holds a reserved slot"
    );
    let pinged_while_busy = pings_on(&log, 0).len();

    assert!(
        eventually(Duration::from_secs(10), || pool
            .stats()
            .total()
            .connections_open
            == 0)
        .await,
        "the connection idles out although a slot on it is reserved"
    );
    tokio::time::sleep(interval * 5).await;
    assert_eq!(
        pings_on(&log, 0).len(),
        pinged_while_busy,
        "a PING went to a connection with nothing in flight"
    );
    // The reserved slot still gets its request through.
    let response = balance.call(request()).await;
    assert_eq!(body_bytes(response.unwrap()).await.unwrap(), "ok");
}

/// A stream that starts on a connection silent for longer than the
/// interval gets a PING at once, as grpc-go sends one: the server may have
/// died while the connection was idle, and the request would otherwise
/// wait a whole interval before the PING that finds out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_started_after_a_silence_longer_than_the_interval_is_pinged_at_once() {
    let server = TestServer::start(ServerConfig::default()).await;
    let interval = Duration::from_millis(1500);
    let pool = Pool::builder()
        .keep_alive(Some(KeepAlive::new(interval, Duration::from_millis(200))))
        .build();
    let response = pool.clone().oneshot(get(server.url("/"))).await;
    body_bytes(response.expect("first request")).await.unwrap();
    // The server dies while the connection is idle (its connections notice
    // a stall within 50 ms, and then answer nothing, PINGs included).
    server.stall();
    // The keep-alive dates the silence from its last look before the
    // connection went idle, up to an eighth of the interval after the last
    // read: a silence of an interval and a half is past the interval
    // however late that look was.
    tokio::time::sleep(interval * 3 / 2).await;

    let sent = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        pool.clone().oneshot(get(server.url("/"))),
    )
    .await
    .expect("the dead connection is found out");
    let waited = sent.elapsed();
    let error = outcome.expect_err("the server stopped answering");
    assert_eq!(error.kind(), ErrorKind::KeepAliveTimeout, "{error}");
    // Only the PING timeout (200 ms) when pinged at once; the interval plus
    // the timeout when the PING waits for the keep-alive's next round.
    assert!(
        waited < interval,
        "the request waited {waited:?}: the PING went out an interval late"
    );
    server.resume();
}

/// grpc-go's "too_many_pings" GOAWAY can refuse streams in flight, and h2
/// wakes each as it decodes the frame. The pool must still read the
/// server's words and slow its PINGs down: the drain takes them from the
/// frame as it is read, before any refused stream reports the GOAWAY with
/// its code alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_many_pings_goaway_that_refuses_streams_in_flight_still_slows_the_pings() {
    let server = RawServer::start(|mut conn| async move {
        conn.handshake(&[]).await?;
        loop {
            let frame = conn.read_frame().await?;
            match frame.kind {
                kind::PING if !frame.has_flag(flag::ACK) => {
                    conn.send_goaway(0, code::ENHANCE_YOUR_CALM, b"too_many_pings")
                        .await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    conn.close().await;
                    return Ok(());
                }
                // Requests are left unanswered: the GOAWAY refuses them.
                kind::HEADERS => {}
                _ => {
                    conn.answer_housekeeping(&frame).await?;
                }
            }
        }
    })
    .await;
    let interval = Duration::from_millis(50);
    let keep_alive = KeepAlive::new(interval, Duration::from_secs(5));
    let pool = Pool::builder()
        .keep_alive(Some(keep_alive.clone()))
        .replay(None)
        .build();
    // Many streams, so that some refused stream's task could run before
    // the connection's task finishes decoding the GOAWAY.
    let requests: Vec<_> = (0..32)
        .map(|_| tokio::spawn(pool.clone().oneshot(get(server.url("/")))))
        .collect();
    for request in requests {
        let error = request.await.unwrap().expect_err("refused by the GOAWAY");
        assert_eq!(error.kind(), ErrorKind::GoAway, "{error}");
    }
    assert!(
        eventually(Duration::from_secs(5), || keep_alive.interval()
            == interval * 2)
        .await,
        "the interval is {:?}, not doubled",
        keep_alive.interval()
    );
}

/// The connection's task takes h2's PING handle only when someone asks
/// (h2 looks for a user's PING at every turn once it is out): the first
/// ask gets it, on a connection that has run without it, and it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_handle_is_taken_from_h2_when_asked_and_only_once() {
    let server = TestServer::start(ServerConfig::default()).await;
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let connection = h2pool::connection::Connection::handshake(tcp, &Default::default())
        .await
        .expect("handshake");
    let handle = connection.handle().clone();
    let response = connection
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("a request before anyone asks for the PING handle");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");

    let mut ping_pong = tokio::time::timeout(Duration::from_secs(5), handle.take_ping_pong())
        .await
        .expect("the connection's task hands the PING handle over")
        .expect("the first ask gets it");
    tokio::time::timeout(Duration::from_secs(5), ping_pong.ping(h2::Ping::opaque()))
        .await
        .expect("the PING is sent and answered")
        .expect("a PONG");
    assert!(
        handle.take_ping_pong().await.is_none(),
        "a second ask gets nothing: one prober per connection"
    );
}
