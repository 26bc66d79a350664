//! Spreads requests over several endpoints with tower's p2c `Balance`,
//! while endpoints come and go.
//!
//! Three in-process HTTP/2 servers start as endpoints `a`, `b` and `c`, each
//! an [`h2pool::OriginService`] of one shared [`h2pool::Pool`], fed to
//! `Balance` through a discovery channel (`tower::discover::Change`). A third
//! of the way through the load `a` is removed; two thirds through a fourth
//! server `d` is added. At the end it prints how many requests each endpoint
//! served and how many failed (none should).
//!
//! ```text
//! cargo run --example balance
//! cargo run --example balance -- -n 20000 -c 64
//! ```
//!
//! Flags: `-n N` requests in total (default 6000), `-c N` requests in flight
//! at once (default 32). The exit code is 0 when every request succeeded.
//!
//! `OriginService` reports its load (streams in flight plus requests waiting
//! for a slot) through `tower::load::Load`, which is what p2c compares. A
//! removed endpoint finishes the requests it has and gets no new one; its
//! pooled connection stays in the shared pool until the idle timeout closes
//! it.

#[path = "../tests/support/server.rs"]
mod server;

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use h2pool::{OriginService, Pool};
use http_body_util::{BodyExt, Empty};
use server::{ServerConfig, TestServer};
use tokio::sync::mpsc;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::{BoxError, Service, ServiceExt};

type Request = http::Request<Empty<Bytes>>;
type Discovery = BoxStream<'static, Result<Change<&'static str, OriginService>, Infallible>>;

struct Args {
    requests: u64,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 6000,
        concurrency: 32,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "-n" => args.requests = number()?.max(1),
            "-c" => args.concurrency = number()?.max(1) as usize,
            _ => return Err(format!("unknown flag {flag}; use -n N and -c N")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let config = ServerConfig {
        handler_delay: Duration::from_millis(2),
        ..ServerConfig::default()
    };
    let mut servers = Vec::new();
    for name in ["a", "b", "c", "d"] {
        servers.push((name, TestServer::start(config.clone()).await));
    }
    let pool = Pool::new();
    let origin = |server: &TestServer| -> OriginService {
        pool.origin(server.url("/").parse().expect("a server URL"))
            .expect("an origin")
    };

    let (changes, receiver) = mpsc::unbounded_channel();
    let discovery: Discovery = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let change = receiver.recv().await?;
        Some((Ok(change), receiver))
    })
    .boxed();
    let balanced = Buffer::new(Balance::<_, Request>::new(discovery), 1024);
    for (name, server) in &servers[..3] {
        let _ = changes.send(Change::Insert(*name, origin(server)));
    }

    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (sent, failed, mut service) = (sent.clone(), failed.clone(), balanced.clone());
            let total = args.requests;
            tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::SeqCst) < total {
                    // Path only: the endpoint the balancer picks fills in
                    // its own scheme and authority.
                    let request = http::Request::get("/")
                        .body(Empty::new())
                        .expect("a request");
                    let outcome: Result<(), BoxError> = async {
                        let response = service.ready().await?.call(request).await?;
                        response.into_body().collect().await?;
                        Ok(())
                    }
                    .await;
                    if let Err(error) = outcome {
                        eprintln!("request failed: {error}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    let served = |name: &str| -> u64 {
        servers
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, s)| s.counters().requests.load(Ordering::SeqCst))
    };
    let total_served = || servers.iter().map(|(n, _)| served(n)).sum::<u64>();
    while total_served() < args.requests / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a_in_flight = servers[0]
        .1
        .counters()
        .streams_active
        .load(Ordering::SeqCst);
    let _ = changes.send(Change::Remove("a"));
    println!(
        "removed a after {} requests, with {a_in_flight} in flight there",
        total_served()
    );
    let a_at_removal = served("a");
    while total_served() < 2 * args.requests / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("adding d after {} requests", total_served());
    let _ = changes.send(Change::Insert("d", origin(&servers[3].1)));
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed();

    let failed = failed.load(Ordering::SeqCst);
    println!("endpoint  requests");
    for (name, _) in &servers {
        println!("{name:>8}  {:>8}", served(name));
    }
    println!(
        "a got {} more after the removal was sent (before the balancer saw it)",
        served("a") - a_at_removal
    );
    println!(
        "{} requests, {} failed, {:.0} requests/s",
        args.requests,
        failed,
        args.requests as f64 / elapsed.as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
