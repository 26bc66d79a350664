use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::Body as HttpBody;
use tokio::time::Sleep;
use tower_service::Service;

use super::origin::{FirstLook, OriginPool, Waiter};
use super::pooled::{PooledConnection, PooledFuture};
use super::service::Shared;
use crate::body::Body;
use crate::error::{BoxError, Delivery, Error, ErrorKind};

/// The pool's services below the replay layer: one attempt of a request.
#[derive(Clone)]
pub(crate) enum Dispatch {
    /// Any origin, found from each request's URI; always ready.
    AnyOrigin {
        shared: Arc<Shared>,
        /// The origin of the last request sent through this service (or the
        /// one it was cloned from). Most services send to one origin over
        /// and over; comparing the URI with this one costs far less than
        /// hashing its authority (case-insensitively, byte by byte) for the
        /// shared map, and takes no lock. The pool forgets only origins that
        /// nothing but its map holds, so a cached one stays the pool's.
        last: Option<Arc<OriginPool>>,
    },
    /// One origin, with an honest `poll_ready`.
    Origin(OriginDispatch),
}

impl Dispatch {
    pub(crate) fn any_origin(shared: Arc<Shared>) -> Self {
        Dispatch::AnyOrigin { shared, last: None }
    }
}

impl<B> Service<Request<B>> for Dispatch
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = DispatchFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self {
            Dispatch::AnyOrigin { .. } => Poll::Ready(Ok(())),
            Dispatch::Origin(origin) => origin.poll_ready::<B>(cx),
        }
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> DispatchFuture<B> {
        match self {
            Dispatch::AnyOrigin { shared, last } => {
                let cached = last
                    .as_ref()
                    .filter(|origin| origin.key().matches(request.uri()));
                let origin = match cached {
                    Some(origin) => origin.clone(),
                    None => match shared.origin_pool(request.uri()) {
                        Ok(origin) => last.insert(origin).clone(),
                        Err(error) => return DispatchFuture::failed(error.with_request(request)),
                    },
                };
                match origin.try_send(request) {
                    FirstLook::Sent(response) => DispatchFuture::sending(origin, response),
                    FirstLook::Failed(error, request) => {
                        origin.record_request();
                        origin.record_error(error.kind());
                        DispatchFuture::failed(error.with_request(request))
                    }
                    FirstLook::Wait(request) => {
                        DispatchFuture::acquiring(origin, request, shared.config.pending_timeout)
                    }
                }
            }
            Dispatch::Origin(origin) => origin.call(request),
        }
    }
}

/// One origin's connections, reserving a stream slot in `poll_ready`.
pub(crate) struct OriginDispatch {
    origin: Arc<OriginPool>,
    // Boxed, once per service and kept across calls: the replay layer keeps
    // a (fresh) clone of the service in every response future, which stays
    // small this way.
    reserved: Option<Box<Reserved>>,
}

/// What `poll_ready` got for the next call.
#[derive(Default)]
struct Reserved {
    ready: Option<PooledConnection>,
    failed: Option<Error>,
    waiter: Waiter,
}

impl OriginDispatch {
    pub(crate) fn new(origin: Arc<OriginPool>) -> Self {
        OriginDispatch {
            origin,
            reserved: None,
        }
    }

