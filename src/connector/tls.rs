//! TLS with rustls, for `https://` origins.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::uri::Scheme;
use http::Uri;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, PeerMisbehaved, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tower::ServiceExt;
use tower_service::Service;

use super::{host_and_port, TcpConnector, UnsupportedScheme};
use crate::error::{BoxError, Delivery, Error, ErrorKind};

/// The only protocol offered in ALPN: h2pool speaks nothing but HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Opens TLS connections for `https://` origins, offering only `h2` in ALPN,
/// and plain TCP for `http://` ones (HTTP/2 with prior knowledge) unless
/// [`https_only`](Self::https_only).
///
/// The server name (SNI, and the name the certificate must carry) is the
/// URI's host. A server that does not pick `h2` in ALPN fails the connect
/// with [`ErrorKind::Handshake`](crate::ErrorKind::Handshake); a certificate
/// that is expired, not valid for the host or not signed by a trusted root
/// fails it with [`ErrorKind::Connect`](crate::ErrorKind::Connect). Either
/// way the error's detail names the cause, and its source is the
/// [`rustls::Error`] when there is one.
///
/// With the `rustls` feature this is the connector of
/// [`Pool::new`](crate::Pool::new), trusting the system's root certificates.
///
/// Root certificates:
/// - [`new`](Self::new): the operating system's store
///   (`rustls-native-certs`: `/etc/ssl/certs` and friends on Linux, honouring
///   `SSL_CERT_FILE` and `SSL_CERT_DIR`; the keychain on macOS; the
///   certificate store on Windows). It is what curl, Go and grpc-go trust,
///   so corporate and cluster CAs installed on the machine work. Loaded once,
///   at the first `https://` connect, and shared by every connector.
/// - `webpki_roots` (feature `webpki-roots`): Mozilla's roots compiled in,
///   for images with no certificate store (`scratch`, distroless).
/// - [`from_config`](Self::from_config): a [`rustls::ClientConfig`] of your
///   own (private CA, client certificates, custom verifier).
///
/// Under the TLS runs a [`TcpConnector`] unless [`over`](Self::over) names
/// another transport: a [`UnixConnector`](super::UnixConnector) for a
/// TLS-terminating sidecar, or a connector of your own (a tunnel, socket
/// options), as hyper-rustls wraps any connector.
///
/// ```
/// use std::sync::Arc;
/// use h2pool::connector::TlsConnector;
///
/// // Trust a private CA only (its DER certificate, say from a PEM file).
/// # fn private_ca() -> rustls::pki_types::CertificateDer<'static> {
/// #     let key = rcgen::KeyPair::generate().unwrap();
/// #     let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
/// #     params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// #     params.self_signed(&key).unwrap().der().clone()
/// # }
/// let mut roots = rustls::RootCertStore::empty();
/// roots.add(private_ca()).expect("a valid CA certificate");
/// let config = rustls::ClientConfig::builder_with_provider(Arc::new(
///     rustls::crypto::ring::default_provider(),
/// ))
/// .with_safe_default_protocol_versions()
/// .expect("ring supports TLS 1.2 and 1.3")
/// .with_root_certificates(roots)
/// .with_no_client_auth();
///
/// let pool = h2pool::Pool::builder()
///     .connector(TlsConnector::from_config(config).https_only())
///     .build();
/// # drop(pool);
/// ```
#[derive(Clone)]
pub struct TlsConnector<T = TcpConnector> {
    transport: T,
    roots: Roots,
    https_only: bool,
}

#[derive(Clone)]
enum Roots {
    Native,
    #[cfg(feature = "webpki-roots")]
    Webpki,
    Config(tokio_rustls::TlsConnector),
}

impl TlsConnector {
    /// A connector that trusts the operating system's root certificates.
    ///
    /// They are loaded at the first `https://` connect (not here, so a
    /// pool that only ever sees `http://` never reads them); if none can be
    /// loaded, that connect fails with a [`TlsError`] that says why, and the
    /// next one tries again.
    pub fn new() -> Self {
        TlsConnector {
            transport: TcpConnector::new(),
            roots: Roots::Native,
            https_only: false,
        }
    }

    /// A connector that trusts Mozilla's root certificates, compiled into
    /// the binary (`webpki-roots`), whatever the machine has.
    #[cfg(feature = "webpki-roots")]
    pub fn webpki_roots() -> Self {
        TlsConnector {
            transport: TcpConnector::new(),
            roots: Roots::Webpki,
            https_only: false,
        }
    }

