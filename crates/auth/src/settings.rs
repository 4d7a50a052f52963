//! The `auth.*` configuration section, ready to nest in a service's settings and load with
//! `tasks-config`.
//!
//! API tokens come from a file. Either name it with `api_tokens_file`, or mount a Secret
//! key `auth.api_tokens` in the secrets directory: the loader reads it as the value of
//! `api_tokens`, and [`AuthSettings::authenticator`] (given that key's origin) re-reads
//! that file when it changes, so tokens are added and revoked without a restart.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tasks_config::{Loaded, Origin, Problem, Secret};

use crate::api_tokens::ApiTokenSet;
use crate::authenticator::{Authenticator, BuildError};

/// `auth.*`: who may call the service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// Authenticate requests (default). Turning it off must be explicit: `false` lets
    /// every request in as an anonymous principal holding every scope.
    pub enabled: bool,
    /// The OIDC issuer (`iss`), e.g. `https://login.example.com/realms/main`; https unless
    /// it is a loopback address. Unset: JWTs are not accepted.
    pub issuer: Option<String>,
    /// Accepted audiences (`aud`); a token must name at least one. Required with
    /// `issuer`. A list, or one comma-separated string (for environment variables).
    #[serde(
        deserialize_with = "string_or_list",
        serialize_with = "comma_separated"
    )]
    pub audiences: Vec<String>,
    /// The issuer's JWKS URL; unset: discovered from
    /// `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The API-token file (hashes only; see [`crate::api_tokens`]), re-read when it
    /// changes. From the environment, `<PREFIX>_AUTH__API_TOKENS_FILE` is `tasks-config`'s
    /// `_FILE` indirection for `api_tokens`, which has the same effect.
    pub api_tokens_file: Option<PathBuf>,
    /// The API-token file's content, usually from the Secret key `auth.api_tokens` in the
    /// secrets directory (then re-read from that file on change).
    pub api_tokens: Option<Secret>,
    /// An unknown `kid` refreshes the issuer's keys at most once per this many seconds;
    /// also the wait before retrying an issuer that was down.
    pub jwks_refresh_min_interval_secs: u64,
    /// Keys older than this are refreshed in the background (a withdrawn key stops
    /// working within this time).
    pub jwks_max_age_secs: u64,
    /// Bound on each request to the issuer (discovery and JWKS).
    pub fetch_timeout_ms: u64,
    /// How many verified JWTs are remembered, so a repeated token costs a hash, not a
    /// signature verification.
    pub token_cache_size: usize,
    /// The `realm` of `WWW-Authenticate` challenges.
    pub realm: String,
}

/// Default clock-skew tolerance: 30 s covers the skew of NTP-synchronised machines many
/// times over while keeping an expired token's extra life short.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            issuer: None,
            audiences: Vec::new(),
            jwks_url: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            api_tokens_file: None,
            api_tokens: None,
            jwks_refresh_min_interval_secs: 30,
            jwks_max_age_secs: 3600,
            fetch_timeout_ms: 5000,
            token_cache_size: 10_000,
            realm: "api".to_owned(),
        }
    }
}

/// Audiences are written as one comma-separated string, so the key exists (and can be set
/// from the environment) even when the list is empty.
fn comma_separated<S: serde::Serializer>(
    list: &[String],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&list.join(","))
}

fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Either::Many(list) => list,
    })
}

