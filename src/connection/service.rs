use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h2::client::SendRequest;
use http::header::{HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, Request, Response};
use http_body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tower_service::Service;
use tracing::Instrument;

use super::future::ResponseFuture;
use super::handle::{ConnectionHandle, Phase, SlotWait, SlotWaiters, StreamSlot};
use super::io::Watched;
use super::settings::Http2Settings;
use super::stream::{send_body, StreamGuard};
use crate::body::Body;
use crate::error::{BoxError, Delivery, Error, ErrorKind};

/// One HTTP/2 connection as a [`Service`].
///
/// `poll_ready` is honest: it reserves one of the connection's stream slots
/// (the server's SETTINGS_MAX_CONCURRENT_STREAMS, capped by
/// [`Http2Settings::max_concurrent_streams`]) and stays `Pending` while all
/// are taken. `call` sends the request headers and returns a future that
/// resolves as soon as the response headers arrive, while a task of its own
/// streams the request body (full duplex).
///
/// A connection that has gone away never fails `poll_ready`: `call` then
/// fails at once with an error whose [`delivery`](Error::delivery) is
/// [`Delivery::NeverSent`] and which carries the request back
/// ([`Error::take_request`]), so a caller can send it elsewhere.
///
/// Clones share the connection; each clone reserves its own slot.
///
/// ```no_run
/// use h2pool::connection::{Connection, Http2Settings};
/// use tower::ServiceExt;
///
/// # async fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
/// let connection = Connection::handshake(tcp, &Http2Settings::default()).await?;
/// let request = http::Request::get("http://127.0.0.1:8080/").body(h2pool::Body::empty())?;
/// let response = connection.oneshot(request).await?;
/// println!("{}", response.status());
/// # Ok(()) }
/// ```
pub struct Connection {
    // Declared before `send` so it drops first: once h2 sees its last send
    // handle go, the driver must already see this count at zero.
    senders: Arc<()>,
    send: SendRequest<Bytes>,
    handle: ConnectionHandle,
    // The runtime the connection's task runs on, for the tasks that send
    // request bodies: `call` may run outside any runtime's context (a
    // future made on one thread and awaited on a runtime).
    runtime: tokio::runtime::Handle,
    slot: Option<StreamSlot>,
    waiter: Option<SlotWait>,
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

impl Connection {
    /// Performs the HTTP/2 handshake over `io` and spawns the task that
    /// drives the connection on the current tokio runtime.
    ///
    /// Resolves once h2 has applied the server's SETTINGS and its ACK of
    /// ours, so both sides' limits are in force before the first request.
    pub async fn handshake<IO>(io: IO, settings: &Http2Settings) -> Result<Connection, Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let span = tracing::debug_span!("h2pool::connection", id = tracing::field::Empty);
        Self::handshake_with(io, settings, SlotWaiters::new(), span).await
    }

    /// Like [`handshake`](Self::handshake), sharing `slot_waiters` with
    /// other connections (a pool's requests wait on any of them) and
    /// running the connection task in `span`.
    pub(crate) async fn handshake_with<IO>(
        io: IO,
        settings: &Http2Settings,
        slot_waiters: Arc<SlotWaiters>,
        span: tracing::Span,
    ) -> Result<Connection, Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        span.record("id", id);
        let local_max = settings.max_concurrent_streams.unwrap_or(usize::MAX);
        let handle = ConnectionHandle::new(id, local_max, slot_waiters);

