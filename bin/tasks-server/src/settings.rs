//! The service's configuration keys (docs/architecture.md §3), loaded by `tasks-config`.

use std::fmt;

use serde::de::{DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use tasks_auth::AuthSettings;
use tasks_config::{Loaded, Loader, Origin};
use tasks_health::shutdown::ShutdownSettings;
use tasks_postgres::pool::PoolSettings;
use tasks_postgres::settings::DatabaseSettings;
use tasks_runtime::ListenerSettings;
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
    pub admin: ListenerSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// PostgreSQL.
    pub database: DatabaseSection,
    /// Logging.
    pub log: LogSettings,
    /// Who may call the API: OIDC/JWT access tokens and static API tokens.
    pub auth: AuthSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: Http::default(),
            admin: ListenerSettings::on(9090),
            shutdown: ShutdownSettings::default(),
            database: DatabaseSection::default(),
            log: LogSettings::default(),
            auth: AuthSettings {
                realm: "tasks".into(),
                ..AuthSettings::default()
            },
        }
    }
}

/// `database.*`: the reusable section of `tasks-postgres`, plus the keys only this
/// service has, side by side under the same prefix (`database.port`,
/// `database.pipelined_reads`).
///
/// Deserialized by hand: serde's `flatten` would buffer the values and lose the
/// configuration loader's string-to-number conversion (every environment variable is a
/// string) and the key and origin of a bad value. Here this service's keys are taken out
/// of the map and every other entry goes straight to [`DatabaseSettings`].
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseSection {
    /// Where the database is and how to reach it (`database.host`, `database.port`, …).
    #[serde(flatten)]
    pub common: DatabaseSettings,
    /// Serve single-statement reads (get, list) through one
    /// [`tasks_postgres::pipelined::PipelinedReader`] per worker instead of a pooled
    /// connection per request. Writes always use the pool.
    pub pipelined_reads: bool,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            common: DatabaseSettings {
                name: "tasks".into(),
                user: "tasks".into(),
                ..DatabaseSettings::default()
            },
            pipelined_reads: true,
        }
    }
}

impl<'de> Deserialize<'de> for DatabaseSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SectionVisitor)
    }
}

struct SectionVisitor;

impl<'de> Visitor<'de> for SectionVisitor {
    type Value = DatabaseSection;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the database section")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DatabaseSection, A::Error> {
        let mut entries = ServiceKeysTakenOut {
            map,
            pipelined_reads: None,
        };
        let common = DatabaseSettings::deserialize(serde::de::value::MapAccessDeserializer::new(
            &mut entries,
        ))?;
        Ok(DatabaseSection {
            common,
            pipelined_reads: entries
                .pipelined_reads
                .unwrap_or(DatabaseSection::default().pipelined_reads),
        })
    }
}

/// The entries of the `database` map minus this service's own keys, which it reads as
/// they go by.
struct ServiceKeysTakenOut<A> {
    map: A,
    pipelined_reads: Option<bool>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ServiceKeysTakenOut<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            if key == "pipelined_reads" {
                self.pipelined_reads = Some(self.map.next_value()?);
            } else {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
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
    /// How long a client may take to send a request body before it gets 408.
    pub body_timeout_ms: u64,
}

impl Http {
    /// The address the API listener binds.
    #[must_use]
    pub fn listener(&self) -> ListenerSettings {
        ListenerSettings {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            workers: 0,
            max_body_bytes: 65_536,
            client_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
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
    problems.extend(s.http.listener().problems("http", &loaded));
    problems.extend(s.admin.problems("admin", &loaded));
    if s.http.listener().collides_with(&s.admin) {
        problems.push(loaded.problem("admin.port", "must differ from http.port"));
    }
    if s.http.max_body_bytes == 0 {
        problems.push(loaded.problem("http.max_body_bytes", "must be positive"));
    }
    if s.http.body_timeout_ms == 0 {
        problems.push(loaded.problem("http.body_timeout_ms", "must be positive"));
    }
    problems.extend(s.auth.problems("auth", &loaded));
    problems.extend(s.database.common.problems("database", &loaded));
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
    if let Err(error) = tasks_telemetry::OtlpSettings::from_env(crate::IDENTITY.name) {
        problems.push(tasks_config::Problem {
            key: None,
            origin: None,
            message: error.to_string(),
        });
    }
    loaded.reject_if_any(problems)
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
            .common
            .pool_max_size
            .unwrap_or_else(|| (self.workers() * 4).clamp(4, 32))
    }

    /// The pool's settings. `password_origin` is where `database.password` came from:
    /// a secret file is re-read for every new connection.
    #[must_use]
    pub fn pool_settings(&self, password_origin: &Origin) -> PoolSettings {
        self.database
            .common
            .pool_settings("tasks-server", password_origin, self.pool_max_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(env: &[(&str, &str)]) -> Result<Loaded<Settings>, tasks_config::ConfigErrors> {
        Loader::new(ENV_PREFIX)
            .with_env(env.iter().copied())
            .load::<Settings>()
    }

    #[test]
    fn database_keys_of_both_parts_load_from_the_environment() {
        let loaded = load_from(&[
            ("TASKS_DATABASE__PORT", "5433"),
            ("TASKS_DATABASE__POOL_MAX_SIZE", "3"),
            ("TASKS_DATABASE__MIGRATE_ON_START", "false"),
            ("TASKS_DATABASE__PIPELINED_READS", "false"),
        ])
        .expect("loads");
        let database = &loaded.value.database;
        assert_eq!(database.common.port, 5433);
        assert_eq!(database.common.pool_max_size, Some(3));
        assert!(!database.common.migrate_on_start);
        assert!(!database.pipelined_reads);
        assert_eq!(database.common.name, "tasks", "the service's default stays");
    }

    #[test]
    fn defaults_and_problems_name_the_database_keys() {
        let loaded = load_from(&[]).expect("loads");
        assert!(loaded.value.database.pipelined_reads);
        let keys: Vec<String> = loaded.effective().into_iter().map(|(k, ..)| k).collect();
        assert!(
            keys.contains(&"database.pipelined_reads".to_owned()),
            "{keys:?}"
        );
        assert!(keys.contains(&"database.port".to_owned()), "{keys:?}");

        let errors = load_from(&[
            ("TASKS_DATABASE__PORT", "abc"),
            ("TASKS_DATABASE__PIPELINED_READS", "maybe"),
        ])
        .expect_err("bad values");
        let report = errors.to_string();
        assert!(
            report.contains(
                r#"database.port: expected an integer, got "abc" (from TASKS_DATABASE__PORT)"#
            ),
            "{report}"
        );
        assert!(
            report.contains("database.pipelined_reads: ")
                && report.contains("(from TASKS_DATABASE__PIPELINED_READS)"),
            "{report}"
        );
    }
}
