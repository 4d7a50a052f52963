//! The layers the `config` crate does not provide: `PREFIX_`-environment with the variable
//! name kept as each value's origin, a directory of secret files, and `PREFIX_<KEY>_FILE`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config::{ConfigError, Map, Source, Value, ValueKind};

use crate::error::{Origin, Problem};

/// Values each tagged with where it came from: `PREFIX_` environment variables, the
/// secrets directory, or `PREFIX_<KEY>_FILE` indirections.
#[derive(Debug, Clone)]
pub(crate) struct TaggedValues {
    pub(crate) entries: Vec<(String, Origin, String)>,
}

impl Source for TaggedValues {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        Ok(self
            .entries
            .iter()
            .map(|(key, origin, value)| {
                let origin = origin.encode();
                (
                    key.clone(),
                    Value::new(Some(&origin), ValueKind::String(value.clone())),
                )
            })
            .collect())
    }
}

/// A directory of Kubernetes-style secret files: each file's name is a dotted key and its
/// content (one trailing newline trimmed) the value.
///
/// Entries whose names start with `..` (the `..data` symlinks a Secret volume carries) and
/// directories are skipped. A missing directory yields no values; an unreadable file is a
/// [`Problem`] naming the file.
#[derive(Debug, Clone)]
pub struct SecretsDir {
    dir: PathBuf,
}

impl SecretsDir {
    /// A source reading `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Reads every secret file, collecting every problem instead of stopping at the first.
    pub(crate) fn read(&self) -> (TaggedValues, Vec<Problem>) {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (TaggedValues { entries }, problems);
            }
            Err(e) => {
                problems.push(Problem::io(&self.dir, &e));
                return (TaggedValues { entries }, problems);
            }
        };
        for entry in listing {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(Problem::io(&self.dir, &e));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with("..") || path.is_dir() {
                continue;
            }
            match read_value(&path) {
                Ok(value) => entries.push((name, Origin::SecretFile(path), value)),
                Err(problem) => problems.push(problem),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        (TaggedValues { entries }, problems)
    }
}

impl Source for SecretsDir {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        let (values, problems) = self.read();
        if let Some(problem) = problems.into_iter().next() {
            return Err(ConfigError::Message(problem.to_string()));
        }
        values.collect()
    }
}

/// Reads one value from a file, trimming a single trailing newline (`\n` or `\r\n`).
pub(crate) fn read_value(path: &Path) -> Result<String, Problem> {
    let mut value = std::fs::read_to_string(path).map_err(|e| Problem::io(path, &e))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Splits `PREFIX_*` variables into plain values and `_FILE` indirections.
///
/// `PREFIX_A__B_FILE` is an indirection for `a.b` when `a.b` is a known key; otherwise it is
/// the plain key `a.b_file` (so keys that end in `_file`, like `database.ca_file`, still work).
pub(crate) fn split_env(
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
    known: &BTreeSet<String>,
    reserved: &[String],
) -> (TaggedValues, Vec<(String, String, PathBuf)>) {
    let head = format!("{prefix}_");
    let mut plain = Vec::new();
    let mut indirect = Vec::new();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix(&head) else {
            continue;
        };
        if rest.is_empty() || reserved.contains(&var) {
            continue;
        }
        if let Some(target) = rest.strip_suffix("_FILE") {
            let key = env_key(target);
            if known.contains(&key) {
                indirect.push((key, var, PathBuf::from(value)));
                continue;
            }
        }
        let key = env_key(rest);
        if !known.contains(&key) && is_service_link(rest, &value) {
            continue;
        }
        plain.push((key, var, value));
    }
    plain.sort();
    indirect.sort();
    let entries = plain
        .into_iter()
        .map(|(key, var, value)| (key, Origin::Env(var), value))
        .collect();
    (TaggedValues { entries }, indirect)
}

/// Whether `PREFIX_<rest>=value` has the shape of the variables Kubernetes injects for
/// every Service in the namespace (`<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<NAME>]`,
/// `<SERVICE>_PORT=tcp://…`, `<SERVICE>_PORT_<N>_<PROTO>[_ADDR|_PORT|_PROTO]`): a Service
/// named like the prefix must not make the service refuse to start. The shapes are
/// specific enough that a misspelt key does not match them.
pub(crate) fn is_service_link(rest: &str, value: &str) -> bool {
    // Link names come from Service names, which cannot hold `__`; a nested key (with
    // `__`) that looks like one is a misspelt key, reported as usual.
    if rest.contains("__") {
        return false;
    }
    let name = format!("_{rest}");
    if name.ends_with("_SERVICE_HOST")
        || name.ends_with("_SERVICE_PORT")
        || name.contains("_SERVICE_PORT_")
    {
        return true;
    }
    if name.ends_with("_PORT")
        && ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| value.starts_with(scheme))
    {
        return true;
    }
    // `_PORT_8080_TCP`, optionally followed by `_ADDR`, `_PORT` or `_PROTO`.
    let Some(at) = name.rfind("_PORT_") else {
        return false;
    };
    let mut parts = name[at + "_PORT_".len()..].split('_');
    let number = parts.next().unwrap_or("");
    let protocol = parts.next().unwrap_or("");
    let field = parts.next();
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(field, None | Some("ADDR" | "PORT" | "PROTO"))
        && parts.next().is_none()
}

/// `HTTP__MAX_BODY_BYTES` → `http.max_body_bytes`.
pub(crate) fn env_key(rest: &str) -> String {
    rest.to_ascii_lowercase().replace("__", ".")
}
