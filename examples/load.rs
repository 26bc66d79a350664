//! Drives a load of GET requests through an [`h2pool::Pool`] and reports how
//! it went.
//!
//! With no arguments it starts the fault-injecting HTTP/2 test server
//! in-process and sends 20000 requests to it, 64 at a time, with a progress
//! bar on stderr. At the end it prints the total, the successes, the failures
//! by kind, how many connections the pool opened, the p50 and p99 latency, the
//! throughput and the elapsed time.
//!
//! ```text
//! cargo run --release --example load
//! cargo run --release --example load -- --json -n 2000 -c 16
//! cargo run --release --example load -- --url http://127.0.0.1:50051/health
//! ```
//!
//! Flags:
//! - `--url URL`: load a real server instead of the embedded one (prior
//!   knowledge HTTP/2 over plain TCP, every request a GET to `URL`)
//! - `-c N`, `--concurrency N`: requests in flight at once (default 64)
//! - `-n M`, `--requests M`: requests in total (default 20000)
//! - `--json`: print the summary as one JSON line on stdout, with no progress
//!   bar, keys `requests`, `ok`, `failed`, `errors` (kind to count),
//!   `connections_opened`, `replays`, `replayed_refused`, `replayed_never_sent`,
//!   `p50_ms`, `p99_ms`, `requests_per_sec`,
//!   `elapsed_secs`
//! - `--max-streams N`: the embedded server's SETTINGS_MAX_CONCURRENT_STREAMS
//!   (default 100)
//! - `--delay-ms N`: how long the embedded server waits before it answers
//!   (default 0)
//! - `--path P`: the path requested from the embedded server (default `/`;
//!   see `tests/support/server.rs` for the routes, such as `/delay/5`)
//! - `--faults goaway=P,refuse=P,close=P`: per-request probabilities of the
//!   embedded server's faults: a graceful GOAWAY on the request's connection,
//!   REFUSED_STREAM, or an abrupt TCP close
//! - `-h`, `--help`: the usage text
//!
//! A request is `ok` when its response has a 2xx status and its body was read
//! to the end; reading the body is part of its latency. Anything else counts
//! as failed, under the pool's [`h2pool::ErrorKind`] name (`connect`,
//! `refused`, ...) or as `status_NNN`. Latency percentiles are over the
//! successful requests only, so fast failures such as refused connects do not
//! flatter them.
//!
//! The exit code is 0 when every request succeeded, 1 when any failed and 2
//! for a usage error, so scripts can check a run.
//!
//! The embedded server shares the tokio runtime with the client, so its
//! numbers measure the pool and the server together on the same cores.

#[path = "../tests/support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use indicatif::{ProgressBar, ProgressStyle};
use server::{ServerConfig, TestServer};
use tokio::net::TcpListener;
use tower::ServiceExt;

const USAGE: &str = "\
Drives a load of HTTP/2 GET requests through an h2pool::Pool.

Usage: cargo run --release --example load -- [OPTIONS]

Options:
  --url URL              load this server instead of the embedded one
  -c, --concurrency N    requests in flight at once [default: 64]
  -n, --requests M       requests in total [default: 20000]
      --json             print the summary as one JSON line, no progress bar
      --max-streams N    embedded server: SETTINGS_MAX_CONCURRENT_STREAMS [default: 100]
      --delay-ms N       embedded server: wait before answering [default: 0]
      --path P           embedded server: path to request [default: /]
      --faults SPEC      embedded server: fault probabilities per request,
                         e.g. goaway=0.01,refuse=0.001,close=0.001
  -h, --help             print this text

Exit code: 0 if every request succeeded, 1 if any failed, 2 for a usage error.";

const DEFAULT_CONCURRENCY: usize = 64;
const DEFAULT_REQUESTS: u64 = 20_000;
const DEFAULT_MAX_STREAMS: u32 = 100;

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Run(Options),
    Help,
}

#[derive(Debug)]
struct Options {
    target: Target,
    concurrency: usize,
    requests: u64,
    json: bool,
}

/// Where the requests go.
#[derive(Debug)]
enum Target {
    Embedded(EmbeddedServer),
    Url(Uri),
}

/// How the in-process server is set up.
#[derive(Debug)]
struct EmbeddedServer {
    max_streams: u32,
    handler_delay: Duration,
    path: String,
    faults: server::Faults,
}

