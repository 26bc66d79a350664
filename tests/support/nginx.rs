//! A real nginx (Debian's package) on a free loopback port, speaking h2c,
//! with a config of the test's own; stopped when dropped.
//!
//! `.ci/run` installs nginx where it is missing. A machine without it fails
//! these tests loudly rather than skipping them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running nginx.
pub struct Nginx {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Nginx {
    /// Starts nginx with `directives` inside its `http` block (next to a
    /// `server` that answers `location /` with 200 "ok").
    pub fn start(directives: &str) -> Nginx {
        let binary = find_nginx();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "h2pool-nginx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("create the nginx directory");
        let port = free_port();
        let config = format!(
            r#"
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    {directives}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            return 200 "ok";
        }}
    }}
}}
"#,
            dir = dir.display(),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("write the nginx config");
        let child = Command::new(&binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        let nginx = Nginx {
            binary,
            dir,
            port,
            child,
        };
        nginx.wait_until_listening();
        nginx
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `nginx -s reload`: new workers start, the old ones finish their
    /// requests and close their connections gracefully (GOAWAY).
    pub fn reload(&self) {
        let status = Command::new(&self.binary)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "reload"])
            .status()
            .expect("run nginx -s reload");
        assert!(status.success(), "nginx -s reload failed: {status}");
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
        panic!(
            "nginx did not listen on port {} within 10 s:\n{log}",
            self.port
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_nginx() -> PathBuf {
    if let Some(path) = std::env::var_os("H2POOL_NGINX") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| Path::new(candidate).is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: these tests need a real nginx. \
                 Install it (`apt-get install nginx`, as .ci/run does) or set H2POOL_NGINX"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free loopback port")
}
