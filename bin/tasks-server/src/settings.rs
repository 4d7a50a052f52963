//! The service's configuration keys (DESIGN.md §3), loaded by `tasks-config`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tasks_config::{Loaded, Loader, Secret};
use tasks_storage::pool::{Password, PoolSettings};
use tasks_storage::tls::SslMode;

/// Environment prefix of every key.
pub const ENV_PREFIX: &str = "TASKS";
/// Where Kubernetes mounts the service's Secret.
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/secrets/tasks";

/// Everything `tasks-server` can be told.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The API listener.
    pub http: Http,
    /// The admin listener (probes, metrics).
    pub admin: Admin,
    /// Graceful shutdown.
    pub shutdown: Shutdown,
    /// PostgreSQL.
    pub database: Database,
    /// Logging.
    pub log: Log,
}

/// `http.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Http {
    /// Listen address.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// Worker threads; 0 = available CPUs (honouring the container's CPU quota).
    pub workers: usize,
    /// Largest accepted request body; larger gets 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send its request head before it is cut off.
    pub client_timeout_ms: u64,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            workers: 0,
            max_body_bytes: 65_536,
            client_timeout_ms: 5_000,
        }
    }
}

/// `admin.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Admin {
    /// Listen address of `/livez`, `/readyz`, `/metrics`.
    pub host: String,
    /// Listen port.
    pub port: u16,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 9090,
        }
    }
}

/// `shutdown.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    /// After SIGTERM, readiness fails while traffic is still served for this long.
    pub drain_delay_secs: u64,
    /// Then in-flight requests get this long to finish.
    pub timeout_secs: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain_delay_secs: 5,
            timeout_secs: 20,
        }
    }
}

/// `database.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Database {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// Role.
    pub user: String,
    /// Password (secret: mount it as `database.password` in the secrets directory).
    pub password: Option<Secret>,
    /// `disable`, `prefer`, `require` or `verify-full`.
    pub sslmode: SslMode,
    /// CA bundle for `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// Pool size; default derived from the worker count.
    pub pool_max_size: Option<usize>,
    /// Bound on opening one connection.
    pub connect_timeout_ms: u64,
    /// Server-side statement timeout.
    pub statement_timeout_ms: u64,
    /// How long a request waits for a pooled connection before answering 503.
    pub pool_timeout_ms: u64,
    /// Apply migrations at start-up (under an advisory lock).
    pub migrate_on_start: bool,
    /// Serve reads (get, list) from one pipelined connection per worker instead of a
    /// pooled connection per request (writes always use the pool).
    pub pipelined_reads: bool,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5432,
            name: "tasks".into(),
            user: "tasks".into(),
            password: None,
            sslmode: SslMode::Prefer,
            ca_file: None,
            pool_max_size: None,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 5_000,
            pool_timeout_ms: 2_000,
            migrate_on_start: true,
            pipelined_reads: true,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable.
    Pretty,
}

/// `log.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    /// Level or filter directives; `RUST_LOG` wins when set.
    pub level: String,
    /// `json` or `pretty`.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Loads the settings from the process environment.
///
/// # Errors
/// Every configuration problem at once.
pub fn load() -> Result<Loaded<Settings>, tasks_config::ConfigErrors> {
    let loaded = Loader::new(ENV_PREFIX)
        .default_secrets_dir(DEFAULT_SECRETS_DIR)
        .load::<Settings>()?;
    let mut problems = Vec::new();
    let s = &loaded.value;
    for (key, port) in [
        ("http.port", s.http.port),
        ("admin.port", s.admin.port),
        ("database.port", s.database.port),
    ] {
        if port == 0 {
            problems.push(problem(&loaded, key, "must be between 1 and 65535"));
        }
    }
    if s.http.port == s.admin.port && s.http.host == s.admin.host {
        problems.push(problem(&loaded, "admin.port", "must differ from http.port"));
    }
    if s.http.max_body_bytes == 0 {
        problems.push(problem(&loaded, "http.max_body_bytes", "must be positive"));
    }
    if s.database.pool_max_size == Some(0) {
        problems.push(problem(
            &loaded,
            "database.pool_max_size",
            "must be positive",
        ));
    }
    if s.database.connect_timeout_ms == 0 || s.database.pool_timeout_ms == 0 {
        problems.push(problem(
            &loaded,
            "database.connect_timeout_ms",
            "timeouts must be positive",
        ));
    }
    if let Err(e) =
        tasks_storage::tls::client_config(s.database.sslmode, s.database.ca_file.as_deref())
    {
        problems.push(problem(&loaded, "database.ca_file", &e.to_string()));
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(tasks_config::ConfigErrors { problems })
    }
}

fn problem(loaded: &Loaded<Settings>, key: &str, message: &str) -> tasks_config::Problem {
    let origin = loaded.origin(key);
    tasks_config::Problem {
        key: Some(key.to_owned()),
        origin: (origin != tasks_config::Origin::Default).then_some(origin),
        message: message.to_owned(),
    }
}

impl Settings {
    /// Worker threads: `http.workers`, or the CPUs this process may use (std reads the
    /// cgroup v1/v2 CPU quota, so a container limited to 2 CPUs gets 2).
    #[must_use]
    pub fn workers(&self) -> usize {
        if self.http.workers > 0 {
            self.http.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }

    /// Pool size: `database.pool_max_size`, or enough for every worker to have a few
    /// requests waiting on the database at once.
    #[must_use]
    pub fn pool_max_size(&self) -> usize {
        self.database
            .pool_max_size
            .unwrap_or_else(|| (self.workers() * 4).clamp(4, 32))
    }

    /// The storage crate's view of `database.*`. `password_file` is where the password
    /// was read from, when it came from a file (it is then re-read per connection).
    #[must_use]
    pub fn pool_settings(&self, password_file: Option<PathBuf>) -> PoolSettings {
        let db = &self.database;
        let password = match (&db.password, password_file) {
            (Some(value), Some(path)) => Password::File {
                path,
                fallback: value.expose().into(),
            },
            (Some(value), None) => Password::Value(value.expose().into()),
            (None, _) => Password::None,
        };
        PoolSettings {
            host: db.host.clone(),
            port: db.port,
            name: db.name.clone(),
            user: db.user.clone(),
            password,
            sslmode: db.sslmode,
            ca_file: db.ca_file.clone(),
            max_size: self.pool_max_size(),
            connect_timeout: Duration::from_millis(db.connect_timeout_ms),
            wait_timeout: Duration::from_millis(db.pool_timeout_ms),
            statement_timeout: Duration::from_millis(db.statement_timeout_ms),
            application_name: "tasks-server".into(),
        }
    }
}
