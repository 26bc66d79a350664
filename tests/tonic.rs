//! tonic generated clients over the pool, against a real tonic server: the
//! four call kinds, statuses and metadata, large messages, how pool errors
//! reach gRPC callers, and a server restart under load.

mod grpc;
mod support;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use grpc::echo::echo_client::EchoClient;
use grpc::echo::EchoRequest;
use grpc::{message, request_channel, GrpcServer, MAX_MESSAGE_SIZE};
use h2pool::grpc::GrpcStatusLayer;
use h2pool::{ErrorKind, Pool};
use tonic::Code;
use tower::{Layer, ServiceBuilder};

/// Fails the test, instead of hanging it, if `future` never finishes.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish: a deadlock"))
}

fn closed_port_uri() -> http::Uri {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("listener has an address");
    drop(listener);
    format!("http://{addr}").parse().expect("a valid origin")
}

#[tokio::test]
async fn a_unary_call_over_an_origin_service_round_trips_message_and_metadata() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"));

    let mut request = tonic::Request::new(message("hello"));
    request
        .metadata_mut()
        .insert("x-tenant", "acme".parse().expect("ascii metadata"));
    let response = client.unary(request).await.expect("unary call");

    assert_eq!(response.get_ref().message, "hello");
    assert_eq!(
        response.metadata().get("x-tenant").map(|v| v.as_bytes()),
        Some(&b"acme"[..])
    );
    assert_eq!(server.calls(), 1);
    assert_eq!(pool.stats().total().requests, 1);
}

#[tokio::test]
async fn the_keyed_pool_serves_a_tonic_client_given_the_origin() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    // tonic makes the request URIs absolute with this origin, as the keyed
    // pool needs them.
    let mut client = EchoClient::with_origin(pool.clone(), server.uri());

    let response = client.unary(message("keyed")).await.expect("unary call");

    assert_eq!(response.into_inner().message, "keyed");
    assert_eq!(pool.stats().total().requests, 1);
}

#[tokio::test]
async fn server_streaming_delivers_every_message_then_the_ok_status_from_the_trailers() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"));

    let request = EchoRequest {
        message: "tick".into(),
        repeat: 50,
        ..EchoRequest::default()
    };
    let mut ticks = client
        .server_stream(request)
        .await
        .expect("call")
        .into_inner();
    let mut received = Vec::new();
    while let Some(tick) = ticks.message().await.expect("an OK status ends the stream") {
        received.push(tick.message);
    }

    let expected: Vec<String> = (0..50).map(|i| format!("tick #{i}")).collect();
    assert_eq!(received, expected);
    let trailers = ticks
        .trailers()
        .await
        .expect("trailers read")
        .expect("trailers present");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

#[tokio::test]
async fn a_status_in_the_trailers_after_messages_reaches_the_client() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"));

    let request = EchoRequest {
        message: "then-abort".into(),
        repeat: 2,
        ..EchoRequest::default()
    };
    let mut stream = client
        .server_stream(request)
        .await
        .expect("call")
        .into_inner();
    assert!(stream.message().await.expect("first").is_some());
    assert!(stream.message().await.expect("second").is_some());
    let status = stream.message().await.expect_err("ABORTED after two");

    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "stopped after 2 messages");
}

#[tokio::test]
async fn a_trailers_only_error_keeps_its_code_message_and_metadata() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"));

    let status = client
        .unary(message("not-found"))
        .await
        .expect_err("the server answers NOT_FOUND");

    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no echo for \"not-found\"");
    assert_eq!(
        status.metadata().get("x-detail").map(|v| v.as_bytes()),
        Some(&b"asked for it"[..])
    );
    // The connection is fine afterwards.
    let response = client.unary(message("again")).await.expect("unary call");
    assert_eq!(response.into_inner().message, "again");
    assert_eq!(pool.stats().total().connections_opened, 1);
}

#[tokio::test]
async fn client_streaming_delivers_every_message_before_the_response() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"));

    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let requests = tokio_stream::iter(words.clone().into_iter().map(|w| message(&w)));
    let response = client.client_stream(requests).await.expect("call");

    assert_eq!(response.into_inner().message, words.join(","));
}

#[tokio::test]
async fn bidi_against_a_server_that_waits_for_the_first_message_does_not_deadlock() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"));

    let (sender, requests) = request_channel();
    // The server sends no response headers until this message arrives: a
    // client that waited for them before streaming would hang here.
    sender.send(message("0")).await.expect("channel open");
    let mut replies = within("the bidi call", client.bidi(requests))
        .await
        .expect("response headers")
        .into_inner();
    // Lock-step: each reply arrives before the next message is sent, so the
    // request body flows while the response is open.
    for i in 1..=20 {
        let reply = within("a bidi reply", replies.message())
            .await
            .expect("no error")
            .expect("a reply per message");
        assert_eq!(reply.message, (i - 1).to_string());
        sender
            .send(message(&i.to_string()))
            .await
            .expect("channel open");
    }
    drop(sender);
    let last = within("the last reply", replies.message())
        .await
        .expect("no error")
        .expect("the last reply");
    assert_eq!(last.message, "20");
    let end = within("the end of the stream", replies.message()).await;
    assert!(matches!(end, Ok(None)), "an OK end: {end:?}");
}

