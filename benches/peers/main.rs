//! h2pool side by side with its peers: raw h2 over one connection (the
//! floor), hyper-util's legacy client (HTTP/2 only) and, for gRPC, tonic's
//! `Channel`. Every client runs every scenario against the same in-process
//! HTTP/2 server, one after another in the same process, in alternating
//! rounds so that background load on the machine falls on all of them alike.
//!
//! ```text
//! cargo bench --bench peers
//! ```
//!
//! writes `benches/results/peers.json`, `peers.md` (the table) and
//! `peers.svg` (the chart the README shows), and prints the table.
//!
//! Scenarios:
//! - a. small GET at concurrency 1, 64 and 512; at 64 and 512 also h2pool
//!   capped at 32 streams a connection, which spreads the load over several
//!   (for information: the target is the default pool's)
//! - b. a server with SETTINGS_MAX_CONCURRENT_STREAMS 16 and a 2 ms handler
//!   delay, concurrency 256; h2pool also against the same server without
//!   the limit, for the ratio
//! - c. a 256 MiB upload and a 256 MiB download on one stream; a round
//!   repeats the transfer (each on a stream of its own) until
//!   `H2POOL_BENCH_SECS` have passed, as the other scenarios measure for
//!   that long: a single transfer takes a fifth of a second, where how
//!   the tasks fall on the two workers moved a round's rate by 30%
//! - d. a server that sends GOAWAY every 100 streams per connection,
//!   concurrency 64: throughput and failures; h2pool also against the same
//!   server without the GOAWAYs, for the ratio
//! - e. gRPC unary at concurrency 64: tonic's `Grpc` over h2pool's
//!   `OriginService` against tonic's `Channel`
//!
//! A request that takes more than 2 s counts as failed (so a client that
//! loses a request cannot hang the run).
//!
//! Allocations per request count every allocation in the process (client
//! and server) while a measurement runs, divided by the requests it
//! completed; the server's share is the same for every client, so the
//! differences between clients are theirs.
//!
//! Environment (all optional):
//! - `H2POOL_BENCH_SECS`: seconds measured per client per round (default 1)
//! - `H2POOL_BENCH_WARMUP_SECS`: load before each measurement (default 0.3)
//! - `H2POOL_BENCH_ROUNDS`: rounds; a rate is the median of its rounds
//!   (default 9: on two cores a round's ratio at concurrency 1 ranges
//!   over ±0.2, as tasks land on one worker or on both; with 5 rounds the
//!   median of the same build still moved by ±0.1 from run to run)
//! - `H2POOL_BENCH_MIB`: size of the transfers of scenario c (default 256)
//! - `H2POOL_BENCH_ONLY`: scenario letters to run, such as `a,e`, or for
//!   scenario a one concurrency, such as `a64`; results are then printed
//!   only, not written
//! - `H2POOL_BENCH_CLIENTS`: client names to run (`raw-h2`, `h2pool`,
//!   `hyper-util`, `tonic`, and `h2pool-spread` with `h2pool` for the
//!   capped row of scenario a), for profiling one of them; printed only too
//! - `H2POOL_BENCH_SERVER=test`: run scenarios a to d against the test
//!   server (`tests/support/server.rs`) instead of the bench server

mod clients;
mod report;
mod server;
#[path = "../../tests/support/server.rs"]
mod test_server;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Uri};

use clients::{BoxError, Client, GrpcClient, RequestBody};
use report::{Row, Target};

/// Counts allocations (and reallocations) on top of the system allocator.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// What the environment asks for.
#[derive(Debug, Clone)]
struct Settings {
    measure: Duration,
    warmup: Duration,
    rounds: usize,
    transfer_bytes: u64,
    only: Option<String>,
    clients: Option<String>,
    test_server: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str, default: f64| -> f64 {
            match std::env::var(name) {
                Ok(value) => value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
                Err(_) => default,
            }
        };
        Settings {
            measure: Duration::from_secs_f64(number("H2POOL_BENCH_SECS", 1.0)),
            warmup: Duration::from_secs_f64(number("H2POOL_BENCH_WARMUP_SECS", 0.3)),
            rounds: number("H2POOL_BENCH_ROUNDS", 9.0).max(1.0) as usize,
            transfer_bytes: (number("H2POOL_BENCH_MIB", 256.0) * 1024.0 * 1024.0) as u64,
            only: std::env::var("H2POOL_BENCH_ONLY").ok(),
            clients: std::env::var("H2POOL_BENCH_CLIENTS").ok(),
            test_server: std::env::var("H2POOL_BENCH_SERVER").is_ok_and(|server| server == "test"),
        }
    }

    /// Whether scenario a runs at `concurrency` (`H2POOL_BENCH_ONLY=a64`).
    fn runs_small_gets_at(&self, concurrency: usize) -> bool {
        self.only.as_ref().is_none_or(|only| {
            only.split(',')
                .map(str::trim)
                .any(|s| s == "a" || s == format!("a{concurrency}"))
        })
    }

    fn runs(&self, scenario: char) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.split(',').any(|s| s.trim().starts_with(scenario)))
    }

    fn uses(&self, client: &str) -> bool {
        self.clients
            .as_ref()
            .is_none_or(|clients| clients.split(',').any(|c| c.trim() == client))
    }

    /// Partial runs are for looking, not for the committed results.
    fn complete(&self) -> bool {
        self.only.is_none() && self.clients.is_none()
    }
}

