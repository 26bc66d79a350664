//! Full duplex streaming, flow control, cancellation and body errors.

mod support;

use std::convert::Infallible;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use h2pool::{ErrorKind, Pool};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody};
use support::{body_bytes, get, ServerConfig, TestServer};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};

type ChannelBody =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

/// A request body the test feeds by hand, chunk by chunk.
fn channel_body() -> (
    mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    ChannelBody,
) {
    let (sender, receiver) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    (sender, StreamBody::new(stream.boxed()))
}

async fn next_data(body: &mut h2pool::Body) -> Bytes {
    loop {
        let frame = body.frame().await.expect("a frame").expect("no error");
        if let Ok(data) = frame.into_data() {
            return data;
        }
    }
}

/// A server that allows one stream at a time.
async fn one_stream_server() -> TestServer {
    TestServer::start(ServerConfig {
        max_concurrent_streams: Some(1),
        ..ServerConfig::default()
    })
    .await
}

/// Sends a GET for "/" through `service`, which must answer "ok" within
/// 10 s: on a one-stream server, only once the earlier stream is gone.
async fn next_get_answers_ok<S>(service: S, server: &TestServer, freed: &str)
where
    S: Service<
        http::Request<http_body_util::Empty<Bytes>>,
        Response = http::Response<h2pool::Body>,
        Error = h2pool::Error,
    >,
{
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        service.oneshot(get(server.url("/"))),
    )
    .await
    .expect(freed)
    .expect("response");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
}

#[tokio::test]
async fn bidi_works_when_the_server_waits_for_client_data_before_its_headers() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let (sender, body) = channel_body();
    let request = http::Request::post(server.url("/bidi")).body(body).unwrap();

    let response = tokio::spawn(pool.oneshot(request));
    // The server answers only after this first message: a client that waits
    // for response headers before sending its body would hang here.
    sender
        .send(Ok(Frame::data(Bytes::from_static(b"ping"))))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("headers arrive once the first message is sent")
        .expect("task")
        .expect("response");
    let mut body = response.into_body();
    assert_eq!(next_data(&mut body).await, "ping");

    // Ping-pong: each side waits for the other.
    sender
        .send(Ok(Frame::data(Bytes::from_static(b"pong"))))
        .await
        .unwrap();
    assert_eq!(next_data(&mut body).await, "pong");
    drop(sender);

    let trailers = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(trailers) = frame.into_trailers() {
                    break trailers;
                }
            }
            other => panic!("expected trailers, got {other:?}"),
        }
    };
    assert_eq!(trailers["x-echo-bytes"], "8");
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_up_and_one_down_through_one_stream_in_bounded_memory() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: u64 = 1 << 30;
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let rss_before = rss_kib("VmRSS:");

    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let frames = futures_util::stream::iter(0..TOTAL / CHUNK as u64)
        .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
    let request = http::Request::post(server.url("/echo"))
        .body(StreamBody::new(frames))
        .unwrap();

    let response = pool.oneshot(request).await.expect("response headers");
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut echoed = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("echo frame");
        match frame.into_data() {
            Ok(data) => {
                assert!(
                    data.iter().all(|byte| *byte == 7),
                    "echoed bytes are the ones sent"
                );
                received += data.len() as u64;
            }
            Err(frame) => echoed = frame.into_trailers().ok(),
        }
    }
    let rss_peak = rss_kib("VmHWM:");
    eprintln!("RSS before {rss_before} KiB, peak {rss_peak} KiB after 1 GiB each way");

    assert_eq!(received, TOTAL);
    assert_eq!(
        echoed.expect("trailers")["x-echo-bytes"],
        TOTAL.to_string().as_str()
    );
    // Flow control keeps both directions to a few windows; buffering even a
    // quarter of the transfer would break this.
    assert!(
        rss_peak < rss_before + 256 * 1024,
        "peak RSS {rss_peak} KiB"
    );
}

#[tokio::test]
async fn dropping_the_response_future_resets_the_stream_and_frees_the_slot() {
    let server = one_stream_server().await;
    let pool = Pool::builder().max_connections_per_origin(1).build();
    let slow = tokio::spawn(pool.clone().oneshot(get(server.url("/delay/60000"))));
    support::wait_for_one_active_stream(&server).await;
    slow.abort();
    let _ = slow.await;

    // The only slot of the only connection must be free again, and the
    // server's too (it allows one stream), or this waits a minute.
    next_get_answers_ok(pool.clone(), &server, "the slot was freed").await;
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn a_dropped_response_frees_the_servers_only_stream_whichever_clone_sent_it() {
    let server = one_stream_server().await;
    let connection = support::bare_connection(&server).await;
    // The clone that sends the slow request is kept but never used again:
    // it must not keep that stream alive once its response is dropped.
    let mut sender = connection.clone();
    let slow = ServiceExt::<http::Request<http_body_util::Empty<Bytes>>>::ready(&mut sender)
        .await
        .expect("ready")
        .call(get(server.url("/delay/60000")));
    support::wait_for_one_active_stream(&server).await;
    drop(slow);

    next_get_answers_ok(
        connection.clone(),
        &server,
        "the slow stream was reset, so the server's only slot is free",
    )
    .await;
    drop(sender);
}

#[tokio::test]
async fn dropping_the_response_body_resets_the_stream_and_frees_the_slot() {
    let server = one_stream_server().await;
    let pool = Pool::builder().max_connections_per_origin(1).build();
    let response = pool
        .clone()
        .oneshot(get(server.url("/download/1073741824")))
        .await
        .expect("response");
    let mut body = response.into_body();
    next_data(&mut body).await;
    assert_eq!(pool.stats().total().streams_in_flight, 1);
    drop(body);
    assert_eq!(pool.stats().total().streams_in_flight, 0);

    next_get_answers_ok(pool.clone(), &server, "the slot was freed").await;
}

#[tokio::test]
async fn a_request_body_error_resets_the_stream_and_is_reported_as_such() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let (sender, body) = channel_body();
    let request = http::Request::post(server.url("/upload"))
        .body(body)
        .unwrap();
    let response = tokio::spawn(pool.clone().oneshot(request));
    sender
        .send(Ok(Frame::data(Bytes::from_static(b"partial"))))
        .await
        .unwrap();
    sender
        .send(Err(std::io::Error::other("disk on fire")))
        .await
        .unwrap();

    let error = response
        .await
        .expect("task")
        .expect_err("the upload failed");
    assert_eq!(error.kind(), ErrorKind::RequestBody);
    let source = std::error::Error::source(&error).expect("the body's error is the source");
    assert_eq!(source.to_string(), "disk on fire");
    next_get_answers_ok(pool, &server, "the connection survives a failed stream").await;
}

