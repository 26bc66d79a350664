//! Against a real server: Apache httpd with mod_http2 from Debian's packages,
//! h2c with prior knowledge.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use h2pool::replay::ReplayLayer;
use h2pool::Pool;
use http::Version;
use support::apache::Apache;
use support::{body_bytes, get};
use tower::ServiceExt;

/// Sends `count` GETs at `concurrency` to `url`; returns the failures.
///
/// Each response must be HTTP/2 from Apache itself, with the static body.
async fn load(pool: &Pool, url: &str, count: usize, concurrency: usize) -> Vec<h2pool::Error> {
    futures_util::stream::iter(0..count)
        .map(|_| {
            let pool = pool.clone();
            let request = get(url.to_owned());
            async move {
                let response = pool.oneshot(request).await?;
                assert_eq!(response.version(), Version::HTTP_2);
                let server = response
                    .headers()
                    .get(http::header::SERVER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                assert!(server.starts_with("Apache"), "server: {server:?}");
                let body = body_bytes(response).await?;
                assert_eq!(body, "ok");
                Ok::<_, h2pool::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|outcome| async move { outcome.err() })
        .collect()
        .await
}

/// The first failures, with what a reader needs to classify them.
fn describe(failures: &[h2pool::Error]) -> String {
    failures
        .iter()
        .take(5)
        .map(|error| {
            format!(
                "{:?} {:?} reason {:?}: {error}",
                error.kind(),
                error.delivery(),
                error.reason()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn five_thousand_gets_through_apache_over_h2c_fail_none() {
    support::init_tracing();
    let apache = Apache::start("");
    let pool = Pool::new();
    let failures = load(&pool, &apache.url("/ok"), 5_000, 32).await;
    let stats = pool.stats();
    eprintln!(
        "apache: {} failures, {} connections, replays {:?}",
        failures.len(),
        stats.total().connections_opened,
        stats.replay
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{}",
        failures.len(),
        describe(&failures),
        apache.error_log()
    );
}

// Two workers: `apache2 -k graceful` blocks one while the load runs on.
//
// Now and then (about one run in three here) an old apache child closes its
// connection with every stream still in flight and no GOAWAY that refuses
// them: h2 reports those as a lost connection, which a client cannot tell
// from one the server processed. The GETs here are idempotent, so the pool
// is told it may retry them (`retry_idempotent`); requests the server
// refused are replayed either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_graceful_restart_in_the_middle_of_a_load_fails_no_request() {
    support::init_tracing();
    let apache = Apache::start("");
    let pool = Pool::builder()
        .replay(Some(ReplayLayer::new().retry_idempotent(true)))
        .build();
    let url = apache.url("/ok");
    let running = {
        let pool = pool.clone();
        let url = url.clone();
        tokio::spawn(async move { load(&pool, &url, 20_000, 32).await })
    };
    // Restart twice while the load runs: the old children close their
    // connections (GOAWAY) once their streams are done; the parent's
    // listening socket stays open for the new ones.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let apache = &apache;
        tokio::task::block_in_place(|| apache.graceful_restart());
    }
    let failures = running.await.expect("load task");
    let stats = pool.stats();
    eprintln!(
        "apache graceful restarts under load: {} failures, {} connections, replays {:?}",
        failures.len(),
        stats.total().connections_opened,
        stats.replay
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{}",
        failures.len(),
        describe(&failures),
        apache.error_log()
    );
    assert!(
        stats.total().connections_opened >= 2,
        "the restarts moved the load to new children"
    );
}
