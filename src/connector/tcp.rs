//! Plain TCP, for `http://` origins.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use tokio::net::TcpStream;
use tower_service::Service;

use super::{host_and_port, UnsupportedScheme};
use crate::error::BoxError;

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
                return Err(UnsupportedScheme::new(scheme)
                    .served_by("TcpConnector serves http:// as HTTP/2 with prior knowledge; https:// needs the rustls feature's TlsConnector")
                    .into());
            }
            let (host, port) = host_and_port(&uri, 80)?;
            Ok(connect(host, port).await?)
        })
    }
}

/// Connects to the first address of `host` that accepts, with TCP_NODELAY
/// (HTTP/2 frames are small and latency-bound; the codec batches writes).
pub(crate) async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
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
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        )
    }))
}
