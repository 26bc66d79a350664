//! Servers that break HTTP/2 on purpose. Each case ends the request with a
//! typed error (or is held within h2's limits), never a panic or a hang,
//! and the pool keeps serving its other origins.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2pool::connection::Http2Settings;
use h2pool::{Delivery, Error, ErrorKind, Pool};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use support::raw::{code, hpack, kind, setting, RawConnection, RawServer, DEFAULT_WINDOW};
use support::{body_bytes, get, ServerConfig, TestServer};
use tower::{Service, ServiceExt};

/// Long enough for any case here on a loaded machine; a hang fails the test.
const ENDS_WITHIN: Duration = Duration::from_secs(20);

/// A hostile origin running `script`, a healthy one, and one pool for both.
struct Setup {
    hostile: RawServer,
    healthy: TestServer,
    pool: Pool,
}

async fn setup<F, Fut>(builder: h2pool::Builder, script: F) -> Setup
where
    F: Fn(RawConnection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    support::init_tracing();
    let healthy = TestServer::start(ServerConfig::default()).await;
    let pool = builder.build();
    // A connection to the healthy origin before the trouble starts: it must
    // survive the hostile one.
    let response = pool
        .clone()
        .oneshot(get(healthy.url("/")))
        .await
        .expect("healthy origin");
    body_bytes(response).await.expect("healthy body");
    Setup {
        hostile: RawServer::start(script).await,
        healthy,
        pool,
    }
}

impl Setup {
    /// A GET to the hostile origin that must end, one way or the other.
    async fn request_hostile(&self, path: &str) -> Result<http::Response<h2pool::Body>, Error> {
        tokio::time::timeout(
            ENDS_WITHIN,
            self.pool.clone().oneshot(get(self.hostile.url(path))),
        )
        .await
        .expect("the request ends instead of hanging")
    }

    async fn fail_hostile(&self, path: &str) -> Error {
        let error = self
            .request_hostile(path)
            .await
            .expect_err("a hostile server's answer is an error");
        eprintln!("{path}: {error} / {error:?}");
        error
    }

    /// The healthy origin still answers, on the connection it had.
    async fn assert_healthy_origin_serves(&self) {
        let response = tokio::time::timeout(
            ENDS_WITHIN,
            self.pool.clone().oneshot(get(self.healthy.url("/"))),
        )
        .await
        .expect("the healthy origin answers in time")
        .expect("the healthy origin answers");
        assert_eq!(body_bytes(response).await.unwrap(), "ok");
        assert_eq!(self.healthy.connections_accepted(), 1);
    }
}

/// Handshake, wait for a request, then hand over to `then`.
fn on_request<F, Fut>(
    then: F,
) -> impl Fn(RawConnection) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>
       + Send
       + Sync
       + 'static
where
    F: Fn(RawConnection, u32) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    move |mut conn: RawConnection| {
        let then = then.clone();
        Box::pin(async move {
            conn.handshake(&[]).await?;
            let stream = conn.next_request().await?;
            then(conn, stream).await
        })
    }
}

/// A request body that never ends, so the stream's sending side stays open.
fn endless_request_body() -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static
{
    StreamBody::new(futures_util::stream::pending::<
        Result<Frame<Bytes>, Infallible>,
    >())
}

/// What every connection-level protocol error here must look like: the
/// server broke HTTP/2, the request had gone out, and the words say so.
fn assert_server_broke_the_protocol(error: &Error, reason: h2::Reason) {
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
    assert_eq!(error.delivery(), Delivery::MaybeProcessed, "{error:?}");
    assert_eq!(error.reason(), Some(reason), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("h2 closed the connection over what the server sent"),
        "{text}"
    );
    assert!(text.contains(&format!("{reason:?}")), "{text}");
}

