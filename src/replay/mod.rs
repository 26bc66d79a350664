//! Transparent replay of requests the server provably did not process.
//!
//! HTTP/2 tells a client exactly when a request went unprocessed
//! (RFC 9113 section 8.7), and [`Replay`] sends such a request again, on
//! another connection or a new one, whatever its method. It follows gRPC's
//! transparent retries:
//!
//! 1. **Never sent**: the connection closed or began draining before the
//!    request's headers went out. The pool hands the request back untouched
//!    (like hyper's `TrySendError`), so it goes again as it is, even with a
//!    one-shot body.
//! 2. **Refused**: RST_STREAM(REFUSED_STREAM), or a stream above a GOAWAY's
//!    last stream id. The server promises it did nothing; the request goes
//!    again with its head copied and its body replayed from the
//!    [`ReplayBody`] buffer.
//! 3. **Maybe processed**: any other reset, a connection lost under the
//!    stream, a timeout. Never replayed, unless
//!    [`retry_idempotent`](ReplayLayer::retry_idempotent) says so for
//!    idempotent methods.
//!
//! A request whose response headers arrived is committed and never replayed:
//! the response future has resolved. Replays are bounded by an attempt cap
//! (5, as gRPC's) and a [retry budget](ReplayLayer::retry_budget); a request
//! refused more than once waits a [backoff](ReplayLayer::backoff) between
//! replays, as Go's Transport and Envoy wait. Each
//! shows in tracing (at debug level), in [`ReplayLayer::stats`] and in the
//! response's [`Attempts`] extension.
//!
//! [`Pool::new()`](crate::Pool::new) stacks this layer by default. It also
//! works over other HTTP/2 stacks: the [`SourceChainClassifier`] finds h2's
//! errors in hyper's and hyper-util's error chains.
//!
//! tower's own [`Retry`](tower::retry::Retry) cannot carry this: its policy
//! clones the request before every attempt, so a one-shot body could never
//! go again, and it cannot take back a request an error hands back.
//!
//! ```
//! use h2pool::connection::{Connection, Http2Settings};
//! use h2pool::replay::{Attempts, ReplayLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn doc() -> Result<(), h2pool::BoxError> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
//! let connection = Connection::handshake(tcp, &Http2Settings::default()).await?;
//! let service = ServiceBuilder::new()
//!     .layer(ReplayLayer::new())
//!     .service(connection);
//! let request = http::Request::get("http://127.0.0.1:8080/").body(h2pool::Body::empty())?;
//! let response = service.oneshot(request).await?;
//! println!("{} after {} attempt(s)", response.status(), Attempts::of(&response));
//! # Ok(()) }
//! ```

mod body;
mod budget;
mod classify;
mod future;
mod layer;
mod service;
mod stats;

pub use self::body::ReplayBody;
pub use self::budget::RecentRequestsBudget;
pub use self::classify::{Classify, SourceChainClassifier};
pub use self::future::{Attempts, ResponseFuture};
pub use self::layer::{
    ReplayLayer, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_BUFFER_LIMIT,
    DEFAULT_MAX_ATTEMPTS,
};
pub use self::service::Replay;
pub use self::stats::ReplayStats;
pub use tower::retry::budget::{Budget, TpsBudget};
