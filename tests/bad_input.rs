//! Bad input from the user: unusable URIs, headers HTTP/2 forbids, absurd
//! settings. Each gives a typed error at call time or is clamped to what
//! HTTP/2 (and h2, which asserts on some) accepts; none panics or hangs.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2pool::connection::Http2Settings;
use h2pool::{Builder, ErrorKind, Pool};
use http_body_util::Full;
use proptest::prelude::*;
use support::raw::{setting, RawConnection, RawServer};
use support::{body_bytes, get, ServerConfig, TestServer};
use tower::ServiceExt;

/// Long enough for any case here on a loaded machine; a hang fails the test.
const ENDS_WITHIN: Duration = Duration::from_secs(20);

async fn send<B>(pool: &Pool, request: http::Request<B>) -> Result<Bytes, h2pool::Error>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<h2pool::BoxError>,
{
    let response = tokio::time::timeout(ENDS_WITHIN, pool.clone().oneshot(request))
        .await
        .expect("the request ends instead of hanging")?;
    tokio::time::timeout(ENDS_WITHIN, body_bytes(response))
        .await
        .expect("the body ends instead of hanging")
}

#[tokio::test]
async fn a_relative_uri_is_an_invalid_uri_error_that_hands_the_request_back() {
    let pool = Pool::new();
    let mut error = send(&pool, get("/path?q=1".to_owned()))
        .await
        .expect_err("no origin to send it to");
    assert_eq!(error.kind(), ErrorKind::InvalidUri, "{error:?}");
    assert!(error.is_never_sent());
    assert!(
        error.to_string().contains("scheme and an authority"),
        "{error}"
    );
    let request = error
        .take_request::<http::Request<http_body_util::Empty<Bytes>>>()
        .expect("the request comes back");
    assert_eq!(request.uri(), "/path?q=1");
}

#[tokio::test]
async fn a_scheme_the_connector_does_not_serve_is_an_unsupported_scheme_error_every_time_without_backoff(
) {
    let server = TestServer::start(ServerConfig::default()).await;
    // Were it backed off like a failed connect, the second request would
    // wait a minute (and `send` gives up after 20 s).
    let pool = Pool::builder()
        .connect_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .build();
    // (https is left out: the `rustls` feature serves it.)
    for scheme in ["ws", "ftp", "ws", "ftp"] {
        let url = format!("{scheme}://{}/", server.addr());
        let error = send(&pool, get(url)).await.expect_err("not served");
        assert_eq!(error.kind(), ErrorKind::UnsupportedScheme, "{error:?}");
        assert!(error.is_never_sent());
        assert!(error.to_string().contains("scheme"), "{error}");
    }
    assert_eq!(server.connections_accepted(), 0);
    // The same server over http:// is fine.
    assert_eq!(send(&pool, get(server.url("/"))).await.unwrap(), "ok");
}

#[tokio::test]
async fn connection_specific_headers_are_stripped_rather_than_failing_the_request() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    // h2 refuses each of these as a malformed request (RFC 9113 8.2.2);
    // a request that crossed an HTTP/1.1 hop often carries them.
    let request = http::Request::post(server.url("/upload"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("transfer-encoding", "chunked")
        .header("upgrade", "websocket")
        .header("te", "gzip")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    assert_eq!(send(&pool, request).await.expect("sent without them"), "5");
}

#[tokio::test]
async fn a_host_header_does_not_change_where_the_request_goes() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let request = http::Request::get(server.url("/"))
        .header("host", "elsewhere.example:1")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    // The URI picks the origin (and :authority); the pool never dials the
    // Host header's name.
    assert_eq!(send(&pool, request).await.expect("served"), "ok");
    assert_eq!(server.connections_accepted(), 1);
}

/// A pool built with `builder` serves a small download and an upload from
/// the test server: the settings were clamped to something usable.
async fn assert_pool_serves(builder: Builder) {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = builder.build();
    let body = send(&pool, get(server.url("/download/100000")))
        .await
        .expect("download");
    assert_eq!(body.len(), 100_000);
    let upload = http::Request::post(server.url("/upload"))
        .body(Full::new(Bytes::from(vec![7u8; 100_000])))
        .unwrap();
    assert_eq!(send(&pool, upload).await.expect("upload"), "100000");
}

