//! The one error type of h2pool.
//!
//! Every failure carries two facts a caller needs: *what* went wrong
//! ([`ErrorKind`]) and *how far the request got* ([`Delivery`]). The second is
//! what makes replays safe: a request that was [never sent](Delivery::NeverSent)
//! or [refused unprocessed](Delivery::Refused) can go again whatever its
//! method, one that [may have been processed](Delivery::MaybeProcessed) cannot
//! without the user's consent.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A type-erased error, as tower and http-body use.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request URI has no scheme or no authority, or cannot be used as an origin.
    InvalidUri,
    /// The request URI's scheme is not one the connector serves.
    UnsupportedScheme,
    /// The request could not be turned into HTTP/2 frames (for example a connection-specific header).
    InvalidRequest,
    /// Opening the transport connection failed.
    Connect,
    /// Opening the transport connection took longer than the connect timeout.
    ConnectTimeout,
    /// The HTTP/2 handshake with the server failed.
    Handshake,
    /// The connection was closed, or went away, before or while the request used it.
    ConnectionClosed,
    /// The server sent GOAWAY and will not process the request's stream.
    GoAway,
    /// The server reset the stream with REFUSED_STREAM: it did no processing.
    /// Also a request never sent because the server lowered its stream limit
    /// after a slot was reserved for it.
    Refused,
    /// The stream was reset by the server, or by h2 because of a protocol error.
    StreamReset,
    /// The peer broke the HTTP/2 protocol, or the connection failed mid-stream.
    Protocol,
    /// The server did not answer a keep-alive PING in time.
    KeepAliveTimeout,
    /// Too many requests were already waiting for a connection to this origin.
    PendingLimit,
    /// The request waited longer than the pending timeout for a stream slot.
    PendingTimeout,
    /// The request body returned an error while it was being sent.
    RequestBody,
    /// The response body could not be read to its end.
    ResponseBody,
    /// `call` was made without a successful `poll_ready` before it.
    NotReady,
    /// A replay was needed, but the body had outgrown the replay buffer.
    BodyTooLargeToReplay,
    /// The user's per-connection layer (see
    /// [`Builder::connection_layer`](crate::Builder::connection_layer))
    /// failed the request with an error of its own.
    ConnectionLayer,
}

impl ErrorKind {
    /// All kinds, in declaration order.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::InvalidUri,
        ErrorKind::UnsupportedScheme,
        ErrorKind::InvalidRequest,
        ErrorKind::Connect,
        ErrorKind::ConnectTimeout,
        ErrorKind::Handshake,
        ErrorKind::ConnectionClosed,
        ErrorKind::GoAway,
        ErrorKind::Refused,
        ErrorKind::StreamReset,
        ErrorKind::Protocol,
        ErrorKind::KeepAliveTimeout,
        ErrorKind::PendingLimit,
        ErrorKind::PendingTimeout,
        ErrorKind::RequestBody,
        ErrorKind::ResponseBody,
        ErrorKind::NotReady,
        ErrorKind::BodyTooLargeToReplay,
        ErrorKind::ConnectionLayer,
    ];

    /// A short stable name, for metrics labels and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUri => "invalid_uri",
            ErrorKind::UnsupportedScheme => "unsupported_scheme",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Handshake => "handshake",
            ErrorKind::ConnectionClosed => "connection_closed",
            ErrorKind::GoAway => "go_away",
            ErrorKind::Refused => "refused",
            ErrorKind::StreamReset => "stream_reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::KeepAliveTimeout => "keep_alive_timeout",
            ErrorKind::PendingLimit => "pending_limit",
            ErrorKind::PendingTimeout => "pending_timeout",
            ErrorKind::RequestBody => "request_body",
            ErrorKind::ResponseBody => "response_body",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::BodyTooLargeToReplay => "body_too_large_to_replay",
            ErrorKind::ConnectionLayer => "connection_layer",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a failed request got; decides whether it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// No byte of the request reached the server: safe to send again, whatever the method.
    NeverSent,
    /// The server received the stream but guarantees it did no processing
    /// (REFUSED_STREAM, or a stream id above a GOAWAY's last_stream_id):
    /// safe to send again, whatever the method (RFC 9113 section 8.7).
    Refused,
    /// The server may have acted on the request: sending it again may repeat
    /// its effects, so only idempotent requests should be, and only by choice.
    MaybeProcessed,
}