/// Why `url` is not acceptable for the issuer or its keys: https, or http on a loopback
/// address (local tests), no query or fragment.
fn url_problem(url: &str) -> Option<&'static str> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some("must be an absolute URL");
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Some("must have no query or fragment");
    }
    match parsed.scheme() {
        "https" => None,
        "http" if is_loopback(&parsed) => None,
        "http" => Some("must use https (plain http is allowed only on a loopback address)"),
        _ => Some("must be an https URL"),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl AuthSettings {
    /// The durations as configured.
    fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway_secs)
    }

    /// What is wrong with these values beyond their types, each [`Problem`] naming the key
    /// under `section` (where this struct sits in the service's settings, usually
    /// `"auth"`) and where its value came from. Nothing is checked with authentication
    /// off. Checks: something to authenticate with (an issuer or API tokens); an https
    /// (or loopback http) issuer and JWKS URL; audiences with an issuer; bounded leeway;
    /// positive intervals, timeout and cache size; a realm a header can carry; and an
    /// API-token file that can be read and parsed.
    #[must_use]
    pub fn problems<T>(&self, section: &str, loaded: &Loaded<T>) -> Vec<Problem> {
        let key = |name: &str| format!("{section}.{name}");
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        let has_tokens = self.api_tokens.is_some() || self.api_tokens_file.is_some();
        if self.issuer.is_none() && !has_tokens {
            problems.push(loaded.problem(
                &key("enabled"),
                format!(
                    "authentication is on but nothing can authenticate: set {} (OIDC) or {} \
                     (API tokens), or turn authentication off explicitly with {} = false",
                    key("issuer"),
                    key("api_tokens_file"),
                    key("enabled"),
                ),
            ));
        }
        match &self.issuer {
            Some(issuer) => {
                if let Some(message) = url_problem(issuer) {
                    problems.push(loaded.problem(&key("issuer"), message));
                }
                if self.audiences.is_empty() {
                    problems.push(loaded.problem(
                        &key("audiences"),
                        format!(
                            "required with {}: the audiences a token may name",
                            key("issuer")
                        ),
                    ));
                }
            }
            None => {
                if !self.audiences.is_empty() {
                    problems.push(loaded.problem(
                        &key("audiences"),
                        format!("has no effect without {}", key("issuer")),
                    ));
                }
                if self.jwks_url.is_some() {
                    problems.push(loaded.problem(
                        &key("jwks_url"),
                        format!("has no effect without {}", key("issuer")),
                    ));
                }
            }
        }
        if self.audiences.iter().any(|a| a.trim().is_empty()) {
            problems.push(loaded.problem(&key("audiences"), "must not contain empty entries"));
        }
        if let Some(message) = self.jwks_url.as_deref().and_then(url_problem) {
            problems.push(loaded.problem(&key("jwks_url"), message));
        }
        if self.leeway_secs > 300 {
            problems.push(loaded.problem(&key("leeway_secs"), "must be at most 300 seconds"));
        }
        for (name, value) in [
            (
                "jwks_refresh_min_interval_secs",
                self.jwks_refresh_min_interval_secs,
            ),
            ("jwks_max_age_secs", self.jwks_max_age_secs),
            ("fetch_timeout_ms", self.fetch_timeout_ms),
        ] {
            if value == 0 {
                problems.push(loaded.problem(&key(name), "must be positive"));
            }
        }
        if self.token_cache_size == 0 {
            problems.push(loaded.problem(&key("token_cache_size"), "must be positive"));
        }
        if self.realm.is_empty()
            || !self
                .realm
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            problems.push(loaded.problem(
                &key("realm"),
                "must be non-empty printable ASCII without quotes or backslashes",
            ));
        }
        if self.api_tokens.is_some() && self.api_tokens_file.is_some() {
            problems.push(loaded.problem(
                &key("api_tokens_file"),
                format!(
                    "set either {} or {}, not both",
                    key("api_tokens_file"),
                    key("api_tokens")
                ),
            ));
        } else if let Some(path) = &self.api_tokens_file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let name = path.display().to_string();
                    if let Err(error) = ApiTokenSet::parse(&text, &name, &"".into()) {
                        problems.push(loaded.problem(&key("api_tokens_file"), error.to_string()));
                    }
                }
                Err(error) => problems.push(loaded.problem(
                    &key("api_tokens_file"),
                    format!("cannot read {}: {error}", path.display()),
                )),
            }
        } else if let Some(text) = &self.api_tokens {
            let origin = loaded.origin(&key("api_tokens"));
            let name = origin
                .secret_path()
                .map_or_else(|| key("api_tokens"), |path| path.display().to_string());
            if let Err(error) = ApiTokenSet::parse(text.expose(), &name, &"".into()) {
                problems.push(loaded.problem(&key("api_tokens"), error.to_string()));
            }
        }
        problems
    }

    /// The [`Authenticator`] these settings describe. `api_tokens_origin` is where
    /// `api_tokens` came from (`loaded.origin("auth.api_tokens")`): from a secret file (or
    /// a `_FILE` variable) it is re-read from that file when it changes; a value set any
    /// other way is fixed.
    ///
    /// With `enabled = false` this is [`Authenticator::disabled`], and a warning is logged.
    ///
    /// # Errors
    /// [`BuildError`] when the token file cannot be read or parsed, or the HTTP client
    /// cannot be built. Run [`AuthSettings::problems`] first for friendlier reports.
    pub fn authenticator(&self, api_tokens_origin: &Origin) -> Result<Authenticator, BuildError> {
        if !self.enabled {
            return Ok(Authenticator::disabled(&self.realm));
        }
        let mut builder = Authenticator::builder()
            .realm(&self.realm)
            .leeway(self.leeway())
            .jwks_refresh_min_interval(Duration::from_secs(self.jwks_refresh_min_interval_secs))
            .jwks_max_age(Duration::from_secs(self.jwks_max_age_secs))
            .fetch_timeout(Duration::from_millis(self.fetch_timeout_ms))
            .token_cache_size(self.token_cache_size);
        if let Some(issuer) = &self.issuer {
            builder = builder.oidc(issuer, self.audiences.iter().map(String::as_str));
            if let Some(url) = &self.jwks_url {
                builder = builder.jwks_url(url);
            }
        }
        if let Some(path) = &self.api_tokens_file {
            builder = builder.api_tokens_file(path);
        } else if let Some(text) = &self.api_tokens {
            builder = match api_tokens_origin.secret_path() {
                Some(path) => builder.api_tokens_file(path),
                None => builder.api_tokens_text(text.expose()),
            };
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks_config::Loader;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Service {
        auth: AuthSettings,
    }

    fn load(env: &[(&str, &str)]) -> Loaded<Service> {
        Loader::new("SVC")
            .with_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .load()
            .expect("loads")
    }

    fn problems(env: &[(&str, &str)]) -> Vec<String> {
        let loaded = load(env);
        loaded
            .value
            .auth
            .problems("auth", &loaded)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn authentication_is_on_by_default_and_needs_a_mechanism() {
        let loaded = load(&[]);
        assert!(loaded.value.auth.enabled);
        assert_eq!(loaded.value.auth.leeway_secs, DEFAULT_LEEWAY_SECS);
        let text = problems(&[]);
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(
            text[0].starts_with("auth.enabled: authentication is on but nothing"),
            "{text:#?}"
        );
        assert!(problems(&[("SVC_AUTH__ENABLED", "false")]).is_empty());
    }

    #[test]
    fn an_issuer_needs_https_and_audiences() {
        let text = problems(&[("SVC_AUTH__ISSUER", "http://idp.example.com")]);
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text[0].starts_with("auth.issuer: must use https")
                && text[0].contains("(from SVC_AUTH__ISSUER)"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("auth.audiences: required with auth.issuer"),
            "{text:#?}"
        );

        for issuer in [
            "https://idp.example.com/realms/x",
            "http://127.0.0.1:8080",
            "http://[::1]:1",
            "http://localhost:1",
        ] {
            let text = problems(&[
                ("SVC_AUTH__ISSUER", issuer),
                ("SVC_AUTH__AUDIENCES", "tasks, other"),
            ]);
            assert!(text.is_empty(), "{issuer}: {text:#?}");
        }
        let loaded = load(&[("SVC_AUTH__AUDIENCES", "tasks, other")]);
        assert_eq!(loaded.value.auth.audiences, ["tasks", "other"]);
    }

    #[test]
    fn ranges_and_the_realm_are_checked() {
        let text = problems(&[
            ("SVC_AUTH__ISSUER", "https://idp.example.com"),
            ("SVC_AUTH__AUDIENCES", "tasks"),
            ("SVC_AUTH__JWKS_URL", "ftp://idp.example.com/keys"),
            ("SVC_AUTH__LEEWAY_SECS", "301"),
            ("SVC_AUTH__FETCH_TIMEOUT_MS", "0"),
            ("SVC_AUTH__TOKEN_CACHE_SIZE", "0"),
            ("SVC_AUTH__REALM", "a\"b"),
        ]);
        let keys: Vec<&str> = text.iter().filter_map(|t| t.split(':').next()).collect();
        assert_eq!(
            keys,
            [
                "auth.jwks_url",
                "auth.leeway_secs",
                "auth.fetch_timeout_ms",
                "auth.token_cache_size",
                "auth.realm"
            ],
            "{text:#?}"
        );
    }

    #[test]
    fn a_malformed_token_file_is_reported_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# ok\nci sha256:00 tasks:read\n").expect("write");
        let path = file.to_string_lossy().into_owned();
        // From the environment, the `_FILE` indirection loads `auth.api_tokens`.
        let text = problems(&[("SVC_AUTH__API_TOKENS_FILE", path.as_str())]);
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(
            text[0].starts_with(&format!(
                "auth.api_tokens: {path}:2: expected the token's hash"
            )),
            "{text:#?}"
        );
        // From a configuration file, `auth.api_tokens_file` names it.
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("[auth]\napi_tokens_file = {path:?}\n")).expect("write");
        let config = config.to_string_lossy().into_owned();
        let text = problems(&[("SVC_CONFIG_FILE", config.as_str())]);
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(
            text[0].starts_with(&format!(
                "auth.api_tokens_file: {path}:2: expected the token's hash"
            )),
            "{text:#?}"
        );
    }

    #[test]
    fn tokens_from_the_secrets_directory_are_reread_from_their_file() {
        let secrets = tempfile::tempdir().expect("tempdir");
        let minted = crate::mint_api_token("ci", &["tasks:read"]).expect("mints");
        std::fs::write(
            secrets.path().join("auth.api_tokens"),
            format!("{}\n", minted.line()),
        )
        .expect("write");
        let dir = secrets.path().to_string_lossy().into_owned();
        let loaded = load(&[("SVC_SECRETS_DIR", dir.as_str())]);
        assert!(loaded.value.auth.problems("auth", &loaded).is_empty());
        let effective = format!("{:?}", loaded.effective());
        assert!(
            !effective.contains("sha256:"),
            "token hashes are redacted too: {effective}"
        );
        let origin = loaded.origin("auth.api_tokens");
        assert!(origin.secret_path().is_some());
        let authenticator = loaded.value.auth.authenticator(&origin).expect("builds");
        let principal = authenticator
            .authenticate_api_token(minted.token())
            .expect("accepted");
        assert_eq!(principal.id(), "token:ci");
    }
}
