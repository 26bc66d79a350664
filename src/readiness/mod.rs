//! Readiness: a request only goes to a connection that is open, not
//! draining, has a free stream slot, and is believed alive.
//!
//! [`Connection`](crate::connection::Connection) already reserves a stream
//! slot in `poll_ready`. This layer adds the liveness half: a task per
//! connection sends a PING when the server has been silent for
//! [`KeepAlive::interval`], and a PING left unanswered for
//! [`KeepAlive::timeout`] retires the connection at once, failing its
//! streams with [`ErrorKind::KeepAliveTimeout`](crate::ErrorKind::KeepAliveTimeout),
//! so new requests go elsewhere instead of into a dead socket. A server that
//! answers pings with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") gets half
//! as many from then on, as grpc-go does.
//!
//! The checks run in `poll_ready`, right before dispatch, never from a cache.
//! A connection that is not usable does not fail `poll_ready`: `call` then
//! fails at once with a [never sent](crate::Delivery::NeverSent) error that
//! carries the request back.
//!
//! ```no_run
//! use std::time::Duration;
//! use h2pool::connection::{Connection, Http2Settings};
//! use h2pool::readiness::{KeepAlive, ReadinessLayer};
//! use tower::{Layer, ServiceExt};
//!
//! # async fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
//! let connection = Connection::handshake(tcp, &Http2Settings::default()).await?;
//! let layer = ReadinessLayer::new(Some(
//!     KeepAlive::new(Duration::from_secs(10), Duration::from_secs(5)),
//! ));
//! let service = layer.layer(connection);
//! let request = http::Request::get("http://127.0.0.1:8080/").body(h2pool::Body::empty())?;
//! let response = service.oneshot(request).await?;
//! # drop(response); Ok(()) }
//! ```

mod keep_alive;
mod layer;
mod service;

pub use self::keep_alive::{KeepAlive, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
pub use self::layer::ReadinessLayer;
pub use self::service::Readiness;
