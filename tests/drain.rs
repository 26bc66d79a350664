//! GOAWAY from the server, and drains the client starts itself.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use h2pool::connection::{ConnectionHandle, HasHandle, Phase};
use h2pool::drain::{DrainLayer, DrainPolicy};
use h2pool::{Delivery, ErrorKind, Pool};
use http_body_util::{BodyExt, Full};
use support::{body_bytes, get, get_with_id, ServerConfig, TestServer};
use tower::{Layer, Service, ServiceExt};

#[tokio::test]
async fn a_graceful_goaway_in_the_middle_of_64_streams_fails_none() {
    // h2's graceful shutdown is the two-step GOAWAY: 2^31-1 first, then,
    // after a PING round trip, the real last stream id. Every stream sent
    // before the first is within the second, so none may fail; the
    // streams after it go to a new connection.
    support::init_tracing();
    let server = TestServer::start(ServerConfig {
        handler_delay: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    // Replays off: this is about what the drain reports, not what it costs.
    let pool = Pool::builder().replay(None).build();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let pool = pool.clone();
        let request = get_with_id(server.url("/"), &format!("r{i}"));
        tasks.push(tokio::spawn(async move {
            match pool.oneshot(request).await {
                Ok(response) => body_bytes(response).await.map(|_| ()),
                Err(error) => Err(error),
            }
        }));
        if i == 31 {
            assert!(
                support::eventually(Duration::from_secs(5), || server
                    .counters()
                    .streams_active
                    .load(Ordering::SeqCst)
                    >= 16)
                .await
            );
            server.goaway_all();
        }
    }
    for (i, task) in tasks.into_iter().enumerate() {
        task.await.expect("task").expect("no stream fails");
        assert_eq!(server.times_processed(&format!("r{i}")), 1);
    }

    // Requests after the GOAWAY go to a new connection.
    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("after GOAWAY");
    body_bytes(response).await.expect("body");
    assert_eq!(server.connections_accepted(), 2);
    assert!(server.counters().goaways.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn goaway_with_protocol_error_retires_the_connection_and_the_next_request_reconnects() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("first");
    body_bytes(response).await.expect("body");
    server.goaway_with_error_all(Reason::PROTOCOL_ERROR);
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .connections_open
            == 0)
        .await
    );

    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("after the error GOAWAY");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(server.connections_accepted(), 2);
}

#[tokio::test]
async fn max_requests_per_connection_rotates_connections_without_failing_a_request() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .max_requests_per_connection(Some(10))
        .build();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let pool = pool.clone();
        let url = server.url("/");
        tasks.push(tokio::spawn(async move {
            for _ in 0..125 {
                let response = pool.clone().oneshot(get(url.clone())).await?;
                body_bytes(response).await?;
            }
            Ok::<_, h2pool::Error>(worker)
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("no request fails");
    }
    let opened = pool.stats().total().connections_opened;
    eprintln!("1000 requests over {opened} connections");
    assert!(
        (90..=101).contains(&opened),
        "{opened} connections for 1000 requests at 10 each"
    );
    let most = *server
        .counters()
        .per_connection
        .lock()
        .unwrap()
        .values()
        .max()
        .unwrap();
    assert!(most <= 10 + 8, "a connection served {most} requests");
    assert_eq!(pool.stats().total().errors_total(), 0);
}

#[tokio::test]
async fn a_slow_connection_gets_its_replacement_at_three_quarters_of_its_life_not_half() {
    // One request every 250 ms on connections that live for 8: the four
    // left at half-life would take a second, far more than a few connects
    // on loopback (the replacement opens early only if four connects take
    // longer than what is left, so a connect would have to take some 190 ms
    // for this to fail), so it waits until 6 are used (opened at half, it
    // would sit idle twice as long, and idle out on a slower client).
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder().max_requests_per_connection(Some(8)).build();
    let url = server.url("/");
    let send = || async {
        let response = pool
            .clone()
            .oneshot(get(url.clone()))
            .await
            .expect("a response");
        body_bytes(response).await.expect("a body");
    };
    for _ in 0..6 {
        send().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = pool.stats().total();
    assert_eq!(
        (stats.connections_opened, stats.connecting),
        (1, 0),
        "no replacement before three quarters"
    );

    send().await;

    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .connections_opened
            == 2)
        .await,
        "the seventh request's pick opens the replacement: {:?}",
        pool.stats().total()
    );
}

