//! The notes service's configuration, loaded by `tasks-config` with the prefix `NOTES`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tasks_config::{ConfigErrors, Loaded, Loader, Secret};
use tasks_postgres::pool::{Password, PoolSettings};
use tasks_postgres::tls::SslMode;

/// Environment prefix: `NOTES_HTTP__PORT` sets `http.port`.
pub const ENV_PREFIX: &str = "NOTES";
/// Where Kubernetes mounts the service's Secret (`NOTES_SECRETS_DIR` overrides).
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/secrets/notes";

/// Everything the notes service can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The API listener.
    pub http: Listener,
    /// The admin listener: `/livez`, `/readyz`, `/metrics`.
    pub admin: Listener,
    /// The graceful drain.
    pub shutdown: Shutdown,
    /// PostgreSQL.
    pub database: Database,
    /// Logging.
    pub log: Log,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: Listener::on(8081),
            admin: Listener::on(9091),
            shutdown: Shutdown::default(),
            database: Database::default(),
            log: Log::default(),
        }
    }
}

/// A listen address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Listener {
    /// Address to bind.
    pub host: String,
    /// Port to bind.
    pub port: u16,
}

impl Listener {
    fn on(port: u16) -> Self {
        Self {
            host: "0.0.0.0".into(),
            port,
        }
    }
}

impl Default for Listener {
    fn default() -> Self {
        Self::on(0)
    }
}

/// `shutdown.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    /// After SIGTERM: not ready, still serving, for this long.
    pub drain_delay_secs: u64,
    /// Then in-flight requests get this long.
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
    /// Secret: the file `database.password` in the secrets directory.
    pub password: Option<Secret>,
    /// `disable`, `prefer`, `require` or `verify-full`.
    pub sslmode: SslMode,
    /// Most pooled connections.
    pub pool_max_size: usize,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5432,
            name: "notes".into(),
            user: "notes".into(),
            password: None,
            sslmode: SslMode::Prefer,
            pool_max_size: 8,
        }
    }
}

/// `log.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    /// Level or filter directives (`RUST_LOG` wins).
    pub level: String,
    /// `true` for human-readable lines instead of JSON.
    pub pretty: bool,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            pretty: false,
        }
    }
}

/// Loads the settings: defaults < `NOTES_CONFIG_FILE` < `NOTES_*` < the secrets directory.
///
/// # Errors
/// Every configuration problem at once, each with its key and origin.
pub fn load() -> Result<Loaded<Settings>, ConfigErrors> {
    Loader::new(ENV_PREFIX)
        .default_secrets_dir(DEFAULT_SECRETS_DIR)
        .load::<Settings>()
}

impl Settings {
    /// `tasks-telemetry`'s view of `log.*`.
    #[must_use]
    pub fn log_settings(&self) -> tasks_telemetry::LogSettings {
        tasks_telemetry::LogSettings {
            level: self.log.level.clone(),
            format: if self.log.pretty {
                tasks_telemetry::LogFormat::Pretty
            } else {
                tasks_telemetry::LogFormat::Json
            },
        }
    }

    /// `tasks-postgres`'s view of `database.*`. A password that came from a secret file
    /// is re-read from that file for every new connection (rotation without a restart).
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
            max_size: db.pool_max_size,
            application_name: "notes".into(),
            statement_timeout: Duration::from_secs(5),
            ..PoolSettings::default()
        }
    }
}
