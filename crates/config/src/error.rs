//! Configuration problems, each naming its key and where the value came from.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The compiled default.
    Default,
    /// The configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This file of the secrets directory.
    SecretFile(PathBuf),
    /// The file named by this `PREFIX_<KEY>_FILE` variable.
    FileVar {
        /// The variable's name.
        var: String,
        /// The file it names.
        path: PathBuf,
    },
}

impl Origin {
    /// The path of the file this value was read from, when it came from a secret file or a
    /// `_FILE` variable. Services re-read such files to follow rotated Kubernetes Secrets.
    #[must_use]
    pub fn secret_path(&self) -> Option<&Path> {
        match self {
            Self::SecretFile(path) | Self::FileVar { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether values from here may be quoted in messages (never for secret files).
    pub(crate) fn may_quote(&self) -> bool {
        matches!(self, Self::Env(_) | Self::File(_) | Self::Default)
    }

    // The `config` crate carries origins as strings; these two functions are the encoding.
    pub(crate) fn encode(&self) -> String {
        match self {
            Self::Default => "default:".to_owned(),
            Self::File(p) => format!("file:{}", p.display()),
            Self::Env(var) => format!("env:{var}"),
            Self::SecretFile(p) => format!("secret:{}", p.display()),
            Self::FileVar { var, path } => format!("filevar:{var}={}", path.display()),
        }
    }

    pub(crate) fn decode(origin: Option<&str>) -> Self {
        let Some(origin) = origin else {
            return Self::Default;
        };
        let (kind, rest) = origin.split_once(':').unwrap_or(("file", origin));
        match kind {
            "env" => Self::Env(rest.to_owned()),
            "secret" => Self::SecretFile(rest.into()),
            "filevar" => {
                let (var, path) = rest.split_once('=').unwrap_or((rest, ""));
                Self::FileVar {
                    var: var.to_owned(),
                    path: path.into(),
                }
            }
            "default" => Self::Default,
            // The `config` crate's own file source uses the bare path as its origin.
            _ => Self::File(origin.into()),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(var) => f.write_str(var),
            Self::SecretFile(p) => write!(f, "secret file {}", p.display()),
            Self::FileVar { var, path } => write!(f, "{var}={}", path.display()),
        }
    }
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, when the problem concerns one.
    pub key: Option<String>,
    /// Where the offending value came from, when known.
    pub origin: Option<Origin>,
    /// What is wrong, never quoting a secret.
    pub message: String,
}

impl Problem {
    pub(crate) fn io(path: &Path, error: &std::io::Error) -> Self {
        Self {
            key: None,
            origin: None,
            message: format!("cannot read {}: {error}", path.display()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

/// Every problem found while loading, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{n} configuration problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}
