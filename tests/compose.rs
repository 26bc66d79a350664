//! The pool under tower and tower-http middleware, composed with
//! `ServiceBuilder`: each layer does its job over h2pool's services.

mod support;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use support::{ServerConfig, TestServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::set_header::SetRequestHeaderLayer;
use tower_http::timeout::{ResponseBodyTimeoutLayer, TimeoutError, TimeoutLayer};
use tower_http::trace::TraceLayer;

async fn text(response: Response<h2pool::Body>) -> String {
    let body = support::body_bytes(response).await.expect("the whole body");
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_header_set_by_tower_http_reaches_the_server() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = ServiceBuilder::new()
        .layer(SetRequestHeaderLayer::overriding(
            HeaderName::from_static("x-client"),
            HeaderValue::from_static("h2pool"),
        ))
        .service(h2pool::Pool::new());

    let response = client
        .oneshot(support::get(server.url("/headers")))
        .await
        .expect("response");

    let seen = text(response).await;
    assert!(
        seen.lines().any(|line| line == "x-client: h2pool"),
        "{seen}"
    );
}

#[tokio::test]
async fn towers_timeout_fails_a_slow_request_with_elapsed_and_frees_its_stream() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = h2pool::Pool::new();
    let client = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .service(pool.clone());

    let error = client
        .clone()
        .oneshot(support::get(server.url("/delay/30000")))
        .await
        .expect_err("the server answers too late");

    assert!(
        error.is::<tower::timeout::error::Elapsed>(),
        "tower's Elapsed: {error:?}"
    );
    // Dropping the response future reset the stream: its slot is free.
    let stats = pool.clone();
    assert!(
        support::eventually(Duration::from_secs(10), || {
            stats.stats().total().streams_in_flight == 0
        })
        .await,
        "the timed-out stream was released: {:?}",
        pool.stats().total()
    );
    let response = client
        .oneshot(support::get(server.url("/")))
        .await
        .expect("a quick request goes through");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn tower_https_timeout_layer_answers_with_its_status_code() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(200),
        ))
        .service(h2pool::Pool::new());

    // tower-http's timeout is made for servers: it answers in the inner
    // service's place with an empty body (h2pool::Body's default).
    let response = client
        .oneshot(support::get(server.url("/delay/30000")))
        .await
        .expect("a synthesised response, not an error");

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(text(response).await.is_empty());
}

#[tokio::test]
async fn tower_https_response_body_timeout_fails_a_stalled_body() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = ServiceBuilder::new()
        .layer(ResponseBodyTimeoutLayer::new(Duration::from_millis(200)))
        .service(h2pool::Pool::new());

    // /echo answers at once and echoes what arrives; nothing arrives, so the
    // response body stalls after its headers.
    let (_sender, chunks) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let request = Request::post(server.url("/echo"))
        .body(StreamBody::new(ReceiverStream::new(chunks)))
        .expect("a valid request");
    let response = client.oneshot(request).await.expect("response headers");
    assert_eq!(response.status(), StatusCode::OK);

    let error = response
        .into_body()
        .collect()
        .await
        .expect_err("the body stalls");
    assert!(
        error.is::<TimeoutError>(),
        "tower-http's TimeoutError: {error:?}"
    );
}

#[tokio::test]
async fn the_trace_layer_sees_responses_and_failures() {
    let server = TestServer::start(ServerConfig::default()).await;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let client = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http()
                .on_response({
                    let statuses = statuses.clone();
                    move |response: &Response<_>, _: Duration, _: &tracing::Span| {
                        statuses.lock().expect("lock").push(response.status());
                    }
                })
                .on_failure({
                    let failures = failures.clone();
                    move |failure: ServerErrorsFailureClass, _: Duration, _: &tracing::Span| {
                        failures.lock().expect("lock").push(failure.to_string());
                    }
                }),
        )
        .service(h2pool::Pool::new());

    let response = client
        .clone()
        .oneshot(support::get(server.url("/")))
        .await
        .expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body");
    assert_eq!(body.to_bytes(), "ok");
    // /reset answers RST_STREAM(INTERNAL_ERROR) instead of a response.
    let Err(error) = client.oneshot(support::get(server.url("/reset"))).await else {
        panic!("the stream is reset, yet a response arrived");
    };

    assert_eq!(error.kind(), h2pool::ErrorKind::StreamReset);
    assert_eq!(*statuses.lock().expect("lock"), [StatusCode::OK]);
    let failures = failures.lock().expect("lock");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("reset"), "{failures:?}");
}

#[tokio::test]
async fn a_concurrency_limit_over_an_origin_service_holds() {
    const LIMIT: usize = 4;
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = h2pool::Pool::new();
    let origin = pool
        .origin(format!("http://{}", server.addr()).parse().expect("uri"))
        .expect("a valid origin");
    let client = ServiceBuilder::new()
        .concurrency_limit(LIMIT)
        .service(origin);

    let calls: Vec<_> = (0..24)
        .map(|_| {
            let client = client.clone();
            let request = support::get(server.url("/delay/50"));
            tokio::spawn(async move { client.oneshot(request).await })
        })
        .collect();
    for call in calls {
        let response = call.await.expect("no panic").expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }

    let most = server.counters().max_streams_active.load(Ordering::SeqCst);
    assert!(most <= LIMIT, "{most} requests at once, limit {LIMIT}");
    assert_eq!(server.counters().requests.load(Ordering::SeqCst), 24);
}

/// What an application stores: one nameable, cloneable, shareable client.
type HttpClient =
    BoxCloneSyncService<Request<http_body_util::Empty<Bytes>>, Response<h2pool::Body>, BoxError>;

#[tokio::test]
async fn a_boxed_stack_serves_many_tasks_at_once() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client: HttpClient = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(SetRequestHeaderLayer::overriding(
                HeaderName::from_static("x-client"),
                HeaderValue::from_static("boxed"),
            ))
            .timeout(Duration::from_secs(30))
            .concurrency_limit(16)
            .service(h2pool::Pool::new()),
    );
    let shared = Arc::new(client);

    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let mut client = HttpClient::clone(&shared);
            let url = server.url("/headers");
            tokio::spawn(async move {
                for i in 0..10 {
                    let request = support::get_with_id(url.clone(), &format!("{task}-{i}"));
                    let response = client.ready().await?.call(request).await?;
                    let seen = text(response).await;
                    assert!(seen.contains("x-client: boxed"), "{seen}");
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("no panic")
            .expect("every request succeeds");
    }

    assert_eq!(server.counters().requests.load(Ordering::SeqCst), 80);
    assert!(server.duplicates().is_empty());
}
