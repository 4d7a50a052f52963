//! Servers started by the harness: finding the binaries, `initdb`, `pg_ctl start`/`stop`,
//! running as an unprivileged user when the tests run as root, and teardown.
//!
//! Teardown at process exit. The shared server lives in a `static`, which is never
//! dropped, and a test process may also die from a signal or an abort. So every server
//! gets a small watchdog child at creation: `sh -c 'cat >/dev/null; pg_ctl stop -m
//! immediate ...; rm -rf <dir>'` whose stdin is a pipe only this process holds the write
//! end of (std opens pipes close-on-exec, so no other child inherits it). When the
//! process exits, however it exits, the kernel closes that end, `cat` sees end-of-file
//! and the watchdog stops the server and removes its directory. Unlike polling
//! `kill -0 <pid>` this reacts at once, costs nothing while the tests run and cannot be
//! fooled by pid reuse. The watchdog has its own process group (a Ctrl-C in the terminal
//! does not kill it before it has cleaned up) and no inherited stdout/stderr (test
//! runners that wait for output pipes to close, like nextest, are not held up). A
//! private server's watchdog is released by `Drop` and waited for.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Servers started here listen on this loopback address only.
pub(crate) const LISTEN_HOST: &str = "127.0.0.1";

/// Unprivileged system user running the server when the tests run as root.
const SYSTEM_USER: &str = "tasks-pg";

/// Bound on every wait for the server to start or stop.
const WAIT: Duration = Duration::from_secs(30);

