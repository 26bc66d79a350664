//! A tonic generated client over h2pool: the four call kinds against an
//! embedded tonic server, or against `--url http://host:port` (a server of
//! the `echo.Echo` service in `tests/grpc/echo.proto`).
//!
//! ```sh
//! cargo run --features tonic --example tonic
//! cargo run --features tonic --example tonic -- --url http://127.0.0.1:50051
//! ```
//!
//! The client needs nothing but a tower service:
//! `EchoClient::new(pool.origin(uri)?)` serves one origin with honest
//! backpressure (tonic waits in `poll_ready` while every stream slot is
//! taken) and fills in the scheme and authority of tonic's path-only request
//! URIs. `EchoClient::with_origin(pool.clone(), uri)` works too: tonic makes
//! the URIs absolute and the keyed pool waits for a slot inside the call.
//!
//! tonic's own `Status::from_error` does not recognise h2pool's errors (they
//! would arrive as UNKNOWN); `h2pool::grpc::GrpcStatusLayer` (feature
//! `tonic`) maps them to the gRPC codes (UNAVAILABLE for a refused connect
//! or a refused stream, and so on).

#[path = "../../tests/grpc/mod.rs"]
mod grpc;

use std::error::Error;

use grpc::echo::echo_client::EchoClient;
use grpc::echo::EchoRequest;
use h2pool::grpc::GrpcStatusLayer;
use tokio_stream::StreamExt;
use tower::Layer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let (uri, _server) = match (args.next().as_deref(), args.next()) {
        (Some("--url"), Some(url)) => (url.parse()?, None),
        (None, _) => {
            let server = grpc::GrpcServer::start().await;
            println!("embedded tonic server on {}", server.addr());
            (server.uri(), Some(server))
        }
        _ => return Err("usage: tonic [--url http://host:port]".into()),
    };

    let pool = h2pool::Pool::builder()
        .max_connections_per_origin(4)
        .build();
    let mut client = EchoClient::new(GrpcStatusLayer::new().layer(pool.origin(uri)?))
        .max_decoding_message_size(grpc::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(grpc::MAX_MESSAGE_SIZE);

    // Unary, with metadata both ways.
    let mut request = tonic::Request::new(grpc::message("hello"));
    request
        .metadata_mut()
        .insert("x-tenant", "example".parse()?);
    let response = client.unary(request).await?;
    println!(
        "unary: {:?} (x-tenant: {:?})",
        response.get_ref().message,
        response.metadata().get("x-tenant")
    );

    // Server streaming.
    let request = EchoRequest {
        message: "tick".into(),
        repeat: 3,
        ..EchoRequest::default()
    };
    let mut ticks = client.server_stream(request).await?.into_inner();
    while let Some(tick) = ticks.message().await? {
        println!("server stream: {:?}", tick.message);
    }

    // Client streaming.
    let words = tokio_stream::iter(["a", "b", "c"].map(grpc::message));
    let joined = client.client_stream(words).await?.into_inner();
    println!("client stream: {:?}", joined.message);

    // Bidi: the server answers only after the first message, so the request
    // stream must flow before the response headers arrive.
    let (sender, requests) = grpc::request_channel();
    sender.send(grpc::message("ping 1")).await?;
    let mut replies = client.bidi(requests).await?.into_inner();
    for i in 2..=3 {
        let reply = replies.next().await.ok_or("bidi ended early")??;
        println!("bidi: {:?}", reply.message);
        sender.send(grpc::message(&format!("ping {i}"))).await?;
    }
    drop(sender);
    while let Some(reply) = replies.next().await {
        println!("bidi: {:?}", reply?.message);
    }

    // A status from the server, trailers-only.
    let status = client
        .unary(grpc::message("not-found"))
        .await
        .expect_err("the server answers NOT_FOUND");
    println!("status: {:?} {:?}", status.code(), status.message());

    for origin in pool.stats().origins {
        println!(
            "pool: {} connection(s) opened, {} request(s)",
            origin.connections_opened, origin.requests
        );
    }
    Ok(())
}