/// Parses the arguments after the program name. `Err` carries a message
/// for the user; the caller adds the usage text.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut url = None;
    let mut concurrency = DEFAULT_CONCURRENCY;
    let mut requests = DEFAULT_REQUESTS;
    let mut json = false;
    // Kept as options to tell "left at the default" from "given with --url",
    // which would be silently ignored otherwise.
    let mut max_streams = None;
    let mut delay_ms = None;
    let mut path = None;
    let mut faults = None;

    while let Some(arg) = args.next() {
        // Long flags may also be written `--flag=value`.
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = || flag_value(&flag, inline_value.clone(), &mut args);
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline_value.is_none() => json = true,
            "--url" => url = Some(parse_url(&value()?)?),
            "-c" | "--concurrency" => concurrency = parse_count(&flag, &value()?)?,
            "-n" | "--requests" => requests = parse_count(&flag, &value()?)?,
            "--max-streams" => max_streams = Some(parse_count(&flag, &value()?)?),
            "--delay-ms" => delay_ms = Some(parse_number(&flag, &value()?)?),
            "--path" => path = Some(parse_path(&value()?)?),
            "--faults" => faults = Some(parse_faults(&value()?)?),
            "--json" => return Err("--json takes no value".to_owned()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }

    let target = match url {
        Some(url) => {
            let embedded_only = [
                ("--max-streams", max_streams.is_some()),
                ("--delay-ms", delay_ms.is_some()),
                ("--path", path.is_some()),
                ("--faults", faults.is_some()),
            ];
            if let Some((flag, _)) = embedded_only.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "{flag} configures the embedded server and cannot be used with --url"
                ));
            }
            Target::Url(url)
        }
        None => Target::Embedded(EmbeddedServer {
            max_streams: max_streams.unwrap_or(DEFAULT_MAX_STREAMS),
            handler_delay: Duration::from_millis(delay_ms.unwrap_or(0)),
            path: path.unwrap_or_else(|| "/".to_owned()),
            faults: faults.unwrap_or_default(),
        }),
    };
    Ok(Command::Run(Options {
        target,
        concurrency,
        requests,
        json,
    }))
}

/// Parses `goaway=0.01,refuse=0.001,close=0.001`: per-request probabilities
/// of the embedded server's faults.
fn parse_faults(text: &str) -> Result<server::Faults, String> {
    let mut faults = server::Faults::default();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        let (name, probability) = part
            .split_once('=')
            .ok_or_else(|| format!("--faults expects name=probability, not '{part}'"))?;
        let probability: f64 = probability
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=1.0).contains(p))
            .ok_or_else(|| format!("--faults: '{probability}' is not a probability in 0..=1"))?;
        match name {
            "goaway" => faults.goaway = probability,
            "refuse" => faults.refuse = probability,
            "close" => faults.close = probability,
            other => {
                return Err(format!(
                    "--faults: unknown fault '{other}' (known: goaway, refuse, close)"
                ))
            }
        }
    }
    Ok(faults)
}

/// The value of `flag`: the part after `=`, or else the next argument.
fn flag_value(
    flag: &str,
    inline_value: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, String> {
    inline_value
        .or_else(|| rest.next())
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} expects a whole number, not '{text}'"))
}

/// A number that must be at least 1: zero workers, requests or streams would
/// leave nothing to measure, or wait forever.
fn parse_count<T: std::str::FromStr + PartialOrd + From<u8>>(
    flag: &str,
    text: &str,
) -> Result<T, String> {
    let count: T = parse_number(flag, text)?;
    if count < T::from(1) {
        return Err(format!("{flag} must be at least 1"));
    }
    Ok(count)
}

fn parse_url(text: &str) -> Result<Uri, String> {
    match text.parse::<Uri>() {
        Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(uri),
        _ => Err(format!(
            "--url expects an absolute URL such as http://127.0.0.1:8080/, not '{text}'"
        )),
    }
}

fn parse_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && text.parse::<PathAndQuery>().is_ok() {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "--path expects a path starting with '/', such as /delay/5, not '{text}'"
        ))
    }
}

/// Why a request did not count as ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    Pool(h2pool::ErrorKind),
    Status(StatusCode),
}

impl Failure {
    /// The stable name the summary groups failures by.
    fn name(self) -> String {
        match self {
            Failure::Pool(kind) => kind.as_str().to_owned(),
            Failure::Status(status) => format!("status_{}", status.as_u16()),
        }
    }
}

/// How often one kind of failure happened, with the first one's message so
/// the summary can say what actually went wrong.
#[derive(Debug)]
struct FailureTally {
    count: u64,
    example: String,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct WorkerReport {
    latencies_us: Vec<u64>,
    failures: BTreeMap<Failure, FailureTally>,
}

impl WorkerReport {
    fn record_failure(&mut self, failure: Failure, describe: impl FnOnce() -> String) {
        self.failures
            .entry(failure)
            .and_modify(|tally| tally.count += 1)
            .or_insert_with(|| FailureTally {
                count: 1,
                example: describe(),
            });
    }

