//! OIDC/JWT access tokens: the issuer's keys (fetched, cached, refreshed under a rate
//! limit) and the verification of a token against them, with a cache of verified tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::{AuthError, InvalidToken};
use crate::principal::{AuthMethod, Principal, collect_scopes};

/// The algorithms accepted: asymmetric signatures only. `none` cannot even be named (the
/// header parser refuses it) and HMAC is absent, so a public key can never be used as an
/// HMAC secret.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// What the verifier needs to know.
#[derive(Debug, Clone)]
pub(crate) struct JwtConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_url: Option<String>,
    pub leeway: Duration,
    pub refresh_min_interval: Duration,
    pub max_key_age: Duration,
    pub fetch_timeout: Duration,
    pub cache_size: usize,
}

/// Why fetching the keys failed (logged, never shown to clients).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: not a valid document: {source}")]
    Json {
        url: String,
        source: serde_json::Error,
    },
    #[error("the discovery document names the issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("GET {url}: no usable signing key (asymmetric, for signatures)")]
    NoUsableKeys { url: String },
}

struct VerifyKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    /// Keys by `kid` (keys without one under the empty string).
    keys: HashMap<String, Arc<VerifyKey>>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct RefreshState {
    discovered_jwks_url: Option<String>,
}

enum Refresh {
    /// This caller or a concurrent one installed a new key set.
    Done,
    /// The last attempt was too recent, or it failed.
    NotNow,
}

/// Verifies JWTs for one issuer.
pub(crate) struct JwtVerifier {
    config: JwtConfig,
    realm: Arc<str>,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped each time a key set is installed; lets callers that waited for a refresh
    /// see that someone else already did it.
    generation: AtomicU64,
    /// Whether the most recent fetch failed (the issuer is down or misbehaving).
    last_fetch_failed: AtomicBool,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// When the last fetch started (successful or not): the rate limit's clock.
    last_attempt: Mutex<Option<Instant>>,
    cache: quick_cache::sync::Cache<[u8; 32], Principal>,
    fetches: AtomicU64,
}

#[derive(Deserialize)]
struct Claims {
    // Optional here so that a missing claim is reported by the validation as missing,
    // not as malformed JSON; the validation requires both.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Scp>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scp {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl JwtVerifier {
    pub(crate) fn new(config: JwtConfig, realm: Arc<str>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            // Fetches are rare; no idle connection outlives the runtime that opened it.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("tasks-auth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let cache = quick_cache::sync::Cache::new(config.cache_size.max(1));
        Ok(Self {
            config,
            realm,
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            last_fetch_failed: AtomicBool::new(false),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            last_attempt: Mutex::new(None),
            cache,
            fetches: AtomicU64::new(0),
        })
    }

    fn invalid(&self, reason: InvalidToken) -> AuthError {
        AuthError::InvalidToken {
            reason,
            realm: self.realm.clone(),
        }
    }

    /// How many times the key set was fetched (successfully or not).
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many keys are cached.
    pub(crate) fn key_count(&self) -> usize {
        self.current_keys().keys.len()
    }

    fn current_keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cached principal for a token verified before, unless it has expired since.
    pub(crate) fn cached(&self, cache_key: &[u8; 32]) -> Option<Principal> {
        let principal = self.cache.get(cache_key)?;
        let exp = principal.expires_at_secs().unwrap_or(0);
        if exp.saturating_add(self.config.leeway.as_secs()) >= now_secs() {
            Some(principal)
        } else {
            self.cache.remove(cache_key);
            None
        }
    }