    /// A connector with `config` for its TLS settings: roots, client
    /// certificates, verifier, protocol versions.
    ///
    /// Its ALPN protocols are replaced with `h2` alone: h2pool cannot speak
    /// anything else, and a server must not be led to pick HTTP/1.1.
    pub fn from_config(mut config: ClientConfig) -> Self {
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        TlsConnector {
            transport: TcpConnector::new(),
            roots: Roots::Config(tokio_rustls::TlsConnector::from(Arc::new(config))),
            https_only: false,
        }
    }
}

impl<T> TlsConnector<T> {
    /// Runs over the connections `transport` opens instead of plain TCP,
    /// with the same roots and settings.
    ///
    /// `transport` gets every origin as an `http://` URI with its port
    /// spelled out (443 for `https://` without one), the form
    /// [`TcpConnector`] and [`UnixConnector`](super::UnixConnector) serve;
    /// the TLS server name stays the original URI's host.
    ///
    /// ```
    /// use h2pool::connector::{TlsConnector, UnixConnector};
    ///
    /// // TLS to a server behind a Unix socket (a sidecar that terminates
    /// // mTLS, say); certificates are checked for the URI's host.
    /// let connector = TlsConnector::new()
    ///     .https_only()
    ///     .over(UnixConnector::new("/run/sidecar/tls.sock"));
    /// let pool = h2pool::Pool::builder().connector(connector).build();
    /// # drop(pool);
    /// ```
    pub fn over<U>(self, transport: U) -> TlsConnector<U> {
        TlsConnector {
            transport,
            roots: self.roots,
            https_only: self.https_only,
        }
    }

    /// Refuses `http://` URIs with
    /// [`ErrorKind::UnsupportedScheme`](crate::ErrorKind::UnsupportedScheme)
    /// instead of connecting in cleartext.
    pub fn https_only(mut self) -> Self {
        self.https_only = true;
        self
    }

    async fn tls(&self, host: &str) -> Result<tokio_rustls::TlsConnector, TlsError> {
        match &self.roots {
            Roots::Config(connector) => Ok(connector.clone()),
            Roots::Native => native_roots(host).await,
            #[cfg(feature = "webpki-roots")]
            Roots::Webpki => webpki_roots(host),
        }
    }
}

impl Default for TlsConnector {
    fn default() -> Self {
        TlsConnector::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for TlsConnector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots = match &self.roots {
            Roots::Native => "native",
            #[cfg(feature = "webpki-roots")]
            Roots::Webpki => "webpki",
            Roots::Config(_) => "config",
        };
        f.debug_struct("TlsConnector")
            .field("transport", &self.transport)
            .field("roots", &roots)
            .field("https_only", &self.https_only)
            .finish()
    }
}

impl<T> Service<Uri> for TlsConnector<T>
where
    T: Service<Uri> + Clone + Send + Sync + 'static,
    T::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    type Response = MaybeTlsStream<T::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let scheme = uri.scheme_str().unwrap_or("");
            match scheme {
                "https" => {}
                "http" if !connector.https_only => {
                    let io = connector.transport.oneshot(uri).await.map_err(Into::into)?;
                    return Ok(MaybeTlsStream(Stream::Plain(io)));
                }
                _ => {
                    let served = if connector.https_only {
                        "TlsConnector::https_only serves https:// only"
                    } else {
                        "TlsConnector serves https://, and http:// as HTTP/2 with prior knowledge"
                    };
                    return Err(UnsupportedScheme::new(scheme).served_by(served).into());
                }
            }
            let (host, port) = host_and_port(&uri, 443)?;
            let server_name = ServerName::try_from(host.to_owned()).map_err(|error| {
                TlsError::new(host, Cause::InvalidServerName, Some(Box::new(error)))
            })?;
            let tls = connector.tls(host).await?;
            let io = connector
                .transport
                .oneshot(transport_uri(&uri, port)?)
                .await
                .map_err(Into::into)?;
            let stream = tls
                .connect(server_name, io)
                .await
                .map_err(|error| TlsError::from_handshake(host, error))?;
            match stream.get_ref().1.alpn_protocol() {
                Some(ALPN_H2) => Ok(MaybeTlsStream(Stream::Tls(Box::new(stream)))),
                other => Err(TlsError::new(
                    host,
                    Cause::AlpnNotH2(other.map(|p| String::from_utf8_lossy(p).into_owned())),
                    None,
                )
                .into()),
            }
        })
    }
}

