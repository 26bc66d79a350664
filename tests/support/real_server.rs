//! What the real-server harnesses (`nginx.rs`, `apache.rs`) share: finding
//! the binary, a free port, a scratch directory, waiting until the server
//! listens, and the report on the GET load ([`super::load`]) their tests
//! drive through the pool.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use h2pool::Pool;

/// The binary `name`: from `env_var` if set, else on PATH or in the sbin
/// directories, where Debian puts servers. Panics with `install_hint` if it
/// is nowhere: these tests fail loudly rather than skip.
pub fn find_binary(name: &str, env_var: &str, install_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: {install_hint}, or set {env_var}"))
}

/// A loopback port nothing listens on (for the moment).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free loopback port")
}

/// A fresh, empty directory of this process's, for one server's files.
pub fn scratch_dir(server: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "h2pool-{server}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the server's directory");
    dir
}

/// Waits up to 10 s for something to listen on `port`; panics with `log()`
/// (the server's error log) if nothing does.
pub fn wait_until_listening(server: &str, port: u16, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{server} did not listen on port {port} within 10 s:\n{}",
        log()
    );
}

/// Prints what a load through `pool` cost, then asserts it failed no
/// request, showing the first failures and the server's `log` if it did.
pub fn assert_no_failures(what: &str, pool: &Pool, failures: &[h2pool::Error], log: &str) {
    let stats = pool.stats();
    eprintln!(
        "{what}: {} failures, {} connections, replays {:?}",
        failures.len(),
        stats.total().connections_opened,
        stats.replay
    );
    let first: Vec<String> = failures
        .iter()
        .take(5)
        .map(|error| {
            // The whole chain: the I/O error under a connect error says why.
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                chain.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            format!(
                "{:?} {:?} reason {:?}: {chain}",
                error.kind(),
                error.delivery(),
                error.reason()
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{log}",
        failures.len(),
        first.join("\n")
    );
}

/// Stops a server's parent process with SIGTERM, so that it stops its
/// workers too (a SIGKILLed parent leaves them behind, holding the port),
/// and removes its scratch directory. SIGKILL after 10 s.
pub fn stop(child: &mut Child, dir: &std::path::Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