    fn poll_ready<B>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
    where
        B: HttpBody + Send + 'static,
        B::Data: Buf + Send,
        B::Error: Into<BoxError>,
    {
        let reserved = self.reserved.get_or_insert_with(Box::default);
        if reserved.ready.is_some() || reserved.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self
            .origin
            .poll_acquire::<B>(cx, &mut reserved.waiter, false)
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(outcome) => {
                reserved.waiter = Waiter::default();
                match outcome {
                    Ok(connection) => reserved.ready = Some(connection),
                    // A failed connect is the next call's error, not poll_ready's.
                    Err(error) => reserved.failed = Some(error),
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call<B>(&mut self, mut request: Request<B>) -> DispatchFuture<B>
    where
        B: HttpBody + Send + 'static,
        B::Data: Buf + Send,
        B::Error: Into<BoxError>,
    {
        let (ready, failed) = match self.reserved.as_deref_mut() {
            Some(reserved) => (reserved.ready.take(), reserved.failed.take()),
            None => (None, None),
        };
        if let Some(error) = failed {
            // An attempt that failed, as the keyed pool counts one.
            self.origin.record_request();
            self.origin.record_error(error.kind());
            return DispatchFuture::failed(error.with_request(request));
        }
        let Some(mut connection) = ready else {
            return DispatchFuture::failed(
                Error::new(ErrorKind::NotReady, Delivery::NeverSent).with_request(request),
            );
        };
        if let Err(error) = self.complete_uri(&mut request) {
            return DispatchFuture::failed(error.with_request(request));
        }
        let response = Service::call(&mut connection, request);
        self.origin.check_in(connection);
        DispatchFuture::sending(self.origin.clone(), response)
    }

    /// Points the request URI at this origin: a path-only one, or one
    /// naming another origin (as tonic's `AddOrigin` does, and as a proxy
    /// forwarding a request addressed to itself needs).
    fn complete_uri<B>(&self, request: &mut Request<B>) -> Result<(), Error> {
        let uri = request.uri();
        let key = self.origin.key();
        if key.matches(uri) {
            return Ok(());
        }
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let complete = Uri::builder()
            .scheme(key.scheme().clone())
            .authority(key.authority().clone())
            .path_and_query(path)
            .build()
            .map_err(|error| {
                Error::new(ErrorKind::InvalidUri, Delivery::NeverSent).with_source(error)
            })?;
        *request.uri_mut() = complete;
        Ok(())
    }
}

impl Clone for OriginDispatch {
    /// A clone reserves its own slot: it starts out not ready.
    fn clone(&self) -> Self {
        OriginDispatch::new(self.origin.clone())
    }
}

/// The future of one attempt: it waits for a stream slot (bounded by the
/// pool's pending timeout), then for the response headers. Dropping it gives
/// up the wait, or resets the stream with CANCEL.
pub(crate) struct DispatchFuture<B> {
    state: State<B>,
}

enum State<B> {
    // Boxed: most requests find a slot in `call` and never wait, and this
    // is by far the largest state, which every response future would carry.
    Acquiring(Box<Acquiring<B>>),
    Sending {
        origin: Arc<OriginPool>,
        response: PooledFuture,
    },
    Failed(Option<Error>),
}

/// A request waiting for a stream slot.
struct Acquiring<B> {
    origin: Arc<OriginPool>,
    request: Option<Request<B>>,
    waiter: Waiter,
    pending_timeout: Option<Duration>,
    deadline: Option<Pin<Box<Sleep>>>,
}

// The request body is moved, never pinned, so the future can move freely
// whatever the body type.
impl<B> Unpin for DispatchFuture<B> {}

impl<B> DispatchFuture<B> {
    pub(crate) fn acquiring(
        origin: Arc<OriginPool>,
        request: Request<B>,
        pending_timeout: Option<Duration>,
    ) -> Self {
        origin.record_request();
        DispatchFuture {
            state: State::Acquiring(Box::new(Acquiring {
                origin,
                request: Some(request),
                waiter: Waiter::default(),
                pending_timeout,
                deadline: None,
            })),
        }
    }

    pub(crate) fn sending(origin: Arc<OriginPool>, response: PooledFuture) -> Self {
        origin.record_request();
        DispatchFuture {
            state: State::Sending { origin, response },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        DispatchFuture {
            state: State::Failed(Some(error)),
        }
    }
}

impl<B> Future for DispatchFuture<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Acquiring(acquiring) => {
                    let Acquiring {
                        origin,
                        request,
                        waiter,
                        pending_timeout,
                        deadline,
                    } = &mut **acquiring;
                    let outcome = match origin.poll_acquire::<B>(cx, waiter, true) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => match pending_timeout {
                            None => return Poll::Pending,
                            Some(timeout) => {
                                let timeout = *timeout;
                                let sleep = deadline
                                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                                match sleep.as_mut().poll(cx) {
                                    Poll::Pending => return Poll::Pending,
                                    Poll::Ready(()) => Err(Error::new(
                                        ErrorKind::PendingTimeout,
                                        Delivery::NeverSent,
                                    )
                                    .with_detail(origin.no_slot_detail(timeout))),
                                }
                            }
                        },
                    };
                    let Some(request) = request.take() else {
                        this.state = State::Failed(None);
                        continue;
                    };
                    match outcome {
                        Ok(mut connection) => {
                            let response = Service::call(&mut connection, request);
                            origin.check_in(connection);
                            let origin = origin.clone();
                            this.state = State::Sending { origin, response };
                        }
                        Err(error) => {
                            origin.record_error(error.kind());
                            this.state = State::Failed(None);
                            return Poll::Ready(Err(error.with_request(request)));
                        }
                    }
                }
                State::Sending { origin, response } => {
                    // Returned as polled, not rebuilt: a response is large,
                    // and each rebuild is a copy.
                    let done = Pin::new(response).poll(cx);
                    if let Poll::Ready(outcome) = &done {
                        if let Err(error) = outcome {
                            origin.record_error(error.kind());
                        }
                        this.state = State::Failed(None);
                    }
                    return done;
                }
                State::Failed(error) => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                        Error::new(ErrorKind::NotReady, Delivery::NeverSent)
                            .with_detail("response future polled after completion")
                    })))
                }
            }
        }
    }
}

impl<B> fmt::Debug for DispatchFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring(_) => "waiting for a stream slot",
            State::Sending { .. } => "waiting for response headers",
            State::Failed(Some(_)) => "failed",
            State::Failed(None) => "done",
        };
        f.debug_struct("DispatchFuture")
            .field("state", &state)
            .finish()
    }
}