        let io = Watched::new(io, handle.clone());
        let handshake = settings.h2_builder().handshake::<_, Bytes>(io);
        let (send, mut connection) =
            match tokio::time::timeout(settings.handshake_timeout, handshake).await {
                Ok(Ok(parts)) => parts,
                Ok(Err(h2_error)) => {
                    return Err(
                        Error::new(ErrorKind::Handshake, Delivery::NeverSent).with_source(h2_error)
                    )
                }
                Err(elapsed) => return Err(handshake_timed_out(elapsed)),
            };
        let senders = Arc::new(());
        let senders_alive = Arc::downgrade(&senders);
        let driver_handle = handle.clone();
        // The task says when h2 has applied the server's first SETTINGS and
        // its ACK of ours, or why the connection ended before. With both in,
        // the server's limits are known and ours (windows, say) are in
        // force on both sides before the first stream.
        let (settings_known, settings_applied) = oneshot::channel::<Result<(), h2::Error>>();
        let mut settings_known = Some(settings_known);
        let driver = tokio::spawn(
            async move {
                let mut kept_waker = None;
                let outcome = std::future::poll_fn(|cx| {
                    // Taken before h2's turn, so that turn already looks for
                    // the PING its taker sends.
                    if driver_handle.driver_turn(&mut kept_waker, cx.waker()) {
                        driver_handle.hand_over_ping_pong(connection.ping_pong());
                    }
                    let outcome = Pin::new(&mut connection).poll(cx);
                    // Only this task sees SETTINGS arrive, and h2 applies
                    // them while it runs: once it has, the stream limit is
                    // read at the end of the turn. A raised limit wakes the
                    // requests waiting for a slot. A lowered one must stop
                    // the pool at once: a stream h2 cannot open waits in
                    // h2's queue, where no pending timeout reaches it and,
                    // if the server allows none, it would wait forever.
                    if driver_handle.take_settings_applied() {
                        settings_turn(&driver_handle, &connection, &mut settings_known);
                    }
                    outcome
                })
                .await;
                // h2 ends a client connection cleanly when every send handle
                // is gone (we closed it), or when the server closed it: after
                // GOAWAY(NO_ERROR), or without a word. Read once: the record
                // and the flag below must agree.
                let closed_by_us = outcome.is_ok() && senders_alive.strong_count() == 0;
                let (kind, detail, h2_reason) = match &outcome {
                    // A GOAWAY is recorded even if no request was polled in
                    // between to see it, so the pool learns how long the
                    // server keeps connections; a bare close teaches nothing.
                    Ok(()) if !closed_by_us => {
                        if driver_handle.goaway_received() {
                            (
                                ErrorKind::GoAway,
                                "server sent GOAWAY (NO_ERROR) and closed the connection"
                                    .to_owned(),
                                Some(h2::Reason::NO_ERROR),
                            )
                        } else {
                            (
                                ErrorKind::ConnectionClosed,
                                "server closed the connection without GOAWAY".to_owned(),
                                None,
                            )
                        }
                    }
                    Ok(()) => (ErrorKind::ConnectionClosed, "closed".to_owned(), None),
                    Err(error) if error.is_go_away() && error.is_remote() => (
                        ErrorKind::GoAway,
                        format!("server sent GOAWAY: {error}"),
                        error.reason(),
                    ),
                    Err(error) => (
                        ErrorKind::ConnectionClosed,
                        format!("connection error: {error}"),
                        error.reason(),
                    ),
                };
                if !closed_by_us {
                    driver_handle.note_ended_by_server();
                }
                driver_handle.mark_closed_with(kind, detail.clone(), h2_reason);
                tracing::debug!(reason = %detail, streams = driver_handle.streams_started(), "connection closed");
                if let (Some(settings_known), Err(error)) = (settings_known, outcome) {
                    let _ = settings_known.send(Err(error));
                }
            }
            .instrument(span.clone()),
        );
        handle.set_driver(driver.abort_handle());