#[tokio::test]
async fn messages_larger_than_tonics_default_limit_round_trip_with_raised_limits() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(server.uri()).expect("a valid origin"))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    // 6 MiB: beyond tonic's default 4 MiB decoding limit on both sides.
    let payload: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let request = EchoRequest {
        message: "big".into(),
        payload: payload.clone(),
        ..EchoRequest::default()
    };
    let response = client.unary(request).await.expect("unary call");
    assert!(
        response.get_ref().payload == payload,
        "payload echoed intact"
    );

    // Two of them in one client stream (the server answers with both).
    let requests = tokio_stream::iter((0..2).map(move |i| EchoRequest {
        message: i.to_string(),
        payload: payload.clone(),
        ..EchoRequest::default()
    }));
    let joined = client.client_stream(requests).await.expect("call");
    assert_eq!(joined.get_ref().payload.len(), 2 * 6 * 1024 * 1024);
}

#[tokio::test]
async fn without_a_mapping_a_closed_port_reaches_tonic_as_unknown_with_the_pool_error_as_source() {
    // What tonic's own Status::from_error makes of a pool error: it does not
    // look for h2 or io errors inside other errors, so the code is UNKNOWN.
    // The message and the source still say what happened.
    let pool = Pool::new();
    let mut client = EchoClient::new(pool.origin(closed_port_uri()).expect("a valid origin"));

    let status = client
        .unary(message("hello"))
        .await
        .expect_err("nothing listens");

    assert_eq!(status.code(), Code::Unknown);
    assert!(status.message().contains("could not connect"), "{status:?}");
    let source = std::error::Error::source(&status).expect("the pool error as source");
    let error = source
        .downcast_ref::<h2pool::Error>()
        .expect("an h2pool::Error");
    assert_eq!(error.kind(), ErrorKind::Connect);
}

#[tokio::test]
async fn with_grpc_statuses_a_closed_port_is_unavailable() {
    let pool = Pool::new();
    let channel =
        GrpcStatusLayer::new().layer(pool.origin(closed_port_uri()).expect("a valid origin"));
    let mut client = EchoClient::new(channel);

    let status = client
        .unary(message("hello"))
        .await
        .expect_err("nothing listens");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("could not connect"), "{status:?}");
    let source = std::error::Error::source(&status).expect("the pool error as source");
    assert!(source.downcast_ref::<h2pool::Error>().is_some());
}

#[tokio::test]
async fn with_grpc_statuses_a_refused_stream_is_unavailable() {
    // An HTTP/2 server that refuses every stream (REFUSED_STREAM).
    let faults = support::Faults {
        refuse: 1.0,
        ..support::Faults::default()
    };
    let server = support::TestServer::start(support::ServerConfig {
        faults,
        ..support::ServerConfig::default()
    })
    .await;
    let pool = Pool::new();
    let origin = pool
        .origin(format!("http://{}", server.addr()).parse().expect("uri"))
        .expect("a valid origin");
    let mut client = EchoClient::new(GrpcStatusLayer::new().layer(origin));

    let status = client
        .unary(message("hello"))
        .await
        .expect_err("every stream is refused");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let source = std::error::Error::source(&status).expect("the pool error as source");
    let error = source
        .downcast_ref::<h2pool::Error>()
        .expect("an h2pool::Error");
    assert!(error.is_refused(), "{error:?}");
}

#[tokio::test]
async fn with_grpc_statuses_a_tower_timeout_is_deadline_exceeded() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    let origin = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .service(pool.origin(server.uri()).expect("a valid origin"));
    let mut client = EchoClient::new(GrpcStatusLayer::new().layer(origin));

    let status = client
        .unary(message("slow:30000"))
        .await
        .expect_err("the server answers too late");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The timed-out call freed its stream: the next one goes through.
    let response = client.unary(message("quick")).await.expect("unary call");
    assert_eq!(response.into_inner().message, "quick");
}

/// tonic's `Request::set_timeout` sends `grpc-timeout`; tonic's `Channel`
/// enforces it on the client, and so does the status layer.
#[tokio::test]
async fn with_grpc_statuses_a_calls_own_timeout_is_deadline_exceeded() {
    let server = GrpcServer::start().await;
    let pool = Pool::new();
    // The deadline goes no further than the client's layer, so the server
    // (tonic's enforces it too) cannot be what ends the call.
    let origin = ServiceBuilder::new()
        .map_request(|mut request: http::Request<tonic::body::Body>| {
            request.headers_mut().remove("grpc-timeout");
            request
        })
        .service(pool.origin(server.uri()).expect("a valid origin"));
    // Through an interceptor, as clients that add credentials are built:
    // it needs a default response body.
    let mut client =
        EchoClient::with_interceptor(GrpcStatusLayer::new().layer(origin), Ok::<_, tonic::Status>);

    let mut slow = tonic::Request::new(message("slow:30000"));
    slow.set_timeout(Duration::from_millis(200));
    let status = within("the call with a deadline", client.unary(slow))
        .await
        .expect_err("the server answers too late");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The expired call freed its stream: the next one goes through.
    let response = client.unary(message("quick")).await.expect("unary call");
    assert_eq!(response.into_inner().message, "quick");
    assert!(
        support::eventually(Duration::from_secs(5), || pool
            .stats()
            .total()
            .streams_in_flight
            == 0)
        .await,
        "the expired call's stream was reset: {:?}",
        pool.stats().total()
    );
}

