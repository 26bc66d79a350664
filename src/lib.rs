#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod body;
pub mod connection;
pub mod connector;
pub mod drain;
mod error;
#[cfg(feature = "tonic")]
pub mod grpc;
mod jitter;
pub mod pool;
pub mod readiness;
pub mod replay;

pub use self::body::Body;
pub use self::error::{BoxError, Delivery, Error, ErrorKind};
pub use self::pool::{Builder, OriginService, OriginStats, Pool, PoolStats};
