//! A gRPC echo service on tonic's own server, for the tonic tests and the
//! tonic example (which includes this file through `#[path]`).
//!
//! The messages steer the server:
//! - `Unary`: echoes message and payload; copies the `x-tenant` metadata into
//!   the response; `not-found` answers NOT_FOUND with `x-detail` metadata (a
//!   trailers-only response); `slow:{ms}` waits first.
//! - `ServerStream`: `repeat` responses `{message} #{i}`; then, if the
//!   message is `then-abort`, the ABORTED status in the trailers.
//! - `ClientStream`: one response with the messages joined by `,` and the
//!   payloads concatenated.
//! - `Bidi`: waits for the first request message *before* it answers with
//!   headers (the pattern that deadlocks half-duplex clients), then echoes
//!   each request message as it arrives.
#![allow(dead_code)]

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod echo;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use self::echo::echo_server::{Echo, EchoServer};
use self::echo::{EchoRequest, EchoResponse};

/// The largest message either side accepts (tonic's default is 4 MiB).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The service; `calls` counts the calls it answered, of every kind.
#[derive(Debug, Clone, Default)]
pub struct EchoService {
    calls: Arc<AtomicU64>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let tenant = request.metadata().get("x-tenant").cloned();
        let request = request.into_inner();
        if let Some(ms) = request.message.strip_prefix("slow:") {
            let ms = ms
                .parse()
                .map_err(|_| Status::invalid_argument("slow:{ms} needs a number"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if request.message == "not-found" {
            let mut status = Status::not_found("no echo for \"not-found\"");
            status
                .metadata_mut()
                .insert("x-detail", MetadataValue::from_static("asked for it"));
            return Err(status);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(EchoResponse {
            message: request.message,
            payload: request.payload,
        });
        if let Some(tenant) = tenant {
            response.metadata_mut().insert("x-tenant", tenant);
        }
        Ok(response)
    }

    type ServerStreamStream = ResponseStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let abort = request.message == "then-abort";
        let repeat = request.repeat;
        let responses = (0..repeat).map(move |i| {
            Ok(EchoResponse {
                message: format!("{} #{i}", request.message),
                payload: Vec::new(),
            })
        });
        let ending =
            abort.then(|| Err(Status::aborted(format!("stopped after {repeat} messages"))));
        let stream = tokio_stream::iter(responses.chain(ending));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut requests = request.into_inner();
        let mut messages = Vec::new();
        let mut payload = Vec::new();
        while let Some(request) = requests.message().await? {
            messages.push(request.message);
            payload.extend_from_slice(&request.payload);
        }
        Ok(Response::new(EchoResponse {
            message: messages.join(","),
            payload,
        }))
    }

    type BidiStream = ResponseStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut requests = request.into_inner();
        // No response headers until the client has sent something.
        let Some(first) = requests.message().await? else {
            return Err(Status::invalid_argument("bidi needs a first message"));
        };
        let echo = |request: EchoRequest| EchoResponse {
            message: request.message,
            payload: request.payload,
        };
        let first = tokio_stream::once(Ok(echo(first)));
        let rest = requests.map(move |request| request.map(echo));
        Ok(Response::new(Box::pin(first.chain(rest))))
    }
}

/// A running tonic server; it stops (gracefully) when dropped.
#[derive(Debug)]
pub struct GrpcServer {
    addr: SocketAddr,
    service: EchoService,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl GrpcServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the tonic server");
        GrpcServer::start_on(listener)
    }

    /// Starts a server on `addr` with SO_REUSEPORT, so a second server can
    /// bind the same port while the first still runs (a hot restart).
    pub fn start_shared(addr: SocketAddr) -> GrpcServer {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        socket.bind(addr).expect("bind the shared port");
        let listener = socket.listen(1024).expect("listen on the shared port");
        GrpcServer::start_on(listener)
    }

    fn start_on(listener: TcpListener) -> GrpcServer {
        let addr = listener.local_addr().expect("listener has an address");
        let service = EchoService::default();
        let (shutdown, signal) = oneshot::channel::<()>();
        let echo = EchoServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(echo)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = signal.await;
                }),
        );
        GrpcServer {
            addr,
            service,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}`, the origin for a client.
    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr)
            .parse()
            .expect("a valid origin")
    }

    /// Calls answered so far.
    pub fn calls(&self) -> u64 {
        self.service.calls.load(Ordering::Relaxed)
    }

    /// Stops accepting, sends GOAWAY on every connection and waits for the
    /// calls in flight to finish.
    pub async fn shutdown_gracefully(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the tonic server task did not panic")
                .expect("the tonic server shut down cleanly");
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A request stream the caller feeds message by message.
pub fn request_channel() -> (mpsc::Sender<EchoRequest>, ReceiverStream<EchoRequest>) {
    let (sender, receiver) = mpsc::channel(16);
    (sender, ReceiverStream::new(receiver))
}

/// A request with only a message.
pub fn message(text: &str) -> EchoRequest {
    EchoRequest {
        message: text.to_owned(),
        ..EchoRequest::default()
    }
}