#[tokio::test]
async fn zero_windows_are_clamped_to_one_byte_and_still_deliver() {
    assert_pool_serves(
        Pool::builder()
            .initial_stream_window_size(0)
            .initial_connection_window_size(0),
    )
    .await;
    // What the server is told: a stream window of one byte.
    let announced = Arc::new(Mutex::new(None));
    let seen = announced.clone();
    let server = RawServer::start(move |mut conn: RawConnection| {
        let seen = seen.clone();
        async move {
            conn.handshake(&[]).await?;
            *seen.lock().expect("lock") = conn.client_setting(setting::INITIAL_WINDOW_SIZE);
            // No body: one byte of window is too small for "ok".
            let stream = conn.next_request().await?;
            conn.respond_ok(stream, b"").await?;
            loop {
                conn.next_frame().await?;
            }
        }
    })
    .await;
    let pool = Pool::builder().initial_stream_window_size(0).build();
    assert_eq!(send(&pool, get(server.url("/"))).await.expect("served"), "");
    assert_eq!(*announced.lock().expect("lock"), Some(1));
}

#[tokio::test]
async fn windows_above_2_31_minus_1_are_clamped() {
    assert_pool_serves(
        Pool::builder()
            .initial_stream_window_size(u32::MAX)
            .initial_connection_window_size(u32::MAX),
    )
    .await;
}

#[tokio::test]
async fn max_frame_sizes_outside_the_protocol_range_are_clamped_not_passed_to_h2() {
    // h2's builder asserts 16 KiB <= size < 16 MiB and would panic in the
    // connect task.
    for size in [0, 16 * 1024 - 1, 1 << 24, u32::MAX] {
        assert_pool_serves(Pool::builder().max_frame_size(size)).await;
    }
}

#[tokio::test]
async fn a_send_buffer_over_4_gib_is_clamped_not_passed_to_h2() {
    // h2's builder asserts max_send_buffer_size <= u32::MAX.
    let settings = Http2Settings::default().max_send_buffer_size(usize::MAX);
    assert_pool_serves(Pool::builder().http2(settings)).await;
}

#[tokio::test]
async fn zero_stream_and_connection_caps_are_taken_as_one() {
    assert_pool_serves(
        Pool::builder()
            .max_concurrent_streams(Some(0))
            .max_connections_per_origin(0),
    )
    .await;
}

#[tokio::test]
async fn zero_connection_limits_still_let_requests_out() {
    // A zero request count, age or idle time would retire every connection
    // before its first stream, and no request could ever go out.
    let builders = [
        (
            "max_requests_per_connection(0)",
            Pool::builder().max_requests_per_connection(Some(0)),
        ),
        (
            "max_connection_age(0)",
            Pool::builder().max_connection_age(Some(Duration::ZERO)),
        ),
        (
            "idle_timeout(0)",
            Pool::builder().idle_timeout(Some(Duration::ZERO)),
        ),
    ];
    for (setting, builder) in builders {
        let serves =
            tokio::time::timeout(Duration::from_secs(10), assert_pool_serves(builder)).await;
        assert!(
            serves.is_ok(),
            "with {setting} the pool served nothing in 10 s"
        );
    }
}

#[tokio::test]
async fn zero_pending_requests_is_taken_as_one_so_the_first_connect_can_happen() {
    assert_pool_serves(Pool::builder().max_pending_requests(0)).await;
}

#[tokio::test]
async fn zero_connect_and_handshake_timeouts_act_as_very_short_ones() {
    // Zero is no "no limit": a connect that does not complete at once
    // times out, and so does a handshake.
    let never_connects = tower::service_fn(|_uri: http::Uri| {
        std::future::pending::<Result<tokio::net::TcpStream, h2pool::BoxError>>()
    });
    let pool = Pool::builder()
        .connector(never_connects)
        .connect_timeout(Duration::ZERO)
        .build();
    let error = send(&pool, get("http://127.0.0.1:1/".to_owned()))
        .await
        .expect_err("the connect never completes");
    assert_eq!(error.kind(), ErrorKind::ConnectTimeout, "{error:?}");
    assert!(error.is_never_sent() && error.is_timeout());

    // A server that says nothing: its SETTINGS never come.
    let silent = RawServer::start(|conn: RawConnection| async move {
        conn.into_parts().0.discard_all().await;
        Ok(())
    })
    .await;
    let pool = Pool::builder()
        .http2(Http2Settings::default().handshake_timeout(Duration::ZERO))
        .build();
    let error = send(&pool, get(silent.url("/")))
        .await
        .expect_err("no SETTINGS come");
    assert_eq!(error.kind(), ErrorKind::Handshake, "{error:?}");
    assert!(error.is_never_sent() && error.is_timeout());
}

#[tokio::test]
async fn a_header_list_limit_too_small_for_any_response_is_a_protocol_error_that_mentions_limits() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder().max_header_list_size(0).build();
    let error = send(&pool, get(server.url("/")))
        .await
        .expect_err("even `:status` is too big");
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
    assert!(error.to_string().contains("client's limits"), "{error}");
}