/// The error of every h2pool service, future and body.
///
/// It keeps its cause as [`source`](StdError::source) (an [`h2::Error`],
/// an [`std::io::Error`] or the body's own error), so tools that walk the
/// chain see the HTTP/2 reason. (tonic's `Status::from_error` does not look
/// past the first error: the `grpc` module's `GrpcStatusLayer` maps ours.)
pub struct Error {
    kind: ErrorKind,
    delivery: Delivery,
    detail: Option<Box<str>>,
    source: Option<Source>,
    // The untouched request, when it never left the client, so a caller can
    // send it again without copying (like hyper's `TrySendError`). A Mutex
    // keeps `Error: Sync` while the request body need only be `Send`.
    returned: Option<Mutex<Box<dyn Any + Send>>>,
}

// A connect error reaches every request that waited for the connect, so its
// cause is shared rather than copied.
enum Source {
    Owned(BoxError),
    Shared(Arc<dyn StdError + Send + Sync>),
}

impl Source {
    fn as_dyn(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match self {
            Source::Owned(source) => &**source,
            Source::Shared(source) => &**source,
        }
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, delivery: Delivery) -> Self {
        Error {
            kind,
            delivery,
            detail: None,
            source: None,
            returned: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Source::Owned(source.into()));
        self
    }

    /// Makes the cause shareable, for errors that several requests get.
    pub(crate) fn into_shared(mut self) -> Self {
        if let Some(Source::Owned(source)) = self.source.take() {
            self.source = Some(Source::Shared(Arc::from(source)));
        }
        self.returned = None;
        self
    }

