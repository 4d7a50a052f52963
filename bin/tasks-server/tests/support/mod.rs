//! Runs the real `tasks-server` binary for end-to-end tests.
//!
//! Shared by the integration tests in this folder (`mod support;`). The whole API:
//!
//! * [`Server::start`]: a fresh database, a server on two free loopback ports, returned
//!   once `GET /readyz` answers 200 (at most 30 s, else a panic showing the server log).
//! * [`Server::start_without_waiting`]: the same without the readiness wait (for servers
//!   whose database is unreachable on purpose).
//! * [`Server::spawn`]: start a server on a database you already have (e.g. a second
//!   server on the same data), then [`Server::wait_ready`] if you want.
//! * [`Server::sigterm`], [`Server::wait_exit`], [`Server::log`]; dropping a [`Server`]
//!   kills the process.
//!
//! Every server gets `TASKS_HTTP__HOST`/`TASKS_ADMIN__HOST=127.0.0.1`, its two ports,
//! `TASKS_LOG__FORMAT=json`, `TASKS_HTTP__WORKERS=2`, `TASKS_SHUTDOWN__DRAIN_DELAY_SECS=0`,
//! the database's `TASKS_DATABASE__*` and `TASKS_SECRETS_DIR` pointing at an empty
//! temporary directory; `extra_env` is applied last and overrides any of them. Every
//! other `TASKS_*` and `OTEL_*` variable of the test process is removed, so the
//! developer's environment cannot leak in. Standard output and error go to one log file.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tasks_test_support::TestDatabase;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tasks-server");

/// How long [`Server::wait_ready`] waits for `GET /readyz` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `tasks-server` process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Base URL of the API listener: `http://127.0.0.1:PORT` (no trailing slash).
    pub api: String,
    /// Base URL of the admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin: String,
    /// The database the server was given.
    pub db: TestDatabase,
    log_path: PathBuf,
    // Holds the secrets directory and the log file; removed on drop.
    _dir: tempfile::TempDir,
}

/// Two distinct free loopback ports (bound, then released for the server to take).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let ports = (
        a.local_addr().expect("local address").port(),
        b.local_addr().expect("local address").port(),
    );
    drop((a, b));
    ports
}

impl Server {
    /// A server on a fresh database, ready (`/readyz` 200).
    pub async fn start(extra_env: &[(&str, &str)]) -> Self {
        let mut server = Self::start_without_waiting(extra_env).await;
        server.wait_ready().await;
        server
    }

    /// A server on a fresh database, returned as soon as the process is spawned.
    pub async fn start_without_waiting(extra_env: &[(&str, &str)]) -> Self {
        let db = tasks_test_support::fresh_database().await;
        Self::spawn(db, extra_env)
    }

    /// Spawns a server on `db` without waiting for it.
    pub fn spawn(db: TestDatabase, extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).expect("create the secrets directory");
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path).expect("create the log file");
        let (api_port, admin_port) = free_ports();

        let mut env: BTreeMap<String, String> = [
            ("TASKS_HTTP__HOST", "127.0.0.1".to_owned()),
            ("TASKS_HTTP__PORT", api_port.to_string()),
            ("TASKS_ADMIN__HOST", "127.0.0.1".to_owned()),
            ("TASKS_ADMIN__PORT", admin_port.to_string()),
            ("TASKS_LOG__FORMAT", "json".to_owned()),
            ("TASKS_HTTP__WORKERS", "2".to_owned()),
            ("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", "0".to_owned()),
            (
                "TASKS_SECRETS_DIR",
                secrets.to_str().expect("UTF-8 temp path").to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(db.env());
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );

        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("TASKS_") || name.starts_with("OTEL_") {
                command.env_remove(&key);
            }
        }
        let child = command
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .expect("spawn tasks-server");

        Self {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            db,
            log_path,
            _dir: dir,
        }
    }

    /// Waits until `GET {admin}/readyz` answers 200; panics with the server log when the
    /// process exits first or [`READY_TIMEOUT`] passes.
    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let url = format!("{}/readyz", self.admin);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                panic!(
                    "tasks-server exited with {status} before becoming ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "tasks-server not ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill(1)`: the workspace forbids `unsafe`).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server has written to standard output and error so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read the server log: {e}>"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