/// Starts a slow call on the keyed pool and waits until the pool shows it
/// in `counted` (in flight, or waiting for a stream slot).
async fn slow_call(
    pool: &Pool,
    server: &GrpcServer,
    counted: impl Fn(&h2pool::OriginStats) -> bool,
) -> tokio::task::JoinHandle<()> {
    let mut client = EchoClient::with_origin(pool.clone(), server.uri());
    let call = tokio::spawn(async move {
        let _ = client.unary(message("slow:30000")).await;
    });
    let pool_view = pool.clone();
    assert!(
        support::eventually(Duration::from_secs(10), || counted(
            &pool_view.stats().total()
        ))
        .await,
        "the slow call shows in the pool's stats: {:?}",
        pool.stats().total()
    );
    call
}

#[tokio::test]
async fn with_grpc_statuses_a_full_pending_queue_is_resource_exhausted() {
    let server = GrpcServer::start().await;
    let pool = Pool::builder()
        .max_connections_per_origin(1)
        .max_concurrent_streams(Some(1))
        .max_pending_requests(1)
        .build();
    // One call holds the only stream, one waits: the queue is full.
    let busy = slow_call(&pool, &server, |s| s.streams_in_flight == 1).await;
    let waiting = slow_call(&pool, &server, |s| s.requests_waiting == 1).await;
    let mut client =
        EchoClient::with_origin(GrpcStatusLayer::new().layer(pool.clone()), server.uri());

    let status = client
        .unary(message("hello"))
        .await
        .expect_err("no room to wait");

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    busy.abort();
    waiting.abort();
}

#[tokio::test]
async fn with_grpc_statuses_a_pending_timeout_is_unavailable() {
    let server = GrpcServer::start().await;
    let pool = Pool::builder()
        .max_connections_per_origin(1)
        .max_concurrent_streams(Some(1))
        .pending_timeout(Some(Duration::from_millis(100)))
        .build();
    let busy = slow_call(&pool, &server, |s| s.streams_in_flight == 1).await;
    let mut client =
        EchoClient::with_origin(GrpcStatusLayer::new().layer(pool.clone()), server.uri());

    let status = client
        .unary(message("hello"))
        .await
        .expect_err("no stream slot in time");

    // The pool's own limit, not the caller's deadline: retryable.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    busy.abort();
}

#[tokio::test]
async fn with_grpc_statuses_a_pool_error_under_a_buffer_still_maps() {
    // tower's `Buffer` hands the error on wrapped in one of its own; the
    // layer finds the pool's error in the source chain.
    let pool = Pool::new();
    let origin = pool.origin(closed_port_uri()).expect("a valid origin");
    let buffered = tower::buffer::Buffer::new(origin, 16);
    let mut client = EchoClient::new(GrpcStatusLayer::new().layer(buffered));

    let status = client
        .unary(message("hello"))
        .await
        .expect_err("nothing listens");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Needs the pool's replay layer: the calls that GOAWAY or the closing
/// listener turn away were never processed, and are sent again.
#[tokio::test]
async fn a_tonic_server_handing_its_port_to_a_new_one_mid_load_fails_no_call() {
    support::init_tracing();
    const CALLS: u64 = 1_000;
    const CONCURRENCY: usize = 32;
    let mut old = GrpcServer::start_shared("127.0.0.1:0".parse().expect("an address"));
    let addr = old.addr();
    let pool = Pool::new();
    let client = EchoClient::new(pool.origin(old.uri()).expect("a valid origin"));

    let completed = Arc::new(AtomicU64::new(0));
    let restart = {
        let completed = completed.clone();
        tokio::spawn(async move {
            while completed.load(Ordering::Relaxed) < CALLS / 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The new server binds the same port first, then the old one
            // stops accepting, sends GOAWAY and finishes its calls.
            let new = GrpcServer::start_shared(addr);
            old.shutdown_gracefully().await;
            (old, new)
        })
    };

    let failures: Vec<String> = stream::iter(0..CALLS)
        .map(|i| {
            let mut client = client.clone();
            let completed = completed.clone();
            async move {
                let outcome = client.unary(message(&format!("call {i}"))).await;
                completed.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(response) if response.get_ref().message == format!("call {i}") => None,
                    Ok(response) => Some(format!("call {i}: wrong answer {response:?}")),
                    Err(status) => Some(format!("call {i}: {status:?}")),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    let (old, new) = within("the restart", restart)
        .await
        .expect("the restart task did not panic");

    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        old.calls() > 0 && new.calls() > 0,
        "both servers served: {} + {}",
        old.calls(),
        new.calls()
    );
    assert_eq!(
        old.calls() + new.calls(),
        CALLS,
        "every call processed exactly once"
    );
}
