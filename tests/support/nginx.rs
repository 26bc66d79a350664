//! A real nginx (Debian's package) on a free loopback port, speaking h2c,
//! with a config of the test's own; stopped when dropped.
//!
//! `.ci/run` installs nginx where it is missing. A machine without it fails
//! these tests loudly rather than skipping them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::real_server::{find_binary, free_port, scratch_dir, stop, wait_until_listening};

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
        let binary = find_binary(
            "nginx",
            "H2POOL_NGINX",
            "these tests need a real nginx; install it (`apt-get install nginx`, as .ci/run does)",
        );
        let dir = scratch_dir("nginx");
        std::fs::create_dir_all(dir.join("logs")).expect("create the nginx log directory");
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

    /// What nginx wrote to its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    fn wait_until_listening(&self) {
        wait_until_listening("nginx", self.port, || self.error_log());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child, &self.dir);
    }
}
