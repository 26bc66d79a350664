use std::time::Duration;

use std::fmt;

use super::pooled::ConnectionLayerFn;
use crate::connection::Http2Settings;
use crate::drain::DrainPolicy;
use crate::readiness::KeepAlive;

/// 10 s to open a transport connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Up to 32 connections per origin; more open only while all are at their stream limit.
pub const DEFAULT_MAX_CONNECTIONS_PER_ORIGIN: usize = 32;
/// Up to 1024 requests per origin may wait for a stream slot at once.
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 1024;
/// A request waits at most 30 s for a stream slot.
pub const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with no stream for 90 s is closed, as hyper-util's pool does.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The first wait after a failed connect; it doubles per failure.
pub const DEFAULT_CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between connects to an origin that keeps failing.
pub const DEFAULT_MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(10);

/// Everything a [`Pool`](super::Pool) is configured with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) http2: Http2Settings,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_connections_per_origin: usize,
    pub(crate) max_pending_requests: usize,
    pub(crate) pending_timeout: Option<Duration>,
    pub(crate) keep_alive: Option<KeepAlive>,
    pub(crate) drain: DrainPolicy,
    pub(crate) connect_backoff: Duration,
    pub(crate) max_connect_backoff: Duration,
    pub(crate) connection_layer: Option<ConnectionLayerFn>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("http2", &self.http2)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "max_connections_per_origin",
                &self.max_connections_per_origin,
            )
            .field("max_pending_requests", &self.max_pending_requests)
            .field("pending_timeout", &self.pending_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("drain", &self.drain)
            .field("connect_backoff", &self.connect_backoff)
            .field("max_connect_backoff", &self.max_connect_backoff)
            .field("connection_layer", &self.connection_layer.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http2: Http2Settings::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections_per_origin: DEFAULT_MAX_CONNECTIONS_PER_ORIGIN,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            pending_timeout: Some(DEFAULT_PENDING_TIMEOUT),
            keep_alive: Some(KeepAlive::default()),
            drain: DrainPolicy::default().idle_timeout(Some(DEFAULT_IDLE_TIMEOUT)),
            connect_backoff: DEFAULT_CONNECT_BACKOFF,
            max_connect_backoff: DEFAULT_MAX_CONNECT_BACKOFF,
            connection_layer: None,
        }
    }
}
