//! An axum reverse proxy in front of an HTTP/2 upstream, through h2pool.
//!
//! ```sh
//! # In front of an embedded HTTP/2 test server (routes /echo, /delay/{ms}, ...):
//! cargo run --example reverse_proxy
//! # In front of your own h2c server, listening on a port of your choice:
//! cargo run --example reverse_proxy -- --upstream http://127.0.0.1:50051 --listen 127.0.0.1:8080
//! ```
//!
//! Then, for instance, `curl -d hello http://127.0.0.1:8080/echo` (HTTP/1.1)
//! or `curl --http2-prior-knowledge -d hello http://127.0.0.1:8080/echo`.
//! The proxy logic lives in `proxy.rs`, which the tests include.

mod proxy;
#[path = "../../tests/support/server.rs"]
mod server;

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut upstream = None;
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--upstream" => upstream = Some(value.parse()?),
            "--listen" => listen = value.parse()?,
            _ => {
                return Err(
                    format!("unknown flag {flag}; use --upstream URL, --listen ADDR").into(),
                )
            }
        }
    }
    // The embedded server lives as long as `main`.
    let (upstream, _embedded): (http::Uri, _) = match upstream {
        Some(upstream) => (upstream, None),
        None => {
            let server = server::TestServer::start(server::ServerConfig::default()).await;
            (format!("http://{}", server.addr()).parse()?, Some(server))
        }
    };

    let pool = h2pool::Pool::builder()
        .pending_timeout(Some(Duration::from_secs(5)))
        .build();
    let app = proxy::Proxy::new(pool, upstream.clone())
        .timeout(Duration::from_secs(30))
        .router();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let listen = listener.local_addr()?;
    println!("proxying http://{listen} -> {upstream} (Ctrl-C stops)");
    println!("try: curl -d hello http://{listen}/echo");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