    /// Verifies `token` (a cache miss): header, key, signature, claims.
    pub(crate) async fn verify(
        self: &Arc<Self>,
        token: &str,
        cache_key: [u8; 32],
    ) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // The parser refuses `none` and names it nowhere; say why when we can.
            let named_but_refused =
                raw_alg(token).is_some_and(|alg| !ACCEPTED.iter().any(|a| format!("{a:?}") == alg));
            if named_but_refused {
                self.invalid(InvalidToken::AlgorithmRefused)
            } else {
                self.invalid(InvalidToken::Malformed)
            }
        })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(self.invalid(InvalidToken::AlgorithmRefused));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        // The algorithm is the key's, never the header's alone.
        if !key.algorithms.contains(&header.alg) {
            return Err(self.invalid(InvalidToken::AlgorithmMismatch));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|error| self.invalid(classify(&error)))?;
        let claims = data.claims;
        let (Some(sub), Some(exp)) = (claims.sub.as_deref().filter(|s| !s.is_empty()), claims.exp)
        else {
            return Err(self.invalid(InvalidToken::MissingClaim));
        };
        let scp: Vec<&str> = match &claims.scp {
            Some(Scp::One(s)) => vec![s.as_str()],
            Some(Scp::Many(list)) => list.iter().map(String::as_str).collect(),
            None => Vec::new(),
        };
        let scopes = collect_scopes(claims.scope.as_deref().into_iter().chain(scp));
        let principal = Principal::new(AuthMethod::Jwt, sub, scopes, Some(exp), self.realm.clone());
        self.cache.insert(cache_key, principal.clone());
        Ok(principal)
    }

    /// The key named `kid`, refreshing the key set (rate-limited) when it is unknown.
    async fn key_for(self: &Arc<Self>, kid: Option<&str>) -> Result<Arc<VerifyKey>, AuthError> {
        for attempt in 0..2 {
            let generation = self.generation.load(Ordering::Acquire);
            let set = self.current_keys();
            let found = match kid {
                Some(kid) => set.keys.get(kid).cloned(),
                None if set.keys.len() == 1 => set.keys.values().next().cloned(),
                None if !set.keys.is_empty() => {
                    return Err(self.invalid(InvalidToken::MissingKeyId));
                }
                None => None,
            };
            if let Some(key) = found {
                if set
                    .fetched_at
                    .is_some_and(|at| at.elapsed() >= self.config.max_key_age)
                {
                    self.refresh_in_background(generation);
                }
                return Ok(key);
            }
            if attempt == 1 {
                break;
            }
            if let Refresh::NotNow = self.refresh(generation).await {
                break;
            }
        }
        // The key is not known. With no keys at all, or after a failed fetch, the issuer
        // could not be asked: that is not the token's fault.
        if self.current_keys().keys.is_empty() || self.last_fetch_failed.load(Ordering::Acquire) {
            return Err(AuthError::Unavailable {
                retry_after: self.retry_after(),
            });
        }
        Err(self.invalid(InvalidToken::UnknownKey))
    }

    fn retry_after(&self) -> Duration {
        self.last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(Duration::ZERO, |at| {
                self.config
                    .refresh_min_interval
                    .saturating_sub(at.elapsed())
            })
            .max(Duration::from_secs(1))
    }

    fn refresh_in_background(self: &Arc<Self>, generation: u64) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let this = Arc::clone(self);
            runtime.spawn(async move {
                this.refresh(generation).await;
            });
        }
    }

    /// Fetches the key set unless another caller did since `observed_generation` or the
    /// last attempt is more recent than the minimum interval. Concurrent callers queue on
    /// one lock, so one fetch serves them all.
    async fn refresh(&self, observed_generation: u64) -> Refresh {
        let mut state = self.refresh.lock().await;
        if self.generation.load(Ordering::Acquire) != observed_generation {
            return Refresh::Done;
        }
        {
            let mut last = self
                .last_attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < self.config.refresh_min_interval) {
                return Refresh::NotNow;
            }
            *last = Some(Instant::now());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch(&mut state).await {
            Ok(set) => {
                let old = self.current_keys();
                let removed = old.keys.keys().any(|kid| !set.keys.contains_key(kid));
                tracing::info!(
                    issuer = %self.config.issuer,
                    keys = set.keys.len(),
                    "identity provider signing keys fetched"
                );
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                if removed {
                    // A key the issuer withdrew no longer vouches for anything.
                    self.cache.clear();
                }
                self.last_fetch_failed.store(false, Ordering::Release);
                self.generation.fetch_add(1, Ordering::AcqRel);
                Refresh::Done
            }
            Err(error) => {
                self.last_fetch_failed.store(true, Ordering::Release);
                tracing::warn!(
                    issuer = %self.config.issuer,
                    %error,
                    cached_keys = self.current_keys().keys.len(),
                    "cannot fetch the identity provider's signing keys; cached keys stay in use"
                );
                Refresh::NotNow
            }
        }
    }

    /// Fetches now unless the rate limit forbids it (start-up warm-up).
    pub(crate) async fn warm_up(&self) -> Result<(), AuthError> {
        let generation = self.generation.load(Ordering::Acquire);
        match self.refresh(generation).await {
            Refresh::Done => Ok(()),
            Refresh::NotNow if self.key_count() > 0 => Ok(()),
            Refresh::NotNow => Err(AuthError::Unavailable {
                retry_after: self.retry_after(),
            }),
        }
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<KeySet, FetchError> {
        let url = match (&self.config.jwks_url, &state.discovered_jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = self.get_json(&url).await?;
                if discovery.issuer != self.config.issuer {
                    return Err(FetchError::IssuerMismatch {
                        expected: self.config.issuer.clone(),
                        found: discovery.issuer,
                    });
                }
                state.discovered_jwks_url = Some(discovery.jwks_uri.clone());
                discovery.jwks_uri
            }
        };
        let raw: RawKeySet = self.get_json(&url).await?;
        let mut keys = HashMap::new();
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some((kid, key)) = usable_key(&jwk) {
                keys.insert(kid, Arc::new(key));
            }
        }
        if keys.is_empty() {
            return Err(FetchError::NoUsableKeys { url });
        }
        Ok(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|source| FetchError::Json {
            url: url.to_owned(),
            source,
        })
    }
}

