//! gRPC statuses for the pool's errors, for tonic clients (feature `tonic`).
//!
//! A tonic generated client turns its transport's errors into a
//! [`Status`] with `Status::from_error`, which knows tonic's, hyper's and a
//! bare `h2::Error`, but not h2pool's: every pool error would reach the
//! caller as `UNKNOWN`, and retry policies keyed on `UNAVAILABLE` would not
//! see a connect failure or a refused stream as retryable.
//! [`GrpcStatusLayer`] goes between the client and the pool and gives each
//! error the code gRPC prescribes, keeping the error as the status's
//! `source()`:
//!
//! | h2pool error | gRPC code |
//! |---|---|
//! | connect, connect timeout, handshake, connection closed, GOAWAY, REFUSED_STREAM, keep-alive timeout, body too large to replay, pending timeout (no stream slot in time) | `UNAVAILABLE` |
//! | tower's `Timeout` elapsed, or the call's `grpc-timeout` (the caller's deadline) | `DEADLINE_EXCEEDED` |
//! | pending limit (too many requests waiting) | `RESOURCE_EXHAUSTED` |
//! | stream reset, protocol error, response body | by the HTTP/2 reason, as gRPC's HTTP/2 transport maps it |
//! | request body, per-connection layer | a status in the error's source chain (tonic's request stream fails with one), else `INTERNAL` / `UNKNOWN` |
//! | invalid URI or request, unsupported scheme, not ready | `INTERNAL` |
//!
//! An error with a status in it (a server's trailers-only answer, a
//! status from another layer) keeps its status. The source chain is
//! searched, so an h2pool error inside another layer's error (tower's
//! `Buffer`, say) maps as well.
//!
//! ```no_run
//! use h2pool::grpc::GrpcStatusLayer;
//! use tower::Layer;
//!
//! # fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let pool = h2pool::Pool::new();
//! let channel = GrpcStatusLayer::new().layer(pool.origin("http://127.0.0.1:50051".parse()?)?);
//! // let mut client = EchoClient::new(channel);
//! # drop(channel); Ok(()) }
//! ```

mod body;
mod future;
mod layer;
mod service;

use std::error::Error as StdError;
use std::sync::Arc;

use tonic::{Code, Status};

use crate::error::{BoxError, Error, ErrorKind};

pub use self::body::StatusBody;
pub use self::future::ResponseFuture;
pub use self::layer::GrpcStatusLayer;
pub use self::service::GrpcStatus;

/// The gRPC status for an error of an h2pool service, or of a stack of
/// tower layers over one; the error becomes the status's `source()`.
///
/// ```
/// use h2pool::grpc::status_from_error;
/// use tonic::{Code, Status};
///
/// // A tower `Timeout` over the pool ran out.
/// let elapsed = tower::timeout::error::Elapsed::new();
/// assert_eq!(status_from_error(elapsed).code(), Code::DeadlineExceeded);
/// // A status stays what it is.
/// let status = Status::not_found("no such echo");
/// assert_eq!(status_from_error(status).code(), Code::NotFound);
/// ```
pub fn status_from_error(error: impl Into<BoxError>) -> Status {
    let error: BoxError = error.into();
    let error = match error.downcast::<Status>() {
        Ok(status) => return *status,
        Err(error) => error,
    };
    let Some(found) = find_code(&*error) else {
        // Nothing of ours in it: tonic's own mapping, as without the layer.
        return Status::from_error(error);
    };
    let mut status = match found {
        Found::Code(code) => Status::new(code, error.to_string()),
        Found::Status(inner) => Status::with_details_and_metadata(
            inner.code(),
            inner.message(),
            inner.details().to_vec().into(),
            inner.metadata().clone(),
        ),
    };
    status.set_source(Arc::from(error));
    status
}

impl From<Error> for Status {
    /// As [`status_from_error`].
    fn from(error: Error) -> Status {
        status_from_error(error)
    }
}

/// What the source chain says the status should be.
enum Found<'a> {
    Code(Code),
    Status(&'a Status),
}