/// What the transport under the TLS connects to: the origin as `http://`,
/// with its port spelled out.
fn transport_uri(uri: &Uri, port: u16) -> Result<Uri, BoxError> {
    let host = uri.host().unwrap_or_default();
    Ok(Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(format!("{host}:{port}"))
        .path_and_query("/")
        .build()?)
}

/// The config for the system's roots, built once per process.
async fn native_roots(host: &str) -> Result<tokio_rustls::TlsConnector, TlsError> {
    static LOADED: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    if let Some(connector) = LOADED.get() {
        return Ok(connector.clone());
    }
    let no_roots = |reason: String| TlsError::new(host, Cause::NoRootCertificates(reason), None);
    // Reads and parses files: off the runtime's worker threads.
    let found = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
        .await
        .map_err(|error| no_roots(format!("loading them failed: {error}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = match found.errors.first() {
            Some(error) => error.to_string(),
            None => "the store is empty".to_owned(),
        };
        return Err(no_roots(reason));
    }
    let connector = connector_with_roots(roots, host)?;
    Ok(LOADED.get_or_init(|| connector).clone())
}

#[cfg(feature = "webpki-roots")]
fn webpki_roots(host: &str) -> Result<tokio_rustls::TlsConnector, TlsError> {
    static BUILT: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    if let Some(connector) = BUILT.get() {
        return Ok(connector.clone());
    }
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let connector = connector_with_roots(roots, host)?;
    Ok(BUILT.get_or_init(|| connector).clone())
}

/// ring as the provider, named here rather than taken from the process
/// default, which is ambiguous (and `builder()` panics) when another crate
/// in the build enables aws-lc-rs too.
fn connector_with_roots(
    roots: RootCertStore,
    host: &str,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::new(host, Cause::Other, Some(Box::new(error))))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS connection failed: the certificate, ALPN, or the handshake itself.
///
/// [`Display`](fmt::Display) names the cause in words; the
/// [`source`](StdError::source) is the [`rustls::Error`] (or the I/O error)
/// when there is one. The pool turns it into an [`Error`](crate::Error) of
/// kind [`Handshake`](crate::ErrorKind::Handshake) for ALPN and
/// [`Connect`](crate::ErrorKind::Connect) for the rest, with this text as
/// the detail and the same source.
///
/// ```
/// use h2pool::connector::{TlsConnector, TlsError};
/// use tower::ServiceExt;
///
/// # async fn doc() {
/// let uri = "https://localhost:8443/".parse().unwrap();
/// if let Err(error) = TlsConnector::new().oneshot(uri).await {
///     match error.downcast_ref::<TlsError>() {
///         Some(tls) if tls.is_alpn() => eprintln!("not an HTTP/2 server: {tls}"),
///         Some(tls) if tls.is_certificate() => eprintln!("untrusted server: {tls}"),
///         _ => eprintln!("could not connect: {error}"),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TlsError {
    host: String,
    cause: Cause,
    source: Option<BoxError>,
}

#[derive(Debug)]
enum Cause {
    CertificateExpired,
    CertificateNotValidYet,
    UnknownIssuer,
    WrongHost,
    CertificateRejected,
    AlpnRejected,
    AlpnNotH2(Option<String>),
    /// The server chose a protocol that was not offered (only h2 was).
    AlpnUnoffered,
    AlertReceived(AlertDescription),
    Handshake,
    Io,
    InvalidServerName,
    NoRootCertificates(String),
    Other,
}

impl TlsError {
    fn new(host: &str, cause: Cause, source: Option<BoxError>) -> Self {
        TlsError {
            host: host.to_owned(),
            cause,
            source,
        }
    }