/// Something to do again and again under load.
trait Workload: Clone + Send + 'static {
    fn once(&mut self) -> impl Future<Output = Result<u64, BoxError>> + Send + '_;
}

#[derive(Clone)]
struct Get {
    client: Client,
    uri: Uri,
}

impl Workload for Get {
    fn once(&mut self) -> impl Future<Output = Result<u64, BoxError>> + Send + '_ {
        self.client
            .send(Method::GET, &self.uri, RequestBody::empty())
    }
}

#[derive(Clone)]
struct Unary {
    client: GrpcClient,
    message: Bytes,
}

impl Workload for Unary {
    fn once(&mut self) -> impl Future<Output = Result<u64, BoxError>> + Send + '_ {
        self.client.unary(self.message.clone())
    }
}

/// One measurement of one client under load.
#[derive(Debug, Default)]
struct Measurement {
    completed: u64,
    failed: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    allocations: u64,
    first_error: Option<String>,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `workload` from `concurrency` tasks: a warm-up, then a measured
/// window. A request counts when it finishes inside the window.
async fn measure<W: Workload>(workload: W, concurrency: usize, settings: &Settings) -> Measurement {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut workload = workload.clone();
            let measuring = measuring.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                // Room for the window's latencies up front, so the counted
                // allocations are the clients'.
                let mut part = Measurement {
                    latencies_us: Vec::with_capacity(16 * 1024),
                    ..Measurement::default()
                };
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    // A client that loses a request (hyper-util has, after a
                    // GOAWAY) must not hang the run: that is a failure too.
                    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, workload.once())
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no response within {REQUEST_TIMEOUT:?}").into())
                        });
                    if !measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    match outcome {
                        Ok(_) => {
                            part.completed += 1;
                            let micros = started.elapsed().as_micros();
                            part.latencies_us
                                .push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                        Err(error) => {
                            part.failed += 1;
                            part.first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
                part
            })
        })
        .collect();
    tokio::time::sleep(settings.warmup).await;
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(settings.measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    stop.store(true, Ordering::Relaxed);
    let mut total = Measurement {
        elapsed,
        allocations,
        ..Measurement::default()
    };
    for task in tasks {
        let part = task.await.expect("a load task panicked");
        total.completed += part.completed;
        total.failed += part.failed;
        total.latencies_us.extend(part.latencies_us);
        if total.first_error.is_none() {
            total.first_error = part.first_error;
        }
    }
    total
}

