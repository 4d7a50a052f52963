//! A service binary run as a real process, for what only a process shows: signals, exit
//! codes, configuration errors, what it writes to standard output.
//!
//! [`ServiceCommand`] describes the run, generic over the binary and its configuration
//! prefix (`TASKS`, `NOTES`, …):
//!
//! * every `<PREFIX>_*` and `OTEL_*` variable of the test process is removed (more prefixes
//!   with [`ServiceCommand::scrub`], everything with [`ServiceCommand::clear_env`]), so the
//!   developer's environment cannot leak in;
//! * `<PREFIX>_SECRETS_DIR` names an empty temporary directory, holding the files given to
//!   [`ServiceCommand::secret_file`];
//! * [`ServiceCommand::spawn`] starts a service: `<PREFIX>_HTTP__HOST`/`_ADMIN__HOST` are
//!   `127.0.0.1`, `<PREFIX>_HTTP__PORT`/`_ADMIN__PORT` two free ports, standard output and
//!   error go to one log file; [`ServiceCommand::output`] runs a one-shot subcommand to
//!   completion instead;
//! * variables given with [`ServiceCommand::env`] are applied last and override all of it.
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use tasks_test_support::process::ServiceCommand;
//!
//! let mut service = ServiceCommand::new("target/debug/notes-service", "NOTES")
//!     .env("NOTES_SHUTDOWN__DRAIN_DELAY_SECS", "0")
//!     .spawn();
//! service.wait_ready().await;
//! service.sigterm();
//! let status = service.wait_exit(Duration::from_secs(10)).await.expect("exited");
//! assert!(status.success(), "{}", service.log());
//! # }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::http::{HttpClient, StatusCode};
use crate::poll::poll_until;

/// How long [`ServiceProcess::wait_ready`] waits for `GET /readyz` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How a service binary is to be run; see the [module documentation](self).
#[derive(Clone)]
pub struct ServiceCommand {
    binary: PathBuf,
    prefix: String,
    args: Vec<OsString>,
    env: BTreeMap<String, String>,
    scrubbed: Vec<String>,
    clear_env: bool,
    secret_files: Vec<(String, String)>,
    env_files: Vec<(String, String)>,
    bearer: Option<String>,
}

