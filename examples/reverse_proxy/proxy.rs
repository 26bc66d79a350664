//! An axum reverse proxy to one HTTP/2 upstream through an h2pool `Pool`.
//!
//! Both bodies stream: the request body goes upstream as it arrives, the
//! response body comes back as the upstream sends it (and HTTP/2 flow
//! control passes the slower side's pace along). Hop-by-hop headers are
//! dropped both ways. Pool errors become gateway statuses with a body that
//! says what happened:
//!
//! | pool error | status |
//! |---|---|
//! | connect refused or failed, handshake, connection lost, GOAWAY, reset, protocol | 502 Bad Gateway |
//! | too many requests waiting, or no stream slot within the pending timeout | 503 Service Unavailable |
//! | connect timeout, keep-alive timeout, upstream slower than [`Proxy::timeout`] | 504 Gateway Timeout |
//!
//! (This file is part of the `reverse_proxy` example; the tests include it.)
#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use h2pool::{ErrorKind, Pool};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::StatusCode;
use tower::ServiceExt;

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct Proxy {
    pool: Pool,
    upstream: Uri,
    timeout: Option<Duration>,
}

impl Proxy {
    /// Forwards every request to `upstream` (`http://host:port`) through `pool`.
    pub fn new(pool: Pool, upstream: Uri) -> Proxy {
        Proxy {
            pool,
            upstream,
            timeout: None,
        }
    }

    /// Answers 504 when the upstream's response headers take longer than
    /// `timeout`. Default: none (the pool's own limits still apply).
    pub fn timeout(mut self, timeout: Duration) -> Proxy {
        self.timeout = Some(timeout);
        self
    }

    /// The router: every path and method goes upstream.
    pub fn router(self) -> Router {
        Router::new().fallback(forward).with_state(self)
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The upstream's authority goes in :authority; a Host header from an
    // HTTP/1.1 client would contradict it.
    parts.headers.remove(header::HOST);
    parts.uri = match upstream_uri(&proxy.upstream, parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(error) => return gateway_error(StatusCode::BAD_REQUEST, error),
    };
    parts.version = http::Version::HTTP_2;
    let request = http::Request::from_parts(parts, body);

    let response = proxy.pool.oneshot(request);
    let outcome = match proxy.timeout {
        None => response.await,
        Some(timeout) => match tokio::time::timeout(timeout, response).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the upstream sent no response within {timeout:?}"),
                )
            }
        },
    };
    match outcome {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => gateway_error(status_for(&error), format!("upstream: {error}")),
    }
}

/// The gateway status for a pool error.
pub fn status_for(error: &h2pool::Error) -> StatusCode {
    match error.kind() {
        ErrorKind::PendingLimit | ErrorKind::PendingTimeout => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ConnectTimeout | ErrorKind::KeepAliveTimeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn gateway_error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (status, message).into_response()
}

fn upstream_uri(upstream: &Uri, path: Option<&PathAndQuery>) -> Result<Uri, String> {
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = Some(
        path.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|error| format!("cannot build the upstream URI: {error}"))
}

/// Removes the headers that describe one connection, not the message
/// (RFC 9110 section 7.6.1): those the `Connection` header names, and the
/// standard hop-by-hop ones. `TE: trailers` stays: gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te != HeaderValue::from_static("trailers"))
    {
        headers.remove(header::TE);
    }
}
