//! The [`Authenticator`]: bearer token in, [`Principal`] out.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderValue;

use crate::api_tokens::{ApiTokenStore, ApiTokensError, TOKEN_PREFIX, digest};
use crate::error::{AuthError, InvalidToken};
use crate::jwt::{JwtConfig, JwtVerifier};
use crate::principal::Principal;
use crate::settings::DEFAULT_LEEWAY_SECS;

/// Why an [`Authenticator`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The API-token file cannot be read or parsed.
    #[error(transparent)]
    ApiTokens(#[from] ApiTokensError),
    /// The HTTP client for the issuer cannot be built.
    #[error("cannot build the HTTP client for the identity provider: {0}")]
    Http(#[from] reqwest::Error),
    /// Authentication is on but neither an issuer nor API tokens are configured.
    #[error("nothing to authenticate with: configure an OIDC issuer, API tokens, or both")]
    NothingConfigured,
}

/// Verifies bearer tokens: JWTs from the configured OIDC issuer and static API tokens.
///
/// Cheap to clone (one reference count); register it as application data
/// (`App::app_data(web::Data::new(authenticator))` or `.app_data(authenticator)`) and
/// take a [`Principal`] as a handler argument. Tokens starting with
/// [`TOKEN_PREFIX`](crate::api_tokens::TOKEN_PREFIX) are API tokens, anything else is
/// treated as a JWT.
#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

struct Inner {
    realm: Arc<str>,
    jwt: Option<Arc<JwtVerifier>>,
    api: Option<ApiTokenStore>,
    /// `Some` with authentication off.
    anonymous: Option<Principal>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.0.realm)
            .field("enabled", &self.is_enabled())
            .field("jwt", &self.0.jwt.is_some())
            .field("api_tokens", &self.0.api.as_ref().map(ApiTokenStore::len))
            .finish()
    }
}

impl Authenticator {
    /// A builder for an authenticator with authentication on.
    #[must_use]
    pub fn builder() -> AuthenticatorBuilder {
        AuthenticatorBuilder::default()
    }