    /// A copy of an error made by [`into_shared`](Self::into_shared), with
    /// the same cause (no returned request: that stays with one owner).
    pub(crate) fn share(&self) -> Self {
        Error {
            kind: self.kind,
            delivery: self.delivery,
            detail: self.detail.clone(),
            source: match &self.source {
                Some(Source::Shared(source)) => Some(Source::Shared(source.clone())),
                Some(Source::Owned(source)) => Some(Source::Owned(source.to_string().into())),
                None => None,
            },
            returned: None,
        }
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into().into_boxed_str());
        self
    }

    pub(crate) fn with_request<T: Send + 'static>(mut self, request: T) -> Self {
        self.returned = Some(Mutex::new(Box::new(request)));
        self
    }

    /// Builds the error for an [`h2::Error`] that ended a stream, given
    /// whether the request's headers had been handed to h2.
    pub(crate) fn from_h2(err: h2::Error, headers_sent: bool) -> Self {
        let remote = err.is_remote();
        let (kind, delivery) = if err.is_go_away() && remote && err.reason().is_some() {
            // A stream of ours that h2 ends with the remote GOAWAY is above the
            // peer's last_stream_id: the peer promises it was not processed.
            // (Streams at or below it run on, and end normally or with an I/O error.)
            (ErrorKind::GoAway, Delivery::Refused)
        } else if err.is_reset() && remote && err.reason() == Some(h2::Reason::REFUSED_STREAM) {
            (ErrorKind::Refused, Delivery::Refused)
        } else if let Some(reason) = err
            .reason()
            .filter(|reason| err.is_library() && *reason != h2::Reason::NO_ERROR)
        {
            // h2 ended the stream or the connection over what the server sent
            // (a malformed or oversized response, a flood, a window overflow):
            // say so, rather than "reset" or "closed" as if the server had
            // chosen to.
            let what = if err.is_reset() {
                "h2 rejected the server's response (malformed, or over a limit such as max_header_list_size) and reset the stream"
            } else {
                "h2 closed the connection over what the server sent (a protocol violation, or more than this client's limits allow)"
            };
            return Error::new(
                ErrorKind::Protocol,
                delivery_if(headers_sent, Delivery::MaybeProcessed),
            )
            .with_detail(format!("{what} with {reason:?} ({err})"))
            .with_source(err);
        } else if err.is_reset() {
            let error = Error::new(
                ErrorKind::StreamReset,
                delivery_if(headers_sent, Delivery::MaybeProcessed),
            );
            return match (err.reason(), remote) {
                (Some(reason), true) => {
                    error.with_detail(format!("the server reset it with {reason:?}"))
                }
                (Some(reason), false) => {
                    error.with_detail(format!("this client reset it with {reason:?}"))
                }
                (None, _) => error,
            }
            .with_source(err);
        } else if err.is_io() || err.is_go_away() {
            // The connection died under a stream the server may have begun.
            (ErrorKind::ConnectionClosed, Delivery::MaybeProcessed)
        } else {
            (ErrorKind::Protocol, Delivery::MaybeProcessed)
        };
        Error::new(kind, delivery_if(headers_sent, delivery)).with_source(err)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// How far the request got before it failed.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Returns true if the request never reached the server.
    pub fn is_never_sent(&self) -> bool {
        self.delivery == Delivery::NeverSent
    }

    /// Returns true if the server refused the request without processing it
    /// (REFUSED_STREAM, or a stream above a GOAWAY's last_stream_id).
    pub fn is_refused(&self) -> bool {
        self.delivery == Delivery::Refused
    }

    /// Returns true if sending the request again cannot repeat its effects:
    /// it was never sent, or it was refused unprocessed.
    pub fn is_safe_to_replay(&self) -> bool {
        self.delivery != Delivery::MaybeProcessed
    }

    /// Returns true if opening a connection failed or timed out.
    pub fn is_connect(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connect | ErrorKind::ConnectTimeout | ErrorKind::Handshake
        )
    }

    /// Returns true for the pool's own time limits (connect timeout,
    /// handshake timeout, pending timeout, keep-alive).
    pub fn is_timeout(&self) -> bool {
        match self.kind {
            ErrorKind::ConnectTimeout | ErrorKind::PendingTimeout | ErrorKind::KeepAliveTimeout => {
                true
            }
            // A handshake fails for other reasons too; its timeout's source says so.
            ErrorKind::Handshake => self
                .source
                .as_ref()
                .is_some_and(|source| source.as_dyn().is::<tokio::time::error::Elapsed>()),
            _ => false,
        }
    }

    /// The HTTP/2 error code, if the failure was a reset or GOAWAY.
    pub fn reason(&self) -> Option<h2::Reason> {
        self.h2().and_then(h2::Error::reason)
    }

    /// The underlying h2 error, if any.
    pub fn h2(&self) -> Option<&h2::Error> {
        self.source.as_ref()?.as_dyn().downcast_ref::<h2::Error>()
    }

    /// Takes back the request that never left the client, if this error
    /// carries it and `T` is its type.
    ///
    /// Services of this crate return the request they were given when it was
    /// never sent, so it can be sent again as it is, one-shot body included.
    ///
    /// - Two cases carry nothing: a connection that failed in the instant
    ///   between `poll_ready` and `call`, after h2 had taken the request head
    ///   (the [`replay`](crate::replay) layer, on by default, sends such a
    ///   request again from its own copy); and a head h2 would not encode
    ///   ([`ErrorKind::InvalidRequest`], which no retry mends).
    /// - Under a [`connection_layer`](crate::Builder::connection_layer),
    ///   the pool's request comes back with its body boxed for the layer:
    ///   take it as `Request<`[`RequestBody`](crate::pool::RequestBody)`>`.
    pub fn take_request<T: 'static>(&mut self) -> Option<T> {
        let slot = self.returned.take()?;
        let boxed = match slot.into_inner() {
            Ok(boxed) => boxed,
            Err(poisoned) => poisoned.into_inner(),
        };
        match boxed.downcast::<T>() {
            Ok(request) => Some(*request),
            Err(other) => {
                self.returned = Some(Mutex::new(other));
                None
            }
        }
    }

    /// Returns true if the error carries the request that never left the client.
    pub fn has_request(&self) -> bool {
        self.returned.is_some()
    }

    pub(crate) fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// This error, for a stream whose response had begun: the server did
    /// take the request, so it may have processed it. A REFUSED_STREAM or a
    /// GOAWAY's last stream id promise the opposite, which no longer holds:
    /// their kinds (which say "not processed") give way to the plain reset
    /// or close, so no caller retries a POST on the kind's word.
    pub(crate) fn after_response_began(mut self) -> Self {
        let promise = match self.kind {
            ErrorKind::Refused => {
                self.kind = ErrorKind::StreamReset;
                "the server reset the stream with REFUSED_STREAM"
            }
            ErrorKind::GoAway => {
                self.kind = ErrorKind::ConnectionClosed;
                "the server's GOAWAY ended the stream"
            }
            _ => return self.with_delivery(Delivery::MaybeProcessed),
        };
        if self.detail.is_none() {
            self.detail = Some(format!("{promise} after its response had begun").into());
        }
        self.with_delivery(Delivery::MaybeProcessed)
    }

    fn describe(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidUri => "the request URI cannot be used: it needs a scheme and an authority, such as http://host:port/path",
            ErrorKind::UnsupportedScheme => "the request URI's scheme is not served by this pool's connector",
            ErrorKind::InvalidRequest => "the request cannot be sent over HTTP/2",
            ErrorKind::Connect => "could not connect to the server",
            ErrorKind::ConnectTimeout => "connecting to the server timed out",
            ErrorKind::Handshake => "the HTTP/2 handshake with the server failed (is it speaking HTTP/2?)",
            ErrorKind::ConnectionClosed => "the HTTP/2 connection closed",
            ErrorKind::GoAway => "the server is going away (GOAWAY) and did not process the request",
            // A slot reserved before the server lowered its stream limit.
            ErrorKind::Refused if self.delivery == Delivery::NeverSent => "the server lowered its stream limit below the streams on the connection, taking back the slot reserved for this request",
            ErrorKind::Refused => "the server refused the stream (REFUSED_STREAM) without processing it",
            ErrorKind::StreamReset => "the stream was reset",
            ErrorKind::Protocol => "HTTP/2 protocol error",
            ErrorKind::KeepAliveTimeout => "the server did not answer a keep-alive PING in time",
            ErrorKind::PendingLimit => "too many requests are already waiting for a connection to this origin; raise max_pending_requests or slow down",
            ErrorKind::PendingTimeout => "no stream slot became free within the pending timeout; the server's stream limit and max_connections_per_origin are saturated",
            ErrorKind::RequestBody => "the request body failed while it was being sent",
            ErrorKind::ResponseBody => "the response body failed",
            ErrorKind::NotReady => "call() was made without a successful poll_ready() first; drive the service with ServiceExt::ready()",
            ErrorKind::BodyTooLargeToReplay => "the request needed a replay, but more of its body was sent than the replay buffer keeps; raise the replay buffer size or make the body replayable",
            ErrorKind::ConnectionLayer => "the pool's per-connection layer failed the request",
        }
    }
}

