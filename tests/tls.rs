//! `https://` through `TlsConnector`: an h2 test server behind tokio-rustls
//! on 127.0.0.1, with certificates rcgen makes for each test.

mod support;

use std::error::Error as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2pool::connector::{TlsConnector, TlsError, UnixConnector};
use h2pool::{ErrorKind, Pool};
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{body_bytes, get, ServerConfig, TestServer};
use tokio::net::TcpListener;
use tower::ServiceExt;

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test.
struct TestCa {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("a self-signed CA");
        TestCa { certificate, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.certificate.der().clone()
    }

    /// A server certificate for `names`, signed by this CA.
    fn issue(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> ServerIdentity {
        let key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate parameters");
        edit(&mut params);
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("a server certificate signed by the test CA");
        ServerIdentity {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A client config that trusts this CA only.
    fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der()).expect("the test CA is a valid root");
        rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The h2 test server behind TLS, and the SNI each handshake carried.
struct TlsServer {
    server: TestServer,
    sni: SeenSni,
    port: u16,
}

/// The server side of TLS with `identity`, offering `alpn`.
fn acceptor(identity: ServerIdentity, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .expect("the server certificate matches its key");
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The SNI each TLS handshake carried, in order.
type SeenSni = Arc<Mutex<Vec<Option<String>>>>;

/// A test-server acceptor that runs the TLS handshake over any transport
/// and records its SNI in `seen`.
fn recording_sni<IO>(
    acceptor: tokio_rustls::TlsAcceptor,
    seen: SeenSni,
) -> impl Fn(IO) -> BoxFuture<std::io::Result<tokio_rustls::server::TlsStream<IO>>> + Send + Sync + 'static
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    move |io| {
        let acceptor = acceptor.clone();
        let seen = seen.clone();
        Box::pin(async move {
            let tls = acceptor.accept(io).await?;
            let name = tls.get_ref().1.server_name().map(str::to_owned);
            seen.lock().expect("sni lock").push(name);
            Ok(tls)
        })
    }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl TlsServer {
    async fn start(identity: ServerIdentity, alpn: &[&[u8]]) -> TlsServer {
        let acceptor = acceptor(identity, alpn);
        let sni = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the TLS test server");
        let port = listener.local_addr().expect("bound address").port();
        let server = TestServer::start_with_acceptor(
            listener,
            ServerConfig::default(),
            recording_sni(acceptor, sni.clone()),
        );
        TlsServer { server, sni, port }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    fn requests(&self) -> u64 {
        self.server.counters().requests.load(Ordering::SeqCst)
    }
}

/// Runs a GET and expects it to fail; returns the error.
async fn failed_get(pool: &Pool, url: String) -> h2pool::Error {
    pool.clone()
        .oneshot(get(url))
        .await
        .expect_err("the TLS connect should fail")
}

/// The `rustls::Error` in an error's source chain.
fn rustls_cause(error: &h2pool::Error) -> &rustls::Error {
    error
        .source()
        .and_then(|source| source.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("no rustls::Error in the source chain of {error:?}"))
}

#[tokio::test]
async fn a_request_succeeds_with_a_client_config_that_trusts_the_test_ca() {
    support::init_tracing();
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"h2"]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let payload = Bytes::from(vec![b't'; 1024 * 1024]);
    let request = http::Request::post(tls.url("localhost", "/echo"))
        .body(Full::new(payload.clone()))
        .expect("valid request");
    let response = pool
        .clone()
        .oneshot(request)
        .await
        .expect("an https request");
    assert_eq!(body_bytes(response).await.expect("echoed body"), payload);

    let response = pool
        .clone()
        .oneshot(get(tls.url("localhost", "/")))
        .await
        .expect("a second request on the same connection");
    assert_eq!(body_bytes(response).await.expect("body"), "ok");
    assert_eq!(tls.requests(), 2);
    assert_eq!(tls.server.connections_accepted(), 1);
}

#[tokio::test]
async fn the_uri_host_reaches_the_server_as_sni() {
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"h2"]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let response = pool
        .oneshot(get(tls.url("localhost", "/")))
        .await
        .expect("an https request");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        *tls.sni.lock().expect("sni lock"),
        vec![Some("localhost".to_owned())]
    );
}

#[tokio::test]
async fn an_ip_address_host_is_verified_against_the_certificate_ip() {
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["127.0.0.1"], |_| {}), &[b"h2"]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let response = pool
        .oneshot(get(tls.url("127.0.0.1", "/")))
        .await
        .expect("an https request to an IP address");
    assert_eq!(response.status(), http::StatusCode::OK);
    // RFC 6066: no SNI for IP literals.
    assert_eq!(*tls.sni.lock().expect("sni lock"), vec![None]);
}

#[tokio::test]
async fn a_server_that_only_offers_http1_fails_with_an_alpn_error() {
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"http/1.1"]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let error = failed_get(&pool, tls.url("localhost", "/")).await;
    assert_eq!(error.kind(), ErrorKind::Handshake);
    assert!(error.is_never_sent());
    let text = error.to_string();
    assert!(text.contains("ALPN"), "{text}");
    assert!(text.contains("does not speak HTTP/2"), "{text}");
    assert!(matches!(
        rustls_cause(&error),
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
    ));
    assert_eq!(tls.requests(), 0);
}

