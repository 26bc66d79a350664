use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use bytes::Buf;
use http::{Request, Response, Uri};
use http_body::Body as HttpBody;
use tower_layer::Layer;
use tower_service::Service;

use super::builder::Builder;
use super::config::Config;
use super::dispatch::{Dispatch, OriginDispatch};
use super::future::ResponseFuture;
use super::origin::{OriginKey, OriginPool};
use super::stats::PoolStats;
use crate::body::Body;
use crate::connector::BoxedConnector;
use crate::error::{BoxError, Error};
use crate::readiness::ReadinessLayer;
use crate::replay::{Replay, ReplayLayer};

/// A pool of HTTP/2 connections, keyed by origin, as a tower [`Service`].
///
/// Requests carry absolute URIs (`http://host:port/path`); each goes to the
/// least-loaded connection to its origin that has a free stream slot. A new
/// connection opens only when every open one is at the server's
/// SETTINGS_MAX_CONCURRENT_STREAMS, up to
/// [`max_connections_per_origin`](Builder::max_connections_per_origin).
///
/// The pool is always ready: a request that finds no free slot waits inside
/// its response future, bounded by
/// [`max_pending_requests`](Builder::max_pending_requests) and
/// [`pending_timeout`](Builder::pending_timeout). Clones share the pool.
///
/// ```
/// use h2pool::Pool;
/// use tower::ServiceExt;
///
/// # async fn doc() -> Result<(), h2pool::Error> {
/// let pool = Pool::new();
/// let request = http::Request::get("http://127.0.0.1:8080/health")
///     .body(h2pool::Body::empty())
///     .expect("a valid request");
/// let response = pool.clone().oneshot(request).await?;
/// println!("{}", response.status());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    service: Replay<Dispatch>,
}

/// What every clone of a pool, and its origin services, share.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    connector: BoxedConnector,
    // One for all origins, so a server's "too_many_pings" slows them all.
    readiness: ReadinessLayer,
    // One for all origins, so one budget bounds the pool's replays.
    replay: ReplayLayer,
    // Read on every request that misses its service's last-origin cache,
    // written once per new origin: a read-write lock keeps requests to
    // different origins from queueing on each other.
    origins: RwLock<HashMap<OriginKey, Arc<OriginPool>>>,
}

impl Pool {
    /// A pool with the default settings and the default connector:
    /// [`TcpConnector`](crate::connector::TcpConnector) for `http://`, or
    /// with the `rustls` feature a `TlsConnector` that serves `https://`
    /// too, trusting the system's root certificates (as reqwest and
    /// hyper-rustls users expect).
    pub fn new() -> Pool {
        Builder::new().build()
    }

    /// Starts configuring a pool.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_parts(
        config: Config,
        connector: BoxedConnector,
        replay: ReplayLayer,
    ) -> Pool {
        let shared = Arc::new(Shared {
            readiness: ReadinessLayer::new(config.keep_alive.clone()),
            config: Arc::new(config),
            connector,
            replay,
            origins: RwLock::new(HashMap::new()),
        });
        let service = shared.replay.layer(Dispatch::any_origin(shared.clone()));
        Pool { shared, service }
    }

    /// A service for one origin, sharing this pool's connections.
    ///
    /// Its `poll_ready` is honest: `Pending` while every connection is at its
    /// stream limit and no more may be opened. Requests may carry only a path
    /// (as tonic's generated clients send them); the origin's scheme and
    /// authority are filled in.
    ///
    /// ```
    /// # fn doc() -> Result<(), h2pool::Error> {
    /// let pool = h2pool::Pool::new();
    /// let origin = pool.origin("http://127.0.0.1:50051".parse().unwrap())?;
    /// assert_eq!(origin.uri().authority().unwrap().as_str(), "127.0.0.1:50051");
    /// # Ok(()) }
    /// ```
    pub fn origin(&self, uri: Uri) -> Result<OriginService, Error> {
        let origin = self.shared.origin_pool(&uri)?;
        let service = self
            .shared
            .replay
            .layer(Dispatch::Origin(OriginDispatch::new(origin.clone())));
        Ok(OriginService { origin, service })
    }

    /// A snapshot of connections, streams, requests and errors per origin,
    /// and of replays.
    pub fn stats(&self) -> PoolStats {
        let origins = self
            .shared
            .origins
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        PoolStats {
            origins: origins.values().map(|origin| origin.stats()).collect(),
            replay: self.shared.replay.stats(),
        }
    }
}

