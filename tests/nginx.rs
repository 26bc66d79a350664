//! Against a real server: nginx from Debian's packages, h2c.

mod support;

use std::time::Duration;

use h2pool::replay::ReplayLayer;
use h2pool::Pool;
use support::load;
use support::nginx::Nginx;
use support::real_server::assert_no_failures;

#[tokio::test]
async fn twenty_thousand_gets_through_nginx_with_keepalive_requests_50_fail_none() {
    support::init_tracing();
    let nginx = Nginx::start("keepalive_requests 50;\n    http2_max_concurrent_streams 16;");
    // The pool opens a connection every 50 requests here, some 400 a
    // second. Once, in a CI run under load, nginx refused one of those
    // connects (ECONNREFUSED, cause not found) and its 32 waiting requests
    // failed. A refused connect sent nothing, so this test lets the pool
    // replay it; what it proves is that no GOAWAY costs a request.
    let pool = Pool::builder()
        .replay(Some(ReplayLayer::new().replay_connect_failures(true)))
        .build();
    let failures = load(&pool, &nginx.url("/"), 20_000, 32, |_| {}).await;
    assert_no_failures(
        "nginx, keepalive_requests 50, 16 streams",
        &pool,
        &failures,
        &nginx.error_log(),
    );
    // Every connection retired after 50 requests, so the load needed many.
    assert!(pool.stats().total().connections_opened >= 20_000 / 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reload_in_the_middle_of_a_load_fails_no_request() {
    // keepalive_requests so high that only a reload ends a connection: each
    // reload must move the load to a new one.
    let nginx = Nginx::start("http2_max_concurrent_streams 64;\n    keepalive_requests 10000000;");
    let pool = Pool::new();
    let url = nginx.url("/");
    let running = {
        let pool = pool.clone();
        let url = url.clone();
        tokio::spawn(async move { load(&pool, &url, 120_000, 32, |_| {}).await })
    };
    // Reload twice while the load runs: the old workers drain with GOAWAY.
    const RELOADS: u64 = 2;
    for _ in 0..RELOADS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!running.is_finished(), "the load outlasts the reloads");
        // `nginx -s reload` waits for the signal to be sent: off the runtime.
        tokio::task::block_in_place(|| nginx.reload());
    }
    let failures = running.await.expect("load task");
    assert_no_failures(
        "nginx reloads under load",
        &pool,
        &failures,
        &nginx.error_log(),
    );
    let opened = pool.stats().total().connections_opened;
    assert!(
        opened > RELOADS,
        "each reload moved the load to a new connection: {opened} opened"
    );
}