        match tokio::time::timeout(settings.handshake_timeout, settings_applied).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(h2_error))) => {
                handle.mark_closed(ErrorKind::Handshake, "handshake failed");
                return Err(
                    Error::new(ErrorKind::Handshake, Delivery::NeverSent).with_source(h2_error)
                );
            }
            // The task ended without an error: the server closed the
            // connection (or the task was aborted) before its SETTINGS and
            // ACK were in.
            Ok(Err(_ended)) => {
                handle.mark_closed(ErrorKind::Handshake, "handshake failed");
                let detail = handle.close_reason().map_or_else(
                    || "the connection closed before the server's SETTINGS and ACK".to_owned(),
                    |reason| format!("before the server's SETTINGS and ACK: {}", reason.detail),
                );
                return Err(
                    Error::new(ErrorKind::Handshake, Delivery::NeverSent).with_detail(detail)
                );
            }
            Err(elapsed) => {
                handle.mark_closed(ErrorKind::Handshake, "handshake timed out");
                return Err(handshake_timed_out(elapsed));
            }
        }
        // The task read the server's stream limit before it said so.
        span.in_scope(|| {
            tracing::debug!(
                max_concurrent_streams = send.current_max_send_streams(),
                "connection established"
            )
        });

        Ok(Connection {
            senders,
            send,
            handle,
            runtime: tokio::runtime::Handle::current(),
            slot: None,
            waiter: None,
        })
    }

    /// The connection's shared state.
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }

    /// Records what a failed h2 `poll_ready` or `send_request` says about the
    /// connection: a GOAWAY means draining, anything else means gone.
    fn note_connection_error(&self, h2_error: &h2::Error) {
        if h2_error.is_go_away() && h2_error.is_remote() {
            if self.handle.start_draining_with(
                ErrorKind::GoAway,
                h2_error.to_string(),
                h2_error.reason(),
            ) {
                tracing::debug!(connection = self.handle.id(), reason = ?h2_error.reason(), "received GOAWAY, draining");
            }
        } else if self.handle.mark_closed_with(
            ErrorKind::ConnectionClosed,
            h2_error.to_string(),
            h2_error.reason(),
        ) {
            tracing::debug!(connection = self.handle.id(), error = %h2_error, "connection failed");
        }
    }

    /// Waits for a stream slot, or for the connection to stop taking streams.
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_slot(cx).is_pending() {
            return Poll::Pending;
        }
        if self.slot.is_none() {
            // Gone or draining: `call` fails fast and hands the request back.
            return Poll::Ready(());
        }
        match self.send.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(h2_error)) => {
                self.note_connection_error(&h2_error);
                self.slot = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.slot.is_some() || !self.handle.is_open() {
                self.waiter = None;
                return Poll::Ready(());
            }
            // Look before registering for wake-ups: usually a slot is free,
            // and registering boxes a `Notified` and locks the `Notify` the
            // whole origin shares, to enter its list and to leave it.
            if self.waiter.is_none() {
                if let Some(slot) = self.handle.try_reserve() {
                    self.slot = Some(slot);
                    continue;
                }
            }
            let waiters = self.handle.slot_waiters();
            let waiter = self.waiter.get_or_insert_with(|| waiters.wait());
            // Registered now: look again, so a slot freed (or the
            // connection retired) since the first look still wakes us.
            waiter.enable();
            if let Some(slot) = self.handle.try_reserve() {
                self.slot = Some(slot);
                continue;
            }
            if !self.handle.is_open() {
                continue;
            }
            match waiter.poll(cx) {
                Poll::Ready(()) => self.waiter = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection {
            senders: self.senders.clone(),
            send: self.send.clone(),
            handle: self.handle.clone(),
            runtime: self.runtime.clone(),
            slot: None,
            waiter: None,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("handle", &self.handle)
            .field("ready", &self.slot.is_some())
            .finish()
    }
}

impl<B> Service<Request<B>> for Connection
where
    B: HttpBody + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_reserve(cx).map(Ok)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let Some(mut slot) = self.slot.take() else {
            let error = if self.handle.is_open() {
                Error::new(ErrorKind::NotReady, Delivery::NeverSent)
            } else {
                not_open_error(&self.handle)
            };
            return ResponseFuture::failed(error.with_request(request));
        };
        // A slot reserved before a drain of ours began still gets its
        // stream: our drains are graceful. After a server's GOAWAY h2 would
        // refuse the stream, taking the request with it: it goes back now.
        if self.handle.phase() == Phase::Closed || self.handle.goaway_received() {
            return ResponseFuture::failed(not_open_error(&self.handle).with_request(request));
        }
        // A slot reserved before the server lowered its stream limit below
        // the streams on the connection is one too many now: h2 would hold
        // its stream in a queue no timeout reaches (for ever, if the server
        // allows none). It goes back too.
        let max_streams = self.handle.max_streams();
        if self.handle.load() > max_streams {
            return ResponseFuture::failed(over_limit_error(max_streams).with_request(request));
        }

        let (mut parts, body) = request.into_parts();
        strip_connection_headers(&mut parts.headers);
        let end_of_stream = body.is_end_stream();
        let body_expected = parts.method != Method::HEAD;
        let head = Request::from_parts(parts, ());
        match self.send.send_request(head, end_of_stream) {
            Ok((response, send_stream)) => {
                slot.record_sent();
                if self.handle.load() >= self.handle.max_streams() {
                    // At its stream limit, h2 keeps a handle on the stream
                    // in this `SendRequest` until its next `poll_ready`. An
                    // instance put away with it would keep the stream from
                    // being reset when its response is dropped, so the
                    // server would go on counting it against the limit
                    // that the next request waits on. A clone holds none.
                    self.send = self.send.clone();
                }
                let body_task = if end_of_stream {
                    None
                } else {
                    Some(self.runtime.spawn(send_body(body, send_stream)))
                };
                ResponseFuture::waiting(response, StreamGuard::new(slot, body_task), body_expected)
            }
            Err(h2_error) => {
                let user_error =
                    !h2_error.is_go_away() && !h2_error.is_io() && h2_error.reason().is_none();
                if user_error {
                    return ResponseFuture::failed(
                        Error::new(ErrorKind::InvalidRequest, Delivery::NeverSent)
                            .with_source(h2_error),
                    );
                }
                self.note_connection_error(&h2_error);
                ResponseFuture::failed(Error::from_h2(h2_error, false))
            }
        }
    }
}

