//! The clients under comparison, each sending the same requests and reading
//! each response body to its end.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use h2::client::SendRequest;
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The same windows and send buffer for every client (h2pool's defaults,
/// which are hyper's), so the comparison is of the clients, not of tuning.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const SEND_BUFFER: usize = 400 * 1024;

/// An HTTP client: one of the peers.
#[derive(Clone)]
pub enum Client {
    /// h2's `SendRequest` over one connection: the floor of what any h2
    /// based client can cost.
    RawH2(SendRequest<Bytes>),
    /// `h2pool::Pool::new()` with every default layer.
    H2pool(h2pool::Pool),
    /// hyper-util's legacy client, HTTP/2 only (what reqwest builds on);
    /// boxed, as it is several times the size of the others.
    HyperUtil(Box<hyper_util::client::legacy::Client<HttpConnector, RequestBody>>),
}

impl Client {
    pub async fn raw_h2(origin: &str) -> Client {
        let authority = origin.trim_start_matches("http://");
        let tcp = TcpStream::connect(authority)
            .await
            .expect("connect to the bench server");
        tcp.set_nodelay(true).expect("set TCP_NODELAY");
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .handshake::<_, Bytes>(tcp)
            .await
            .expect("HTTP/2 handshake with the bench server");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Client::RawH2(send)
    }

    pub fn h2pool() -> Client {
        Client::H2pool(h2pool::Pool::new())
    }

    /// `Pool::new()`'s defaults, with at most `streams` concurrent streams
    /// per connection: more load opens more connections.
    pub fn h2pool_capped(streams: usize) -> Client {
        Client::H2pool(
            h2pool::Pool::builder()
                .max_concurrent_streams(Some(streams))
                .build(),
        )
    }

    pub fn hyper_util() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_initial_stream_window_size(STREAM_WINDOW)
            .http2_initial_connection_window_size(CONNECTION_WINDOW)
            .build(connector);
        Client::HyperUtil(Box::new(client))
    }

    /// Sends one request and reads the response body to its end; returns
    /// the response body's length.
    pub async fn send(
        &mut self,
        method: Method,
        uri: &Uri,
        body: RequestBody,
    ) -> Result<u64, BoxError> {
        match self {
            Client::RawH2(send) => {
                poll_fn(|cx| send.poll_ready(cx)).await?;
                let end_of_stream = body.is_end_stream();
                let head = request(method, uri, ())?;
                let (response, mut stream) = send.send_request(head, end_of_stream)?;
                // The body streams from a task of its own while the response
                // is awaited, as hyper and h2pool do (a server may answer
                // before it has read the whole body).
                let upload = (!end_of_stream)
                    .then(|| tokio::spawn(async move { upload(&mut stream, body).await }));
                let mut recv = response.await?.into_body();
                if let Some(upload) = upload {
                    upload.await??;
                }
                let mut length = 0;
                while let Some(chunk) = recv.data().await {
                    let chunk = chunk?;
                    length += chunk.len() as u64;
                    recv.flow_control().release_capacity(chunk.len())?;
                }
                Ok(length)
            }
            Client::H2pool(pool) => {
                let request = request(method, uri, body)?;
                let response = ServiceExt::<Request<RequestBody>>::ready(pool)
                    .await?
                    .call(request)
                    .await?;
                drain(response.into_body()).await
            }
            Client::HyperUtil(client) => {
                let response = client.request(request(method, uri, body)?).await?;
                drain(response.into_body()).await
            }
        }
    }
}

fn request<B>(method: Method, uri: &Uri, body: B) -> Result<Request<B>, BoxError> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri.clone();
    Ok(request)
}

/// Reads a body to its end without collecting it.
async fn drain<B>(body: B) -> Result<u64, BoxError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(Into::into)?.into_data() {
            length += data.len() as u64;
        }
    }
    Ok(length)
}

/// Raw h2's body upload: the same flow-controlled loop every h2 client has.
async fn upload(stream: &mut h2::SendStream<Bytes>, body: RequestBody) -> Result<(), BoxError> {
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame?.into_data() else {
            continue;
        };
        let last = body.is_end_stream();
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let granted = poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .ok_or("stream closed while uploading")??;
            let chunk = data.split_to(granted.min(data.len()));
            stream.send_data(chunk, last && data.is_empty())?;
        }
    }
    Ok(())
}

/// A request body: nothing, or one chunk repeated up to a length (no copy,
/// no allocation per chunk), with an exact size hint.
#[derive(Debug, Clone)]
pub struct RequestBody {
    chunk: Bytes,
    left: u64,
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody {
            chunk: Bytes::new(),
            left: 0,
        }
    }

    pub fn repeat(chunk: Bytes, total: u64) -> Self {
        RequestBody { chunk, left: total }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let take = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= take as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A gRPC client: tonic's `Grpc` over a tonic `Channel` or over an h2pool
/// `OriginService`.
#[derive(Clone)]
pub enum GrpcClient {
    Channel(tonic::client::Grpc<tonic::transport::Channel>),
    H2pool(tonic::client::Grpc<h2pool::OriginService>),
}

/// The method the bench server echoes.
pub const GRPC_PATH: &str = "/bench.Echo/Unary";

impl GrpcClient {
    pub async fn channel(origin: &str) -> GrpcClient {
        let channel = tonic::transport::Channel::from_shared(origin.to_owned())
            .expect("a valid origin")
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect a tonic channel to the bench server");
        GrpcClient::Channel(tonic::client::Grpc::new(channel))
    }

    pub fn h2pool(origin: &str) -> GrpcClient {
        let uri = origin.parse().expect("a valid origin");
        let service = h2pool::Pool::new()
            .origin(uri)
            .expect("an origin with scheme and authority");
        GrpcClient::H2pool(tonic::client::Grpc::new(service))
    }

    /// One unary call; returns the reply's length.
    pub async fn unary(&mut self, message: Bytes) -> Result<u64, BoxError> {
        let path = PathAndQuery::from_static(GRPC_PATH);
        let request = tonic::Request::new(message);
        let reply = match self {
            GrpcClient::Channel(grpc) => {
                grpc.ready().await?;
                grpc.unary(request, path, RawCodec).await?
            }
            GrpcClient::H2pool(grpc) => {
                grpc.ready().await.map_err(BoxError::from)?;
                grpc.unary(request, path, RawCodec).await?
            }
        };
        Ok(reply.into_inner().len() as u64)
    }
}

/// A codec for messages that are already bytes, so the bench needs neither
/// protoc nor prost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