/// The rounds of one client in one scenario, summed up as a table row.
fn summarise(scenario: &str, client: &str, rounds: Vec<Measurement>) -> Row {
    let round_rates: Vec<f64> = rounds.iter().map(Measurement::rate).collect();
    let mut rates = round_rates.clone();
    rates.sort_by(f64::total_cmp);
    let mut latencies: Vec<u32> = rounds
        .iter()
        .flat_map(|m| m.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let percentile = |p: f64| -> Option<f64> {
        let last = latencies.len().checked_sub(1)?;
        Some(f64::from(latencies[(last as f64 * p).round() as usize]) / 1000.0)
    };
    let completed: u64 = rounds.iter().map(|m| m.completed).sum();
    let failed: u64 = rounds.iter().map(|m| m.failed).sum();
    let allocations: u64 = rounds.iter().map(|m| m.allocations).sum();
    if let Some(error) = rounds.iter().find_map(|m| m.first_error.as_ref()) {
        eprintln!("  {scenario} {client}: {failed} failed, the first with: {error}");
    }
    Row {
        scenario: scenario.to_owned(),
        client: client.to_owned(),
        requests_per_sec: Some(rates[rates.len() / 2]),
        bytes_per_sec: None,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        allocations_per_request: Some(allocations as f64 / (completed + failed).max(1) as f64),
        requests: completed,
        failures: failed,
        round_rates,
        target: None,
    }
}

/// Measures each workload `settings.rounds` times, alternating between them.
async fn compare<W: Workload>(
    scenario: &str,
    workloads: Vec<(&str, W)>,
    concurrency: usize,
    settings: &Settings,
) -> Vec<Row> {
    let mut rounds: Vec<Vec<Measurement>> = workloads.iter().map(|_| Vec::new()).collect();
    for _ in 0..settings.rounds {
        for ((name, workload), rounds) in workloads.iter().zip(&mut rounds) {
            let measurement = measure(workload.clone(), concurrency, settings).await;
            eprintln!(
                "  {scenario:<28} {name:<24} {:>9.0} req/s",
                measurement.rate()
            );
            rounds.push(measurement);
        }
    }
    workloads
        .iter()
        .zip(rounds)
        .map(|((name, _), rounds)| summarise(scenario, name, rounds))
        .collect()
}

/// The server scenarios a to d run against.
enum Server {
    Bench(server::BenchServer),
    Test(test_server::TestServer),
}

impl Server {
    async fn start(settings: &Settings, config: server::Config) -> Server {
        if !settings.test_server {
            return Server::Bench(server::BenchServer::start(config).await);
        }
        Server::Test(
            test_server::TestServer::start(test_server::ServerConfig {
                max_concurrent_streams: config.max_concurrent_streams,
                handler_delay: config.handler_delay,
                initial_window_size: 2 * 1024 * 1024,
                connection_window_size: 5 * 1024 * 1024,
                faults: test_server::Faults::default(),
                goaway_after: config.goaway_every,
            })
            .await,
        )
    }

    fn origin(&self) -> String {
        match self {
            Server::Bench(server) => server.origin(),
            Server::Test(server) => server.url(""),
        }
    }
}

/// An extra h2pool row sending GETs to `server`, such as h2pool against the
/// scenario's server without its handicap (the rate a target compares
/// with, measured in the same rounds); none when h2pool is not run.
fn h2pool_row(
    settings: &Settings,
    server: &Server,
    label: &'static str,
    client: impl FnOnce() -> Client,
) -> Option<(&'static str, Get)> {
    if !settings.uses("h2pool") {
        return None;
    }
    let uri = format!("{}/", server.origin())
        .parse()
        .expect("a valid URI");
    Some((
        label,
        Get {
            client: client(),
            uri,
        },
    ))
}

/// Raw h2, h2pool and hyper-util, each sending GETs to `server`.
async fn http_clients(
    server: &Server,
    settings: &Settings,
    raw_h2: bool,
) -> Vec<(&'static str, Get)> {
    let origin = server.origin();
    let uri: Uri = format!("{origin}/").parse().expect("a valid URI");
    let mut workloads = Vec::new();
    if raw_h2 && settings.uses("raw-h2") {
        workloads.push(("raw h2", Client::raw_h2(&origin).await));
    }
    if settings.uses("h2pool") {
        workloads.push(("h2pool", Client::h2pool()));
    }
    if settings.uses("hyper-util") {
        workloads.push(("hyper-util", Client::hyper_util()));
    }
    workloads
        .into_iter()
        .map(|(name, client)| {
            let uri = uri.clone();
            (name, Get { client, uri })
        })
        .collect()
}

/// The per-connection stream cap of scenario a's extra h2pool row, and
/// that row's name.
const SPREAD_STREAMS: usize = 32;
pub const SPREAD_LABEL: &str = "h2pool, 32 streams/conn";

async fn small_gets(settings: &Settings) -> Vec<Row> {
    let server = Server::start(settings, server::Config::default()).await;
    let workloads = http_clients(&server, settings, true).await;
    // One connection's task and h2's lock are shared by all its streams:
    // the same pool capped at SPREAD_STREAMS streams a connection spreads
    // higher concurrencies over several. Shown for information; the target
    // is the default pool's.
    let spread = settings
        .uses("h2pool-spread")
        .then(|| {
            h2pool_row(settings, &server, SPREAD_LABEL, || {
                Client::h2pool_capped(SPREAD_STREAMS)
            })
        })
        .flatten();
    let mut rows = Vec::new();
    for concurrency in [1, 64, 512] {
        if !settings.runs_small_gets_at(concurrency) {
            continue;
        }
        let scenario = format!("a. GET, concurrency {concurrency}");
        let mut workloads = workloads.clone();
        if concurrency > SPREAD_STREAMS {
            workloads.extend(spread.clone());
        }
        rows.extend(compare(&scenario, workloads, concurrency, settings).await);
    }
    rows
}

async fn stream_limit(settings: &Settings) -> Vec<Row> {
    const SCENARIO: &str = "b. 16 streams, 2 ms, c=256";
    let delay = Duration::from_millis(2);
    let limited = Server::start(
        settings,
        server::Config {
            max_concurrent_streams: Some(16),
            handler_delay: delay,
            ..server::Config::default()
        },
    )
    .await;
    let unlimited = Server::start(
        settings,
        server::Config {
            handler_delay: delay,
            ..server::Config::default()
        },
    )
    .await;
    let mut workloads = http_clients(&limited, settings, true).await;
    workloads.extend(h2pool_row(
        settings,
        &unlimited,
        "h2pool, no stream limit",
        Client::h2pool,
    ));
    compare(SCENARIO, workloads, 256, settings).await
}

async fn transfers(settings: &Settings) -> Vec<Row> {
    let server = Server::start(settings, server::Config::default()).await;
    let origin = server.origin();
    let total = settings.transfer_bytes;
    let upload_uri: Uri = format!("{origin}/upload").parse().expect("a valid URI");
    let download_uri: Uri = format!("{origin}/download/{total}")
        .parse()
        .expect("a valid URI");
    let warmup_uri: Uri = format!("{origin}/").parse().expect("a valid URI");
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);

    let mut clients = Vec::new();
    if settings.uses("raw-h2") {
        clients.push(("raw h2", Client::raw_h2(&origin).await));
    }
    if settings.uses("h2pool") {
        clients.push(("h2pool", Client::h2pool()));
    }
    if settings.uses("hyper-util") {
        clients.push(("hyper-util", Client::hyper_util()));
    }
    let mut rows = Vec::new();
    let mib = total / (1024 * 1024);
    for (scenario, upload) in [
        (format!("c. upload {mib} MiB"), true),
        (format!("c. download {mib} MiB"), false),
    ] {
        let mut rates: Vec<Vec<f64>> = clients.iter().map(|_| Vec::new()).collect();
        let mut transfers: Vec<u64> = vec![0; clients.len()];
        for _ in 0..settings.rounds {
            for (((name, client), rates), transfers) in
                clients.iter_mut().zip(&mut rates).zip(&mut transfers)
            {
                // Connected and warm before the clock starts.
                client
                    .send(Method::GET, &warmup_uri, RequestBody::empty())
                    .await
                    .expect("warm-up request");
                let started = Instant::now();
                let mut moved_in_round = 0;
                while moved_in_round == 0 || started.elapsed() < settings.measure {
                    let moved = if upload {
                        let body = RequestBody::repeat(chunk.clone(), total);
                        client
                            .send(Method::POST, &upload_uri, body)
                            .await
                            .map(|_| total)
                    } else {
                        client
                            .send(Method::GET, &download_uri, RequestBody::empty())
                            .await
                    };
                    let moved =
                        moved.unwrap_or_else(|error| panic!("{scenario} with {name}: {error}"));
                    assert_eq!(
                        moved, total,
                        "{scenario} with {name} moved the wrong amount"
                    );
                    moved_in_round += moved;
                    *transfers += 1;
                }
                let rate = moved_in_round as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "  {scenario:<28} {name:<24} {:>9.0} MiB/s",
                    rate / (1024.0 * 1024.0)
                );
                rates.push(rate);
            }
        }
        for (((name, _), round_rates), transfers) in clients.iter().zip(rates).zip(transfers) {
            let mut rates = round_rates.clone();
            rates.sort_by(f64::total_cmp);
            rows.push(Row {
                scenario: scenario.clone(),
                client: (*name).to_owned(),
                bytes_per_sec: Some(rates[rates.len() / 2]),
                requests: transfers,
                round_rates,
                ..Row::default()
            });
        }
    }
    rows
}

