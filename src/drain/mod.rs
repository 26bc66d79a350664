//! Drain: retire a connection gracefully, without failing a request.
//!
//! A draining connection takes no new stream; the streams it has run to
//! their end, then it closes. The server starts a drain with GOAWAY (the
//! [`Connection`](crate::connection::Connection) drains as it reads the
//! frame, waking the requests that wait for a slot, and its streams above
//! the GOAWAY's last stream id fail as
//! [refused, not processed](crate::Delivery::Refused)). This layer adds the
//! drains a client starts itself, as Envoy and grpc-go do:
//!
//! - [`max_age`](DrainPolicy::max_age), with jitter so connections opened
//!   together do not all retire together;
//! - [`max_requests`](DrainPolicy::max_requests) per connection;
//! - [`idle_timeout`](DrainPolicy::idle_timeout) without streams;
//! - stream ids near exhaustion (client ids end at 2^31-1; by default the
//!   connection drains at 75% of that).
//!
//! The policy is checked in `poll_ready`, right before dispatch, and by a
//! timer task for the time limits, so an unused connection retires too. A
//! request that meets a connection just as it starts draining is rejected
//! by `call` as [never sent](crate::Delivery::NeverSent), with the request
//! handed back: the pool then sends it on another connection.
//!
//! ```no_run
//! use std::time::Duration;
//! use h2pool::connection::{Connection, Http2Settings};
//! use h2pool::drain::{DrainLayer, DrainPolicy};
//! use tower::Layer;
//!
//! # async fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
//! let connection = Connection::handshake(tcp, &Http2Settings::default()).await?;
//! let policy = DrainPolicy::default()
//!     .max_age(Some(Duration::from_secs(300)))
//!     .max_requests(Some(10_000));
//! let service = DrainLayer::new(policy).layer(connection);
//! # drop(service); Ok(()) }
//! ```

mod layer;
mod policy;
mod service;

pub use self::layer::DrainLayer;
pub use self::policy::{DrainPolicy, DEFAULT_AGE_JITTER, DEFAULT_MAX_STREAM_ID};
pub use self::service::Drain;
