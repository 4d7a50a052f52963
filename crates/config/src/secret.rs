//! A string that never shows its value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text every secret prints as, wherever it would otherwise appear.
pub const REDACTED: &str = "[REDACTED]";

/// A secret configuration value (a password, a token).
///
/// `Debug`, `Display` and `Serialize` all print [`REDACTED`], so a secret cannot leak
/// through logs, error messages, panics or the printed effective configuration. The
/// value is zeroized on drop (it is held in a [`secrecy::SecretString`]). Read it only
/// where it is used, with [`Secret::expose`].
///
/// ```
/// use tasks_config::Secret;
///
/// let password = Secret::from("hunter2");
/// assert_eq!(format!("{password:?} {password}"), "[REDACTED] [REDACTED]");
/// assert_eq!(serde_json::to_string(&password).unwrap(), "\"[REDACTED]\"");
/// assert_eq!(password.expose(), "hunter2");
/// ```
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret's value. Call it only at the point of use.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(SecretString::from(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(SecretString::from(value))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}