impl Shared {
    pub(crate) fn origin_pool(&self, uri: &Uri) -> Result<Arc<OriginPool>, Error> {
        let key = OriginKey::from_uri(uri)?;
        let known = self.origins.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(origin) = known.get(&key) {
            return Ok(origin.clone());
        }
        drop(known);
        let mut origins = self.origins.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have added it between the two locks.
        if let Some(origin) = origins.get(&key) {
            return Ok(origin.clone());
        }
        // A client that meets many origins over its life (service discovery,
        // a proxy) must not keep them all: drop the ones nothing uses any
        // more. Only the map holds those, so no handle can be using one.
        origins.retain(|_, origin| Arc::strong_count(origin) > 1 || !origin.is_unused());
        let origin = OriginPool::new(
            key.clone(),
            self.config.clone(),
            self.connector.clone(),
            self.readiness.clone(),
        )?;
        origins.insert(key, origin.clone());
        Ok(origin)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for Pool
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    // Every level of a request's path (replay, dispatch, connection) is
    // marked `#[inline]`: as separate functions each copied the future it
    // built, or the response it returned, to the next level (about 300
    // instructions a request, measured with callgrind).
    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(self.service.call(request))
    }
}

/// The pool's connections to one origin, as a [`Service`] with honest
/// backpressure. Made by [`Pool::origin`].
///
/// Every request goes to its origin: a path-only URI (as tonic's generated
/// clients send) is completed with the origin's scheme and authority, and
/// one that names another origin is pointed at this one, as tonic's own
/// `Channel` does.
///
/// `poll_ready` reserves a stream slot (opening a connection if the origin
/// may have another) and is `Pending` while none can be had, so tower's
/// `Buffer`, `ConcurrencyLimit` and `Balance` see the real capacity. A failed
/// connect does not fail `poll_ready`: the next `call` returns the error.
/// The pool's pending timeout does not apply to that wait: bound it with a
/// deadline of the caller's around readiness and the call (such as
/// `tokio::time::timeout` over `oneshot`), or fail at once with tower's
/// `LoadShed`. A replay waits the same way inside the response future,
/// where a tower `Timeout` layer bounds it.
#[derive(Clone)]
pub struct OriginService {
    origin: Arc<OriginPool>,
    service: Replay<Dispatch>,
}

impl OriginService {
    /// `scheme://authority/` of the origin this service sends to.
    pub fn uri(&self) -> Uri {
        self.origin.uri().clone()
    }
}

impl fmt::Debug for OriginService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginService")
            .field("origin", &self.origin.key().to_string())
            .finish_non_exhaustive()
    }
}

/// The origin's streams in flight, plus its requests waiting for a slot,
/// counted across every clone and the keyed [`Pool`]: what
/// [`tower::balance::p2c::Balance`](https://docs.rs/tower/0.5/tower/balance/p2c/struct.Balance.html) compares to pick the less busy of two
/// endpoints.
///
/// Unlike tower's `PendingRequests`, which stops counting a request when
/// its response headers arrive, a stream counts until its body has ended
/// both ways, so long downloads and gRPC streams weigh on the endpoint that
/// serves them. Unlike `PeakEwma` it needs no latency to be learnt first;
/// for latency-aware balancing, wrap the service in
/// `tower::load::PeakEwma`, which works on top of it.
///
/// A service that holds a reserved slot (after a successful `poll_ready`)
/// counts it, so every ready endpoint carries the same one extra.
///
/// ```
/// use tower::load::Load;
///
/// # fn doc() -> Result<(), h2pool::Error> {
/// let pool = h2pool::Pool::new();
/// let origin = pool.origin("http://127.0.0.1:50051".parse().unwrap())?;
/// assert_eq!(origin.load(), 0);
/// # Ok(()) }
/// ```
impl tower::load::Load for OriginService {
    type Metric = usize;

    fn load(&self) -> usize {
        self.origin.load()
    }
}

impl<B> Service<Request<B>> for OriginService
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Service::<Request<B>>::poll_ready(&mut self.service, cx)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(self.service.call(request))
    }
}