impl std::fmt::Debug for ServiceCommand {
    // Values may be secrets (passwords, tokens): only names.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCommand")
            .field("binary", &self.binary)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field(
                "secret_files",
                &self.secret_files.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "env_files",
                &self.env_files.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ServiceCommand {
    /// Runs `binary`, configured through variables starting with `<prefix>_`.
    pub fn new(binary: impl Into<PathBuf>, prefix: &str) -> Self {
        Self {
            binary: binary.into(),
            prefix: prefix.to_owned(),
            args: Vec::new(),
            env: BTreeMap::new(),
            scrubbed: vec![format!("{prefix}_"), "OTEL_".to_owned()],
            clear_env: false,
            secret_files: Vec::new(),
            env_files: Vec::new(),
            bearer: None,
        }
    }

    /// Adds a command-line argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds command-line arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable (applied last: it overrides the defaults).
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets variables (applied last: they override the defaults).
    #[must_use]
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Also removes the test process's variables starting with `prefix`.
    #[must_use]
    pub fn scrub(mut self, prefix: &str) -> Self {
        self.scrubbed.push(prefix.to_owned());
        self
    }

    /// Starts from an empty environment: only the variables given here (and the defaults).
    #[must_use]
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// A file `name` holding `contents` in the secrets directory.
    #[must_use]
    pub fn secret_file(mut self, name: impl Into<String>, contents: impl Into<String>) -> Self {
        self.secret_files.push((name.into(), contents.into()));
        self
    }

    /// Writes `contents` to a file of the temporary directory and sets `var` to its path
    /// (`TASKS_AUTH__API_TOKENS_FILE`, …); `env` still overrides it.
    #[must_use]
    pub fn env_file(mut self, var: impl Into<String>, contents: impl Into<String>) -> Self {
        self.env_files.push((var.into(), contents.into()));
        self
    }

    /// The bearer token [`ServiceProcess::api`] sends with every request.
    #[must_use]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// The temporary directory with the secrets directory inside, and the command with
    /// the environment applied except for `defaults` (which come before `self.env`).
    fn prepare(&self, defaults: &[(String, String)]) -> (tempfile::TempDir, Command) {
        let dir = tempfile::tempdir().expect("tasks-test-support: temporary directory");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).expect("tasks-test-support: create the secrets directory");
        for (name, contents) in &self.secret_files {
            std::fs::write(secrets.join(name), contents)
                .expect("tasks-test-support: write a secret file");
        }
        let mut command = Command::new(&self.binary);
        command.args(&self.args).stdin(Stdio::null());
        if self.clear_env {
            command.env_clear();
        } else {
            for (key, _) in std::env::vars_os() {
                let name = key.to_string_lossy();
                if self.scrubbed.iter().any(|p| name.starts_with(p.as_str())) {
                    command.env_remove(&key);
                }
            }
        }
        command.env(format!("{}_SECRETS_DIR", self.prefix), &secrets);
        for (i, (var, contents)) in self.env_files.iter().enumerate() {
            let path = dir.path().join(format!("file-{i}"));
            std::fs::write(&path, contents).expect("tasks-test-support: write a file");
            command.env(var, &path);
        }
        command.envs(defaults.iter().map(|(k, v)| (k, v)));
        command.envs(&self.env);
        (dir, command)
    }

    /// Runs a one-shot subcommand (`check-config`, `--version`, …) to completion; no
    /// listener settings are added.
    pub fn output(self) -> RunOutput {
        let (_dir, mut command) = self.prepare(&[]);
        let output = command.output().unwrap_or_else(|e| {
            panic!(
                "tasks-test-support: cannot run {}: {e}",
                self.binary.display()
            )
        });
        RunOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts the service on two free loopback ports without waiting for it.
    pub fn spawn(self) -> ServiceProcess {
        let [api_port, admin_port] = free_ports();
        let p = &self.prefix;
        let defaults = [
            (format!("{p}_HTTP__HOST"), "127.0.0.1".to_owned()),
            (format!("{p}_HTTP__PORT"), api_port.to_string()),
            (format!("{p}_ADMIN__HOST"), "127.0.0.1".to_owned()),
            (format!("{p}_ADMIN__PORT"), admin_port.to_string()),
        ];
        let (dir, mut command) = self.prepare(&defaults);
        let log_path = dir.path().join("service.log");
        let log = File::create(&log_path).expect("tasks-test-support: create the log file");
        let child = command
            .stdout(
                log.try_clone()
                    .expect("tasks-test-support: clone the log file"),
            )
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "tasks-test-support: cannot start {}: {e}",
                    self.binary.display()
                )
            });
        // What the service was told wins over the defaults (a test may pin a port).
        let port_of = |key: String, default: u16| {
            self.env
                .get(&key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let api_port = port_of(format!("{p}_HTTP__PORT"), api_port);
        let admin_port = port_of(format!("{p}_ADMIN__PORT"), admin_port);
        let mut api = HttpClient::new(format!("http://127.0.0.1:{api_port}"));
        if let Some(token) = &self.bearer {
            api = api.with_bearer(token.clone());
        }
        ServiceProcess {
            child,
            name: self.binary.file_name().map_or_else(
                || "service".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            ),
            api,
            admin: HttpClient::new(format!("http://127.0.0.1:{admin_port}")),
            log_path,
            _dir: dir,
        }
    }
}

/// `N` distinct free loopback ports (all held until chosen, then released for the
/// service to take).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("tasks-test-support: bind a free port"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .expect("tasks-test-support: local address")
            .port()
    })
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let [port] = free_ports();
    port
}