fn find_code<'a>(error: &'a (dyn StdError + 'static)) -> Option<Found<'a>> {
    let mut source = Some(error);
    // An error that defers to its cause (a request body's, a user layer's)
    // says what to answer if the cause has no status in it.
    let mut fallback = None;
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<Status>() {
            return Some(Found::Status(status));
        }
        if let Some(ours) = error.downcast_ref::<Error>() {
            match code_for(ours) {
                Mapped::Code(code) => return Some(Found::Code(code)),
                Mapped::FromCause { otherwise } => {
                    fallback.get_or_insert(otherwise);
                }
            }
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return Some(Found::Code(Code::DeadlineExceeded));
        }
        source = error.source();
    }
    fallback.map(Found::Code)
}

enum Mapped {
    Code(Code),
    /// The cause's status if it has one (in its source chain), else this.
    FromCause {
        otherwise: Code,
    },
}

fn code_for(error: &Error) -> Mapped {
    let code = match error.kind() {
        // The transport failed or turned the request away: gRPC's
        // "transient, retry with backoff".
        ErrorKind::Connect
        | ErrorKind::ConnectTimeout
        | ErrorKind::Handshake
        | ErrorKind::ConnectionClosed
        | ErrorKind::GoAway
        | ErrorKind::Refused
        | ErrorKind::KeepAliveTimeout
        | ErrorKind::BodyTooLargeToReplay => Code::Unavailable,
        // The pool's own limit on waiting for a stream slot, not the
        // caller's deadline: the request was never sent, and a retry with
        // backoff may find room (the caller's deadline, a tower `Timeout`,
        // is DEADLINE_EXCEEDED below).
        ErrorKind::PendingTimeout => Code::Unavailable,
        ErrorKind::PendingLimit => Code::ResourceExhausted,
        ErrorKind::StreamReset | ErrorKind::ResponseBody | ErrorKind::Protocol => {
            code_from_reason(error.reason())
        }
        // tonic's request stream fails with a status of its own (an
        // encoding error, say): that is the answer.
        ErrorKind::RequestBody => {
            return Mapped::FromCause {
                otherwise: Code::Internal,
            }
        }
        ErrorKind::ConnectionLayer => {
            return Mapped::FromCause {
                otherwise: Code::Unknown,
            }
        }
        // Mistakes on the calling side, not the server's.
        ErrorKind::InvalidUri
        | ErrorKind::UnsupportedScheme
        | ErrorKind::InvalidRequest
        | ErrorKind::NotReady => Code::Internal,
    };
    Mapped::Code(code)
}