    /// Authentication off: every request, with or without credentials, is the anonymous
    /// principal ([`crate::AuthMethod::Disabled`]), which passes every scope check. Logs a
    /// warning, because this must never happen by accident.
    #[must_use]
    pub fn disabled(realm: &str) -> Self {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.enabled = false): every request is let in"
        );
        let realm: Arc<str> = Arc::from(realm);
        Self(Arc::new(Inner {
            anonymous: Some(Principal::anonymous(realm.clone())),
            realm,
            jwt: None,
            api: None,
        }))
    }

    /// Whether requests are authenticated (false only for [`Authenticator::disabled`]).
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.0.anonymous.is_none()
    }

    /// The realm named in challenges.
    #[must_use]
    pub fn realm(&self) -> &str {
        &self.0.realm
    }

    /// How many API tokens are in force (`None` without a token source).
    #[must_use]
    pub fn api_token_count(&self) -> Option<usize> {
        self.0.api.as_ref().map(ApiTokenStore::len)
    }

    /// Why the API-token file's latest version was rejected (a malformed edit, a missing
    /// file): the previous tokens stay in force until it is fixed. `None` when the file in
    /// force is the latest. Worth showing in readiness details.
    #[must_use]
    pub fn api_tokens_reload_error(&self) -> Option<String> {
        self.0.api.as_ref().and_then(ApiTokenStore::reload_error)
    }

    /// How many of the issuer's keys are cached (`None` without an issuer).
    #[must_use]
    pub fn jwks_key_count(&self) -> Option<usize> {
        self.0.jwt.as_ref().map(|jwt| jwt.key_count())
    }

    /// How many times the issuer's key set was fetched, successfully or not (`None`
    /// without an issuer): for metrics and tests.
    #[must_use]
    pub fn jwks_fetch_count(&self) -> Option<u64> {
        self.0.jwt.as_ref().map(|jwt| jwt.fetch_count())
    }

    /// Fetches the issuer's keys now, so the first request does not wait for them. An
    /// unreachable issuer is not fatal: call this at start-up, log the error and serve.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the keys cannot be fetched and none are cached.
    pub async fn warm_up(&self) -> Result<(), AuthError> {
        match &self.0.jwt {
            Some(jwt) => jwt.warm_up().await,
            None => Ok(()),
        }
    }

    fn invalid(&self, reason: InvalidToken) -> AuthError {
        AuthError::InvalidToken {
            reason,
            realm: self.0.realm.clone(),
        }
    }

    /// The principal for an API token, without any I/O beyond the (rate-limited) check of
    /// the token file.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for an unknown or revoked token, or when no API tokens
    /// are configured.
    pub fn authenticate_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(anonymous) = &self.0.anonymous {
            return Ok(anonymous.clone());
        }
        let store = self
            .0
            .api
            .as_ref()
            .ok_or_else(|| self.invalid(InvalidToken::NotAccepted))?;
        store
            .lookup(token)
            .ok_or_else(|| self.invalid(InvalidToken::UnknownApiToken))
    }

    /// The answer for `token` when it needs no waiting: an API token, a JWT verified
    /// before (cached), or a refusal. `Err(cache_key)` means a JWT must be verified.
    fn try_now(&self, token: &str) -> Result<Result<Principal, AuthError>, [u8; 32]> {
        if let Some(anonymous) = &self.0.anonymous {
            return Ok(Ok(anonymous.clone()));
        }
        if token.starts_with(TOKEN_PREFIX) {
            return Ok(self.authenticate_api_token(token));
        }
        let Some(jwt) = &self.0.jwt else {
            return Ok(Err(self.invalid(InvalidToken::NotAccepted)));
        };
        let cache_key = digest(token);
        match jwt.cached(&cache_key) {
            Some(principal) => Ok(Ok(principal)),
            None => Err(cache_key),
        }
    }

    /// The principal for a bearer token (the part after `Bearer `).
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for a refused token, [`AuthError::Unavailable`] when a
    /// JWT cannot be checked because the issuer's keys cannot be fetched.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match self.try_now(token) {
            Ok(answer) => answer,
            Err(cache_key) => self.verify_jwt(token, cache_key).await,
        }
    }

    pub(crate) async fn verify_pending(
        &self,
        token: &str,
        cache_key: [u8; 32],
    ) -> Result<Principal, AuthError> {
        self.verify_jwt(token, cache_key).await
    }

    async fn verify_jwt(&self, token: &str, cache_key: [u8; 32]) -> Result<Principal, AuthError> {
        match &self.0.jwt {
            Some(jwt) => jwt.verify(token, cache_key).await,
            None => Err(self.invalid(InvalidToken::NotAccepted)),
        }
    }

    /// The principal for a request's `Authorization` header values (all of them, in
    /// order).
    ///
    /// # Errors
    /// [`AuthError::MissingCredentials`] without a bearer header,
    /// [`AuthError::InvalidRequest`] for a malformed or repeated one, and the errors of
    /// [`Authenticator::authenticate`].
    pub async fn authenticate_header<'a>(
        &self,
        values: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Result<Principal, AuthError> {
        match self.check_header(values) {
            Checked::Done(answer) => answer,
            Checked::Verify { token, cache_key } => self.verify_jwt(&token, cache_key).await,
        }
    }

    /// Parses the header and answers what needs no waiting; a JWT to verify comes back
    /// as an owned token (the request may not outlive the future).
    pub(crate) fn check_header<'a>(
        &self,
        values: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Checked {
        if let Some(anonymous) = &self.0.anonymous {
            return Checked::Done(Ok(anonymous.clone()));
        }
        let mut values = values.into_iter();
        let Some(value) = values.next() else {
            return Checked::Done(Err(AuthError::MissingCredentials {
                realm: self.0.realm.clone(),
            }));
        };
        let token = match bearer_token(value.as_bytes()) {
            Bearer::Token(token) if values.next().is_none() => token,
            Bearer::OtherScheme if values.next().is_none() => {
                return Checked::Done(Err(AuthError::MissingCredentials {
                    realm: self.0.realm.clone(),
                }));
            }
            _ => {
                return Checked::Done(Err(AuthError::InvalidRequest {
                    realm: self.0.realm.clone(),
                }));
            }
        };
        match self.try_now(token) {
            Ok(answer) => Checked::Done(answer),
            Err(cache_key) => Checked::Verify {
                token: token.to_owned(),
                cache_key,
            },
        }
    }
}

pub(crate) enum Checked {
    Done(Result<Principal, AuthError>),
    Verify { token: String, cache_key: [u8; 32] },
}

enum Bearer<'a> {
    Token(&'a str),
    OtherScheme,
    Malformed,
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1: the scheme is
/// case-insensitive, the token is `b64token`).
fn bearer_token(value: &[u8]) -> Bearer<'_> {
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return if value.eq_ignore_ascii_case(b"bearer") {
            Bearer::Malformed
        } else {
            Bearer::OtherScheme
        };
    };
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Bearer::OtherScheme;
    }
    let token = rest.trim_ascii();
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let valid = body_len > 0
        && token[..body_len]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    match std::str::from_utf8(token) {
        Ok(token) if valid => Bearer::Token(token),
        _ => Bearer::Malformed,
    }
}

/// Builds an [`Authenticator`]; see [`crate::AuthSettings::authenticator`] for building
/// one from configuration.
#[derive(Debug, Clone)]
pub struct AuthenticatorBuilder {
    realm: String,
    issuer: Option<(String, Vec<String>)>,
    jwks_url: Option<String>,
    leeway: Duration,
    refresh_min_interval: Duration,
    max_key_age: Duration,
    fetch_timeout: Duration,
    cache_size: usize,
    api_tokens: Option<TokenSource>,
    reload_interval: Duration,
}