#[tokio::test]
async fn a_server_that_chooses_no_protocol_fails_with_an_alpn_error() {
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let error = failed_get(&pool, tls.url("localhost", "/")).await;
    assert_eq!(error.kind(), ErrorKind::Handshake);
    let text = error.to_string();
    assert!(
        text.contains("ALPN: the server chose no protocol"),
        "{text}"
    );
    assert_eq!(tls.requests(), 0);
}

#[tokio::test]
async fn the_alpn_of_a_user_config_is_replaced_with_h2_alone() {
    let ca = TestCa::new("h2pool test CA");
    // Prefers HTTP/1.1 when offered: it must not be.
    let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"http/1.1", b"h2"]).await;
    let mut config = ca.client_config();
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    let pool = Pool::builder().tls_config(config).build();

    let response = pool
        .oneshot(get(tls.url("localhost", "/")))
        .await
        .expect("the server can only pick h2");
    assert_eq!(response.status(), http::StatusCode::OK);
}

#[tokio::test]
async fn an_expired_certificate_is_rejected_as_expired() {
    let ca = TestCa::new("h2pool test CA");
    let identity = ca.issue(&["localhost"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let tls = TlsServer::start(identity, &[b"h2"]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let error = failed_get(&pool, tls.url("localhost", "/")).await;
    assert_eq!(error.kind(), ErrorKind::Connect);
    assert!(error.is_never_sent());
    let text = error.to_string();
    assert!(
        text.contains("TLS with localhost: the server's certificate has expired"),
        "{text}"
    );
    assert!(matches!(
        rustls_cause(&error),
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
        )
    ));
    assert_eq!(tls.requests(), 0);
}

#[tokio::test]
async fn a_certificate_for_another_host_is_rejected_naming_the_host() {
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["other.example"], |_| {}), &[b"h2"]).await;
    let pool = Pool::builder().tls_config(ca.client_config()).build();

    let error = failed_get(&pool, tls.url("localhost", "/")).await;
    assert_eq!(error.kind(), ErrorKind::Connect);
    let text = error.to_string();
    assert!(
        text.contains("the server's certificate is not valid for localhost"),
        "{text}"
    );
    assert!(matches!(
        rustls_cause(&error),
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    ));
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_rejected_as_unknown_issuer() {
    let trusted = TestCa::new("trusted CA");
    let other = TestCa::new("some other CA");
    let tls = TlsServer::start(other.issue(&["localhost"], |_| {}), &[b"h2"]).await;
    let pool = Pool::builder().tls_config(trusted.client_config()).build();

    let error = failed_get(&pool, tls.url("localhost", "/")).await;
    assert_eq!(error.kind(), ErrorKind::Connect);
    let text = error.to_string();
    assert!(text.contains("unknown issuer"), "{text}");
}

#[tokio::test]
async fn other_origins_keep_working_while_one_fails_its_handshakes() {
    let ca = TestCa::new("h2pool test CA");
    let good = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"h2"]).await;
    let expired = TlsServer::start(
        ca.issue(&["localhost"], |params| {
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }),
        &[b"h2"],
    )
    .await;
    let pool = Pool::builder()
        .tls_config(ca.client_config())
        .connect_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build();

    let mut work = Vec::new();
    for i in 0..40 {
        let pool = pool.clone();
        let url = if i % 2 == 0 {
            good.url("localhost", "/")
        } else {
            expired.url("localhost", "/")
        };
        work.push(tokio::spawn(async move {
            pool.oneshot(get(url))
                .await
                .map(|response| response.status())
        }));
    }
    for (i, outcome) in futures_util::future::join_all(work)
        .await
        .into_iter()
        .enumerate()
    {
        let outcome = outcome.expect("task");
        if i % 2 == 0 {
            assert_eq!(outcome.expect("the good origin"), http::StatusCode::OK);
        } else {
            let error = outcome.expect_err("the expired origin");
            assert!(error.to_string().contains("expired"), "{error}");
        }
    }
    assert_eq!(good.requests(), 20);
    let stats = pool.stats();
    let good_stats = stats
        .origin(&format!("https://localhost:{}", good.port))
        .expect("the good origin's stats");
    assert_eq!(good_stats.errors_total(), 0);
    assert_eq!(good_stats.connect_failures, 0);
    assert_eq!(good_stats.connections_open, 1);
}