async fn goaways(settings: &Settings) -> Vec<Row> {
    let server = Server::start(
        settings,
        server::Config {
            goaway_every: Some(100),
            ..server::Config::default()
        },
    )
    .await;
    // The no-fault rate the target compares with, measured in the same
    // alternating rounds: measured back in scenario a instead, the ratio
    // moved with whatever the machine did in between (after scenario b,
    // every client here ran a quarter slower, hyper-util too).
    let no_goaway = Server::start(settings, server::Config::default()).await;
    // Raw h2 is one connection and has nowhere to go after a GOAWAY.
    let mut workloads = http_clients(&server, settings, false).await;
    workloads.extend(h2pool_row(
        settings,
        &no_goaway,
        "h2pool, no GOAWAY",
        Client::h2pool,
    ));
    compare("d. GOAWAY every 100, c=64", workloads, 64, settings).await
}

async fn grpc(settings: &Settings) -> Vec<Row> {
    // The test server speaks no gRPC: always the bench server.
    let server = server::BenchServer::start(server::Config::default()).await;
    let origin = server.origin();
    // A small message with its gRPC frame header (uncompressed, 11 bytes).
    let message = Bytes::from_static(b"hello h2pool");
    let mut workloads = Vec::new();
    if settings.uses("tonic") {
        workloads.push(("tonic Channel", GrpcClient::channel(&origin).await));
    }
    if settings.uses("h2pool") {
        workloads.push(("h2pool under tonic", GrpcClient::h2pool(&origin)));
    }
    let workloads = workloads
        .into_iter()
        .map(|(name, client)| {
            let message = message.clone();
            (name, Unary { client, message })
        })
        .collect();
    compare("e. gRPC unary, c=64", workloads, 64, settings).await
}