    fn merge(&mut self, other: WorkerReport) {
        self.latencies_us.extend(other.latencies_us);
        for (failure, tally) in other.failures {
            self.failures
                .entry(failure)
                .and_modify(|mine| mine.count += tally.count)
                .or_insert(tally);
        }
    }
}

/// Everything the final report shows.
#[derive(Debug)]
struct Summary {
    ok: u64,
    failures: BTreeMap<Failure, FailureTally>,
    connections_opened: u64,
    connect_failures: u64,
    /// The embedded server's own count, as a cross-check of the pool's.
    server_connections_accepted: Option<u64>,
    p50_ms: f64,
    p99_ms: f64,
    elapsed: Duration,
    replay: h2pool::replay::ReplayStats,
    faults: Option<String>,
}

impl Summary {
    /// The requests that finished; all of them unless a worker crashed.
    fn requests(&self) -> u64 {
        self.ok + self.failed()
    }

    fn failed(&self) -> u64 {
        self.failures.values().map(|tally| tally.count).sum()
    }

    fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests() as f64 / secs
        } else {
            0.0
        }
    }

    fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "requests            {}", self.requests());
        let _ = writeln!(out, "ok                  {}", self.ok);
        let _ = writeln!(out, "failed              {}", self.failed());
        let name_width = self
            .failures
            .keys()
            .map(|failure| failure.name().len())
            .max()
            .unwrap_or(0);
        for (failure, tally) in &self.failures {
            let _ = writeln!(
                out,
                "  {:<name_width$}  {:<7} e.g. {}",
                failure.name(),
                tally.count,
                tally.example
            );
        }
        let _ = write!(out, "connections opened  {}", self.connections_opened);
        if let Some(accepted) = self.server_connections_accepted {
            let _ = write!(out, " (server accepted {accepted})");
        }
        if self.connect_failures > 0 {
            let _ = write!(out, ", {} connects failed", self.connect_failures);
        }
        out.push('\n');
        let replay = &self.replay;
        let _ = writeln!(
            out,
            "replays             {} ({} refused, {} never sent; gave up: {} budget, {} attempts, {} body too large)",
            replay.replays(),
            replay.replayed_refused,
            replay.replayed_never_sent,
            replay.gave_up_budget,
            replay.gave_up_attempts,
            replay.gave_up_body_too_large,
        );
        if let Some(faults) = &self.faults {
            let _ = writeln!(out, "faults injected     {faults}");
        }
        let _ = writeln!(out, "latency p50         {:.2} ms", self.p50_ms);
        let _ = writeln!(out, "latency p99         {:.2} ms", self.p99_ms);
        let _ = writeln!(
            out,
            "throughput          {:.2} requests/s",
            self.requests_per_sec()
        );
        let _ = write!(
            out,
            "elapsed             {:.3} s",
            self.elapsed.as_secs_f64()
        );
        out
    }

    fn to_json(&self) -> String {
        let errors = self
            .failures
            .iter()
            .map(|(failure, tally)| format!("{}:{}", json_string(&failure.name()), tally.count))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"requests\":{},\"ok\":{},\"failed\":{},\"errors\":{{{errors}}},\
             \"connections_opened\":{},\"replays\":{},\"replayed_refused\":{},\
             \"replayed_never_sent\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\
             \"requests_per_sec\":{:.2},\"elapsed_secs\":{:.3}}}",
            self.requests(),
            self.ok,
            self.failed(),
            self.connections_opened,
            self.replay.replays(),
            self.replay.replayed_refused,
            self.replay.replayed_never_sent,
            self.p50_ms,
            self.p99_ms,
            self.requests_per_sec(),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The nearest-rank percentile of sorted microseconds, in milliseconds;
/// 0 when there is no sample (every request failed).
fn percentile_ms(sorted_us: &[u64], percent: usize) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (sorted_us.len() * percent).div_ceil(100);
    let index = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[index] as f64 / 1000.0
}

/// An error and its causes on one line: the pool's message says what failed,
/// the source (an io or h2 error) says why.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut previous = text.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        // A wrapper that displays as the error it wraps (the pool shares one
        // connect error among the requests that waited on it that way) adds
        // nothing but noise.
        if message != previous {
            let _ = write!(text, ": {message}");
        }
        previous = message;
        source = cause.source();
    }
    text
}

/// Sends one GET and reads the whole response body.
async fn send_one(pool: &h2pool::Pool, uri: &Uri) -> Result<(), (Failure, String)> {
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = uri.clone();
    let pool_failure = |error: h2pool::Error| (Failure::Pool(error.kind()), error_chain(&error));
    let response = pool.clone().oneshot(request).await.map_err(pool_failure)?;
    let status = response.status();
    response.into_body().collect().await.map_err(pool_failure)?;
    if !status.is_success() {
        return Err((
            Failure::Status(status),
            format!("the server answered {status}"),
        ));
    }
    Ok(())
}