    /// Classifies what tokio-rustls returns: a `rustls::Error` inside an
    /// `io::Error`, or a plain I/O failure during the handshake.
    fn from_handshake(host: &str, error: io::Error) -> Self {
        let error = match into_rustls_error(error) {
            Ok(error) => error,
            Err(io) => return TlsError::new(host, Cause::Io, Some(Box::new(io))),
        };
        let cause = match &error {
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Cause::CertificateExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Cause::CertificateNotValidYet
                }
                CertificateError::UnknownIssuer => Cause::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Cause::WrongHost,
                _ => Cause::CertificateRejected,
            },
            rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)
            | rustls::Error::NoApplicationProtocol => Cause::AlpnRejected,
            rustls::Error::PeerMisbehaved(PeerMisbehaved::SelectedUnofferedApplicationProtocol) => {
                Cause::AlpnUnoffered
            }
            rustls::Error::AlertReceived(alert) => Cause::AlertReceived(*alert),
            _ => Cause::Handshake,
        };
        TlsError::new(host, cause, Some(Box::new(error)))
    }

    /// Returns true if the server does not speak HTTP/2 over TLS: it picked
    /// another protocol, or none, in ALPN.
    pub fn is_alpn(&self) -> bool {
        matches!(
            self.cause,
            Cause::AlpnRejected | Cause::AlpnNotH2(_) | Cause::AlpnUnoffered
        )
    }

    /// Returns true if the server's certificate was not accepted: expired,
    /// not yet valid, for another host, or not signed by a trusted root.
    pub fn is_certificate(&self) -> bool {
        matches!(
            self.cause,
            Cause::CertificateExpired
                | Cause::CertificateNotValidYet
                | Cause::UnknownIssuer
                | Cause::WrongHost
                | Cause::CertificateRejected
        )
    }

    /// The pool's error: the kind, this text as detail, the same source.
    pub(crate) fn into_pool_error(self) -> Error {
        let kind = if self.is_alpn() {
            ErrorKind::Handshake
        } else {
            ErrorKind::Connect
        };
        let error = Error::new(kind, Delivery::NeverSent).with_detail(self.to_string());
        match self.source {
            Some(source) => error.with_source(source),
            None => error,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        write!(f, "TLS with {host}: ")?;
        match &self.cause {
            Cause::CertificateExpired => f.write_str("the server's certificate has expired"),
            Cause::CertificateNotValidYet => {
                f.write_str("the server's certificate is not valid yet (is the clock right?)")
            }
            Cause::UnknownIssuer => f.write_str(
                "the server's certificate is signed by an unknown issuer; \
                 trust its CA in the system store or in the ClientConfig's roots",
            ),
            Cause::WrongHost => write!(f, "the server's certificate is not valid for {host}"),
            Cause::CertificateRejected => f.write_str("the server's certificate was rejected"),
            Cause::AlpnRejected => f.write_str(
                "ALPN: the server does not speak HTTP/2 over TLS \
                 (it rejected h2 with no_application_protocol)",
            ),
            Cause::AlpnNotH2(Some(protocol)) => write!(
                f,
                "ALPN: the server chose {protocol}, not h2; it does not speak HTTP/2 over TLS"
            ),
            Cause::AlpnNotH2(None) => f.write_str(
                "ALPN: the server chose no protocol, not h2; it does not speak HTTP/2 over TLS",
            ),
            Cause::AlpnUnoffered => f.write_str(
                "ALPN: the server chose a protocol other than h2, the only one offered; \
                 it does not speak HTTP/2 over TLS",
            ),
            Cause::AlertReceived(alert) => {
                write!(f, "the server aborted the handshake with alert {alert:?}")
            }
            Cause::Handshake => f.write_str("the handshake failed"),
            Cause::Io => f.write_str("the connection failed during the handshake"),
            Cause::InvalidServerName => {
                f.write_str("the host is not a valid TLS server name (DNS name or IP address)")
            }
            Cause::NoRootCertificates(reason) => write!(
                f,
                "no root certificates could be loaded from the system store ({reason}); \
                 install the CA certificates (ca-certificates), or use \
                 TlsConnector::from_config or the webpki-roots feature"
            ),
            Cause::Other => f.write_str("the TLS configuration could not be built"),
        }
    }
}

impl StdError for TlsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// Unwraps the `rustls::Error` tokio-rustls puts inside an `io::Error`.
fn into_rustls_error(error: io::Error) -> Result<rustls::Error, io::Error> {
    let is_rustls = error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>());
    if !is_rustls {
        return Err(error);
    }
    let kind = error.kind();
    match error
        .into_inner()
        .map(|inner| inner.downcast::<rustls::Error>())
    {
        Some(Ok(rustls_error)) => Ok(*rustls_error),
        Some(Err(inner)) => Err(io::Error::new(kind, inner)),
        None => Err(io::Error::from(kind)),
    }
}

/// A connection a [`TlsConnector`] made: TLS for `https://`, the bare
/// transport (TCP unless [`over`](TlsConnector::over) said otherwise) for
/// `http://`.
#[derive(Debug)]
pub struct MaybeTlsStream<IO = TcpStream>(Stream<IO>);

#[derive(Debug)]
enum Stream<IO> {
    Plain(IO),
    // Boxed: the TLS state is a few KiB, a socket a handful of words.
    Tls(Box<TlsStream<IO>>),
}

impl<IO> MaybeTlsStream<IO> {
    /// Returns true if the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Stream::Tls(_))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
