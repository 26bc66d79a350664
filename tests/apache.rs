//! Against a real server: Apache httpd with mod_http2 from Debian's packages,
//! h2c with prior knowledge.

mod support;

use std::time::Duration;

use h2pool::replay::ReplayLayer;
use h2pool::Pool;
use http::Version;
use support::apache::Apache;
use support::load;
use support::real_server::assert_no_failures;

/// Each response must be HTTP/2 from Apache itself.
fn from_apache_over_h2(response: &http::Response<h2pool::Body>) {
    assert_eq!(response.version(), Version::HTTP_2);
    let server = response
        .headers()
        .get(http::header::SERVER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(server.starts_with("Apache"), "server: {server:?}");
}

#[tokio::test]
async fn five_thousand_gets_through_apache_over_h2c_fail_none() {
    support::init_tracing();
    let apache = Apache::start("");
    // Once, in CI, the first connect was refused (httpd was still between
    // the two readings of its configuration; `Apache::start` now waits
    // that out) and the 32 requests waiting for it failed. A refused
    // connect sent nothing; what this test is about is the rest.
    let pool = Pool::builder()
        .replay(Some(ReplayLayer::new().replay_connect_failures(true)))
        .build();
    let failures = load(&pool, &apache.url("/ok"), 5_000, 32, from_apache_over_h2).await;
    assert_no_failures("apache", &pool, &failures, &apache.error_log());
}

// Two workers: `apache2 -k graceful` blocks one while the load runs on.
//
// Now and then (about one run in three here) an old apache child closes its
// connection with every stream still in flight and no GOAWAY that refuses
// them: h2 reports those as a lost connection, which a client cannot tell
// from one the server processed. The GETs here are idempotent, so the pool
// is told it may retry them (`retry_idempotent`); requests the server
// refused are replayed either way. Rarely (once in CI, under load) a connect
// made during the restart failed too, and with it every request waiting for
// it: what `replay_connect_failures` is for, a server restarting on the
// same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_graceful_restart_in_the_middle_of_a_load_fails_no_request() {
    support::init_tracing();
    let apache = Apache::start("");
    let pool = Pool::builder()
        .replay(Some(
            ReplayLayer::new()
                .retry_idempotent(true)
                .replay_connect_failures(true),
        ))
        .build();
    let url = apache.url("/ok");
    let running = {
        let pool = pool.clone();
        let url = url.clone();
        tokio::spawn(async move { load(&pool, &url, 20_000, 32, from_apache_over_h2).await })
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
    assert_no_failures(
        "apache graceful restarts under load",
        &pool,
        &failures,
        &apache.error_log(),
    );
    assert!(
        pool.stats().total().connections_opened >= 2,
        "the restarts moved the load to new children"
    );
}
