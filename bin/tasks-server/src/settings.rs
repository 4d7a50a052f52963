//! The service's configuration keys (docs/architecture.md §3), loaded by `tasks-config`.

use serde::{Deserialize, Serialize};
use tasks_config::{Loaded, Loader, Origin};
use tasks_health::shutdown::ShutdownSettings;
use tasks_storage::pool::PoolSettings;
use tasks_storage::settings::DatabaseSettings;
use tasks_telemetry::LogSettings;

/// Environment prefix of every key.
pub const ENV_PREFIX: &str = "TASKS";
/// Where Kubernetes mounts the service's Secret.
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/secrets/tasks";

/// Everything `tasks-server` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The API listener.
    pub http: Http,
    /// The admin listener (probes, metrics).
    pub admin: Admin,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: Http::default(),
            admin: Admin::default(),
            shutdown: ShutdownSettings::default(),
            database: DatabaseSettings {
                name: "tasks".into(),
                user: "tasks".into(),
                ..DatabaseSettings::default()
            },
            log: LogSettings::default(),
        }
    }
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

/// Loads the settings from the process environment.
///
/// # Errors
/// Every configuration problem at once.
pub fn load() -> Result<Loaded<Settings>, tasks_config::ConfigErrors> {
    let loaded = Loader::new(ENV_PREFIX)
        .default_secrets_dir(DEFAULT_SECRETS_DIR)
        .load::<Settings>()?;
    let s = &loaded.value;
    let mut problems = Vec::new();
    for (key, port) in [("http.port", s.http.port), ("admin.port", s.admin.port)] {
        if port == 0 {
            problems.push(loaded.problem(key, "must be between 1 and 65535"));
        }
    }
    if s.http.port == s.admin.port && s.http.host == s.admin.host {
        problems.push(loaded.problem("admin.port", "must differ from http.port"));
    }
    if s.http.max_body_bytes == 0 {
        problems.push(loaded.problem("http.max_body_bytes", "must be positive"));
    }
    problems.extend(s.database.problems("database", &loaded));
    if let Err(error) = s.log.filter() {
        // `RUST_LOG` wins over `log.level`: name whichever was actually parsed.
        let rust_log = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
        problems.push(if rust_log {
            tasks_config::Problem {
                key: None,
                origin: Some(Origin::Env("RUST_LOG".into())),
                message: error.to_string(),
            }
        } else {
            loaded.problem("log.level", error.to_string())
        });
    }
    // The standard OTEL_* variables are not ours to name keys for, but a bad one stops
    // the service all the same, so `check-config` reports it with the rest.
    if let Err(error) = tasks_telemetry::OtlpSettings::from_env(crate::SERVICE_NAME) {
        problems.push(tasks_config::Problem {
            key: None,
            origin: None,
            message: error.to_string(),
        });
    }
    loaded.checked(problems)
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

    /// The pool's settings. `password_origin` is where `database.password` came from:
    /// a secret file is re-read for every new connection.
    #[must_use]
    pub fn pool_settings(&self, password_origin: &Origin) -> PoolSettings {
        self.database
            .pool_settings("tasks-server", password_origin, self.pool_max_size())
    }
}
