//! The `database.*` configuration section, ready to nest in a service's settings and load
//! with `tasks-config`.
//!
//! Keys are plain values except `password`, a [`Secret`]: mount it as the file
//! `database.password` in the secrets directory. [`DatabaseSettings::pool_settings`] turns
//! a password that came from a file back into [`Password::File`], so the pool re-reads it
//! for every new connection and a rotated Kubernetes Secret needs no restart.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tasks_config::{Loaded, Origin, Problem, Secret};

use crate::pool::{Password, PoolSettings};
use crate::tls::{SslMode, client_config};

/// `database.*`: where the database is, how to reach it, and how patient to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// Role.
    pub user: String,
    /// Password (a secret: mount it as `database.password` in the secrets directory).
    pub password: Option<Secret>,
    /// `disable`, `prefer`, `require` or `verify-full`.
    pub sslmode: SslMode,
    /// CA bundle for `verify-full` (the bundled Mozilla roots when absent).
    pub ca_file: Option<PathBuf>,
    /// Most pooled connections; when absent the service chooses (see
    /// [`DatabaseSettings::pool_settings`]).
    pub pool_max_size: Option<usize>,
    /// Bound on opening one connection.
    pub connect_timeout_ms: u64,
    /// Server-side `statement_timeout` of every pooled connection.
    pub statement_timeout_ms: u64,
    /// How long a request waits for a pooled connection before failing as unavailable.
    pub pool_timeout_ms: u64,
    /// Apply migrations at start-up (under the advisory lock), rather than wait for
    /// another process to apply them.
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let pool = PoolSettings::default();
        Self {
            host: pool.host,
            port: pool.port,
            name: pool.name,
            user: pool.user,
            password: None,
            sslmode: pool.sslmode,
            ca_file: None,
            pool_max_size: None,
            connect_timeout_ms: millis(pool.connect_timeout),
            statement_timeout_ms: millis(pool.statement_timeout),
            pool_timeout_ms: millis(pool.wait_timeout),
            migrate_on_start: true,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl DatabaseSettings {
    /// The pool's settings. `password_origin` is where `password` came from
    /// (`loaded.origin("database.password")`): a secret file or `_FILE` variable makes
    /// the pool re-read that file for every new connection. `default_max_size` applies
    /// when `pool_max_size` is absent.
    #[must_use]
    pub fn pool_settings(
        &self,
        application_name: &str,
        password_origin: &Origin,
        default_max_size: usize,
    ) -> PoolSettings {
        let password = match (&self.password, password_origin.secret_path()) {
            (Some(value), Some(path)) => Password::File {
                path: path.to_path_buf(),
                fallback: value.expose().into(),
            },
            (Some(value), None) => Password::Value(value.expose().into()),
            (None, _) => Password::None,
        };
        PoolSettings {
            host: self.host.clone(),
            port: self.port,
            name: self.name.clone(),
            user: self.user.clone(),
            password,
            sslmode: self.sslmode,
            ca_file: self.ca_file.clone(),
            max_size: self.pool_max_size.unwrap_or(default_max_size),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            wait_timeout: Duration::from_millis(self.pool_timeout_ms),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            application_name: application_name.to_owned(),
        }
    }

    /// What is wrong with these values beyond their types, each [`Problem`] naming the
    /// key under `section` (where this struct sits in the service's settings, usually
    /// `"database"`) and where its value came from. Checks: the port is not 0, the pool
    /// size and the timeouts that bound waits are positive, and the TLS material for
    /// `sslmode`/`ca_file` is usable.
    #[must_use]
    pub fn problems<T>(&self, section: &str, loaded: &Loaded<T>) -> Vec<Problem> {
        let key = |name: &str| format!("{section}.{name}");
        let mut problems = Vec::new();
        if self.port == 0 {
            problems.push(loaded.problem(&key("port"), "must be between 1 and 65535"));
        }
        if self.pool_max_size == Some(0) {
            problems.push(loaded.problem(&key("pool_max_size"), "must be positive"));
        }
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("pool_timeout_ms", self.pool_timeout_ms),
        ] {
            if value == 0 {
                problems.push(loaded.problem(&key(name), "must be positive"));
            }
        }
        if let Err(error) = client_config(self.sslmode, self.ca_file.as_deref()) {
            problems.push(loaded.problem(&key("ca_file"), error.to_string()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks_config::Loader;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Service {
        database: DatabaseSettings,
    }

    fn load(env: &[(&str, &str)]) -> Loaded<Service> {
        Loader::new("SVC")
            .with_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .load()
            .expect("loads")
    }

    #[test]
    fn defaults_match_the_pool_defaults() {
        let loaded = load(&[]);
        let pool = loaded
            .value
            .database
            .pool_settings("svc", &Origin::Default, 7);
        let defaults = PoolSettings::default();
        assert_eq!(pool.host, defaults.host);
        assert_eq!(pool.connect_timeout, defaults.connect_timeout);
        assert_eq!(pool.wait_timeout, defaults.wait_timeout);
        assert_eq!(pool.statement_timeout, defaults.statement_timeout);
        assert_eq!(pool.max_size, 7, "the service's default size applies");
        assert_eq!(pool.application_name, "svc");
        assert!(matches!(pool.password, Password::None));
    }

    #[test]
    fn environment_values_reach_the_pool() {
        let loaded = load(&[
            ("SVC_DATABASE__HOST", "db.internal"),
            ("SVC_DATABASE__POOL_MAX_SIZE", "3"),
            ("SVC_DATABASE__STATEMENT_TIMEOUT_MS", "250"),
            ("SVC_DATABASE__PASSWORD", "from-env"),
        ]);
        let origin = loaded.origin("database.password");
        let pool = loaded.value.database.pool_settings("svc", &origin, 7);
        assert_eq!(pool.host, "db.internal");
        assert_eq!(pool.max_size, 3);
        assert_eq!(pool.statement_timeout, Duration::from_millis(250));
        assert!(matches!(pool.password, Password::Value(_)));
    }

    #[test]
    fn a_password_from_a_secret_file_is_reread_from_that_file() {
        let secrets = tempfile::tempdir().expect("tempdir");
        let file = secrets.path().join("database.password");
        std::fs::write(&file, "s3cret\n").expect("write");
        let dir = secrets.path().to_string_lossy().into_owned();
        let loaded = load(&[("SVC_SECRETS_DIR", dir.as_str())]);
        let origin = loaded.origin("database.password");
        let pool = loaded.value.database.pool_settings("svc", &origin, 7);
        match pool.password {
            Password::File { path, .. } => assert_eq!(path, file),
            other => panic!("expected a re-read file, got {other:?}"),
        }
    }

    #[test]
    fn problems_name_the_key_and_where_the_value_came_from() {
        let loaded = load(&[
            ("SVC_DATABASE__PORT", "0"),
            ("SVC_DATABASE__POOL_MAX_SIZE", "0"),
            ("SVC_DATABASE__POOL_TIMEOUT_MS", "0"),
            ("SVC_DATABASE__SSLMODE", "verify-full"),
            ("SVC_DATABASE__CA_FILE", "/nonexistent/ca.pem"),
        ]);
        let problems = loaded.value.database.problems("database", &loaded);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 4, "{text:#?}");
        assert!(
            text[0].starts_with(
                "database.port: must be between 1 and 65535 (from SVC_DATABASE__PORT)"
            ),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("database.pool_max_size: must be positive"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("database.pool_timeout_ms: must be positive"),
            "{text:#?}"
        );
        assert!(text[3].starts_with("database.ca_file: "), "{text:#?}");
        assert!(text[3].contains("/nonexistent/ca.pem"), "{text:#?}");
    }

    #[test]
    fn sound_values_have_no_problems() {
        let loaded = load(&[("SVC_DATABASE__SSLMODE", "require")]);
        assert!(
            loaded
                .value
                .database
                .problems("database", &loaded)
                .is_empty()
        );
    }
}
