//! Opening transport connections.
//!
//! A connector is anything that is a `tower::Service<http::Uri>` yielding a
//! tokio I/O stream, the shape of [`tower::MakeConnection`](https://docs.rs/tower/0.5/tower/trait.MakeConnection.html). The pool calls
//! it with `scheme://authority/` of the origin it needs a connection to, then
//! speaks HTTP/2 over whatever stream comes back.
//!
//! - [`TcpConnector`]: `http://` over TCP, HTTP/2 with prior knowledge
//!   ("h2c"). The default.
//! - `TlsConnector` (feature `rustls`): `https://` over TLS with ALPN `h2`,
//!   and `http://` as above. The default when the feature is on.
//! - `UnixConnector` (Unix only): `http://` over a Unix domain socket, for
//!   sidecars and local gRPC servers.
//!
//! Any other transport plugs in through
//! [`Builder::connector`](crate::Builder::connector).

use std::error::Error as StdError;
use std::fmt;

use http::uri::Authority;
use http::Uri;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use crate::error::{BoxError, Delivery, Error, ErrorKind};

mod tcp;
#[cfg(feature = "rustls")]
mod tls;
#[cfg(unix)]
mod unix;

pub use self::tcp::TcpConnector;
#[cfg(feature = "rustls")]
pub use self::tls::{MaybeTlsStream, TlsConnector, TlsError};
#[cfg(unix)]
pub use self::unix::UnixConnector;

/// A transport stream h2pool can run HTTP/2 over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// The connector cannot serve the URI's scheme.
///
/// The pool reports it as [`ErrorKind::UnsupportedScheme`].
#[derive(Debug)]
pub struct UnsupportedScheme {
    scheme: String,
    connector: &'static str,
}

impl UnsupportedScheme {
    /// The error for `scheme`.
    pub fn new(scheme: impl Into<String>) -> Self {
        UnsupportedScheme {
            scheme: scheme.into(),
            connector: "",
        }
    }

    /// Names what the connector does serve, for the message.
    pub(crate) fn served_by(mut self, connector: &'static str) -> Self {
        self.connector = connector;
        self
    }
}

impl fmt::Display for UnsupportedScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scheme {:?} is not supported by this connector",
            self.scheme
        )?;
        if !self.connector.is_empty() {
            write!(f, " ({})", self.connector)?;
        }
        Ok(())
    }
}

impl StdError for UnsupportedScheme {}

/// The connector every pool uses unless told otherwise: [`TcpConnector`], or
/// with the `rustls` feature a `TlsConnector` that serves `http://` too.
pub(crate) fn default_connector() -> BoxedConnector {
    #[cfg(feature = "rustls")]
    {
        boxed(TlsConnector::new())
    }
    #[cfg(not(feature = "rustls"))]
    {
        boxed(TcpConnector::new())
    }
}

/// Turns a connector's failure into the pool's error: its kind, and for TLS
/// a detail that names the cause.
pub(crate) fn connect_error(error: BoxError) -> Error {
    if error.is::<UnsupportedScheme>() {
        return Error::new(ErrorKind::UnsupportedScheme, Delivery::NeverSent).with_source(error);
    }
    #[cfg(feature = "rustls")]
    let error = match error.downcast::<TlsError>() {
        Ok(tls) => return tls.into_pool_error(),
        Err(error) => error,
    };
    // Which address failed, and how, belongs in the message itself: many
    // logs show an error without its source chain.
    let detail = error
        .downcast_ref::<std::io::Error>()
        .map(ToString::to_string);
    let error = Error::new(ErrorKind::Connect, Delivery::NeverSent).with_source(error);
    match detail {
        Some(detail) => error.with_detail(detail),
        None => error,
    }
}

/// Splits a URI into the host to resolve (IPv6 literals without their
/// brackets) and the port, `default_port` if it has none.
pub(crate) fn host_and_port(uri: &Uri, default_port: u16) -> Result<(&str, u16), std::io::Error> {
    let host = uri.host().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("URI {uri} has no host"),
        )
    })?;
    // `http` reads a port it cannot parse (`:8o80`, `:84430`) as none: the
    // default port, someone else's service, would be connected to.
    if uri
        .authority()
        .is_some_and(|authority| !has_valid_port(authority))
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("URI {uri} has a port that is not a number from 0 to 65535"),
        ));
    }
    // IPv6 literals come bracketed in URIs; resolvers and TLS want them bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

/// Whether `authority` has no port, or one that parses as a port number.
pub(crate) fn has_valid_port(authority: &Authority) -> bool {
    let text = authority.as_str();
    let host_and_port = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
    match host_and_port.strip_prefix(authority.host()) {
        Some("") | Some(":") => true,
        Some(port) => port
            .strip_prefix(':')
            .is_some_and(|port| port.parse::<u16>().is_ok()),
        None => false,
    }
}

pub(crate) type BoxedIo = Box<dyn Io>;
pub(crate) type BoxedConnector = tower::util::BoxCloneSyncService<Uri, BoxedIo, BoxError>;

pub(crate) fn boxed<C>(connector: C) -> BoxedConnector
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Io,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    use tower::ServiceExt;
    BoxedConnector::new(
        connector
            .map_response(|io| Box::new(io) as BoxedIo)
            .map_err(Into::into),
    )
}
