//! Keep-alive PINGs against a server that finds them too frequent.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use h2pool::readiness::KeepAlive;
use h2pool::Pool;
use support::raw::{code, flag, kind, RawServer};
use support::{body_bytes, get};
use tower::ServiceExt;

/// When each keep-alive PING arrived, per connection (by accept order).
type PingLog = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

const PINGS_BEFORE_GOAWAY: usize = 3;

/// A server that answers requests with 200 and logs PINGs; on the first
/// connection it answers the third PING with GOAWAY(ENHANCE_YOUR_CALM,
/// "too_many_pings") and closes, as grpc-go does when pinged too often.
async fn ping_policing_server(log: PingLog) -> RawServer {
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
                        if conn.index() == 0 && seen == PINGS_BEFORE_GOAWAY {
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
    let server = ping_policing_server(log.clone()).await;
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
