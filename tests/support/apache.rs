//! A real Apache httpd (Debian's apache2 with mod_http2) on a free loopback
//! port, speaking h2c with prior knowledge, with a config of the test's own;
//! stopped when dropped.
//!
//! The binary is launched directly with `-f config -d server-root` rather than
//! through apache2ctl, so Debian's envvars file and /etc/apache2 play no part.
//! `-DFOREGROUND` keeps the real parent process (unlike `-X`, which runs one
//! process that cannot restart gracefully), so `graceful_restart` exercises
//! what an operator's `apachectl -k graceful` does.
//!
//! `.ci/run` installs apache2 where it is missing. A machine without it fails
//! these tests loudly rather than skipping them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::real_server::{find_binary, free_port, scratch_dir, stop, wait_until_listening};

/// Where the loadable modules are: `H2POOL_APACHE_MODULES`, or where
/// Debian puts them.
fn modules() -> PathBuf {
    std::env::var_os("H2POOL_APACHE_MODULES")
        .map_or_else(|| PathBuf::from("/usr/lib/apache2/modules"), PathBuf::from)
}

/// A running Apache httpd.
pub struct Apache {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Apache {
    /// Starts apache2 (mpm_event, mod_http2 in h2c mode) serving the static
    /// file `/ok`, whose body is "ok", with `directives` added at server level.
    pub fn start(directives: &str) -> Apache {
        let binary = find_apache();
        let dir = scratch_dir("apache");
        let htdocs = dir.join("htdocs");
        std::fs::create_dir_all(&htdocs).expect("create the apache directory");
        std::fs::write(htdocs.join("ok"), "ok").expect("write the static file");
        // The children serve files as `User`, so the tree must be readable by
        // others; the parent (still root, if root) writes the logs and pid.
        for path in [&dir, &htdocs] {
            set_mode(path, 0o755);
        }
        set_mode(&htdocs.join("ok"), 0o644);
        // As root (CI), httpd switches its children to `User`/`Group`; it
        // refuses to serve as root. Otherwise it runs as whoever we are, and
        // naming a user would fail.
        let owner = std::fs::metadata(&dir)
            .expect("stat the apache directory")
            .uid();
        let user = if owner == 0 {
            "User www-data\nGroup www-data"
        } else {
            ""
        };
        let port = free_port();
        let modules = modules();
        let modules = modules.display();
        let config = format!(
            r#"
ServerRoot {dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
ErrorLog {dir}/error.log
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule http2_module {modules}/mod_http2.so
LoadModule authz_core_module {modules}/mod_authz_core.so
# h2c only: prior knowledge (H2Direct) on a cleartext port.
Protocols h2c http/1.1
H2Direct on
DocumentRoot {htdocs}
<Directory {htdocs}>
    Require all granted
</Directory>
{directives}
"#,
            dir = dir.display(),
            htdocs = htdocs.display(),
        );
        let config_path = dir.join("httpd.conf");
        std::fs::write(&config_path, config).expect("write the apache config");
        let child = Command::new(&binary)
            .arg("-f")
            .arg(&config_path)
            .arg("-d")
            .arg(&dir)
            .arg("-DFOREGROUND")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        let apache = Apache {
            binary,
            dir,
            port,
            child,
        };
        apache.wait_until_listening();
        apache
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `apache2 -k graceful`: the parent keeps the listening socket and starts
    /// new children; the old ones finish their requests and close their
    /// connections.
    pub fn graceful_restart(&self) {
        let status = Command::new(&self.binary)
            .arg("-f")
            .arg(self.dir.join("httpd.conf"))
            .arg("-d")
            .arg(&self.dir)
            .args(["-k", "graceful"])
            .status()
            .expect("run apache2 -k graceful");
        assert!(
            status.success(),
            "apache2 -k graceful failed: {status}\n{}",
            self.error_log()
        );
    }

    /// The server's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Waits until the parent has started its children. httpd reads its
    /// configuration twice at startup and may close and reopen its listener
    /// in between: a connect that succeeds early proves nothing, and one
    /// refused a moment later failed a CI run. AH00489 ("resuming normal
    /// operations") is logged once the listener is there to stay.
    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.error_log().contains("AH00489") {
            assert!(
                Instant::now() < deadline,
                "apache2 did not start its children within 10 s:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_until_listening("apache2", self.port, || self.error_log());
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        stop(&mut self.child, &self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {}: {error}", path.display()));
}

fn find_apache() -> PathBuf {
    let binary = find_binary(
        "apache2",
        "H2POOL_APACHE",
        "these tests need a real Apache httpd with mod_http2; install it \
         (`apt-get install apache2`, as .ci/run does)",
    );
    let http2 = modules().join("mod_http2.so");
    assert!(
        http2.is_file(),
        "{} is missing: these tests need Debian's apache2 with mod_http2 \
         (`apt-get install apache2`), or H2POOL_APACHE_MODULES naming the \
         directory of Apache's modules",
        http2.display()
    );
    binary
}