/// Where a generated request goes.
#[derive(Debug, Clone)]
enum Target {
    /// The test server, at a path of its own.
    Server(String),
    /// Only a path: no origin.
    Relative(String),
    /// A scheme the TCP connector does not serve.
    Scheme(&'static str),
}

fn target() -> impl Strategy<Value = Target> {
    // Paths under /x/ miss the server's fault routes (/close, /delay/...);
    // /echo and /upload read the body.
    let path = prop_oneof![
        "/x/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,24}(\\?[a-zA-Z0-9=&%]{0,16})?",
        Just("/echo".to_owned()),
        Just("/upload".to_owned()),
    ];
    prop_oneof![
        6 => path.clone().prop_map(Target::Server),
        1 => path.prop_map(Target::Relative),
        1 => prop_oneof![Just("gopher"), Just("ftp"), Just("ws")].prop_map(Target::Scheme),
    ]
}

fn method() -> impl Strategy<Value = http::Method> {
    prop_oneof![
        Just(http::Method::GET),
        Just(http::Method::POST),
        Just(http::Method::PUT),
        Just(http::Method::DELETE),
        Just(http::Method::HEAD),
        Just(http::Method::OPTIONS),
        Just(http::Method::PATCH),
        Just(http::Method::TRACE),
        Just(http::Method::CONNECT),
        "[A-Z]{1,12}".prop_map(|name| http::Method::from_bytes(name.as_bytes()).unwrap()),
    ]
}

/// Header names and values that `http` accepts, including the
/// connection-specific ones HTTP/2 forbids and the pool must strip.
fn headers() -> impl Strategy<Value = Vec<(http::HeaderName, http::HeaderValue)>> {
    let name = prop_oneof![
        "[a-z][a-z0-9-]{0,20}"
            .prop_map(|name| http::HeaderName::from_bytes(name.as_bytes()).unwrap()),
        prop_oneof![
            Just("connection"),
            Just("keep-alive"),
            Just("proxy-connection"),
            Just("transfer-encoding"),
            Just("upgrade"),
            Just("te"),
            Just("host"),
            Just("content-length"),
        ]
        .prop_map(http::HeaderName::from_static),
    ];
    let value = prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..64)
        .prop_filter_map("a valid header value", |bytes| {
            http::HeaderValue::from_bytes(&bytes).ok()
        });
    prop::collection::vec((name, value), 0..6)
}

#[test]
fn any_request_ends_in_a_response_or_a_typed_error() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let server = runtime.block_on(TestServer::start(ServerConfig::default()));
    let pool =
        runtime.block_on(async { Pool::builder().pending_timeout(Some(ENDS_WITHIN)).build() });
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        target in target(),
        method in method(),
        headers in headers(),
        body_len in prop_oneof![Just(0usize), 1usize..256, 16_000usize..70_000],
    )| {
        let uri = match &target {
            Target::Server(path) => server.url(path),
            Target::Relative(path) => path.clone(),
            Target::Scheme(scheme) => format!("{scheme}://{}/", server.addr()),
        };
        let mut request = http::Request::builder().method(method.clone()).uri(&uri);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let body = Full::new(Bytes::from(vec![b'b'; body_len]));
        // `http` validates the URI; what it lets through goes to the pool.
        let Ok(request) = request.body(body) else {
            return Ok(());
        };
        let outcome = runtime.block_on(send(&pool, request));
        match (&target, outcome) {
            (Target::Server(_), Ok(_)) => {}
            (Target::Relative(_), Err(error)) => prop_assert_eq!(error.kind(), ErrorKind::InvalidUri),
            (Target::Scheme(_), Err(error)) => prop_assert_eq!(error.kind(), ErrorKind::UnsupportedScheme),
            (Target::Server(_), Err(error)) => {
                // What the user asked for may be malformed HTTP/2 that h2
                // lets through (a content-length that is not a number): then
                // the server's reset, or h2's rejection of the answer, says so.
                prop_assert!(
                    matches!(
                        error.kind(),
                        ErrorKind::InvalidRequest | ErrorKind::StreamReset | ErrorKind::Protocol
                    ),
                    "{:?} {} with {:?}: {:?}",
                    method,
                    uri,
                    headers,
                    error
                );
                prop_assert!(error.reason().is_none() || error.to_string().contains(&format!("{:?}", error.reason().unwrap())), "{}", error);
            }
            (target, Ok(_)) => prop_assert!(false, "{:?} was served", target),
        }
    });
    // The pool still serves after all that.
    let body = runtime
        .block_on(send(&pool, get(server.url("/"))))
        .expect("served");
    assert_eq!(body, "ok");
}
