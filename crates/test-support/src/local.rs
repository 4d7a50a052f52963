//! Servers started by the harness, through `scripts/pg.sh`.
//!
//! Everything about PostgreSQL itself — finding the server binaries (installing Debian's
//! `postgresql` under `CI=true`), the unprivileged user `tasks-pg` when the tests run as
//! root, `initdb`, start and stop — is `scripts/pg.sh`, the one implementation that
//! `just run` and the shell suites use too (its header says why the script is the one
//! kept). This module keeps what needs the test process: a free port per server (and a
//! new one when another process takes it first), the wait for readiness, and teardown.
//!
//! Teardown at process exit. The shared server lives in a `static`, which is never
//! dropped, and a test process may also die from a signal or an abort. So every server
//! gets a small watchdog child at creation: `sh -c 'cat >/dev/null; pg.sh stop <data>
//! immediate; rm -rf <dir>'` whose stdin is a pipe only this process holds the write
//! end of (std opens pipes close-on-exec, so no other child inherits it). When the
//! process exits, however it exits, the kernel closes that end, `cat` sees end-of-file
//! and the watchdog stops the server and removes its directory. Unlike polling
//! `kill -0 <pid>` this reacts at once, costs nothing while the tests run and cannot be
//! fooled by pid reuse. The watchdog has its own process group (a Ctrl-C in the terminal
//! does not kill it before it has cleaned up) and no inherited stdout/stderr (test
//! runners that wait for output pipes to close, like nextest, are not held up). A
//! private server's watchdog is released by `Drop` and waited for.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Servers started here listen on this loopback address only (`scripts/pg.sh` binds it).
pub(crate) const LISTEN_HOST: &str = "127.0.0.1";

/// The script that runs every throwaway PostgreSQL of the repository.
const PG_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg.sh");

/// Bound on every wait for the server to start or stop.
const WAIT: Duration = Duration::from_secs(30);

/// Server options of the harness: the tests open many connections at once.
const SERVER_OPTIONS: &str = "-c max_connections=300";

/// Attempts to start a new server, each on a fresh free port (another process may take
/// the port between our probe and the server's bind).
const START_ATTEMPTS: usize = 3;

#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// One cluster in its own temporary directory (`data/` and `data.log`, `scripts/pg.sh`'s
/// layout).
#[derive(Debug)]
pub(crate) struct LocalServer {
    /// The server binaries (`pg_isready` for readiness), as `pg.sh bindir` found them.
    bindir: PathBuf,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    user: String,
    durable: bool,
    /// Serialises `stop`/`start` calls from concurrent tests.
    control: Mutex<()>,
    watchdog: Mutex<Option<Watchdog>>,
}

