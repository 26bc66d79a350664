//! Opening transport connections: anything that is a
//! `tower::Service<http::Uri>` yielding a tokio I/O stream, like
//! [`tower::MakeConnection`], and [`TcpConnector`] as the default.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::error::BoxError;

/// A transport stream h2pool can run HTTP/2 over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// Opens plain TCP connections with TCP_NODELAY, for `http://` origins
/// (HTTP/2 with prior knowledge, "h2c").
///
/// It tries each address the host resolves to in turn. The pool bounds the
/// whole attempt with its connect timeout.
///
/// ```
/// use h2pool::connector::TcpConnector;
/// use tower::ServiceExt;
///
/// # async fn doc() {
/// let refused = TcpConnector::new()
///     .oneshot("https://127.0.0.1:1".parse().unwrap())
///     .await;
/// assert!(refused.is_err()); // https needs a TLS connector
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct TcpConnector {
    _private: (),
}

impl TcpConnector {
    /// A connector for `http://` URIs.
    pub fn new() -> Self {
        TcpConnector { _private: () }
    }
}

/// The connector cannot serve the URI's scheme.
///
/// The pool reports it as [`ErrorKind::UnsupportedScheme`](crate::ErrorKind::UnsupportedScheme).
#[derive(Debug)]
pub struct UnsupportedScheme {
    scheme: String,
}

impl UnsupportedScheme {
    /// The error for `scheme`.
    pub fn new(scheme: impl Into<String>) -> Self {
        UnsupportedScheme {
            scheme: scheme.into(),
        }
    }
}

impl fmt::Display for UnsupportedScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scheme {:?} is not supported by this connector (TcpConnector serves http:// as HTTP/2 with prior knowledge)",
            self.scheme
        )
    }
}

impl StdError for UnsupportedScheme {}

impl Service<Uri> for TcpConnector {
    type Response = TcpStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TcpStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let scheme = uri.scheme_str().unwrap_or("");
            if scheme != "http" {
                return Err(UnsupportedScheme::new(scheme).into());
            }
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI has no host"))?;
            // IPv6 literals come bracketed in URIs; the resolver wants them bare.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let mut last_error = None;
            for address in tokio::net::lookup_host((host, port)).await? {
                match TcpStream::connect(address).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(stream);
                    }
                    Err(error) => last_error = Some(error),
                }
            }
            Err(last_error
                .unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} resolved to no address"),
                    )
                })
                .into())
        })
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
