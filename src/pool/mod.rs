//! The pool: several HTTP/2 connections per origin, many origins.
//!
//! [`Pool`] is keyed by origin (scheme and authority) like hyper-util's
//! `Client`, and always ready: a request waits for a stream slot inside its
//! response future. [`OriginService`] serves one origin with an honest
//! `poll_ready`, for tower middleware that needs real backpressure and for
//! tonic clients, whose requests carry only a path.
//!
//! A new connection opens only when every open one is at the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS; one connect runs at a time per origin
//! unless the waiting requests need more; each request goes to the
//! least-loaded connection with a free slot. When the server's GOAWAYs (or
//! the user's own request limit) show how many streams a connection lives
//! for, the replacement opens while the old connection still has a quarter
//! of its life left, or half of it when it is so busy that a quarter would
//! go by faster than a connect.

mod builder;
mod config;
mod dispatch;
mod future;
mod lifetime;
mod origin;
mod pooled;
mod service;
mod stats;

pub use self::builder::Builder;
pub use self::config::{
    DEFAULT_CONNECT_BACKOFF, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_ORIGIN, DEFAULT_MAX_CONNECT_BACKOFF, DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_PENDING_TIMEOUT,
};
pub use self::future::ResponseFuture;
pub use self::pooled::{LayeredConnection, RequestBody};
pub use self::service::{OriginService, Pool};
pub use self::stats::{OriginStats, PoolStats};
