use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::config::Config;
use super::pooled::{layer_error, LayeredConnection, RequestBody};
use super::service::Pool;
use crate::body::Body;
use crate::connection::Http2Settings;
use crate::connector::{self, Io};
use crate::drain::DrainPolicy;
use crate::error::BoxError;
use crate::readiness::KeepAlive;
use crate::replay::ReplayLayer;

/// Configures a [`Pool`]. Every setting has a documented default.
///
/// Pools built from one builder (or its clones) share its replay layer and
/// keep-alive, as the services of one tower layer do: one retry budget, one
/// count of replays in their stats, and one PING interval (doubled when a
/// server says "too_many_pings"). Give each pool its own
/// [`ReplayLayer`] and [`KeepAlive`] to keep them apart.
///
/// ```
/// use std::time::Duration;
///
/// let pool = h2pool::Pool::builder()
///     .max_connections_per_origin(8)
///     .connect_timeout(Duration::from_secs(2))
///     .pending_timeout(Some(Duration::from_secs(5)))
///     .initial_stream_window_size(4 * 1024 * 1024)
///     .build();
/// # drop(pool);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
    connector: Option<connector::BoxedConnector>,
    replay: ReplayLayer,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            config: Config::default(),
            connector: None,
            replay: ReplayLayer::new(),
        }
    }

    /// Opens transport connections with `connector`: any
    /// `Service<Uri>` that yields a tokio I/O stream (the shape of
    /// `tower::make::MakeConnection`), such as the ones in
    /// [`connector`](crate::connector). Default:
    /// [`TcpConnector`](connector::TcpConnector), or with
    /// the `rustls` feature a `TlsConnector` trusting the system's roots,
    /// which serves `https://` and `http://`.
    pub fn connector<C>(mut self, connector: C) -> Self
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: Io,
        C::Error: Into<BoxError>,
        C::Future: Send + 'static,
    {
        self.connector = Some(connector::boxed(connector));
        self
    }

    /// Serves `https://` (and `http://`) with `config` for TLS: a shorthand
    /// for `.connector(TlsConnector::from_config(config))`. Its ALPN
    /// protocols are replaced with `h2`.
    ///
    /// ```
    /// # fn doc(config: rustls::ClientConfig) {
    /// let pool = h2pool::Pool::builder().tls_config(config).build();
    /// # drop(pool);
    /// # }
    /// ```
    #[cfg(feature = "rustls")]
    pub fn tls_config(self, config: rustls::ClientConfig) -> Self {
        self.connector(connector::TlsConnector::from_config(config))
    }

    /// Replaces all HTTP/2 settings at once.
    pub fn http2(mut self, settings: Http2Settings) -> Self {
        self.config.http2 = settings;
        self
    }

    /// See [`Http2Settings::initial_stream_window_size`]. Default 2 MiB.
    pub fn initial_stream_window_size(mut self, size: u32) -> Self {
        self.config.http2 = self.config.http2.initial_stream_window_size(size);
        self
    }

    /// See [`Http2Settings::initial_connection_window_size`]. Default 5 MiB.
    pub fn initial_connection_window_size(mut self, size: u32) -> Self {
        self.config.http2 = self.config.http2.initial_connection_window_size(size);
        self
    }

    /// See [`Http2Settings::max_frame_size`]. Default 16 KiB.
    pub fn max_frame_size(mut self, size: u32) -> Self {
        self.config.http2 = self.config.http2.max_frame_size(size);
        self
    }

    /// See [`Http2Settings::max_header_list_size`]. Default 16 KiB.
    pub fn max_header_list_size(mut self, size: u32) -> Self {
        self.config.http2 = self.config.http2.max_header_list_size(size);
        self
    }

    /// Caps concurrent streams per connection below the server's limit.
    /// See [`Http2Settings::max_concurrent_streams`]. Default: the server's.
    ///
    /// A cap is also how a busy origin gets more than one connection before
    /// the server's limit is reached. Every stream of a connection goes
    /// through that connection's one task and h2's one lock, so one
    /// connection tops out at about one core's worth of frames; with a cap,
    /// load beyond it opens more connections, up to
    /// [`max_connections_per_origin`](Self::max_connections_per_origin).
    /// In this crate's benchmark (two cores, small GETs at concurrency 64),
    /// a cap of 32 ran at about 1.2x the rate of one uncapped connection.
    /// Each connection costs the server memory and a task of its own, so cap
    /// at tens of streams, not at a handful.
    ///
    /// ```
    /// let pool = h2pool::Pool::builder()
    ///     .max_concurrent_streams(Some(32))
    ///     .build();
    /// # drop(pool);
    /// ```
    pub fn max_concurrent_streams(mut self, max: Option<usize>) -> Self {
        self.config.http2 = self.config.http2.max_concurrent_streams(max);
        self
    }

    /// How long opening a transport connection may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How many connections one origin may have open at once (zero is taken
    /// as one). More than one opens only while every open connection is at
    /// its stream limit. Default 32.
    pub fn max_connections_per_origin(mut self, max: usize) -> Self {
        self.config.max_connections_per_origin = max.max(1);
        self
    }

    /// How many requests to the keyed [`Pool`] may wait for a stream slot per
    /// origin before more fail at once with
    /// [`ErrorKind::PendingLimit`](crate::ErrorKind::PendingLimit). (An
    /// [`OriginService`](crate::OriginService) waits in `poll_ready`, which
    /// the caller bounds, as tower's `Buffer` or `ConcurrencyLimit` do.)
    /// Zero is taken as one: a request waits while the first connection
    /// opens, so with none allowed to wait no connection would ever open.
    /// Default 1024.
    pub fn max_pending_requests(mut self, max: usize) -> Self {
        self.config.max_pending_requests = max.max(1);
        self
    }

    /// How long a request to the keyed [`Pool`] may wait for a stream slot
    /// before it fails with
    /// [`ErrorKind::PendingTimeout`](crate::ErrorKind::PendingTimeout);
    /// `None` waits as long as it takes. Default 30 s.
    ///
    /// An [`OriginService`](crate::OriginService) waits in `poll_ready`
    /// instead, as tower backpressure does, and so does a replay sent
    /// through it (inside the response future): see there for what bounds
    /// those waits.
    pub fn pending_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.pending_timeout = timeout;
        self
    }

    /// How long a connection may have no stream before it is closed;
    /// `None` keeps it. Default 90 s. The pool looks at its connections'
    /// idle time at least every eighth of this, so one closes up to an
    /// eighth of it later.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.drain = self.config.drain.idle_timeout(timeout);
        self
    }

    /// Liveness checks with PING (see [`readiness`](crate::readiness));
    /// `None` turns them off. Default: PING after 30 s of silence while
    /// streams are in flight, retire after 20 s without PONG.
    pub fn keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.config.keep_alive = keep_alive;
        self
    }

    /// When connections retire by themselves (see [`drain`](crate::drain)).
    /// The policy replaces every drain setting made before it:
    /// [`idle_timeout`](Self::idle_timeout),
    /// [`max_connection_age`](Self::max_connection_age) and
    /// [`max_requests_per_connection`](Self::max_requests_per_connection)
    /// (so call those after it), and `DrainPolicy::default()` has no idle
    /// timeout. Default: idle for 90 s, or stream ids at 75% of their range.
    pub fn drain_policy(mut self, policy: DrainPolicy) -> Self {
        self.config.drain = policy;
        self
    }

    /// Retire connections this old (less up to 10% jitter), as Envoy's
    /// `max_connection_duration`. Default: none.
    pub fn max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.config.drain = self.config.drain.max_age(age);
        self
    }

    /// Retire a connection after this many requests, as nginx's
    /// `keepalive_requests` would, but without failing any. Default: none.
    /// Zero is taken as one.
    pub fn max_requests_per_connection(mut self, max: Option<u64>) -> Self {
        self.config.drain = self.config.drain.max_requests(max);
        self
    }

    /// Waits after failed connects to an origin: up to `initial` after the
    /// first, doubling per failure up to `max` (raised to `initial` if below
    /// it); each wait is drawn at random from the upper half of its bound,
    /// so clients that failed together do not retry together. Default
    /// 100 ms doubling to 10 s.
    ///
    /// A connection the server ends (with GOAWAY or without) before
    /// answering any request, as an overloaded server shedding load does,
    /// counts as a failed connect too, until a connection answers.
    pub fn connect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.connect_backoff = initial;
        self.config.max_connect_backoff = max.max(initial);
        self
    }

    /// Wraps every connection the pool makes in `layer`, over the pool's own
    /// [readiness](crate::readiness) and [drain](crate::drain) layers: for
    /// per-connection limits, metrics or tracing. Request bodies reach it as
    /// [`RequestBody`], their type erased (one allocation per request, only
    /// when a layer is set); a request that never left the client comes
    /// back in its error as `Request<RequestBody>`. The pool still picks
    /// connections by their stream slots, and calls the layer's `poll_ready`
    /// right before dispatch; an error the layer makes itself reaches the
    /// caller as [`ErrorKind::ConnectionLayer`](crate::ErrorKind::ConnectionLayer).
    /// To stack several layers, give a `tower::ServiceBuilder`'s layer.
    ///
    /// ```
    /// use h2pool::pool::LayeredConnection;
    /// use tower::limit::ConcurrencyLimitLayer;
    ///
    /// // At most 8 requests in flight on each connection, whatever the
    /// // server's stream limit.
    /// let pool = h2pool::Pool::builder()
    ///     .connection_layer(ConcurrencyLimitLayer::new(8))
    ///     .build();
    /// # drop(pool);
    /// ```
    pub fn connection_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<LayeredConnection> + Send + Sync + 'static,
        L::Service: Service<Request<RequestBody>, Response = Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request<RequestBody>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<RequestBody>>>::Future: Send + 'static,
    {
        self.config.connection_layer = Some(Arc::new(move |connection| {
            let service = layer
                .layer(connection)
                .map_err(|error| layer_error(error.into()));
            BoxCloneSyncService::new(service)
        }));
        self
    }

    /// How requests the server did not process are sent again (see
    /// [`replay`](crate::replay)); `None` turns replays off, so every
    /// failure reaches the caller. Default: [`ReplayLayer::new()`].
    ///
    /// ```
    /// use h2pool::replay::ReplayLayer;
    ///
    /// let pool = h2pool::Pool::builder()
    ///     .replay(Some(ReplayLayer::new().max_attempts(3).buffer_limit(1024 * 1024)))
    ///     .build();
    /// # drop(pool);
    /// ```
    pub fn replay(mut self, replay: Option<ReplayLayer>) -> Self {
        self.replay = replay.unwrap_or_else(|| ReplayLayer::new().max_attempts(1));
        self
    }

    /// Builds the pool.
    pub fn build(self) -> Pool {
        let connector = self.connector.unwrap_or_else(connector::default_connector);
        Pool::from_parts(self.config, connector, self.replay)
    }
}