/// A body that panics half way: the task sending it ends without END_STREAM
/// or a reset, while the response future keeps the stream alive, so a
/// server that waits for the whole body would never answer.
#[tokio::test]
async fn a_request_body_that_panics_resets_the_stream_and_is_reported_as_such() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
        Bytes::from_static(b"partial"),
    ))])
    .chain(futures_util::stream::poll_fn(|_| -> Poll<Option<_>> {
        panic!("the request body panicked (on purpose, in a test)")
    }));
    let request = http::Request::post(server.url("/upload"))
        .body(StreamBody::new(frames))
        .unwrap();

    let error = tokio::time::timeout(Duration::from_secs(10), pool.clone().oneshot(request))
        .await
        .expect("the request ended instead of waiting for the rest of the body")
        .expect_err("the body failed");
    assert_eq!(error.kind(), ErrorKind::RequestBody);
    let source = std::error::Error::source(&error).expect("the panic is the source");
    assert!(source.to_string().contains("panicked"), "{source}");
    next_get_answers_ok(pool, &server, "the connection survives a failed stream").await;
}

#[tokio::test]
async fn a_slow_reader_slows_the_server_instead_of_buffering() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .build();
    let response = pool
        .oneshot(get(server.url("/download/104857600")))
        .await
        .expect("response");
    let mut body = response.into_body();
    next_data(&mut body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing read for a while: at most one window may have arrived.
    let mut buffered = 0usize;
    while let Some(Ok(frame)) = futures_util::FutureExt::now_or_never(body.frame()).flatten() {
        buffered += frame.into_data().map(|data| data.len()).unwrap_or(0);
    }
    assert!(
        buffered <= 128 * 1024,
        "{buffered} bytes buffered past the window"
    );
}

#[tokio::test]
async fn a_body_ends_right_after_one_frame_or_after_many() {
    // The body asks h2, after the first DATA frame, whether the stream
    // ended with it (most responses fit one frame) and then ends without
    // asking again; a body with more data must not be cut short by that.
    // (Trailers after one frame: `bidi_works_when_the_server_waits_for_client_data_before_its_headers`.)
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();

    let response = pool
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("a response");
    let mut body = response.into_body();
    assert!(!body.is_end_stream(), "nothing read yet");
    assert_eq!(next_data(&mut body).await, "ok");
    assert!(body.is_end_stream(), "the only frame ended the stream");
    assert!(body.frame().await.is_none());

    let response = pool
        .clone()
        .oneshot(get(server.url("/download/100000")))
        .await
        .expect("a response");
    let mut body = response.into_body();
    let collected = (&mut body).collect().await.expect("the whole body");
    assert_eq!(collected.to_bytes().len(), 100_000);
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn a_head_answer_ends_with_its_headers() {
    // HEAD: the server's HEADERS frame ends the stream, and the body says
    // so before anyone polls it (a proxy relays that as no content).
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let mut request = get(server.url("/"));
    *request.method_mut() = http::Method::HEAD;

    let response = pool.oneshot(request).await.expect("a response");

    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        "2",
        "the length of a GET's body"
    );
    let mut body = response.into_body();
    assert!(body.is_end_stream(), "no content follows a HEAD answer");
    assert_eq!(body.size_hint().exact(), Some(0), "not the content-length");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn the_body_size_hint_is_what_content_length_says_is_left() {
    // As hyper's `Incoming`: a proxy relaying the body (or `Limited`)
    // learns its length before reading it.
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let response = pool
        .clone()
        .oneshot(get(server.url("/download/200000")))
        .await
        .expect("a response");
    let mut body = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(200_000));
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("a frame");
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            assert_eq!(body.size_hint().exact(), Some(200_000 - read));
        }
    }
    assert_eq!(read, 200_000);
    assert_eq!(body.size_hint().exact(), Some(0));

    // Without a content-length (a stream of unknown length), no promise.
    let response = pool
        .oneshot(get(server.url("/echo")))
        .await
        .expect("a response");
    let hint = response.body().size_hint();
    assert_eq!((hint.lower(), hint.exact()), (0, None));
}
