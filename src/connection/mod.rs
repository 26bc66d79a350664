//! One HTTP/2 connection as a tower [`Service`](tower_service::Service).
//!
//! This is the room everything else builds on: the pool keeps several
//! [`Connection`]s per origin, and the [readiness](crate::readiness) and
//! [drain](crate::drain) layers wrap one each. It knows nothing of them.
//!
//! A [`Connection`] reserves a stream slot in `poll_ready`, sends headers in
//! `call`, and streams the request body from a task of its own while the
//! response future waits for the response headers, so a server that answers
//! only after it has read some of the body (gRPC bidi streams) works. Its
//! [`ConnectionHandle`] is the shared state that watchers read: phase, load,
//! stream limit, and a [`Notify`](tokio::sync::Notify) for changes.

mod future;
mod handle;
mod io;
mod service;
mod settings;
pub(crate) mod stream;

pub use self::future::ResponseFuture;
pub(crate) use self::handle::{
    between_looks, lock, SlotWait, SlotWaiters, DEFAULT_PEER_MAX_STREAMS,
};
pub use self::handle::{CloseReason, ConnectionHandle, Phase};
pub use self::service::Connection;
pub use self::settings::{
    Http2Settings, DEFAULT_CONNECTION_WINDOW, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_LIST_SIZE, DEFAULT_MAX_SEND_BUFFER_SIZE, DEFAULT_STREAM_WINDOW,
};

/// A service over one HTTP/2 connection that can say which: the
/// [readiness](crate::readiness) and [drain](crate::drain) layers read the
/// connection's state through it, so they stack in any order.
pub trait HasHandle {
    /// The connection's shared state.
    fn handle(&self) -> &ConnectionHandle;
}

impl HasHandle for Connection {
    fn handle(&self) -> &ConnectionHandle {
        Connection::handle(self)
    }
}
