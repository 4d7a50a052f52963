//! Why a request was refused, and how to say so in HTTP (RFC 6750 and RFC 9457).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The media type of the problem documents [`AuthError`] renders.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a bearer token was refused. Each reason has a fixed description: nothing from the
/// token ever reaches an answer, a log line or a `Debug` dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidToken {
    /// Not a well-formed JWT (or API token).
    Malformed,
    /// The token's `alg` is `none`, an HMAC algorithm or otherwise not accepted.
    AlgorithmRefused,
    /// The token's `alg` is not one the signing key is for.
    AlgorithmMismatch,
    /// The token names no key (`kid`) and the issuer publishes more than one.
    MissingKeyId,
    /// The issuer publishes no key with the token's `kid`, even after a refresh.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is missing or ill-typed.
    MissingClaim,
    /// No API token with this value is configured (or it was revoked).
    UnknownApiToken,
    /// This kind of token is not accepted here (JWTs without an issuer configured, API
    /// tokens without a token file).
    NotAccepted,
}

impl InvalidToken {
    /// The fixed, human-readable description used in `error_description` and `detail`.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Self::Malformed => "the token is malformed",
            Self::AlgorithmRefused => "the token's signing algorithm is not accepted",
            Self::AlgorithmMismatch => "the token's algorithm does not match its signing key",
            Self::MissingKeyId => "the token does not name its signing key",
            Self::UnknownKey => "the token's signing key is unknown",
            Self::BadSignature => "the token's signature is invalid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token was issued by another issuer",
            Self::WrongAudience => "the token is meant for another audience",
            Self::MissingClaim => "the token lacks a required claim",
            Self::UnknownApiToken => "the API token is unknown or revoked",
            Self::NotAccepted => "this kind of token is not accepted",
        }
    }
}

/// An authentication or authorization failure.
///
/// [`AuthError::status`], [`AuthError::www_authenticate`] and [`AuthError::retry_after`]
/// give what a service needs to render the answer its own way; the [`ResponseError`]
/// implementation renders an RFC 9457 problem document with those headers, so the crate
/// also works alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carries no bearer credentials (no `Authorization` header, or another
    /// scheme). 401 with a challenge and no error code (RFC 6750 §3.1).
    #[error("this request needs a bearer token")]
    MissingCredentials {
        /// The protection realm named in the challenge.
        realm: Arc<str>,
    },
    /// The `Authorization: Bearer` header is malformed (empty, several headers, characters
    /// a bearer token cannot hold). 400 `invalid_request`.
    #[error("malformed Authorization header")]
    InvalidRequest {
        /// The protection realm named in the challenge.
        realm: Arc<str>,
    },
    /// The token was refused. 401 `invalid_token`.
    #[error("invalid bearer token: {}", reason.description())]
    InvalidToken {
        /// Why.
        reason: InvalidToken,
        /// The protection realm named in the challenge.
        realm: Arc<str>,
    },
    /// The principal lacks a scope the operation needs. 403 `insufficient_scope`.
    #[error("this operation needs the scope {scope}")]
    InsufficientScope {
        /// The scope required.
        scope: String,
        /// The protection realm named in the challenge.
        realm: Arc<str>,
    },
    /// The identity provider's signing keys could not be fetched and none are cached, so a
    /// JWT can be neither accepted nor refused. 503 with `Retry-After`: a 401 would make
    /// the client discard a token that may well be valid. API tokens are unaffected.
    #[error("the identity provider is unavailable; retry in {} s", retry_after_secs(*retry_after))]
    Unavailable {
        /// When a new attempt to fetch the keys will be made.
        retry_after: Duration,
    },
    /// The [`crate::Authenticator`] was not registered as application data: a bug in the
    /// service, answered 500.
    #[error("authentication is not configured for this route")]
    NotConfigured,
}

fn retry_after_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

/// A quoted-string for an auth-param (RFC 9110 §5.6.4), dropping characters a header
/// value cannot hold.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c == '\t' || (' '..='~').contains(&c) => out.push(c),
            _ => {}
        }
    }
    out.push('"');
    out
}

impl AuthError {
    /// The HTTP status: 400, 401, 403, 503 or 500 (see each variant).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredentials { .. } | Self::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3) for 400, 401 and 403 answers; `None` for
    /// the others.
    #[must_use]
    pub fn www_authenticate(&self) -> Option<String> {
        let (realm, error, scope) = match self {
            Self::MissingCredentials { realm } => {
                return Some(format!("Bearer realm={}", quoted(realm)));
            }
            Self::InvalidRequest { realm } => (realm, "invalid_request", None),
            Self::InvalidToken { realm, .. } => (realm, "invalid_token", None),
            Self::InsufficientScope { realm, scope } => {
                (realm, "insufficient_scope", Some(scope.as_str()))
            }
            Self::Unavailable { .. } | Self::NotConfigured => return None,
        };
        let description = match self {
            Self::InvalidToken { reason, .. } => reason.description(),
            Self::InsufficientScope { .. } => "the token lacks a scope this operation needs",
            _ => "the Authorization header is malformed",
        };
        let mut value = format!(
            "Bearer realm={}, error=\"{error}\", error_description={}",
            quoted(realm),
            quoted(description)
        );
        if let Some(scope) = scope {
            value.push_str(", scope=");
            value.push_str(&quoted(scope));
        }
        Some(value)
    }

    /// How long the client should wait before retrying, for [`AuthError::Unavailable`].
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The `Retry-After` header value in whole seconds (at least 1), when there is one.
    #[must_use]
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after()
            .map(|duration| retry_after_secs(duration).to_string())
    }

    /// The reason a token was refused, for [`AuthError::InvalidToken`].
    #[must_use]
    pub fn invalid_token_reason(&self) -> Option<InvalidToken> {
        match self {
            Self::InvalidToken { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_JSON);
        if let Some(value) = self
            .www_authenticate()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response.insert_header((header::WWW_AUTHENTICATE, value));
        }
        if let Some(value) = self.retry_after_header() {
            response.insert_header((header::RETRY_AFTER, value));
        }
        response.json(Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> Arc<str> {
        Arc::from("api")
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = AuthError::MissingCredentials { realm: realm() };
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.www_authenticate().as_deref(),
            Some(r#"Bearer realm="api""#)
        );

        let invalid = AuthError::InvalidToken {
            reason: InvalidToken::Expired,
            realm: realm(),
        };
        assert_eq!(
            invalid.www_authenticate().as_deref(),
            Some(
                r#"Bearer realm="api", error="invalid_token", error_description="the token has expired""#
            )
        );

        let scope = AuthError::InsufficientScope {
            scope: "tasks:write".into(),
            realm: realm(),
        };
        assert_eq!(scope.status(), StatusCode::FORBIDDEN);
        let value = scope.www_authenticate().unwrap_or_default();
        assert!(value.contains(r#"error="insufficient_scope""#), "{value}");
        assert!(value.ends_with(r#"scope="tasks:write""#), "{value}");

        let unavailable = AuthError::Unavailable {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.www_authenticate(), None);
        assert_eq!(unavailable.retry_after_header().as_deref(), Some("2"));
    }

    #[test]
    fn quoting_escapes_and_drops_what_a_header_cannot_hold() {
        assert_eq!(quoted("a\"b\\c\nd"), r#""a\"b\\cd""#);
    }
}