/// gRPC's mapping of HTTP/2 error codes ("Errors" in its PROTOCOL-HTTP2
/// document), as tonic applies it to h2's and hyper's errors: the codes it
/// does not list (STREAM_CLOSED, HTTP_1_1_REQUIRED) and no code at all are
/// `UNKNOWN`.
fn code_from_reason(reason: Option<h2::Reason>) -> Code {
    match reason {
        Some(
            h2::Reason::NO_ERROR
            | h2::Reason::PROTOCOL_ERROR
            | h2::Reason::INTERNAL_ERROR
            | h2::Reason::FLOW_CONTROL_ERROR
            | h2::Reason::SETTINGS_TIMEOUT
            | h2::Reason::FRAME_SIZE_ERROR
            | h2::Reason::COMPRESSION_ERROR
            | h2::Reason::CONNECT_ERROR,
        ) => Code::Internal,
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Delivery;

    fn code(error: impl Into<BoxError>) -> Code {
        status_from_error(error).code()
    }

    #[test]
    fn transport_failures_are_unavailable_and_keep_the_error_as_source() {
        for kind in [
            ErrorKind::Connect,
            ErrorKind::ConnectTimeout,
            ErrorKind::Handshake,
            ErrorKind::ConnectionClosed,
            ErrorKind::GoAway,
            ErrorKind::Refused,
            ErrorKind::KeepAliveTimeout,
            ErrorKind::BodyTooLargeToReplay,
            ErrorKind::PendingTimeout,
        ] {
            let status = status_from_error(Error::new(kind, Delivery::NeverSent));
            assert_eq!(status.code(), Code::Unavailable, "{kind:?}");
            let source = StdError::source(&status).expect("the pool error as source");
            let error = source.downcast_ref::<Error>().expect("an h2pool::Error");
            assert_eq!(error.kind(), kind);
        }
    }

    #[test]
    fn too_many_waiting_and_the_callers_deadline_have_their_own_codes() {
        let timeout = Error::new(ErrorKind::PendingTimeout, Delivery::NeverSent);
        assert_eq!(code(timeout), Code::Unavailable);
        let limit = Error::new(ErrorKind::PendingLimit, Delivery::NeverSent);
        assert_eq!(code(limit), Code::ResourceExhausted);
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(code(elapsed), Code::DeadlineExceeded);
    }

    #[test]
    fn resets_map_by_their_reason() {
        let reset = |reason| {
            Error::new(ErrorKind::StreamReset, Delivery::MaybeProcessed)
                .with_source(h2::Error::from(reason))
        };
        assert_eq!(code(reset(h2::Reason::CANCEL)), Code::Cancelled);
        assert_eq!(
            code(reset(h2::Reason::ENHANCE_YOUR_CALM)),
            Code::ResourceExhausted
        );
        assert_eq!(code(reset(h2::Reason::INTERNAL_ERROR)), Code::Internal);
        assert_eq!(code(reset(h2::Reason::STREAM_CLOSED)), Code::Unknown);
    }

    #[test]
    fn a_status_in_the_chain_is_the_answer() {
        let encoding = Status::invalid_argument("bad message");
        let error =
            Error::new(ErrorKind::RequestBody, Delivery::MaybeProcessed).with_source(encoding);
        let status = status_from_error(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "bad message");

        // The rich error model's details and the metadata come along.
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("x-detail", "why".parse().expect("ascii"));
        let detailed = Status::with_details_and_metadata(
            Code::FailedPrecondition,
            "not yet",
            bytes::Bytes::from_static(b"\x08\x09"),
            metadata,
        );
        let error =
            Error::new(ErrorKind::RequestBody, Delivery::MaybeProcessed).with_source(detailed);
        let status = status_from_error(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.details(), b"\x08\x09");
        assert_eq!(
            status.metadata().get("x-detail").map(|v| v.as_bytes()),
            Some(&b"why"[..])
        );

        let without = Error::new(ErrorKind::RequestBody, Delivery::MaybeProcessed)
            .with_source(std::io::Error::other("disk gone"));
        assert_eq!(code(without), Code::Internal);
    }

    #[test]
    fn a_user_layers_error_maps_by_what_it_wraps() {
        // A user's per-connection layer that wraps the pool's error in one
        // of its own (tower's `Buffer` does) gives a ConnectionLayer error
        // with that chain under it: it is searched to the pool error.
        let goaway = Error::new(ErrorKind::GoAway, Delivery::Refused);
        let wrapped =
            Error::new(ErrorKind::ConnectionLayer, Delivery::MaybeProcessed).with_source(goaway);
        assert_eq!(code(wrapped), Code::Unavailable);

        let own = Error::new(ErrorKind::ConnectionLayer, Delivery::MaybeProcessed)
            .with_source(std::io::Error::other("rate limited"));
        assert_eq!(code(own), Code::Unknown);
    }

    #[test]
    fn a_response_body_that_fails_fails_with_a_status() {
        use http_body_util::BodyExt;

        // A stream cut off mid-response, as the pool's body reports it.
        let cut_off = http_body_util::StreamBody::new(futures_util::stream::iter([Err::<
            http_body::Frame<bytes::Bytes>,
            Error,
        >(
            Error::new(ErrorKind::ConnectionClosed, Delivery::MaybeProcessed),
        )]));
        let mut body = StatusBody::new(cut_off);
        let frame = futures_util::FutureExt::now_or_never(body.frame())
            .flatten()
            .expect("the failed frame");
        let status = frame.expect_err("an error, as a status");
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn anything_else_is_left_to_tonic() {
        let other: BoxError = "something else".into();
        assert_eq!(code(other), Code::Unknown);
    }
}