/// The server binaries the harness needs.
const REQUIRED_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Unix socket paths are limited to 107 bytes; longer directories get no socket.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Attempts to start a new server, each on a fresh free port (another process may take
/// the port between our probe and the server's bind).
const START_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// One cluster in its own temporary directory (`data/`, `server.log`, the socket).
#[derive(Debug)]
pub(crate) struct LocalServer {
    bindir: PathBuf,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    socket_dir: Option<PathBuf>,
    port: u16,
    user: String,
    durable: bool,
    /// `Some` when the tests run as root: the server runs as [`SYSTEM_USER`].
    run_as: Option<Owner>,
    /// Serialises `stop`/`start` calls from concurrent tests.
    control: Mutex<()>,
    watchdog: Mutex<Option<Watchdog>>,
}

impl LocalServer {
    /// Initialises a cluster with superuser `user`/`password` in a new temporary
    /// directory and starts it on a free loopback port. `durable: false` turns `fsync`
    /// and `full_page_writes` off.
    pub(crate) fn launch(user: &str, password: &str, durable: bool) -> Result<Self, String> {
        let bindir = find_bindir()?;
        let run_as = if effective_uid()? == 0 {
            Some(ensure_system_user()?)
        } else {
            None
        };
        let base = temp_base(run_as.is_some())?;
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
        let socket_dir = (root.as_os_str().len() <= MAX_SOCKET_DIR_LEN).then(|| root.clone());
        let mut server = Self {
            log: root.join("server.log"),
            bindir,
            data,
            socket_dir,
            root,
            port: 0,
            user: user.to_owned(),
            durable,
            run_as,
            control: Mutex::new(()),
            watchdog: Mutex::new(None),
        };
        // From here on, dropping `server` (also on error) stops and removes everything.
        server.spawn_watchdog()?;
        if let Some(owner) = server.run_as {
            std::os::unix::fs::chown(&server.root, Some(owner.uid), Some(owner.gid)).map_err(
                |e| {
                    format!(
                        "cannot chown {} to {SYSTEM_USER}: {e}",
                        server.root.display()
                    )
                },
            )?;
        }
        server.initdb(password)?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port()?;
            let log_len = fs::metadata(&server.log).map(|m| m.len()).unwrap_or(0);
            match server.start_stopped() {
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
        if !self.is_running() {
            return Ok(());
        }
        let timeout = WAIT.as_secs().to_string();
        let out = self.run_as_owner(self.tool("pg_ctl"), |cmd| {
            cmd.arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", &timeout]);
        })?;
        if !out.status.success() && self.is_running() {
            return Err(format!(
                "pg_ctl stop failed ({}): {}{}",
                out.status,
                output_text(&out),
                self.log_tail()
            ));
        }
        let deadline = Instant::now() + WAIT;
        if !poll_until(deadline, || !self.is_accepting()) {
            return Err(format!(
                "the server still accepts connections {}s after pg_ctl stop",
                WAIT.as_secs()
            ));
        }
        Ok(())
    }

    /// Starts the server on its data directory and port, waiting until it accepts
    /// connections; when it is running already, only waits for that.
    pub(crate) fn start(&self) -> Result<(), String> {
        let _guard = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_running() {
            return self.wait_ready(Instant::now() + WAIT);
        }
        self.start_stopped()
    }

    /// Whether the server accepts connections: `pg_isready` when installed, else a TCP
    /// connect.
    pub(crate) fn is_accepting(&self) -> bool {
        let pg_isready = self.tool("pg_isready");
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

    fn initdb(&self, password: &str) -> Result<(), String> {
        // The password goes through a file (never a command line); initdb reads its first line.
        let pwfile = self.root.join("pwfile");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .map_err(|e| format!("cannot create {}: {e}", pwfile.display()))?;
        writeln!(file, "{password}")
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        drop(file);
        if let Some(owner) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(owner.uid), Some(owner.gid))
                .map_err(|e| format!("cannot chown {}: {e}", pwfile.display()))?;
        }
        let out = self.run_as_owner(self.tool("initdb"), |cmd| {
            cmd.arg("-D")
                .arg(&self.data)
                .args(["-U", &self.user])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args([
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                // The cluster is throwaway: skip syncing the freshly written files.
                .arg("--no-sync");
        });
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "initdb failed ({}): {}",
                out.status,
                output_text(&out)
            ))
        }
    }

    /// `pg_ctl start` (the server is known to be stopped), then wait for readiness.
    fn start_stopped(&self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let timeout = WAIT.as_secs().to_string();
        let options = self.server_options();
        let out = self.run_as_owner(self.tool("pg_ctl"), |cmd| {
            cmd.arg("start")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", &timeout, "-o", &options]);
        })?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start failed ({}) on port {}: {}{}",
                out.status,
                self.port,
                output_text(&out),
                self.log_tail()
            ));
        }
        self.wait_ready(deadline)
    }

    /// Options for the postmaster. `pg_ctl` hands them to `/bin/sh`, hence the quoting.
    fn server_options(&self) -> String {
        let socket_dir = self
            .socket_dir
            .as_deref()
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut options = format!(
            "-c listen_addresses={LISTEN_HOST} -p {} -k {} -c max_connections=300",
            self.port,
            sh_quote(&socket_dir)
        );
        if !self.durable {
            // Test data need not survive an OS crash: no fsync, no full-page images.
            // A stop/start still keeps every acknowledged write, because a fast (or
            // smart) shutdown writes a checkpoint and the OS keeps the page cache; only
            // a machine crash could lose data. private_server() keeps the defaults
            // (fsync on) for durability tests.
            options.push_str(" -c fsync=off -c full_page_writes=off");
        }
        options
    }

    fn wait_ready(&self, deadline: Instant) -> Result<(), String> {
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

    fn is_running(&self) -> bool {
        self.run_as_owner(self.tool("pg_ctl"), |cmd| {
            cmd.arg("status").arg("-D").arg(&self.data);
        })
        .map(|out| out.status.success())
        .unwrap_or(false)
    }

    fn spawn_watchdog(&self) -> Result<(), String> {
        let stop = format!(
            "{}{} stop -D {} -m immediate -w -t {}",
            if self.run_as.is_some() {
                format!("runuser -u {SYSTEM_USER} -- ")
            } else {
                String::new()
            },
            sh_quote(&self.tool("pg_ctl").to_string_lossy()),
            sh_quote(&self.data.to_string_lossy()),
            WAIT.as_secs()
        );
        let script = format!(
            "cat >/dev/null 2>&1\n[ -f {pid} ] && {stop} >/dev/null 2>&1\nrm -rf -- {root}\n",
            pid = sh_quote(&self.data.join("postmaster.pid").to_string_lossy()),
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

    fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Runs a server binary as the cluster's owner (via `runuser` when we are root).
    fn run_as_owner(
        &self,
        program: PathBuf,
        args: impl FnOnce(&mut Command),
    ) -> Result<Output, String> {
        let mut cmd = if self.run_as.is_some() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SYSTEM_USER, "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        args(&mut cmd);
        // A directory the owner can enter (the tests' working directory may not be).
        cmd.current_dir(&self.root).stdin(Stdio::null());
        cmd.output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))
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

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `PG_BINDIR`, else
/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/<major>/bin`.
fn find_bindir() -> Result<PathBuf, String> {
    let mut checked = Vec::new();
    fn consider(checked: &mut Vec<String>, dir: PathBuf, how: &str) -> Option<PathBuf> {
        let missing: Vec<&str> = REQUIRED_BINARIES
            .iter()
            .copied()
            .filter(|b| !is_executable(&dir.join(b)))
            .collect();
        if missing.is_empty() {
            return Some(dir);
        }
        checked.push(format!(
            "{} ({how}): missing {}",
            dir.display(),
            missing.join(", ")
        ));
        None
    }
    if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|d| !d.is_empty())
        && let Some(found) = consider(&mut checked, PathBuf::from(dir), "PG_BINDIR")
    {
        return Ok(found);
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success()
            && !dir.is_empty()
            && let Some(found) = consider(&mut checked, PathBuf::from(dir), "pg_config --bindir")
        {
            return Ok(found);
        }
    }
    let debian = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(debian)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let version: Option<Vec<u32>> =
                        name.split('.').map(|part| part.parse().ok()).collect();
                    version.map(|v| (v, entry.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    if versions.is_empty() {
        checked.push(format!("{}/<major>/bin: none installed", debian.display()));
    }
    for (_, dir) in versions {
        if let Some(found) = consider(&mut checked, dir, "newest Debian server first") {
            return Ok(found);
        }
    }
    let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
        " (CI=true)"
    } else {
        ""
    };
    Err(format!(
        "PostgreSQL server binaries not found{ci}: the integration tests need {} and never skip. \
         Checked: {}. Install them (Debian/Ubuntu: `apt-get install -y postgresql`, as root), \
         or set PG_BINDIR to a directory holding them, or set {} to a server where the role \
         may CREATE DATABASE.",
        REQUIRED_BINARIES.join(", "),
        checked.join("; "),
        crate::DATABASE_URL_ENV
    ))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective uid, from `id -u` (no libc call needed).
fn effective_uid() -> Result<u32, String> {
    id_number(&["-u"])
        .ok_or_else(|| "cannot determine the effective user id (`id -u` failed)".to_owned())
}

fn id_number(args: &[&str]) -> Option<u32> {
    let out = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn system_user() -> Option<Owner> {
    Some(Owner {
        uid: id_number(&["-u", SYSTEM_USER])?,
        gid: id_number(&["-g", SYSTEM_USER])?,
    })
}

/// `initdb` refuses to run as root: the server runs as the system user `tasks-pg`,
/// created here when missing (concurrent test processes may race: re-check after).
fn ensure_system_user() -> Result<Owner, String> {
    if let Some(owner) = system_user() {
        return Ok(owner);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ])
        .stdin(Stdio::null())
        .output();
    system_user().ok_or_else(|| {
        let detail = match out {
            Ok(out) => output_text(&out),
            Err(e) => e.to_string(),
        };
        format!(
            "running as root, and the system user {SYSTEM_USER} (initdb refuses root) could \
             not be created with useradd: {detail}"
        )
    })
}

/// The base for the server's temporary directory. As root it must be traversable by
/// [`SYSTEM_USER`]; a private `TMPDIR` falls back to `/tmp`.
fn temp_base(as_system_user: bool) -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    if !as_system_user {
        return Ok(base);
    }
    let traversable = |dir: &Path| {
        Command::new("runuser")
            .args(["-u", SYSTEM_USER, "--", "test", "-x"])
            .arg(dir)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if traversable(&base) {
        return Ok(base);
    }
    let fallback = PathBuf::from("/tmp");
    if fs::metadata(&fallback).is_ok_and(|m| m.is_dir() && m.mode() & 0o1777 == 0o1777)
        && traversable(&fallback)
    {
        return Ok(fallback);
    }
    Err(format!(
        "the temporary directory {} is not traversable by {SYSTEM_USER}; set TMPDIR to a \
         directory it can reach",
        base.display()
    ))
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