#[tokio::test]
async fn the_tls_connector_serves_http_in_cleartext_unless_https_only() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::builder().connector(TlsConnector::new()).build();
    let response = pool
        .oneshot(get(server.url("/")))
        .await
        .expect("http:// over TCP with prior knowledge");
    assert_eq!(response.status(), http::StatusCode::OK);

    let https_only = Pool::builder()
        .connector(TlsConnector::new().https_only())
        .build();
    let error = failed_get(&https_only, server.url("/")).await;
    assert_eq!(error.kind(), ErrorKind::UnsupportedScheme);
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn the_connector_alone_returns_a_tls_error_with_predicates() {
    let ca = TestCa::new("h2pool test CA");
    let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"http/1.1"]).await;
    let connector = TlsConnector::from_config(ca.client_config());

    let uri: http::Uri = tls.url("localhost", "/").parse().expect("valid URI");
    let error = connector
        .oneshot(uri)
        .await
        .expect_err("the server offers no h2");
    let error = error
        .downcast::<TlsError>()
        .expect("the connector's error is a TlsError");
    assert!(error.is_alpn());
    assert!(!error.is_certificate());
}

/// `Pool::new()` serves `https://` with the system's roots, which
/// `SSL_CERT_FILE` points at. The check runs in a process of its own
/// (this test binary again, running only the test below): the variable is
/// set there before any other thread starts, where here other tests'
/// threads may be reading the environment (resolving names), and setting
/// it then is undefined behaviour.
#[test]
fn pool_new_serves_https_trusting_the_system_roots() {
    let status = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "system_roots_in_a_process_of_its_own",
            "--ignored",
            "--test-threads=1",
        ])
        .status()
        .expect("run this test binary again");
    assert!(status.success(), "the check in its own process failed");
}

#[test]
#[ignore = "run by pool_new_serves_https_trusting_the_system_roots, in a process of its own"]
fn system_roots_in_a_process_of_its_own() {
    let ca = TestCa::new("h2pool test CA in the system store");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, ca.certificate.pem()).expect("write the CA bundle");
    // Before the runtime (and its threads) starts; the roots are loaded
    // once per process, at the first https:// connect.
    std::env::set_var("SSL_CERT_FILE", &bundle);

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let tls = TlsServer::start(ca.issue(&["localhost"], |_| {}), &[b"h2"]).await;
        let response = Pool::new()
            .oneshot(get(tls.url("localhost", "/")))
            .await
            .expect("Pool::new() connects to https:// with the system's roots");
        assert_eq!(response.status(), http::StatusCode::OK);
    });
}

#[tokio::test]
async fn tls_runs_over_a_unix_socket_checked_against_the_uri_host() {
    // A TLS-terminating sidecar on a Unix socket: the transport is the
    // socket, the server name (SNI and certificate) the URI's host.
    let ca = TestCa::new("h2pool test CA");
    let acceptor = acceptor(ca.issue(&["sidecar.internal"], |_| {}), &[b"h2"]);
    let dir = tempfile::tempdir().expect("a temporary directory for the socket");
    let path = dir.path().join("tls.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind the Unix socket");
    let sni = Arc::new(Mutex::new(Vec::new()));
    let server = TestServer::start_unix_with_acceptor(
        listener,
        ServerConfig::default(),
        recording_sni(acceptor, sni.clone()),
    );
    let connector = TlsConnector::from_config(ca.client_config())
        .https_only()
        .over(UnixConnector::new(&path));
    let pool = Pool::builder().connector(connector).build();

    let response = pool
        .clone()
        .oneshot(get("https://sidecar.internal/".to_owned()))
        .await
        .expect("https over the Unix socket");
    assert_eq!(body_bytes(response).await.expect("body"), "ok");
    assert_eq!(
        *sni.lock().expect("sni lock"),
        vec![Some("sidecar.internal".to_owned())]
    );
    assert_eq!(server.connections_accepted(), 1);

    let error = pool
        .oneshot(get("http://sidecar.internal/".to_owned()))
        .await
        .expect_err("https_only refuses cleartext");
    assert_eq!(error.kind(), ErrorKind::UnsupportedScheme, "{error:?}");
    assert_eq!(server.connections_accepted(), 1);
}
