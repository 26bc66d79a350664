//! One connection as the pool keeps it: under the pool's own layers, and
//! under the user's per-connection layer if the builder was given one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Body as HttpBody;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

use crate::body::Body;
use crate::connection::{self, Connection, ConnectionHandle, HasHandle};
use crate::drain::Drain;
use crate::error::{BoxError, Delivery, Error, ErrorKind};
use crate::readiness::Readiness;

/// The request body a user's per-connection layer sees: the caller's body
/// with its type erased (the pool serves any body type per request).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A connection under the pool's layers, as a user's per-connection layer
/// receives it.
pub type LayeredConnection = Readiness<Drain<Connection>>;

/// A connection under the user's layer, its body type erased.
pub(crate) type CustomService = BoxCloneSyncService<Request<RequestBody>, Response<Body>, Error>;

/// Wraps each new connection in the user's layer.
pub(crate) type ConnectionLayerFn = Arc<dyn Fn(LayeredConnection) -> CustomService + Send + Sync>;

#[derive(Clone)]
pub(crate) enum PooledConnection {
    Standard(LayeredConnection),
    Custom {
        handle: ConnectionHandle,
        service: CustomService,
    },
}

impl PooledConnection {
    pub(crate) fn new(connection: LayeredConnection, layer: Option<&ConnectionLayerFn>) -> Self {
        match layer {
            None => PooledConnection::Standard(connection),
            Some(layer) => PooledConnection::Custom {
                handle: connection.handle().clone(),
                service: layer(connection),
            },
        }
    }

    pub(crate) fn handle(&self) -> &ConnectionHandle {
        match self {
            PooledConnection::Standard(connection) => connection.handle(),
            PooledConnection::Custom { handle, .. } => handle,
        }
    }
}

impl<B> Service<Request<B>> for PooledConnection
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = PooledFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self {
            PooledConnection::Standard(connection) => {
                Service::<Request<B>>::poll_ready(connection, cx)
            }
            PooledConnection::Custom { service, .. } => service.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> PooledFuture {
        match self {
            PooledConnection::Standard(connection) => {
                PooledFuture::Standard(connection.call(request))
            }
            PooledConnection::Custom { service, .. } => {
                PooledFuture::Custom(service.call(request.map(box_body)))
            }
        }
    }
}

/// Erases a request body's type, for the user's per-connection layer.
pub(crate) fn box_body<B>(body: B) -> RequestBody
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
        .map_err(Into::into)
        .boxed_unsync()
}

/// Maps the error of a user's per-connection service to ours.
pub(crate) fn layer_error(error: BoxError) -> Error {
    match error.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => {
            Error::new(ErrorKind::ConnectionLayer, Delivery::MaybeProcessed).with_source(other)
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One attempt's response future, under the user's layer or not.
pub(crate) enum PooledFuture {
    Standard(connection::ResponseFuture),
    Custom(BoxFuture<Result<Response<Body>, Error>>),
}

impl Future for PooledFuture {
    type Output = Result<Response<Body>, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            PooledFuture::Standard(future) => Pin::new(future).poll(cx),
            PooledFuture::Custom(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for PooledFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PooledFuture::Standard(future) => future.fmt(f),
            PooledFuture::Custom(_) => f.write_str("PooledFuture(custom layer)"),
        }
    }
}
