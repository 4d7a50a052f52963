//! Layered, typed configuration for services that run on Kubernetes.
//!
//! [`Loader`] fills any `T: Deserialize + Serialize + Default` from these layers, each
//! overriding the ones before it:
//!
//! 1. compiled defaults (`T::default()`);
//! 2. an optional file named by `<PREFIX>_CONFIG_FILE` (TOML, YAML or JSON by extension);
//! 3. environment variables `<PREFIX>_<KEY>`, with `__` between nesting levels
//!    (`TASKS_DATABASE__HOST` sets `database.host`);
//! 4. the secrets directory (`<PREFIX>_SECRETS_DIR`, default chosen by the caller): every
//!    file is one value, its name the dotted key (`database.password`), one trailing
//!    newline trimmed — the layout of a Kubernetes Secret mounted as a volume;
//! 5. `<PREFIX>_<KEY>_FILE=/path`: one key read from the named file.
//!
//! Failure behaviour: loading never stops at the first problem. Unknown keys (a
//! misspelt `TASKS_DATABSE__HOST`), values of the wrong type, unreadable files and
//! unparsable config files are all collected into one [`ConfigErrors`], each naming the
//! dotted key and where the value came from. The one exception: variables shaped like
//! the ones Kubernetes injects for each Service in the namespace (`TASKS_SERVICE_HOST`,
//! `TASKS_PORT_8080_TCP_ADDR`, … for a Service named `tasks`) that map to no key are
//! ignored, so naming a Service after the prefix cannot stop the service from starting. Values from secret files are never quoted,
//! and [`Secret`] values print as `[REDACTED]` everywhere.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tasks_config::{Loader, Secret};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Settings {
//!     listen_port: u16,
//!     api_token: Option<Secret>,
//! }
//!
//! let loaded = Loader::new("NOTES")
//!     .default_secrets_dir("/var/run/secrets/notes")
//!     .with_env([("NOTES_LISTEN_PORT", "8081"), ("NOTES_API_TOKEN", "t0ken")])
//!     .load::<Settings>()
//!     .expect("valid configuration");
//! assert_eq!(loaded.value.listen_port, 8081);
//! assert!(!format!("{:?}", loaded.value).contains("t0ken"));
//!
//! let errors = Loader::new("NOTES")
//!     .with_env([("NOTES_LISTEN_PORT", "abc"), ("NOTES_LISTEN_PROT", "1")])
//!     .load::<Settings>()
//!     .unwrap_err();
//! let report = errors.to_string();
//! assert!(report.contains(r#"listen_port: expected an integer, got "abc" (from NOTES_LISTEN_PORT)"#));
//! assert!(report.contains("listen_prot: unknown configuration key (from NOTES_LISTEN_PROT)"));
//! ```

#![deny(missing_docs)]

mod error;
mod secret;
mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Value, ValueKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{ConfigErrors, Origin, Problem};
pub use secret::{REDACTED, Secret};
pub use sources::SecretsDir;

/// How many distinct value errors one load reports before giving up.
const MAX_VALUE_ERRORS: usize = 64;

/// Loads typed configuration from layered sources. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Loader {
    prefix: String,
    default_secrets_dir: Option<PathBuf>,
    env: Option<Vec<(String, String)>>,
}

/// A loaded configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The typed configuration.
    pub value: T,
    origins: BTreeMap<String, Origin>,
}

