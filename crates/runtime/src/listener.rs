//! A listen address as a configuration section.

use serde::{Deserialize, Serialize};
use tasks_config::{Loaded, Problem};

/// Where a listener binds: a configuration section (`<section>.host`, `<section>.port`)
/// a service nests in its settings as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListenerSettings {
    /// Address to bind (`0.0.0.0` for every interface).
    pub host: String,
    /// Port to bind; 0 picks a free one (tests), which configuration refuses.
    pub port: u16,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self::on(0)
    }
}

impl ListenerSettings {
    /// Every interface, on `port`.
    #[must_use]
    pub fn on(port: u16) -> Self {
        Self {
            host: "0.0.0.0".into(),
            port,
        }
    }

    /// The loopback interface only, on `port`.
    #[must_use]
    pub fn loopback(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// Configuration problems of the section at `key` (e.g. `admin`): a port of 0 is a
    /// typo in configuration, however useful it is to tests.
    #[must_use]
    pub fn problems<T>(&self, key: &str, loaded: &Loaded<T>) -> Vec<Problem> {
        if self.port == 0 {
            vec![loaded.problem(&format!("{key}.port"), "must be between 1 and 65535")]
        } else {
            Vec::new()
        }
    }

    /// Whether two listeners would bind the same address.
    #[must_use]
    pub fn collides_with(&self, other: &Self) -> bool {
        self.port != 0 && self.port == other.port && self.host == other.host
    }
}
