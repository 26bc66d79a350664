//! Unix domain sockets, for sidecars and local gRPC servers.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use tokio::net::UnixStream;
use tower_service::Service;

use super::UnsupportedScheme;
use crate::error::BoxError;

/// Opens connections to one Unix domain socket, for `http://` URIs (HTTP/2
/// with prior knowledge).
///
/// The socket is the connector's, not the URI's: every origin the pool sends
/// to through it lands on [`path`](Self::path). The URI's authority still
/// matters on the wire, as the `:authority` of each request (grpc-go sends
/// `localhost` for `unix:` targets; Envoy and most servers route on it), and
/// it keys the pool's connections, so one pool can serve several virtual
/// hosts behind one socket. A socket per pool keeps URIs ordinary `http://`
/// ones, which tonic and every other client can build, instead of a
/// percent-encoded path in a made-up scheme.
///
/// ```no_run
/// use h2pool::connector::UnixConnector;
/// use tower::ServiceExt;
///
/// # async fn doc() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let pool = h2pool::Pool::builder()
///     .connector(UnixConnector::new("/run/sidecar/grpc.sock"))
///     .build();
/// let request = http::Request::get("http://localhost/health").body(h2pool::Body::empty())?;
/// let response = pool.oneshot(request).await?;
/// println!("{}", response.status());
/// # Ok(()) }
/// ```
///
/// A socket that is not there fails the request with
/// [`ErrorKind::Connect`](crate::ErrorKind::Connect), and the path in the
/// error's source:
///
/// ```
/// use h2pool::connector::UnixConnector;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = h2pool::Pool::builder()
///     .connector(UnixConnector::new("/nonexistent/h2pool.sock"))
///     .build();
/// let request = http::Request::get("http://localhost/").body(h2pool::Body::empty()).unwrap();
/// let error = pool.oneshot(request).await.unwrap_err();
/// assert_eq!(error.kind(), h2pool::ErrorKind::Connect);
/// let cause = std::error::Error::source(&error).unwrap().to_string();
/// assert!(cause.contains("/nonexistent/h2pool.sock"), "{cause}");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UnixConnector {
    path: Arc<Path>,
}

impl UnixConnector {
    /// A connector that connects every `http://` URI to the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixConnector {
            path: Arc::from(path.into()),
        }
    }

    /// The socket this connector connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Service<Uri> for UnixConnector {
    type Response = UnixStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UnixStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            let scheme = uri.scheme_str().unwrap_or("");
            if scheme != "http" {
                return Err(UnsupportedScheme::new(scheme)
                    .served_by("UnixConnector serves http:// as HTTP/2 with prior knowledge")
                    .into());
            }
            UnixStream::connect(&path)
                .await
                .map_err(|source| SocketError { path, source }.into())
        })
    }
}

/// Connecting to the socket failed; says which socket.
#[derive(Debug)]
struct SocketError {
    path: Arc<Path>,
    source: io::Error,
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not connect to Unix socket {}",
            self.path.display()
        )
    }
}

impl StdError for SocketError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}