/// The `alg` of a token whose header the JWT parser refused, when it names one (`none`,
/// an unknown algorithm). Only the header is decoded; nothing is verified.
fn raw_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    serde_json::from_slice::<RawHeader>(&bytes).ok()?.alg
}

fn classify(error: &jsonwebtoken::errors::Error) -> InvalidToken {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => InvalidToken::Expired,
        ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
        ErrorKind::InvalidIssuer => InvalidToken::WrongIssuer,
        ErrorKind::InvalidAudience => InvalidToken::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            InvalidToken::AlgorithmMismatch
        }
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            InvalidToken::MissingClaim
        }
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => InvalidToken::BadSignature,
        _ => InvalidToken::Malformed,
    }
}

/// The `kid` and verification key for a JWK the verifier can use: a signing key of an
/// asymmetric type, whose algorithms come from its `alg` (which must fit its type) or,
/// without one, from its type and curve. Symmetric (`oct`) keys, encryption keys and
/// unknown types are skipped.
fn usable_key(jwk: &Jwk) -> Option<(String, VerifyKey)> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &ACCEPTED[..6],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(alg) => {
            let alg = key_algorithm(alg)?;
            if !by_type.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let kid = jwk.common.key_id.clone().unwrap_or_default();
    Some((kid, VerifyKey { key, algorithms }))
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).expect("a JWK")
    }

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        assert!(
            usable_key(&jwk(
                serde_json::json!({"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"h"})
            ))
            .is_none()
        );
        assert!(
            usable_key(&jwk(
                serde_json::json!({"kty":"RSA","n":N,"e":"AQAB","use":"enc","kid":"e"})
            ))
            .is_none()
        );
        // An RSA key claiming an HMAC or EC algorithm is refused, not reinterpreted.
        assert!(
            usable_key(&jwk(
                serde_json::json!({"kty":"RSA","n":N,"e":"AQAB","alg":"HS256","kid":"x"})
            ))
            .is_none()
        );
        assert!(
            usable_key(&jwk(
                serde_json::json!({"kty":"RSA","n":N,"e":"AQAB","alg":"ES256","kid":"x"})
            ))
            .is_none()
        );
    }

    #[test]
    fn the_keys_alg_pins_the_algorithm() {
        let (kid, key) = usable_key(&jwk(
            serde_json::json!({"kty":"RSA","n":N,"e":"AQAB","alg":"RS256","kid":"r1","use":"sig"}),
        ))
        .expect("usable");
        assert_eq!(kid, "r1");
        assert_eq!(key.algorithms, [Algorithm::RS256]);
        let (_, any_rsa) = usable_key(&jwk(
            serde_json::json!({"kty":"RSA","n":N,"e":"AQAB","kid":"r2"}),
        ))
        .expect("usable");
        assert_eq!(any_rsa.algorithms, &ACCEPTED[..6]);
    }

    #[test]
    fn raw_alg_reads_only_the_header() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(raw_alg(&format!("{header}.e30.")).as_deref(), Some("none"));
        assert_eq!(raw_alg("not a token"), None);
    }
}
