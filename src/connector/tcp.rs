//! Plain TCP, for `http://` origins.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tower_service::Service;

use super::{host_and_port, UnsupportedScheme};
use crate::error::BoxError;

/// Opens plain TCP connections with TCP_NODELAY, for `http://` origins
/// (HTTP/2 with prior knowledge, "h2c").
///
/// It tries the addresses the host resolves to as RFC 8305 ("Happy
/// Eyeballs") does: alternating IPv6 and IPv4, each 250 ms after the one
/// before unless that one failed sooner, and keeps the first that connects.
/// The pool bounds the whole connect with its connect timeout.
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

/// How long an attempt on one address runs alone before the next address
/// is tried beside it: RFC 8305's recommended "Connection Attempt Delay",
/// as hyper-util's Happy Eyeballs uses (300 ms there).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first address of `host` that accepts, with TCP_NODELAY
/// (HTTP/2 frames are small and latency-bound; the codec batches writes).
///
/// Addresses are tried in the resolver's order, alternating IPv6 and IPv4
/// (RFC 8305): the next one starts when an attempt fails, or after
/// [`ATTEMPT_DELAY`] without an answer, while earlier attempts go on. So an
/// address that drops packets (a broken IPv6 route, say) costs a quarter of
/// a second, not the whole connect timeout; the first to connect wins and
/// the others are cancelled.
pub(crate) async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let resolved = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| with_context(error, format_args!("resolving {host}")))?;
    // Errors name the address tried when the host is a name.
    let named = host.parse::<std::net::IpAddr>().is_err();
    connect_to(resolved.collect(), named)
        .await
        .map_err(|error| with_context(error, format_args!("{host}:{port}")))
}

/// Connects to the first of `addresses` that accepts, staggered as
/// [`connect`] says.
async fn connect_to(addresses: Vec<SocketAddr>, named: bool) -> io::Result<TcpStream> {
    let mut addresses = interleave_families(addresses).into_iter();
    let mut attempts = JoinSet::new();
    let mut failures = Vec::new();
    // The error's kind is the last attempt's, as it was with one address.
    let mut last_kind = io::ErrorKind::NotFound;
    loop {
        if attempts.is_empty() {
            let Some(address) = addresses.next() else {
                break;
            };
            attempts.spawn(attempt(address));
        }
        let delay = tokio::time::sleep(ATTEMPT_DELAY);
        tokio::select! {
            Some(finished) = attempts.join_next() => match finished {
                Ok((_, Ok(stream))) => return Ok(stream),
                Ok((address, Err(error))) => {
                    last_kind = error.kind();
                    failures.push(if named {
                        format!("{address}: {error}")
                    } else {
                        error.to_string()
                    });
                    if let Some(address) = addresses.next() {
                        attempts.spawn(attempt(address));
                    }
                }
                // A cancelled or panicked attempt: the others go on.
                Err(error) => failures.push(error.to_string()),
            },
            () = delay, if addresses.len() > 0 => {
                if let Some(address) = addresses.next() {
                    attempts.spawn(attempt(address));
                }
            }
        }
    }
    Err(if failures.is_empty() {
        io::Error::new(io::ErrorKind::NotFound, "the host resolved to no address")
    } else {
        io::Error::new(last_kind, failures.join("; "))
    })
}

async fn attempt(address: SocketAddr) -> (SocketAddr, io::Result<TcpStream>) {
    let connected = TcpStream::connect(address)
        .await
        .and_then(|stream| stream.set_nodelay(true).map(|()| stream));
    (address, connected)
}

/// The addresses in the resolver's order, but alternating between the
/// families, starting with the first address's (RFC 8305 section 4).
fn interleave_families(addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addresses.first() else {
        return addresses;
    };
    let first_is_v6 = first.is_ipv6();
    let (mut same, mut other): (VecDeque<_>, VecDeque<_>) = addresses
        .into_iter()
        .partition(|address| address.is_ipv6() == first_is_v6);
    let mut ordered = Vec::with_capacity(same.len() + other.len());
    while !same.is_empty() || !other.is_empty() {
        ordered.extend(same.pop_front());
        ordered.extend(other.pop_front());
    }
    ordered
}

fn with_context(error: io::Error, context: fmt::Arguments<'_>) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::{connect_to, interleave_families, TcpConnector};
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tower::ServiceExt;

    /// A loopback address that takes no more connections and answers no
    /// SYN: its accept queue is full, so the kernel drops them, as a
    /// broken route would.
    async fn black_hole() -> (std::net::SocketAddr, Vec<TcpStream>) {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind");
        let address = socket.local_addr().expect("an address");
        let listener = socket.listen(0).expect("listen");
        let mut queued = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(address))
                .await
            {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(error)) => panic!("filling the accept queue failed: {error}"),
                // Full: connects now hang.
                Err(_) => {
                    std::mem::forget(listener);
                    return (address, queued);
                }
            }
        }
        panic!("the accept queue of a listener with backlog 0 did not fill");
    }

    #[tokio::test]
    async fn an_address_that_never_answers_costs_a_stagger_not_the_connect() {
        let (silent, _queued) = black_hole().await;
        let live = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_address = live.local_addr().expect("an address");

        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            connect_to(vec![silent, live_address], true),
        )
        .await
        .expect("the second address was tried while the first hung")
        .expect("connected");
        assert_eq!(connected.peer_addr().expect("a peer"), live_address);
        assert!(connected.nodelay().expect("readable"));
    }

    #[tokio::test]
    async fn when_every_address_fails_the_error_names_each() {
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("an address")
        };
        let error = connect_to(vec![closed, closed], true)
            .await
            .expect_err("nothing listens");
        let message = error.to_string();
        assert_eq!(message.matches(&closed.to_string()).count(), 2, "{message}");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn families_alternate_starting_with_the_first_address_family() {
        let parse = |list: &[&str]| -> Vec<std::net::SocketAddr> {
            list.iter()
                .map(|address| address.parse().expect("an address"))
                .collect()
        };
        assert_eq!(
            interleave_families(parse(&[
                "[::1]:80",
                "[::2]:80",
                "127.0.0.1:80",
                "127.0.0.2:80"
            ])),
            parse(&["[::1]:80", "127.0.0.1:80", "[::2]:80", "127.0.0.2:80"])
        );
        assert_eq!(
            interleave_families(parse(&[
                "127.0.0.1:80",
                "127.0.0.2:80",
                "127.0.0.3:80",
                "[::1]:80"
            ])),
            parse(&["127.0.0.1:80", "[::1]:80", "127.0.0.2:80", "127.0.0.3:80"])
        );
        assert!(interleave_families(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn a_port_that_is_not_a_number_is_refused_not_taken_for_80() {
        // Used alone, outside the pool (whose origin check refuses these
        // first), the connector must not connect to the default port.
        for uri in ["http://127.0.0.1:8o80/", "http://127.0.0.1:84430/"] {
            let uri: http::Uri = uri.parse().expect("http accepts it");
            let error = TcpConnector::new()
                .oneshot(uri.clone())
                .await
                .expect_err("refused");
            let io = error.downcast_ref::<std::io::Error>().expect("an io error");
            assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput, "{uri}");
            assert!(error.to_string().contains("not a number"), "{error}");
        }
    }
}