/// Marks each h2pool row with the ratio its target is stated in.
fn mark_targets(rows: &mut [Row]) {
    // Each target is a ratio to another client in the same scenario, which
    // ran in the same rounds, back to back.
    let goals = [
        ("a. GET, concurrency 1", "raw h2", 0.95),
        ("a. GET, concurrency 64", "raw h2", 0.95),
        ("b.", "h2pool, no stream limit", 0.8),
        ("c. upload", "raw h2", 0.9),
        ("c. download", "raw h2", 0.9),
        ("d.", "h2pool, no GOAWAY", 0.85),
        ("e.", "tonic Channel", 1.0),
    ];
    for (scenario, against, goal) in goals {
        let Some(reference) = rows
            .iter()
            .find(|row| row.scenario.starts_with(scenario) && row.client == against)
            .cloned()
        else {
            continue;
        };
        let Some(reference_rate) = reference.rate() else {
            continue;
        };
        for row in rows.iter_mut() {
            let is_h2pool = row.client == "h2pool" || row.client == "h2pool under tonic";
            if !is_h2pool || !row.scenario.starts_with(scenario) {
                continue;
            }
            let Some(rate) = row.rate() else { continue };
            let round_ratios: Vec<f64> = row
                .round_rates
                .iter()
                .zip(&reference.round_rates)
                .map(|(ours, theirs)| ours / theirs)
                .collect();
            row.target = Some(Target {
                against: against.to_owned(),
                ratio: rate / reference_rate,
                goal,
                rounds_met: round_ratios.iter().filter(|&&ratio| ratio >= goal).count(),
                rounds: round_ratios.len(),
                low: round_ratios.iter().copied().fold(f64::INFINITY, f64::min),
                high: round_ratios.iter().copied().fold(0.0, f64::max),
            });
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    // Two workers, as many as the machine has cores: client and server
    // share them, as they would share a real host.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let mut rows = Vec::new();
    runtime.block_on(async {
        if settings.runs('a') {
            rows.extend(small_gets(&settings).await);
        }
        if settings.runs('b') {
            rows.extend(stream_limit(&settings).await);
        }
        if settings.runs('c') {
            rows.extend(transfers(&settings).await);
        }
        if settings.runs('d') {
            rows.extend(goaways(&settings).await);
        }
        if settings.runs('e') {
            rows.extend(grpc(&settings).await);
        }
    });
    mark_targets(&mut rows);
    let table = report::markdown(&rows);
    println!("{table}");
    println!("ran in {:.0?}", started.elapsed());
    if !settings.complete() {
        println!("(a partial run: results not written)");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).expect("create benches/results");
    let server = if settings.test_server {
        "test"
    } else {
        "bench"
    };
    let description = report::Description {
        server,
        measure_secs: settings.measure.as_secs_f64(),
        rounds: settings.rounds,
    };
    for (file, contents) in [
        ("peers.json", report::json(&rows, &description)),
        ("peers.md", table),
        ("peers.svg", report::svg(&rows)),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, contents)
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        println!("wrote {}", path.display());
    }
}
