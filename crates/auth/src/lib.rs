//! Bearer authentication for actix-web services, independent of what the service does.
//!
//! - **OIDC/JWT access tokens**, verified with `jsonwebtoken` against the issuer's JWKS
//!   (configured, or discovered from `<issuer>/.well-known/openid-configuration`).
//!   Asymmetric algorithms only (RS256/384/512, PS256/384/512, ES256/384, EdDSA); `none`
//!   and HMAC are refused, and the algorithm must be one the key is for (its `alg`, or its
//!   type and curve), so a token's header cannot choose how it is checked. `iss`, `aud`,
//!   `exp` and `nbf` are checked with a small leeway (30 s by default).
//! - **Keys** are cached; a token naming an unknown `kid` refreshes them, at most once per
//!   minimum interval, with concurrent callers sharing one fetch — so an issuer's key
//!   rotation needs no restart and random `kid`s cannot flood the issuer. An issuer that
//!   is down later changes nothing (cached keys keep working); one that has never
//!   answered makes JWTs fail with [`AuthError::Unavailable`] (503 + `Retry-After`), not
//!   401, while API tokens keep working.
//! - **Verified tokens are cached** (bounded, keyed by the token's SHA-256, honouring
//!   `exp`), so a repeated token costs a hash, not a signature verification.
//! - **Static API tokens** for machine clients ([`api_tokens`]): a file of hashes, one
//!   line per token naming its principal and scopes, re-read when it changes (Kubernetes
//!   Secret updates included), compared in constant time. A bad reload keeps the previous
//!   tokens. [`mint_api_token`] makes new ones.
//! - A [`Principal`] with its scopes and [`Principal::require`]; the actix-web extractor
//!   ([`Principal`] implements `FromRequest`); [`AuthError`] with the RFC 6750 status and
//!   `WWW-Authenticate` value, rendered as an RFC 9457 problem when used alone.
//! - [`AuthSettings`], the `auth.*` section for `tasks-config`, validated with problems
//!   that name their key.
//!
//! Nothing derived from a token's value reaches an error, a log line or a `Debug` dump.
//!
//! ```
//! use tasks_auth::{Authenticator, AuthError, mint_api_token};
//!
//! // Mint a token: print `token()` once, put `line()` in the token file.
//! let minted = mint_api_token("ci", &["tasks:read"])?;
//! assert!(minted.token().starts_with("tkn_"));
//!
//! let authenticator = Authenticator::builder()
//!     .realm("tasks")
//!     .api_tokens_text(minted.line())
//!     .build()?;
//! let principal = authenticator.authenticate_api_token(minted.token())?;
//! assert_eq!(principal.id(), "token:ci");
//! principal.require("tasks:read")?;
//!
//! let refused = principal.require("tasks:write").unwrap_err();
//! assert_eq!(refused.status().as_u16(), 403);
//! assert_eq!(
//!     refused.www_authenticate().as_deref(),
//!     Some(r#"Bearer realm="tasks", error="insufficient_scope", error_description="the token lacks a scope this operation needs", scope="tasks:write""#)
//! );
//!
//! let unknown = authenticator.authenticate_api_token("tkn_not-a-real-token").unwrap_err();
//! assert_eq!(unknown.status().as_u16(), 401);
//! assert!(!unknown.to_string().contains("not-a-real-token"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! In an actix-web service:
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use tasks_auth::{AuthError, Authenticator, Principal};
//!
//! async fn list(principal: Principal) -> Result<HttpResponse, AuthError> {
//!     principal.require("notes:read")?;
//!     Ok(HttpResponse::Ok().body(format!("notes of {}", principal.id())))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let authenticator = Authenticator::builder()
//!     .oidc("https://login.example.com/realms/main", ["notes"])
//!     .api_tokens_file("/var/run/secrets/notes/auth.api_tokens")
//!     .build()?;
//! if let Err(error) = authenticator.warm_up().await {
//!     tracing::warn!(%error, "identity provider not reachable yet; API tokens work");
//! }
//! let data = web::Data::new(authenticator);
//! HttpServer::new(move || App::new().app_data(data.clone()).route("/notes", web::get().to(list)))
//!     .bind(("0.0.0.0", 8080))?
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod api_tokens;
mod authenticator;
mod error;
mod extract;
mod jwt;
mod principal;
mod settings;

pub use api_tokens::{
    ApiTokensError, MintError, MintedToken, TOKEN_PREFIX, hash_api_token, mint_api_token,
};
pub use authenticator::{Authenticator, AuthenticatorBuilder, BuildError};
pub use error::{AuthError, InvalidToken, PROBLEM_JSON};
pub use principal::{AuthMethod, Principal};
pub use settings::{AuthSettings, DEFAULT_LEEWAY_SECS};