impl Loader {
    /// A loader for variables named `<prefix>_…` (`prefix` without the trailing `_`).
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('_').to_owned(),
            default_secrets_dir: None,
            env: None,
        }
    }

    /// The secrets directory used when `<PREFIX>_SECRETS_DIR` is not set.
    /// Without one, only `<PREFIX>_SECRETS_DIR` enables the layer.
    #[must_use]
    pub fn default_secrets_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.default_secrets_dir = Some(dir.into());
        self
    }

    /// Reads these variables instead of the process environment (tests, embedding).
    #[must_use]
    pub fn with_env<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The environment variable naming the optional configuration file.
    #[must_use]
    pub fn config_file_var(&self) -> String {
        format!("{}_CONFIG_FILE", self.prefix)
    }

    /// The environment variable naming the secrets directory.
    #[must_use]
    pub fn secrets_dir_var(&self) -> String {
        format!("{}_SECRETS_DIR", self.prefix)
    }

    fn vars(&self) -> (Vec<(String, String)>, Vec<Problem>) {
        if let Some(env) = &self.env {
            return (env.clone(), Vec::new());
        }
        let head = format!("{}_", self.prefix);
        let mut vars = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in std::env::vars_os() {
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => vars.push((name, value)),
                (Ok(name), Err(_)) if name.starts_with(&head) => problems.push(Problem {
                    key: None,
                    origin: Some(Origin::Env(name)),
                    message: "value is not valid UTF-8".to_owned(),
                }),
                _ => {}
            }
        }
        (vars, problems)
    }

    /// Loads `T`, reporting every problem at once.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing unknown keys, ill-typed values, unreadable files and
    /// unparsable configuration files, each with its key and origin.
    pub fn load<T>(&self) -> Result<Loaded<T>, ConfigErrors>
    where
        T: DeserializeOwned + Serialize + Default,
    {
        let defaults = Config::try_from(&T::default()).map_err(|e| single(None, &e))?;
        let known = leaf_keys(&defaults).map_err(|e| single(None, &e))?;

        let (vars, mut problems) = self.vars();
        let lookup = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let reserved = [self.config_file_var(), self.secrets_dir_var()];
        let (env, indirections) = sources::split_env(&self.prefix, vars.clone(), &known, &reserved);

        let mut builder = Config::builder().add_source(defaults.clone());
        let config_file = lookup(&reserved[0]).filter(|p| !p.is_empty());
        if let Some(path) = &config_file {
            if Path::new(&path).is_file() {
                builder = builder.add_source(config::File::with_name(path).required(true));
            } else {
                problems.push(Problem {
                    key: None,
                    origin: Some(Origin::Env(reserved[0].clone())),
                    message: format!("configuration file {path} does not exist"),
                });
            }
        }
        builder = builder.add_source(env);

        let secrets_dir = lookup(&reserved[1])
            .map(PathBuf::from)
            .or_else(|| self.default_secrets_dir.clone());
        if let Some(dir) = secrets_dir {
            let (values, read_problems) = SecretsDir::new(dir).read();
            problems.extend(read_problems);
            builder = builder.add_source(values);
        }

        let mut file_vars = Vec::new();
        for (key, var, path) in indirections {
            match sources::read_value(&path) {
                Ok(value) => file_vars.push((key, Origin::FileVar { var, path }, value)),
                Err(mut problem) => {
                    problem.key = Some(key);
                    problem.origin = Some(Origin::Env(var));
                    problems.push(problem);
                }
            }
        }
        builder = builder.add_source(sources::TaggedValues { entries: file_vars });

        let merged = match builder.clone().build() {
            Ok(merged) => merged,
            Err(e) => {
                problems.push(problem_from(&e));
                return Err(ConfigErrors { problems });
            }
        };
        let mut origins = leaf_origins(&merged).map_err(|e| single(None, &e))?;
        // The `config` crate records the file's path relative to the working directory;
        // report it as the user wrote it.
        let named_file = |origin: &mut Origin| {
            if let (Origin::File(path), Some(given)) = (origin, &config_file) {
                *path = PathBuf::from(given);
            }
        };
        origins.values_mut().for_each(named_file);
        for (key, origin) in &origins {
            if !known.contains(key) {
                problems.push(Problem {
                    key: Some(key.clone()),
                    origin: Some(origin.clone()),
                    message: "unknown configuration key".to_owned(),
                });
            }
        }

        // Deserialize; on each value error, note it and put the default back so the next
        // attempt can find the following one.
        let mut attempt = merged;
        let mut retried = BTreeSet::new();
        for _ in 0..MAX_VALUE_ERRORS {
            problems
                .iter_mut()
                .filter_map(|p| p.origin.as_mut())
                .for_each(named_file);
            match attempt.clone().try_deserialize::<T>() {
                Ok(value) if problems.is_empty() => return Ok(Loaded { value, origins }),
                Ok(_) => return Err(ConfigErrors { problems }),
                Err(e) => {
                    let mut problem = problem_from(&e);
                    if problem.origin.is_none() {
                        problem.origin = problem.key.as_ref().and_then(|k| origins.get(k)).cloned();
                    }
                    if let Some(value) = problem
                        .message
                        .strip_prefix("enum ")
                        .and_then(|m| m.split_once(" does not have variant constructor "))
                        .map(|(_, v)| v.to_owned())
                    {
                        problem.message = match &problem.origin {
                            Some(origin) if origin.may_quote() => {
                                format!("invalid value \"{value}\"")
                            }
                            _ => "invalid value".to_owned(),
                        };
                    }
                    let Some(key) = problem.key.clone() else {
                        problems.push(problem);
                        return Err(ConfigErrors { problems });
                    };
                    problems.push(problem);
                    if !retried.insert(key.clone()) {
                        return Err(ConfigErrors { problems });
                    }
                    let fallback = defaults
                        .get::<Value>(&key)
                        .unwrap_or_else(|_| Value::new(None, ValueKind::Nil));
                    builder = builder
                        .set_override(&key, fallback)
                        .map_err(|e| single(Some(&key), &e))?;
                    attempt = match builder.clone().build() {
                        Ok(next) => next,
                        Err(e) => {
                            problems.push(problem_from(&e));
                            return Err(ConfigErrors { problems });
                        }
                    };
                }
            }
        }
        Err(ConfigErrors { problems })
    }
}