impl LocalServer {
    /// Initialises a cluster with superuser `user`/`password` in a new temporary
    /// directory and starts it on a free loopback port. `durable: false` turns `fsync`
    /// and `full_page_writes` off (`PG_DURABLE=0` of `scripts/pg.sh`).
    pub(crate) fn launch(user: &str, password: &str, durable: bool) -> Result<Self, String> {
        let bindir = find_bindir()?;
        let base = std::env::temp_dir();
        let root = tempfile::Builder::new()
            .prefix("tasks-pg-")
            .tempdir_in(&base)
            .map_err(|e| {
                format!(
                    "cannot create a temporary directory in {}: {e}",
                    base.display()
                )
            })?
            .keep();
        let data = root.join("data");
        let mut server = Self {
            log: root.join("data.log"),
            bindir,
            data,
            root,
            port: 0,
            user: user.to_owned(),
            durable,
            control: Mutex::new(()),
            watchdog: Mutex::new(None),
        };
        // From here on, dropping `server` (also on error) stops and removes everything.
        server.spawn_watchdog()?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port()?;
            let log_len = fs::metadata(&server.log).map(|m| m.len()).unwrap_or(0);
            // The first start initialises the cluster with the password.
            match server.pg_start(Some(password)) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let new_log = fs::read(&server.log)
                        .map(|bytes| {
                            String::from_utf8_lossy(bytes.get(log_len as usize..).unwrap_or(&[]))
                                .into_owned()
                        })
                        .unwrap_or_default();
                    last_error = e;
                    if !new_log.contains("could not bind")
                        && !new_log.contains("Address already in use")
                    {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data
    }

    pub(crate) fn log_file(&self) -> &Path {
        &self.log
    }

    /// Fast shutdown, waiting until the server is gone; nothing to do when stopped.
    pub(crate) fn stop(&self) -> Result<(), String> {
        let _guard = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let out = self.pg_sh(|cmd| {
            cmd.arg("stop").arg(&self.data).arg("fast");
        })?;
        if !out.status.success() {
            return Err(format!(
                "scripts/pg.sh stop failed ({}): {}{}",
                out.status,
                output_text(&out),
                self.log_tail()
            ));
        }
        let deadline = Instant::now() + WAIT;
        if !poll_until(deadline, || !self.is_accepting()) {
            return Err(format!(
                "the server still accepts connections {}s after scripts/pg.sh stop",
                WAIT.as_secs()
            ));
        }
        Ok(())
    }

    /// Starts the server on its data directory and port, waiting until it accepts
    /// connections; when it is running already, only waits for that.
    pub(crate) fn start(&self) -> Result<(), String> {
        let _guard = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        self.pg_start(None)
    }

    /// Whether the server accepts connections: `pg_isready` when installed, else a TCP
    /// connect.
    pub(crate) fn is_accepting(&self) -> bool {
        let pg_isready = self.bindir.join("pg_isready");
        if is_executable(&pg_isready) {
            let port = self.port.to_string();
            Command::new(&pg_isready)
                .args([
                    "-q",
                    "-t",
                    "2",
                    "-h",
                    LISTEN_HOST,
                    "-p",
                    &port,
                    "-d",
                    "postgres",
                    "-U",
                    &self.user,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|status| status.success())
                .unwrap_or(false)
        } else {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        }
    }

    /// `scripts/pg.sh start` (initialising the cluster first when `password` is given
    /// and the data directory is empty; nothing to do when running), then the wait for
    /// readiness.
    fn pg_start(&self, password: Option<&str>) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let out = self.pg_sh(|cmd| {
            cmd.arg("start")
                .arg(&self.data)
                .arg(self.port.to_string())
                .env("PG_ROLE", &self.user)
                .env("PG_SUPERUSER", "1")
                .env("PG_DURABLE", if self.durable { "1" } else { "0" })
                // Its directory is removed after use: no need to sync the new cluster.
                .env("PG_THROWAWAY", "1")
                .env("PG_EXTRA_OPTS", SERVER_OPTIONS);
            if let Some(password) = password {
                // The environment, not the command line: other users cannot read it.
                cmd.env("PGPASSWORD_TASKS", password);
            }
        })?;
        if !out.status.success() {
            return Err(format!(
                "scripts/pg.sh start failed ({}) on port {}: {}",
                out.status,
                self.port,
                output_text(&out)
            ));
        }
        if poll_until(deadline, || self.is_accepting()) {
            Ok(())
        } else {
            Err(format!(
                "the server on port {} did not accept connections within {}s{}",
                self.port,
                WAIT.as_secs(),
                self.log_tail()
            ))
        }
    }

    /// Runs `scripts/pg.sh` with the harness's bound on its waits.
    fn pg_sh(&self, args: impl FnOnce(&mut Command)) -> Result<Output, String> {
        let mut cmd = pg_sh_command();
        args(&mut cmd);
        cmd.output().map_err(|e| format!("cannot run {PG_SH}: {e}"))
    }

    fn spawn_watchdog(&self) -> Result<(), String> {
        let script = format!(
            "cat >/dev/null 2>&1\n[ -f {pid} ] && PG_WAIT_SECS={wait} {pg_sh} stop {data} immediate >/dev/null 2>&1\nrm -rf -- {root}\n",
            pid = sh_quote(&self.data.join("postmaster.pid").to_string_lossy()),
            wait = WAIT.as_secs(),
            pg_sh = sh_quote(PG_SH),
            data = sh_quote(&self.data.to_string_lossy()),
            root = sh_quote(&self.root.to_string_lossy()),
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot spawn the teardown watchdog (sh): {e}"))?;
        let stdin = child.stdin.take();
        *self.watchdog.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Watchdog { child, stdin });
        Ok(())
    }

    fn log_tail(&self) -> String {
        match fs::read_to_string(&self.log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines
                    .get(lines.len().saturating_sub(20)..)
                    .unwrap_or(&[])
                    .join("\n");
                format!(
                    "\nlast lines of the server log {}:\n{tail}",
                    self.log.display()
                )
            }
            Err(_) => String::new(),
        }
    }
}

impl Drop for LocalServer {
    /// Releases the watchdog (immediate shutdown, directory removed) and waits for it.
    fn drop(&mut self) {
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut watchdog) = watchdog {
            drop(watchdog.stdin.take());
            let _ = watchdog.child.wait();
        }
    }
}

/// `scripts/pg.sh` with the harness's bound on its waits, run from `/` (the tests'
/// working directory may be one the server's user cannot enter).
fn pg_sh_command() -> Command {
    let mut cmd = Command::new(PG_SH);
    cmd.env("PG_WAIT_SECS", WAIT.as_secs().to_string())
        .current_dir("/")
        .stdin(Stdio::null());
    cmd
}

/// The directory of the server binaries, from `scripts/pg.sh bindir` (which installs
/// Debian's `postgresql` under `CI=true`, and otherwise names what is missing).
fn find_bindir() -> Result<PathBuf, String> {
    let out = pg_sh_command()
        .arg("bindir")
        .output()
        .map_err(|e| format!("cannot run {PG_SH}: {e}"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !dir.is_empty() {
        return Ok(PathBuf::from(dir));
    }
    Err(format!(
        "the integration tests need PostgreSQL server binaries and never skip; \
         `scripts/pg.sh bindir` failed ({}): {} (or set {} to a server where the role may \
         CREATE DATABASE)",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        crate::DATABASE_URL_ENV
    ))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Polls `ready` with a short, growing interval until it holds or `deadline` passes.
fn poll_until(deadline: Instant, mut ready: impl FnMut() -> bool) -> bool {
    let mut interval = Duration::from_millis(10);
    loop {
        if ready() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((LISTEN_HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port on {LISTEN_HOST}: {e}"))
}

/// Quotes `text` for `/bin/sh` (single quotes, embedded ones escaped).
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn output_text(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim().to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn sh_quote_escapes_single_quotes() {
        assert_eq!(sh_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn poll_until_is_bounded() {
        let start = Instant::now();
        assert!(!poll_until(start + Duration::from_millis(100), || false));
        assert!(start.elapsed() < Duration::from_secs(5));
        let mut calls = 0;
        assert!(poll_until(start + WAIT, || {
            calls += 1;
            calls == 3
        }));
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
