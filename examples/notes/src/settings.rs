//! The notes service's configuration, loaded by `tasks-config` with the prefix `NOTES`.

use serde::{Deserialize, Serialize};
use tasks_auth::AuthSettings;
use tasks_config::{ConfigErrors, Loaded, Loader, Origin};
use tasks_health::shutdown::ShutdownSettings;
use tasks_postgres::pool::PoolSettings;
use tasks_postgres::settings::DatabaseSettings;
use tasks_runtime::ListenerSettings;
use tasks_telemetry::LogSettings;

/// Environment prefix: `NOTES_HTTP__PORT` sets `http.port`.
pub const ENV_PREFIX: &str = "NOTES";
/// Where Kubernetes mounts the service's Secret (`NOTES_SECRETS_DIR` overrides).
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/secrets/notes";
/// Pooled connections when `database.pool_max_size` is not set.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Everything the notes service can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The API listener.
    pub http: ListenerSettings,
    /// The admin listener: `/livez`, `/readyz`, `/metrics`.
    pub admin: ListenerSettings,
    /// The graceful drain.
    pub shutdown: ShutdownSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
    /// Who may call the API (`tasks-auth`).
    pub auth: AuthSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: ListenerSettings::on(8081),
            admin: ListenerSettings::on(9091),
            shutdown: ShutdownSettings::default(),
            database: DatabaseSettings {
                name: "notes".into(),
                user: "notes".into(),
                ..DatabaseSettings::default()
            },
            log: LogSettings::default(),
            auth: AuthSettings {
                realm: "notes".into(),
                ..AuthSettings::default()
            },
        }
    }
}

/// Loads the settings: defaults < `NOTES_CONFIG_FILE` < `NOTES_*` < the secrets directory.
///
/// # Errors
/// Every configuration problem at once, each with its key and origin.
pub fn load() -> Result<Loaded<Settings>, ConfigErrors> {
    let loaded = Loader::new(ENV_PREFIX)
        .default_secrets_dir(DEFAULT_SECRETS_DIR)
        .load::<Settings>()?;
    let settings = &loaded.value;
    let mut problems = settings.database.problems("database", &loaded);
    problems.extend(settings.http.problems("http", &loaded));
    problems.extend(settings.admin.problems("admin", &loaded));
    problems.extend(settings.auth.problems("auth", &loaded));
    if settings.http.collides_with(&settings.admin) {
        problems.push(loaded.problem("admin.port", "must differ from http.port"));
    }
    loaded.reject_if_any(problems)
}

impl Settings {
    /// The pool's settings. A password that came from a secret file is re-read from
    /// that file for every new connection (rotation without a restart).
    #[must_use]
    pub fn pool_settings(&self, password_origin: &Origin) -> PoolSettings {
        self.database
            .pool_settings("notes", password_origin, DEFAULT_POOL_SIZE)
    }
}