/// `delivery` for a request whose headers went out; never sent otherwise.
fn delivery_if(headers_sent: bool, delivery: Delivery) -> Delivery {
    if headers_sent {
        delivery
    } else {
        Delivery::NeverSent
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        match self.delivery {
            Delivery::NeverSent => f.write_str(" (request not sent)"),
            Delivery::Refused => f.write_str(" (request not processed)"),
            Delivery::MaybeProcessed => Ok(()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("delivery", &self.delivery);
        if let Some(detail) = &self.detail {
            d.field("detail", detail);
        }
        if let Some(source) = &self.source {
            d.field("source", &source.as_dyn());
        }
        if self.returned.is_some() {
            d.field("returned_request", &true);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|source| source.as_dyn() as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_request_round_trips_only_with_its_own_type() {
        let mut err = Error::new(ErrorKind::ConnectionClosed, Delivery::NeverSent)
            .with_request(http::Request::new("body"));
        assert!(err.take_request::<http::Request<()>>().is_none());
        assert!(err.has_request());
        let req = err.take_request::<http::Request<&str>>();
        assert_eq!(req.map(|r| *r.body()), Some("body"));
        assert!(!err.has_request());
    }

    #[test]
    fn display_says_what_happened_and_how_far_it_got() {
        let err = Error::new(ErrorKind::Refused, Delivery::Refused);
        let text = err.to_string();
        assert!(text.contains("REFUSED_STREAM"), "{text}");
        assert!(text.ends_with("(request not processed)"), "{text}");
    }

    #[test]
    fn kinds_are_listed_in_index_order() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