#[tokio::test]
async fn a_graceful_goaway_no_request_saw_is_still_recorded_as_the_servers() {
    // An idle connection: no request polls h2 between the server's GOAWAY
    // and its close, so only the connection task can tell it was the
    // server's doing (and the pool needs that to learn its schedule).
    let server = TestServer::start(ServerConfig::default()).await;
    let connection = support::bare_connection(&server).await;
    let handle = connection.handle().clone();
    server.goaway_all();
    until_phase(&handle, |phase| phase == Phase::Closed)
        .await
        .expect("the connection closes after the GOAWAY");
    let reason = handle
        .close_reason()
        .expect("a closed connection has a reason");
    assert_eq!(reason.kind, ErrorKind::GoAway, "{reason:?}");
    assert_eq!(reason.h2_reason, Some(Reason::NO_ERROR));
    drop(connection);
}

#[tokio::test]
async fn a_server_that_retires_connections_on_a_schedule_finds_each_replacement_already_open() {
    // The server ends every connection after about 100 streams (nginx's
    // keepalive_requests, in h2's two-step GOAWAY, so the count the client
    // sees varies). Once three connections have shown the schedule, the
    // pool opens each replacement while the old connection still serves,
    // so no request waits for a connect after a GOAWAY.
    let server = TestServer::start(ServerConfig {
        goaway_after: Some(100),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::new();
    let failures = support::load(&pool, &server.url("/"), 4000, 16, |_| {}).await;
    assert!(failures.is_empty(), "failures: {failures:?}");
    let counters = server.counters();
    let goaways = counters.goaways.load(Ordering::SeqCst);
    let with_successor = counters.goaways_with_successor.load(Ordering::SeqCst);
    let opened = pool.stats().total().connections_opened;
    eprintln!("4000 requests: {goaways} GOAWAYs, {with_successor} with the replacement already open, {opened} connections");
    assert!(
        goaways >= 20,
        "only {goaways} GOAWAYs for 4000 requests at 100 each"
    );
    // Three connections to learn from, and one more whose replacement was
    // due before the third ended.
    assert!(
        with_successor + 4 >= goaways,
        "{goaways} GOAWAYs, only {with_successor} with a replacement already open"
    );
    // One replacement per retired connection, not more.
    assert!(
        opened <= goaways + 4,
        "{opened} connections for {goaways} GOAWAYs"
    );
}

#[tokio::test]
async fn max_connection_age_under_steady_load_fails_nothing() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .max_connection_age(Some(Duration::from_millis(150)))
        .build();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        let url = server.url("/delay/5");
        tasks.push(tokio::spawn(async move {
            let mut done = 0u32;
            while tokio::time::Instant::now() < deadline {
                let response = pool.clone().oneshot(get(url.clone())).await?;
                body_bytes(response).await?;
                done += 1;
            }
            Ok::<_, h2pool::Error>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task").expect("no request fails");
    }
    let opened = pool.stats().total().connections_opened;
    eprintln!("{total} requests over {opened} connections");
    assert!(
        opened >= 5,
        "connections were retired by age ({opened} opened)"
    );
}

#[tokio::test]
async fn drain_layer_on_its_own_stops_new_streams_after_max_requests() {
    let server = TestServer::start(ServerConfig::default()).await;
    let connection = support::bare_connection(&server).await;
    let service = DrainLayer::new(DrainPolicy::default().max_requests(Some(2))).layer(connection);

    // Slots reserved and given back unused, as a balancer or a buffer may
    // leave them, do not count: only streams that go out do.
    for _ in 0..5 {
        let mut reserving = service.clone();
        ServiceExt::<http::Request<http_body_util::Empty<Bytes>>>::ready(&mut reserving)
            .await
            .expect("a slot");
        assert_eq!(service.handle().load(), 1);
        drop(reserving);
    }
    assert_eq!(service.handle().load(), 0);
    assert_eq!(service.handle().streams_started(), 0);
    for _ in 0..2 {
        let response = service
            .clone()
            .oneshot(get(server.url("/")))
            .await
            .expect("within the limit");
        body_bytes(response).await.unwrap();
    }
    let mut error = service
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect_err("drained");
    assert!(error.is_never_sent(), "{error:?}");
    assert!(error
        .take_request::<http::Request<http_body_util::Empty<bytes::Bytes>>>()
        .is_some());
    assert_eq!(service.handle().phase(), Phase::Draining);
    assert_eq!(service.handle().streams_started(), 2);
    assert_eq!(server.counters().requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn drain_layer_drains_when_stream_ids_near_exhaustion() {
    let server = TestServer::start(ServerConfig::default()).await;
    let connection = support::bare_connection(&server).await;
    // Ids 1, 3, 5, 7, 9: the fifth stream reaches the limit.
    let service = DrainLayer::new(DrainPolicy::default().max_stream_id(9)).layer(connection);
    for _ in 0..5 {
        let response = service
            .clone()
            .oneshot(get(server.url("/")))
            .await
            .expect("below the limit");
        body_bytes(response).await.unwrap();
    }
    let error = service
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect_err("ids exhausted");
    assert_eq!(error.kind(), ErrorKind::ConnectionClosed);
    assert!(error.is_never_sent());
}

#[tokio::test]
async fn a_connection_the_pool_retires_closes_once_its_streams_end() {
    // h2 closes a client connection only once no send handle is left. The
    // pool keeps its connections' service instances for reuse, each with
    // one: it must let go of a retired connection's, or the connection
    // would stay open, draining, for ever.
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .build();
    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("a response");
    body_bytes(response).await.expect("the body");
    let closed = support::eventually(Duration::from_secs(5), || {
        let stats = pool.stats().total();
        let at_server = server.counters().connections_active.load(Ordering::SeqCst);
        stats.connections_open + stats.connections_draining == 0 && at_server == 0
    })
    .await;
    let stats = pool.stats().total();
    assert!(
        closed,
        "{} connections open and {} draining in the pool, {} open at the server",
        stats.connections_open,
        stats.connections_draining,
        server.counters().connections_active.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_goaway_lets_streams_up_to_its_last_id_finish_and_refuses_the_rest_unprocessed() {
    // Eight requests on one connection; the server takes the first four
    // (streams 1 to 7) and sends GOAWAY with last stream id 7. The other
    // four were not processed: each fails as refused (safe to send again
    // whatever its method), and the server never answers them.
    use support::raw::{code, RawConnection, RawServer};
    support::init_tracing();
    const SENT: usize = 8;
    const TAKEN: u32 = 4;
    let connections = Arc::new(AtomicUsize::new(0));
    let server = RawServer::start(move |mut conn: RawConnection| {
        let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            conn.handshake(&[]).await?;
            if !first {
                return conn.serve_ok().await;
            }
            let mut streams = Vec::new();
            while streams.len() < SENT {
                streams.push(conn.next_request().await?);
            }
            streams.sort_unstable();
            let last_taken = streams[TAKEN as usize - 1];
            conn.send_goaway(last_taken, code::NO_ERROR, b"").await?;
            for stream in streams.into_iter().filter(|stream| *stream <= last_taken) {
                conn.respond_ok(stream, b"ok").await?;
            }
            loop {
                conn.next_frame().await?;
            }
        }
    })
    .await;
    let pool = Pool::builder().replay(None).build();
    let outcomes = futures_util::future::join_all((0..SENT).map(|_| {
        let pool = pool.clone();
        let url = server.url("/");
        async move {
            match pool.oneshot(get(url)).await {
                Ok(response) => body_bytes(response).await.map(|_| ()),
                Err(error) => Err(error),
            }
        }
    }))
    .await;
    let mut refused = 0;
    for outcome in outcomes {
        if let Err(error) = outcome {
            assert_eq!(error.kind(), ErrorKind::GoAway, "{error:?}");
            assert_eq!(error.delivery(), Delivery::Refused, "{error:?}");
            assert!(error.is_safe_to_replay());
            refused += 1;
        }
    }
    assert_eq!(refused, SENT - TAKEN as usize);
    assert_eq!(server.connections_accepted(), 1);

    // The next request goes to a new connection.
    let response = pool
        .oneshot(get(server.url("/")))
        .await
        .expect("a new connection");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(server.connections_accepted(), 2);
}

/// A GOAWAY on a connection at its stream limit: no waiting request finds a
/// free slot there to try a stream and hear of the GOAWAY from h2, so the
/// pool must act on the frame itself, draining the connection and opening
/// another for the requests that wait, while the old one's long stream runs
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_on_a_full_connection_sends_the_waiting_requests_to_a_new_one() {
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: Some(1),
        ..ServerConfig::default()
    })
    .await;
    // One connection at a time: the second request waits for its slot.
    let pool = Pool::builder()
        .max_connections_per_origin(1)
        .pending_timeout(Some(Duration::from_secs(60)))
        .build();
    let long = tokio::spawn(pool.clone().oneshot(get(server.url("/delay/60000"))));
    support::wait_for_one_active_stream(&server).await;
    let waiting = tokio::spawn(pool.clone().oneshot(get(server.url("/"))));
    // The second request waits for the only slot.
    support::wait_for_one_waiting_request(&pool).await;

    server.goaway_all();
    let response = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting request is sent within 10 s of the GOAWAY")
        .unwrap()
        .expect("it succeeds");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(
        server.connections_accepted(),
        2,
        "on a new connection, the draining one not counting"
    );
    assert!(!long.is_finished(), "while the long stream still runs");
    long.abort();
}

/// A slot reserved before the server's GOAWAY: no stream may start on it
/// now, and the request comes back untouched, one-shot body and all, rather
/// than going into h2, which would refuse it and keep it.
#[tokio::test]
async fn a_call_on_a_slot_reserved_before_the_servers_goaway_hands_the_request_back() {
    type Request = http::Request<Full<Bytes>>;
    let server = TestServer::start(ServerConfig::default()).await;
    let mut connection = support::bare_connection(&server).await;
    // A long stream keeps the connection open through its drain.
    let long = tokio::spawn(
        connection.clone().oneshot(
            http::Request::get(server.url("/delay/60000"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    );
    support::wait_for_one_active_stream(&server).await;
    ServiceExt::<Request>::ready(&mut connection)
        .await
        .expect("a slot");
    let handle = connection.handle().clone();
    server.goaway_all();
    until_phase(&handle, |phase| phase != Phase::Open)
        .await
        .expect("the GOAWAY drains the connection");

    let request = http::Request::post(server.url("/echo"))
        .body(Full::new(Bytes::from_static(b"kept")))
        .unwrap();
    let mut error = connection
        .call(request)
        .await
        .expect_err("no stream starts after a GOAWAY");
    assert_eq!(error.delivery(), Delivery::NeverSent, "{error}");
    let request = error
        .take_request::<Request>()
        .expect("the request comes back");
    let body = request.into_body().collect().await.expect("a full body");
    assert_eq!(body.to_bytes(), "kept");
    assert_eq!(
        handle.phase(),
        Phase::Draining,
        "the long stream still runs"
    );
    long.abort();
}

/// Waits (up to 5 s) until the connection's phase is one `wanted` accepts.
async fn until_phase(
    handle: &ConnectionHandle,
    wanted: impl Fn(Phase) -> bool,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let changed = handle.phase_changed_notify().notified();
            if wanted(handle.phase()) {
                return;
            }
            changed.await;
        }
    })
    .await
}