#[derive(Clone)]
enum TokenSource {
    File(PathBuf),
    Text(String),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Text(_) => f.write_str("Text([REDACTED])"),
        }
    }
}

impl Default for AuthenticatorBuilder {
    fn default() -> Self {
        Self {
            realm: "api".to_owned(),
            issuer: None,
            jwks_url: None,
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECS),
            refresh_min_interval: Duration::from_secs(30),
            max_key_age: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
            cache_size: 10_000,
            api_tokens: None,
            reload_interval: Duration::from_secs(1),
        }
    }
}

impl AuthenticatorBuilder {
    /// The realm named in challenges (default `api`).
    #[must_use]
    pub fn realm(mut self, realm: &str) -> Self {
        realm.clone_into(&mut self.realm);
        self
    }

    /// Accept JWTs from `issuer` naming one of `audiences`.
    #[must_use]
    pub fn oidc<'a>(mut self, issuer: &str, audiences: impl IntoIterator<Item = &'a str>) -> Self {
        self.issuer = Some((
            issuer.to_owned(),
            audiences.into_iter().map(str::to_owned).collect(),
        ));
        self
    }

    /// The issuer's JWKS URL (default: discovered from the issuer).
    #[must_use]
    pub fn jwks_url(mut self, url: &str) -> Self {
        self.jwks_url = Some(url.to_owned());
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// At most one key-set fetch per this interval (default 30 s).
    #[must_use]
    pub fn jwks_refresh_min_interval(mut self, interval: Duration) -> Self {
        self.refresh_min_interval = interval;
        self
    }

    /// Keys older than this are refreshed in the background (default 1 h).
    #[must_use]
    pub fn jwks_max_age(mut self, age: Duration) -> Self {
        self.max_key_age = age;
        self
    }

    /// Bound on each request to the issuer (default 5 s).
    #[must_use]
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// How many verified JWTs are remembered (default 10,000).
    #[must_use]
    pub fn token_cache_size(mut self, size: usize) -> Self {
        self.cache_size = size;
        self
    }

    /// API tokens from this file, re-read when it changes.
    #[must_use]
    pub fn api_tokens_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.api_tokens = Some(TokenSource::File(path.into()));
        self
    }

    /// API tokens from this text (the file format), fixed for the authenticator's life.
    #[must_use]
    pub fn api_tokens_text(mut self, text: &str) -> Self {
        self.api_tokens = Some(TokenSource::Text(text.to_owned()));
        self
    }

    /// How often the token file's metadata is checked for a change (default 1 s; the
    /// check happens on a request, never in the background).
    #[must_use]
    pub fn api_tokens_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// The authenticator. Reads the token file now (a bad file is an error here, unlike
    /// on reload); fetches nothing from the issuer (see [`Authenticator::warm_up`]).
    ///
    /// # Errors
    /// [`BuildError`].
    pub fn build(self) -> Result<Authenticator, BuildError> {
        let realm: Arc<str> = Arc::from(self.realm.as_str());
        let api = match self.api_tokens {
            Some(TokenSource::File(path)) => Some(ApiTokenStore::from_file(
                path,
                realm.clone(),
                self.reload_interval,
            )?),
            Some(TokenSource::Text(text)) => Some(ApiTokenStore::inline(&text, realm.clone())?),
            None => None,
        };
        let jwt = match self.issuer {
            Some((issuer, audiences)) => Some(Arc::new(JwtVerifier::new(
                JwtConfig {
                    issuer,
                    audiences,
                    jwks_url: self.jwks_url,
                    leeway: self.leeway,
                    refresh_min_interval: self.refresh_min_interval,
                    max_key_age: self.max_key_age,
                    fetch_timeout: self.fetch_timeout,
                    cache_size: self.cache_size,
                },
                realm.clone(),
            )?)),
            None => None,
        };
        if jwt.is_none() && api.is_none() {
            return Err(BuildError::NothingConfigured);
        }
        Ok(Authenticator(Arc::new(Inner {
            realm,
            jwt,
            api,
            anonymous: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert!(matches!(
            bearer_token(b"Bearer abc.def-_~+/=="),
            Bearer::Token("abc.def-_~+/==")
        ));
        assert!(matches!(
            bearer_token(b"bearer   tkn_x"),
            Bearer::Token("tkn_x")
        ));
        assert!(matches!(
            bearer_token(b"Basic dXNlcjpwdw=="),
            Bearer::OtherScheme
        ));
        assert!(matches!(bearer_token(b"Token"), Bearer::OtherScheme));
        assert!(matches!(bearer_token(b"Bearer"), Bearer::Malformed));
        assert!(matches!(bearer_token(b"Bearer "), Bearer::Malformed));
        assert!(matches!(bearer_token(b"Bearer a b"), Bearer::Malformed));
        assert!(matches!(bearer_token(b"Bearer =="), Bearer::Malformed));
        assert!(matches!(
            bearer_token("Bearer é".as_bytes()),
            Bearer::Malformed
        ));
    }
}