/// A finished one-shot run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// Standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl RunOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output followed by standard error.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The exit status and both streams, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "exit {}; stdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A running service process; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    name: String,
    api: HttpClient,
    admin: HttpClient,
    log_path: PathBuf,
    // Holds the secrets directory and the log file; removed on drop.
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// A client of the API listener.
    pub fn api(&self) -> &HttpClient {
        &self.api
    }

    /// A client of the admin listener (`/livez`, `/readyz`, `/metrics`).
    pub fn admin(&self) -> &HttpClient {
        &self.admin
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file (standard output and error).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the service has written to standard output and error so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read the log: {e}>"))
    }

    /// How it exited, if it has (never waits).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .expect("tasks-test-support: poll the service process")
    }

    /// Waits until `GET path` on the admin listener answers `status`; panics with the
    /// log when the process exits first or `within` passes.
    pub async fn wait_for_admin(&mut self, path: &str, status: StatusCode, within: Duration) {
        let admin = self.admin.clone();
        let last = std::cell::Cell::new(None);
        let outcome = poll_until(within, || {
            let exited = self.exited();
            let (admin, last) = (&admin, &last);
            async move {
                if let Some(exit) = exited {
                    return Some(Err(exit));
                }
                last.set(admin.status(path).await);
                (last.get() == Some(status)).then_some(Ok(()))
            }
        })
        .await;
        let last = last.get();
        match outcome {
            Some(Ok(())) => {}
            Some(Err(exit)) => panic!(
                "{} exited with {exit} before GET {path} answered {status}; log:\n{}",
                self.name,
                self.log()
            ),
            None => panic!(
                "{}: GET {path} on the admin listener did not answer {status} within {within:?} \
                 (last: {last:?}); log:\n{}",
                self.name,
                self.log()
            ),
        }
    }

    /// Waits until `GET /readyz` answers 200 (at most [`READY_TIMEOUT`]); panics with the
    /// log when the process exits first or the time runs out.
    pub async fn wait_ready(&mut self) {
        self.wait_for_admin("/readyz", StatusCode::OK, READY_TIMEOUT)
            .await;
    }

    /// Sends SIGTERM (through `kill(1)`: the workspace forbids `unsafe`).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("tasks-test-support: run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits up to `within` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        poll_until(within, || {
            let exited = self.exited();
            async move { exited }
        })
        .await
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports();
        assert!(a != b && b != c && a != c);
        assert_ne!(closed_port(), 0);
    }

    #[test]
    fn output_scrubs_the_prefix_and_sets_the_secrets_dir() {
        let out = ServiceCommand::new("sh", "TASKS")
            .secret_file("database.password", "pw")
            .env_file("TASKS_TOKENS_FILE", "line")
            .env("TASKS_GIVEN", "yes")
            .args([
                "-c",
                "env; ls \"$TASKS_SECRETS_DIR\"; cat \"$TASKS_TOKENS_FILE\"",
            ])
            .output();
        assert!(out.success(), "{}", out.report());
        assert!(out.stdout.contains("TASKS_GIVEN=yes"), "{}", out.stdout);
        assert!(out.stdout.contains("database.password"), "{}", out.stdout);
        assert!(!out.stdout.contains("OTEL_"), "{}", out.stdout);
        assert!(out.stdout.ends_with("line"), "{}", out.stdout);

        let out = ServiceCommand::new("/bin/sh", "TASKS")
            .clear_env()
            .args(["-c", "env"])
            .output();
        let names: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| !["PWD", "SHLVL", "_"].contains(k))
            .collect();
        assert_eq!(names, ["TASKS_SECRETS_DIR"], "{}", out.stdout);
    }

    #[tokio::test]
    async fn a_spawned_process_logs_exits_and_reports_its_status() {
        let mut process = ServiceCommand::new("sh", "TASKS")
            .args([
                "-c",
                "echo \"api on $TASKS_HTTP__HOST:$TASKS_HTTP__PORT\"; exit 3",
            ])
            .spawn();
        let status = process.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert_eq!(status.code(), Some(3));
        let port = process.api().authority().rsplit(':').next().unwrap();
        assert!(
            process.log().contains(&format!("api on 127.0.0.1:{port}")),
            "{}",
            process.log()
        );
    }

    #[tokio::test]
    #[should_panic(expected = "exited with exit status: 1 before GET /readyz answered")]
    async fn waiting_for_a_process_that_exits_fails_with_its_log() {
        let mut process = ServiceCommand::new("sh", "TASKS")
            .args(["-c", "echo boom; exit 1"])
            .spawn();
        process.wait_ready().await;
    }
}