impl<T> Loaded<T> {
    /// Where the value of `key` came from ([`Origin::Default`] when no layer set it).
    #[must_use]
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Every key that some layer set, with its origin.
    #[must_use]
    pub fn origins(&self) -> &BTreeMap<String, Origin> {
        &self.origins
    }

    /// A problem about `key` found after loading (a range or cross-field rule), naming
    /// where the key's value came from so it reads like the loader's own problems.
    #[must_use]
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        let origin = self.origin(key);
        Problem {
            key: Some(key.to_owned()),
            origin: (origin != Origin::Default).then_some(origin),
            message: message.into(),
        }
    }

    /// Rejects the configuration if any of `problems` (found by the service's own rules
    /// after [`Loader::load`]) is there: `Ok(self)` when `problems` is empty, otherwise
    /// all of them as one error.
    ///
    /// # Errors
    /// [`ConfigErrors`] holding `problems`.
    pub fn reject_if_any(self, problems: Vec<Problem>) -> Result<Self, ConfigErrors> {
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigErrors { problems })
        }
    }
}

impl<T: Serialize> Loaded<T> {
    /// The effective configuration as `(key, value, origin)` rows with secrets redacted,
    /// for `check-config`-style output and start-up logs.
    #[must_use]
    pub fn effective(&self) -> Vec<(String, serde_json::Value, Origin)> {
        let mut rows = Vec::new();
        if let Ok(tree) = serde_json::to_value(&self.value) {
            flatten_json("", &tree, &mut rows);
        }
        rows.into_iter()
            .map(|(key, value)| {
                let origin = self.origin(&key);
                (key, value, origin)
            })
            .collect()
    }
}

fn flatten_json(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Vec<(String, serde_json::Value)>,
) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_json(&key, v, out);
            }
        }
        _ => out.push((prefix.to_owned(), value.clone())),
    }
}

fn leaf_keys(config: &Config) -> Result<BTreeSet<String>, ConfigError> {
    Ok(leaf_origins(config)?.into_keys().collect())
}

fn leaf_origins(config: &Config) -> Result<BTreeMap<String, Origin>, ConfigError> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Origin>) {
        match &value.kind {
            ValueKind::Table(table) if !table.is_empty() => {
                for (k, v) in table {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned(), Origin::decode(value.origin()));
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in config::Source::collect(config)? {
        walk(&k, &v, &mut out);
    }
    Ok(out)
}

fn single(key: Option<&str>, error: &ConfigError) -> ConfigErrors {
    let mut problem = problem_from(error);
    if problem.key.is_none() {
        problem.key = key.map(str::to_owned);
    }
    ConfigErrors {
        problems: vec![problem],
    }
}

/// Turns the `config` crate's error into a [`Problem`] that names the key and origin and
/// quotes the offending value only when it did not come from a secret file.
/// A parser's message without the excerpt of the file some parsers add (TOML quotes the
/// offending line, which may hold a password): the lines that point into the source
/// (`3 | password = "…`, `  |     ^`) are dropped, the position and the reason kept.
fn parse_cause(cause: &(dyn std::error::Error + Send + Sync)) -> String {
    let text = cause.to_string();
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| {
            let before_bar = line.split('|').next().unwrap_or("");
            !(line.contains('|') && before_bar.trim().chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    kept.join(": ")
}

fn problem_from(error: &ConfigError) -> Problem {
    match error {
        ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => {
            let origin = Origin::decode(origin.as_deref());
            let expected = if expected.contains("integer") {
                "an integer"
            } else {
                expected
            };
            let got = unexpected.to_string();
            let got = match got.strip_prefix("string ") {
                Some(quoted) if origin.may_quote() => quoted.to_owned(),
                Some(_) => "a string".to_owned(),
                None => got,
            };
            Problem {
                key: key.clone(),
                origin: (origin != Origin::Default).then_some(origin),
                message: format!("expected {expected}, got {got}"),
            }
        }
        ConfigError::At { error, origin, key } => {
            let origin = Origin::decode(origin.as_deref());
            let inner = problem_from(error);
            Problem {
                key: key.clone().or(inner.key),
                origin: (origin != Origin::Default).then_some(origin),
                message: inner.message,
            }
        }
        ConfigError::FileParse { uri, cause } => Problem {
            key: None,
            origin: uri.as_ref().map(|u| Origin::File(u.into())),
            message: format!("cannot parse configuration file: {}", parse_cause(&**cause)),
        },
        ConfigError::NotFound(key) => Problem {
            key: Some(key.clone()),
            origin: None,
            message: "missing value".to_owned(),
        },
        other => Problem {
            key: None,
            origin: None,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