fn over_limit_error(max_streams: usize) -> Error {
    Error::new(ErrorKind::Refused, Delivery::NeverSent)
        .with_detail(format!("the limit is now {max_streams}"))
}

fn not_open_error(handle: &ConnectionHandle) -> Error {
    let reason = handle.close_reason();
    let kind = match reason.as_ref().map(|reason| reason.kind) {
        Some(ErrorKind::GoAway) => ErrorKind::GoAway,
        Some(ErrorKind::KeepAliveTimeout) => ErrorKind::KeepAliveTimeout,
        _ => ErrorKind::ConnectionClosed,
    };
    let error = Error::new(kind, Delivery::NeverSent);
    match reason {
        Some(reason) => error.with_detail(reason.detail),
        None => error,
    }
}

/// The connection task's turn after h2 applied a SETTINGS, or the ACK of
/// ours. Out of line: the task runs many turns for each of these, and a
/// larger turn changes how the compiler builds h2's own code inside it.
#[cold]
#[inline(never)]
fn settings_turn<IO>(
    handle: &ConnectionHandle,
    connection: &h2::client::Connection<IO, Bytes>,
    settings_known: &mut Option<oneshot::Sender<Result<(), h2::Error>>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    handle.set_peer_max_streams(connection.max_concurrent_send_streams());
    if handle.settings_settled() {
        if let Some(settings_known) = settings_known.take() {
            let _ = settings_known.send(Ok(()));
        }
    }
}

fn handshake_timed_out(elapsed: tokio::time::error::Elapsed) -> Error {
    Error::new(ErrorKind::Handshake, Delivery::NeverSent)
        .with_detail("no SETTINGS (or no ACK of ours) from the server within the handshake timeout")
        .with_source(elapsed)
}

/// HTTP/2 forbids connection-specific headers (RFC 9113 section 8.2.2); a
/// request that crossed an HTTP/1.1 hop often has them, so drop them rather
/// than fail, as hyper does.
fn strip_connection_headers(headers: &mut HeaderMap) {
    // One pass over the names, which usually finds none, costs less than a
    // lookup (a hash of the name) for each of the six below.
    if !headers
        .iter()
        .any(|(name, value)| is_connection_specific(name, value))
    {
        return;
    }
    if let Some(connection) = headers.remove(CONNECTION) {
        // Headers the Connection header names are hop-by-hop too.
        if let Ok(names) = connection.to_str() {
            for name in names.split(',') {
                if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [TRANSFER_ENCODING, UPGRADE, KEEP_ALIVE, PROXY_CONNECTION] {
        headers.remove(name);
    }
    if headers
        .get(TE)
        .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether HTTP/2 forbids this header (`te` only with a value other than
/// `trailers`).
fn is_connection_specific(name: &HeaderName, value: &HeaderValue) -> bool {
    // Standard names compare as one byte; custom ones only with custom ones.
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || (*name == TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_specific_headers_are_removed_and_te_trailers_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "close, x-hop".parse().unwrap());
        headers.insert("x-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(TE, "trailers".parse().unwrap());
        headers.insert("x-end-to-end", "1".parse().unwrap());
        strip_connection_headers(&mut headers);
        let mut names: Vec<_> = headers.keys().map(|name| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-end-to-end"]);
    }

    #[test]
    fn each_connection_specific_header_alone_is_removed() {
        for (name, value) in [
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.parse().unwrap());
            headers.insert("content-type", "application/grpc".parse().unwrap());
            strip_connection_headers(&mut headers);
            assert!(!headers.contains_key(name), "{name}: {value} was kept");
            assert!(headers.contains_key("content-type"));
        }
    }

    #[test]
    fn end_to_end_headers_are_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(TE, "trailers".parse().unwrap());
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.append("x-many", "1".parse().unwrap());
        headers.append("x-many", "2".parse().unwrap());
        let before = headers.clone();
        strip_connection_headers(&mut headers);
        assert_eq!(headers, before);
    }
}