/// Takes request numbers from `next` until `total` have been handed out.
/// A shared counter instead of a fixed share per worker keeps every worker
/// busy to the end, however the latencies spread.
async fn worker(
    pool: h2pool::Pool,
    uri: Uri,
    next: Arc<AtomicU64>,
    total: u64,
    failed_so_far: Arc<AtomicU64>,
    progress: ProgressBar,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let started = Instant::now();
        match send_one(&pool, &uri).await {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                report.latencies_us.push(micros);
            }
            Err((failure, message)) => {
                report.record_failure(failure, || message);
                let failed = failed_so_far.fetch_add(1, Ordering::Relaxed) + 1;
                progress.set_message(format!("{failed} failed"));
            }
        }
        progress.inc(1);
    }
    report
}

fn progress_bar(options: &Options) -> ProgressBar {
    if options.json {
        return ProgressBar::hidden();
    }
    // `ProgressBar::new` draws on stderr and stays quiet when that is not a
    // terminal, so piping the summary somewhere still works.
    let bar = ProgressBar::new(options.requests);
    match ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} eta {eta} {msg}",
    ) {
        Ok(style) => bar.with_style(style.progress_chars("=> ")),
        Err(_) => bar,
    }
}

/// Starts the embedded server on a free loopback port; `Err` says why not.
async fn start_embedded(config: &EmbeddedServer) -> Result<TestServer, String> {
    // Bound here rather than by `TestServer::start`, which panics on failure.
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|error| {
        format!("could not bind a loopback port for the embedded server: {error}")
    })?;
    Ok(TestServer::start_on(
        listener,
        ServerConfig {
            max_concurrent_streams: Some(config.max_streams),
            handler_delay: config.handler_delay,
            faults: config.faults,
            ..ServerConfig::default()
        },
    ))
}

/// Runs the load and reports it; the exit code says whether all went well.
async fn run(options: Options) -> ExitCode {
    let (server, uri) = match &options.target {
        Target::Url(uri) => (None, uri.clone()),
        Target::Embedded(config) => {
            let server = match start_embedded(config).await {
                Ok(server) => server,
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::FAILURE;
                }
            };
            let Ok(uri) = server.url(&config.path).parse::<Uri>() else {
                eprintln!("error: '{}' does not make a valid URL", config.path);
                return ExitCode::from(2);
            };
            (Some(server), uri)
        }
    };

    if !options.json {
        let target = match &options.target {
            Target::Url(_) => String::new(),
            Target::Embedded(config) => format!(
                " (embedded server: max {} streams per connection, {} ms delay)",
                config.max_streams,
                config.handler_delay.as_millis()
            ),
        };
        println!(
            "{} GET requests, {} at a time, to {uri}{target}",
            options.requests, options.concurrency
        );
    }

    let pool = h2pool::Pool::new();
    let progress = progress_bar(&options);
    let next_request = Arc::new(AtomicU64::new(0));
    let failed_so_far = Arc::new(AtomicU64::new(0));

    let started = Instant::now();
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                pool.clone(),
                uri.clone(),
                next_request.clone(),
                options.requests,
                failed_so_far.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let mut merged = WorkerReport::default();
    let mut worker_crashed = false;
    for handle in workers {
        match handle.await {
            Ok(report) => merged.merge(report),
            Err(error) => {
                // A bug in this example, not a request failure: say so, and
                // fail the run, since its numbers are now incomplete.
                progress.suspend(|| eprintln!("error: a worker task failed: {error}"));
                worker_crashed = true;
            }
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    merged.latencies_us.sort_unstable();
    let pool_stats = pool.stats();
    let pool_totals = pool_stats.total();
    let summary = Summary {
        replay: pool_stats.replay,
        faults: server.as_ref().map(|server| {
            let counters = server.counters();
            format!(
                "{} GOAWAY, {} REFUSED_STREAM, {} abrupt closes",
                counters.goaways.load(Ordering::Relaxed),
                counters.refused.load(Ordering::Relaxed),
                counters.closes.load(Ordering::Relaxed)
            )
        }),
        ok: merged.latencies_us.len() as u64,
        failures: merged.failures,
        connections_opened: pool_totals.connections_opened,
        connect_failures: pool_totals.connect_failures,
        server_connections_accepted: server.as_ref().map(|server| {
            server
                .counters()
                .connections_accepted
                .load(Ordering::Relaxed)
        }),
        p50_ms: percentile_ms(&merged.latencies_us, 50),
        p99_ms: percentile_ms(&merged.latencies_us, 99),
        elapsed,
    };
    if options.json {
        println!("{}", summary.to_json());
    } else {
        println!("{}", summary.to_text());
    }

    if worker_crashed || summary.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => run(options).await,
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
