//! gRPC statuses for h2pool's errors.
//!
//! A tonic generated client turns a transport error into a [`Status`] with
//! `Status::from_error`, which recognises tonic's, hyper's and a bare
//! `h2::Error`, but not an error that only *contains* an `h2::Error` or an
//! `io::Error` in its source chain. Every h2pool error would therefore reach
//! the caller as `UNKNOWN` (with the pool's message and the error as the
//! status's source). [`grpc_statuses`] maps the errors below the client
//! instead, so callers and retry policies see the code gRPC prescribes:
//!
//! | h2pool error | gRPC code |
//! |---|---|
//! | connect, connect timeout, handshake, connection closed, GOAWAY, REFUSED_STREAM, keep-alive timeout | `UNAVAILABLE` |
//! | pending timeout (no stream slot in time), tower `Timeout` elapsed | `DEADLINE_EXCEEDED` |
//! | pending limit (too many requests waiting) | `RESOURCE_EXHAUSTED` |
//! | stream reset by the server | by its HTTP/2 reason, as tonic maps hyper's resets |
//! | request body error | the request stream's own status |
//! | anything else | `INTERNAL` |
//!
//! (This file is part of the `tonic` example; the tonic tests include it.)
#![allow(dead_code)]

use std::error::Error as StdError;
use std::sync::Arc;

use h2pool::{BoxError, ErrorKind};
use http_body_util::BodyExt;
use tonic::{Code, Status};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

/// The response body of [`GrpcOrigin`]: the pool's body with its errors as statuses.
pub type StatusBody =
    http_body_util::combinators::MapErr<h2pool::Body, fn(h2pool::Error) -> Status>;

/// What a tonic client runs over: h2pool below, gRPC statuses on top.
pub type GrpcOrigin =
    BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<StatusBody>, Status>;

/// Wraps an h2pool service (an [`OriginService`](h2pool::OriginService),
/// or one under more tower layers) so that its errors and its response
/// bodies' errors are gRPC statuses.
///
/// ```ignore
/// let channel = grpc_statuses(pool.origin("http://127.0.0.1:50051".parse()?)?);
/// let mut client = EchoClient::new(channel);
/// ```
pub fn grpc_statuses<S>(service: S) -> GrpcOrigin
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<h2pool::Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let service = ServiceBuilder::new()
        .map_err(status_from_error)
        .map_response(|response: http::Response<h2pool::Body>| {
            response.map(|body| body.map_err(status_from_pool_error as fn(_) -> _))
        })
        .service(service);
    BoxCloneSyncService::new(service)
}

/// The gRPC status for an error of an h2pool service or of a stack of tower
/// layers over one (a `tower::timeout::error::Elapsed` included).
pub fn status_from_error(error: impl Into<BoxError>) -> Status {
    let error: BoxError = error.into();
    let error = match error.downcast::<Status>() {
        Ok(status) => return *status,
        Err(error) => error,
    };
    let error = match error.downcast::<h2pool::Error>() {
        Ok(error) => return status_from_pool_error(*error),
        Err(error) => error,
    };
    if error.is::<tower::timeout::error::Elapsed>() {
        let mut status = Status::deadline_exceeded(format!("no response in time: {error}"));
        status.set_source(Arc::from(error));
        return status;
    }
    Status::from_error(error)
}

/// The gRPC status for one h2pool error; the error stays its source.
pub fn status_from_pool_error(error: h2pool::Error) -> Status {
    let code = match error.kind() {
        ErrorKind::Connect
        | ErrorKind::ConnectTimeout
        | ErrorKind::Handshake
        | ErrorKind::ConnectionClosed
        | ErrorKind::GoAway
        | ErrorKind::Refused
        | ErrorKind::KeepAliveTimeout
        | ErrorKind::BodyTooLargeToReplay => Code::Unavailable,
        ErrorKind::PendingTimeout => Code::DeadlineExceeded,
        ErrorKind::PendingLimit => Code::ResourceExhausted,
        ErrorKind::StreamReset | ErrorKind::ResponseBody | ErrorKind::Protocol => {
            code_from_reason(error.reason())
        }
        ErrorKind::RequestBody => {
            // tonic's request stream fails with a status of its own (an
            // encoding error, say): hand that back as it is.
            if let Some(status) = find_in_chain::<Status>(&error) {
                return Status::with_metadata(
                    status.code(),
                    status.message(),
                    status.metadata().clone(),
                );
            }
            Code::Internal
        }
        _ => Code::Internal,
    };
    let mut status = Status::new(code, error.to_string());
    status.set_source(Arc::new(error));
    status
}

/// As gRPC's HTTP/2 transport mapping (and tonic's, for hyper's resets).
fn code_from_reason(reason: Option<h2::Reason>) -> Code {
    match reason {
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

fn find_in_chain<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        source = error.source();
    }
    None
}