#[tokio::test]
async fn response_headers_over_max_header_list_size_fail_that_stream_and_the_connection_serves_on()
{
    let setup = setup(
        Pool::builder(),
        on_request(|mut conn, stream| async move {
            // 20 KiB of headers against our 16 KiB limit, split into frames
            // of the default 16 KiB maximum frame size.
            let big = "a".repeat(20 * 1024);
            let block = hpack(&[(":status", "200"), ("x-big", &big)]);
            conn.send_header_block(stream, &block, true, 16 * 1024)
                .await?;
            conn.serve_ok().await
        }),
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
    assert_eq!(error.delivery(), Delivery::MaybeProcessed);
    assert!(error.h2().is_some_and(h2::Error::is_reset), "{error:?}");
    assert!(
        error.to_string().contains("max_header_list_size"),
        "{error}"
    );
    // Only the stream failed: the same connection answers the next request.
    let response = setup
        .request_hostile("/")
        .await
        .expect("the connection serves on");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(setup.hostile.connections_accepted(), 1);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_with_enhance_your_calm() {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let setup = setup(
        Pool::builder(),
        on_request(move |conn, stream| {
            let counter = counter.clone();
            async move {
                let (reader, mut writer) = conn.into_parts();
                tokio::spawn(reader.discard_all());
                writer
                    .send_frame(kind::HEADERS, 0, stream, &hpack(&[(":status", "200")]))
                    .await?;
                let fragment = hpack(&[("x-flood", "0123456789")]);
                for _ in 0..100_000 {
                    writer.send_continuation(stream, &fragment, false).await?;
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        }),
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_server_broke_the_protocol(&error, h2::Reason::ENHANCE_YOUR_CALM);
    // h2 gave up long before the flood's end (its cap is a handful of frames
    // per header list; the rest is what the socket buffers held).
    assert!(sent.load(Ordering::SeqCst) < 100_000);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_settings_flood_is_acknowledged_and_the_response_still_arrives() {
    let setup = setup(
        Pool::builder(),
        on_request(|conn, stream| async move {
            let (reader, mut writer) = conn.into_parts();
            tokio::spawn(reader.discard_all());
            for _ in 0..50_000 {
                writer
                    .send_settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)])
                    .await?;
            }
            writer
                .send_headers(stream, &hpack(&[(":status", "200")]), true)
                .await
        }),
    )
    .await;
    // h2 answers each with an ACK, reading no further while one is unsent,
    // so the flood costs the client no memory; it is not an error.
    let response = setup
        .request_hostile("/")
        .await
        .expect("the response after the flood");
    assert_eq!(response.status(), 200);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_ping_flood_is_answered_and_the_response_still_arrives() {
    let setup = setup(
        Pool::builder(),
        on_request(|conn, stream| async move {
            let (reader, mut writer) = conn.into_parts();
            tokio::spawn(reader.discard_all());
            for i in 0..50_000u64 {
                writer.send_ping(false, &i.to_be_bytes()).await?;
            }
            writer
                .send_headers(stream, &hpack(&[(":status", "200")]), true)
                .await
        }),
    )
    .await;
    // As with SETTINGS: one PONG pending at a time, then backpressure.
    let response = setup
        .request_hostile("/")
        .await
        .expect("the response after the flood");
    assert_eq!(response.status(), 200);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_connection_window_update_past_2_31_minus_1_is_a_flow_control_error() {
    let setup = setup(
        Pool::builder(),
        on_request(|mut conn, _stream| async move {
            // The window starts at 65,535: one more maximal increment overflows it.
            conn.send_window_update(0, 0x7fff_ffff).await?;
            conn.serve_ok().await
        }),
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_server_broke_the_protocol(&error, h2::Reason::FLOW_CONTROL_ERROR);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_stream_window_update_past_2_31_minus_1_resets_that_stream() {
    let setup = setup(
        Pool::builder(),
        on_request(|mut conn, stream| async move {
            conn.send_window_update(stream, 0x7fff_ffff).await?;
            conn.respond_ok(stream, b"ok").await?;
            conn.serve_ok().await
        }),
    )
    .await;
    let request = http::Request::post(setup.hostile.url("/upload"))
        .body(endless_request_body())
        .unwrap();
    let outcome = tokio::time::timeout(ENDS_WITHIN, setup.pool.clone().oneshot(request))
        .await
        .expect("the request ends instead of hanging");
    let error = outcome.expect_err("the overflow ends the stream");
    eprintln!("{error} / {error:?}");
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::FLOW_CONTROL_ERROR),
        "{error:?}"
    );
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_malformed_status_is_a_protocol_error() {
    let setup = setup(
        Pool::builder(),
        on_request(|mut conn, stream| async move {
            conn.send_headers(stream, &hpack(&[(":status", "99x")]), true)
                .await?;
            conn.serve_ok().await
        }),
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_server_broke_the_protocol(&error, h2::Reason::PROTOCOL_ERROR);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_request_pseudo_header_in_a_response_never_reaches_the_caller() {
    let setup = setup(
        Pool::builder(),
        on_request(|mut conn, stream| async move {
            let block = hpack(&[(":status", "200"), (":method", "GET"), ("x-real", "1")]);
            conn.send_headers(stream, &block, true).await?;
            conn.serve_ok().await
        }),
    )
    .await;
    // RFC 9113 calls this response malformed; h2 0.4 drops the stray
    // pseudo-header instead of failing the stream. Either way the caller
    // must never see it as a header.
    let response = setup
        .request_hostile("/")
        .await
        .expect("h2 is lenient here");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .keys()
        .all(|name| !name.as_str().starts_with(':')));
    assert_eq!(response.headers()["x-real"], "1");
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn response_headers_on_a_stream_never_opened_are_a_protocol_error() {
    let setup = setup(
        Pool::builder(),
        on_request(|mut conn, stream| async move {
            conn.send_headers(stream + 2, &hpack(&[(":status", "200")]), true)
                .await?;
            conn.serve_ok().await
        }),
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_server_broke_the_protocol(&error, h2::Reason::PROTOCOL_ERROR);
    setup.assert_healthy_origin_serves().await;
}

/// A request that waited in the pool, never sent, for a stream slot on a
/// connection whose server allows none, and was told so.
fn assert_waited_on_a_server_allowing_no_streams(error: &Error) {
    assert_eq!(error.kind(), ErrorKind::PendingTimeout, "{error:?}");
    assert!(error.is_never_sent());
    assert!(
        error
            .to_string()
            .contains("SETTINGS_MAX_CONCURRENT_STREAMS 0"),
        "{error}"
    );
}

#[tokio::test]
async fn max_concurrent_streams_zero_fails_at_the_pending_timeout_on_one_connection() {
    let setup = setup(
        Pool::builder().pending_timeout(Some(Duration::from_millis(500))),
        |mut conn: RawConnection| async move {
            conn.handshake(&[(setting::MAX_CONCURRENT_STREAMS, 0)])
                .await?;
            conn.serve_ok().await
        },
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_waited_on_a_server_allowing_no_streams(&error);
    // Another connection would get the same answer: the pool keeps one.
    assert_eq!(setup.hostile.connections_accepted(), 1);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_server_that_never_sends_settings_fails_the_handshake_at_its_timeout() {
    let settings = Http2Settings::default().handshake_timeout(Duration::from_millis(300));
    let setup = setup(
        Pool::builder().http2(settings),
        |conn: RawConnection| async move {
            // Reads everything, says nothing.
            conn.into_parts().0.discard_all().await;
            Ok(())
        },
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_eq!(error.kind(), ErrorKind::Handshake, "{error:?}");
    assert!(error.is_never_sent());
    assert!(
        error.is_timeout(),
        "the handshake timeout is one of the pool's"
    );
    assert!(error.to_string().contains("no SETTINGS"), "{error}");
    setup.assert_healthy_origin_serves().await;
}

/// A server that sends its SETTINGS but never acknowledges ours has not
/// taken our windows and limits: a stream opened before the ACK could
/// stall (h2 sizes its windows by settings the server has not confirmed).
#[tokio::test]
async fn a_server_that_never_acknowledges_our_settings_fails_the_handshake_at_its_timeout() {
    let settings = Http2Settings::default().handshake_timeout(Duration::from_millis(300));
    let setup = setup(
        Pool::builder().http2(settings),
        |conn: RawConnection| async move {
            let (reader, mut writer) = conn.into_parts();
            writer.send_settings(&[]).await?;
            // Reads everything, answers nothing, ACKs nothing.
            reader.discard_all().await;
            Ok(())
        },
    )
    .await;
    let error = setup.fail_hostile("/").await;
    assert_eq!(error.kind(), ErrorKind::Handshake, "{error:?}");
    assert!(error.is_never_sent());
    assert!(error.to_string().contains("no ACK of ours"), "{error}");
    setup.assert_healthy_origin_serves().await;
}

/// An endless body sent as fast as the client's windows allow; counts
/// what went out and whether the client cancelled.
#[derive(Clone, Default)]
struct EndlessBody {
    sent: Arc<AtomicU64>,
    cancelled: Arc<AtomicBool>,
}

impl EndlessBody {
    async fn serve(self, mut conn: RawConnection, stream: u32) -> std::io::Result<()> {
        conn.send_headers(stream, &hpack(&[(":status", "200")]), false)
            .await?;
        let chunk = vec![b'x'; 16 * 1024];
        let mut stream_window = i64::from(
            conn.client_setting(setting::INITIAL_WINDOW_SIZE)
                .unwrap_or(DEFAULT_WINDOW as u32),
        );
        loop {
            let window = stream_window.min(conn.connection_window());
            if window > 0 {
                let len = chunk.len().min(window as usize);
                conn.send_data_counted(stream, &chunk[..len]).await?;
                stream_window -= len as i64;
                self.sent.fetch_add(len as u64, Ordering::SeqCst);
                continue;
            }
            let frame = conn.next_frame().await?;
            match frame.kind {
                kind::WINDOW_UPDATE if frame.stream_id == stream => {
                    stream_window += i64::from(frame.window_increment().unwrap_or(0));
                }
                kind::RST_STREAM if frame.stream_id == stream => {
                    assert_eq!(frame.error_code(), Some(code::CANCEL));
                    self.cancelled.store(true, Ordering::SeqCst);
                    return conn.serve_ok().await;
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn an_endless_body_is_held_to_the_stream_window_until_read_and_dropping_it_cancels() {
    const WINDOW: u32 = 64 * 1024;
    let body = EndlessBody::default();
    let server_side = body.clone();
    let setup = setup(
        Pool::builder().initial_stream_window_size(WINDOW),
        on_request(move |conn, stream| server_side.clone().serve(conn, stream)),
    )
    .await;
    let response = setup.request_hostile("/").await.expect("the headers");
    let mut response_body = response.into_body();

    // Not reading: the server fills the stream window, and no more.
    assert!(
        support::eventually(ENDS_WITHIN, || body.sent.load(Ordering::SeqCst)
            == u64::from(WINDOW))
        .await,
        "the server sent {} bytes",
        body.sent.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(body.sent.load(Ordering::SeqCst), u64::from(WINDOW));

    // Reading 1 MiB lets it send that much more, never more than one
    // window ahead of what was read.
    let mut read = 0u64;
    while read < 1024 * 1024 {
        let frame = response_body
            .frame()
            .await
            .expect("more body")
            .expect("body data");
        read += frame.data_ref().map_or(0, |data| data.len() as u64);
        assert!(body.sent.load(Ordering::SeqCst) <= read + u64::from(WINDOW));
    }

    drop(response_body);
    assert!(
        support::eventually(ENDS_WITHIN, || body.cancelled.load(Ordering::SeqCst)).await,
        "dropping the body resets the stream with CANCEL"
    );
    assert!(body.sent.load(Ordering::SeqCst) <= read + u64::from(WINDOW));
    // The connection outlives the cancelled stream.
    let response = setup
        .request_hostile("/")
        .await
        .expect("the connection serves on");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    assert_eq!(setup.hostile.connections_accepted(), 1);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_server_that_ignores_the_stream_window_is_a_flow_control_error() {
    let setup = setup(
        Pool::builder().initial_stream_window_size(64 * 1024),
        on_request(|mut conn, stream| async move {
            conn.send_headers(stream, &hpack(&[(":status", "200")]), false)
                .await?;
            let chunk = vec![b'x'; 16 * 1024];
            // Twice the window, without waiting for WINDOW_UPDATE.
            for _ in 0..8 {
                conn.send_data(stream, &chunk, false).await?;
            }
            conn.serve_ok().await
        }),
    )
    .await;
    let response = setup.request_hostile("/").await.expect("the headers");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = body_bytes(response)
        .await
        .expect_err("the body ends with an error");
    eprintln!("{error} / {error:?}");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::FLOW_CONTROL_ERROR),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_server_that_sheds_every_connection_with_goaway_is_reconnected_to_with_backoff() {
    // An overloaded server: it completes the handshake, then turns away
    // every connection with GOAWAY (last stream 0) at its first request.
    // Each such connection counts as a failed connect, so reconnects back
    // off instead of running as fast as the server can refuse them.
    sheds_every_connection_and_is_reconnected_to_with_backoff(true).await;
}

#[tokio::test]
async fn a_server_that_sheds_every_connection_without_a_word_is_reconnected_to_with_backoff() {
    // The same, closing each connection without GOAWAY.
    sheds_every_connection_and_is_reconnected_to_with_backoff(false).await;
}

async fn sheds_every_connection_and_is_reconnected_to_with_backoff(goaway: bool) {
    let setup = setup(
        Pool::builder().connect_backoff(Duration::from_millis(50), Duration::from_secs(1)),
        on_request(move |mut conn: RawConnection, _stream| async move {
            if goaway {
                conn.send_goaway(0, code::NO_ERROR, b"overloaded").await?;
            }
            conn.close().await;
            Ok(())
        }),
    )
    .await;
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let pool = setup.pool.clone();
        let url = setup.hostile.url("/");
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while started.elapsed() < Duration::from_millis(1500) {
                let outcome =
                    tokio::time::timeout(ENDS_WITHIN, pool.clone().oneshot(get(url.clone())))
                        .await
                        .expect("the request ends instead of hanging");
                errors.push(outcome.expect_err("the server answers nothing"));
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for worker in workers {
        errors.extend(worker.await.expect("worker"));
    }
    let connections = setup.hostile.connections_accepted();
    eprintln!(
        "{} requests, {connections} connections in {:?}; first error: {}",
        errors.len(),
        started.elapsed(),
        errors[0]
    );
    if goaway {
        for error in &errors {
            assert_ne!(error.delivery(), Delivery::MaybeProcessed, "{error:?}");
        }
    }
    // Backoff 50 ms, doubling to 1 s, with jitter: a dozen connects in
    // 1.5 s at most. Without it, each refusal reconnects at once.
    assert!(connections <= 16, "{connections} connections in 1.5 s");
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_server_that_raises_its_stream_limit_from_zero_gets_the_waiting_request() {
    // RFC 9113 lets a server allow no streams for a while (SETTINGS 0) and
    // raise the limit later. The request waits for it on the one
    // connection, instead of failing at the pending timeout.
    let setup = setup(
        Pool::builder().pending_timeout(Some(Duration::from_secs(10))),
        |mut conn: RawConnection| async move {
            conn.handshake(&[(setting::MAX_CONCURRENT_STREAMS, 0)])
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            conn.send_settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)])
                .await?;
            conn.serve_ok().await
        },
    )
    .await;
    let started = std::time::Instant::now();
    let response = setup
        .request_hostile("/")
        .await
        .expect("the request goes out once the limit is raised");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    eprintln!("answered after {:?}", started.elapsed());
    assert_eq!(setup.hostile.connections_accepted(), 1);
    setup.assert_healthy_origin_serves().await;
}

/// A server that answers its first request, then allows no more streams:
/// it notes when the client acknowledges that, and counts the HEADERS that
/// still come.
#[derive(Clone, Default)]
struct LimitDropsToZero {
    acknowledged: Arc<tokio::sync::Notify>,
    headers_after_zero: Arc<AtomicU64>,
}

impl LimitDropsToZero {
    fn script(
        &self,
    ) -> impl Fn(RawConnection) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>
           + Send
           + Sync
           + 'static {
        let server = self.clone();
        on_request(move |mut conn: RawConnection, stream| {
            let server = server.clone();
            async move {
                conn.respond_ok(stream, b"ok").await?;
                conn.send_settings(&[(setting::MAX_CONCURRENT_STREAMS, 0)])
                    .await?;
                loop {
                    let frame = conn.read_frame().await?;
                    if frame.kind == kind::SETTINGS && frame.has_flag(support::raw::flag::ACK) {
                        server.acknowledged.notify_one();
                    } else if frame.kind == kind::HEADERS {
                        server.headers_after_zero.fetch_add(1, Ordering::SeqCst);
                    }
                    conn.answer_housekeeping(&frame).await?;
                }
            }
        })
    }

    /// Until the client acknowledges the limit of zero: h2 has applied it.
    async fn until_acknowledged(&self) {
        tokio::time::timeout(ENDS_WITHIN, self.acknowledged.notified())
            .await
            .expect("the client acknowledges the SETTINGS");
    }
}

#[tokio::test]
async fn a_stream_limit_lowered_to_zero_mid_connection_holds_new_requests_in_the_pool() {
    // The server allows no more streams after its first answer. A request
    // made after that must wait in the pool (where the pending timeout
    // bounds it), not in h2's queue of streams waiting to open, where
    // nothing bounds it and no HEADERS ever leave.
    let server = LimitDropsToZero::default();
    let setup = setup(
        Pool::builder().pending_timeout(Some(Duration::from_millis(500))),
        server.script(),
    )
    .await;
    let response = setup.request_hostile("/").await.expect("the first answer");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    server.until_acknowledged().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let error = setup.fail_hostile("/second").await;
    assert_waited_on_a_server_allowing_no_streams(&error);
    assert_eq!(server.headers_after_zero.load(Ordering::SeqCst), 0);
    setup.assert_healthy_origin_serves().await;
}

#[tokio::test]
async fn a_slot_reserved_before_the_stream_limit_drops_to_zero_hands_its_request_back() {
    // A slot reserved (as a balancer's or a buffer's `poll_ready` does)
    // before the server lowers its limit below the streams in flight is one
    // too many afterwards. h2 would keep its stream in a queue that no
    // timeout reaches, for ever with a limit of zero: the call must hand
    // the request back instead, never sent.
    let limit = LimitDropsToZero::default();
    let server = RawServer::start(limit.script()).await;
    let connection = support::bare_connection_to(server.addr()).await;
    let mut reserved = connection.clone();
    ServiceExt::<http::Request<http_body_util::Empty<Bytes>>>::ready(&mut reserved)
        .await
        .expect("a slot");
    let response = connection
        .clone()
        .oneshot(get(server.url("/")))
        .await
        .expect("the first answer");
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
    limit.until_acknowledged().await;

    let mut error = tokio::time::timeout(ENDS_WITHIN, reserved.call(get(server.url("/late"))))
        .await
        .expect("the call ends instead of waiting in h2's queue")
        .expect_err("no stream may start");
    eprintln!("{error} / {error:?}");
    assert_eq!(error.kind(), ErrorKind::Refused, "{error:?}");
    assert!(error.is_never_sent(), "{error:?}");
    assert!(error.to_string().contains("stream limit"), "{error}");
    let request = error
        .take_request::<http::Request<http_body_util::Empty<Bytes>>>()
        .expect("the request is handed back");
    assert_eq!(request.uri().path(), "/late");
    assert_eq!(limit.headers_after_zero.load(Ordering::SeqCst), 0);
    assert_eq!(connection.handle().load(), 0, "the slot is given back");
}

#[tokio::test]
async fn a_refusal_after_the_response_began_is_a_reset_or_close_that_may_have_been_processed() {
    // REFUSED_STREAM and a GOAWAY's last stream id promise "not processed";
    // after the response head that promise is void, and neither the kind
    // nor the words may repeat it (a caller retrying on `Refused` would run
    // a POST twice).
    for goaway in [false, true] {
        let setup = setup(
            Pool::builder(),
            on_request(move |mut conn: RawConnection, stream| async move {
                conn.send_headers(stream, &hpack(&[(":status", "200")]), false)
                    .await?;
                conn.send_data(stream, b"partial", false).await?;
                if goaway {
                    conn.send_goaway(0, code::NO_ERROR, b"").await?;
                } else {
                    conn.send_rst_stream(stream, code::REFUSED_STREAM).await?;
                }
                loop {
                    conn.next_frame().await?;
                }
            }),
        )
        .await;
        let response = setup.request_hostile("/").await.expect("the response head");
        let error = body_bytes(response).await.expect_err("the body is cut off");
        eprintln!("goaway {goaway}: {error} / {error:?}");
        let expected = if goaway {
            ErrorKind::ConnectionClosed
        } else {
            ErrorKind::StreamReset
        };
        assert_eq!(error.kind(), expected, "{error:?}");
        assert_eq!(error.delivery(), Delivery::MaybeProcessed);
        assert!(!error.is_safe_to_replay());
        let text = error.to_string();
        assert!(!text.contains("not process"), "{text}");
        assert!(text.contains("after its response had begun"), "{text}");
    }
}

#[tokio::test]
async fn a_close_without_goaway_is_not_recorded_as_a_graceful_goaway() {
    // h2 ends the connection the same way after GOAWAY(NO_ERROR) and after
    // a bare close. Only the first says how many streams the server takes
    // per connection (what the pool learns its schedule from), and only it
    // may be reported as a GOAWAY.
    support::init_tracing();
    for goaway in [false, true] {
        let server = RawServer::start(move |mut conn: RawConnection| async move {
            conn.handshake(&[]).await?;
            let stream = conn.next_request().await?;
            conn.respond_ok(stream, b"ok").await?;
            if goaway {
                conn.send_goaway(stream, code::NO_ERROR, b"").await?;
            }
            conn.close().await;
            Ok(())
        })
        .await;
        let connection = support::bare_connection_to(server.addr()).await;
        let handle = connection.handle().clone();
        // Kept, so that the close is the server's doing, not ours.
        let _kept = connection.clone();
        let response = connection
            .oneshot(get(server.url("/")))
            .await
            .expect("an answer");
        assert_eq!(body_bytes(response).await.unwrap(), "ok");
        let closed = support::eventually(ENDS_WITHIN, || {
            handle.phase() == h2pool::connection::Phase::Closed
        })
        .await;
        assert!(closed, "the connection closes");
        let reason = handle.close_reason().expect("a close reason");
        eprintln!("goaway {goaway}: {reason:?}");
        if goaway {
            assert_eq!(reason.kind, ErrorKind::GoAway);
            assert_eq!(reason.h2_reason, Some(h2::Reason::NO_ERROR));
        } else {
            assert_eq!(reason.kind, ErrorKind::ConnectionClosed);
            assert_eq!(reason.h2_reason, None);
            assert!(
                reason.detail.contains("without GOAWAY"),
                "{}",
                reason.detail
            );
        }
    }
}
