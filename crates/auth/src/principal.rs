//! Who is calling, and what they may do.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::AuthError;

/// How a [`Principal`] was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// An OIDC/JWT access token verified against the issuer's keys.
    Jwt,
    /// A static API token from the token file.
    ApiToken,
    /// Authentication is turned off (`auth.enabled = false`): every request is this
    /// anonymous principal, which holds every scope.
    Disabled,
}

/// An authenticated caller: its subject, its scopes and how it was authenticated.
///
/// Cloning is cheap (one reference count), so a cached principal is handed out without
/// allocating. `Debug` shows the identity and scopes, never token material (a principal
/// holds none).
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

struct Inner {
    id: Box<str>,
    method: AuthMethod,
    subject_start: usize,
    scopes: Box<[Box<str>]>,
    expires_at: Option<u64>,
    realm: Arc<str>,
}

impl Principal {
    pub(crate) fn new(
        method: AuthMethod,
        subject: &str,
        scopes: Vec<Box<str>>,
        expires_at: Option<u64>,
        realm: Arc<str>,
    ) -> Self {
        let prefix = match method {
            AuthMethod::Jwt => "oidc:",
            AuthMethod::ApiToken => "token:",
            AuthMethod::Disabled => "",
        };
        let id = format!("{prefix}{subject}").into_boxed_str();
        Self(Arc::new(Inner {
            id,
            method,
            subject_start: prefix.len(),
            scopes: scopes.into_boxed_slice(),
            expires_at,
            realm,
        }))
    }

    pub(crate) fn anonymous(realm: Arc<str>) -> Self {
        Self::new(AuthMethod::Disabled, "anonymous", Vec::new(), None, realm)
    }

    /// The subject: the JWT's `sub` claim, or the API token's principal name.
    #[must_use]
    pub fn subject(&self) -> &str {
        self.0.id.get(self.0.subject_start..).unwrap_or_default()
    }

    /// A stable identifier that cannot collide across methods: `oidc:<sub>` for JWTs,
    /// `token:<name>` for API tokens, `anonymous` with authentication off. Use it, not
    /// [`Principal::subject`], to record who owns something.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// How this principal was authenticated.
    #[must_use]
    pub fn method(&self) -> AuthMethod {
        self.0.method
    }

    /// The scopes granted (empty for the anonymous principal, which nevertheless passes
    /// every check).
    pub fn scopes(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.scopes.iter().map(AsRef::as_ref)
    }

    /// Whether the principal holds `scope` (always with authentication off).
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.method == AuthMethod::Disabled || self.0.scopes.iter().any(|s| &**s == scope)
    }

    /// `Ok(())` when the principal holds `scope`.
    ///
    /// # Errors
    /// [`AuthError::InsufficientScope`] naming `scope`: a 403 with
    /// `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`.
    pub fn require(&self, scope: &str) -> Result<(), AuthError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope {
                scope: scope.to_owned(),
                realm: self.0.realm.clone(),
            })
        }
    }

    /// When the credential expires (a JWT's `exp`); `None` for API tokens.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0
            .expires_at
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
    }

    pub(crate) fn expires_at_secs(&self) -> Option<u64> {
        self.0.expires_at
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &self.id())
            .field("method", &self.0.method)
            .field("scopes", &self.0.scopes)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
            && self.0.method == other.0.method
            && self.0.scopes == other.0.scopes
            && self.0.expires_at == other.0.expires_at
    }
}

impl Eq for Principal {}

/// Scopes from a JWT's `scope` (space separated) and `scp` (a string or a list) claims,
/// without duplicates, in order of appearance.
pub(crate) fn collect_scopes<'a>(sources: impl IntoIterator<Item = &'a str>) -> Vec<Box<str>> {
    let mut scopes: Vec<Box<str>> = Vec::new();
    for scope in sources.into_iter().flat_map(str::split_whitespace) {
        if !scopes.iter().any(|s| &**s == scope) {
            scopes.push(scope.into());
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_scopes() {
        let principal = Principal::new(
            AuthMethod::ApiToken,
            "ci",
            collect_scopes(["tasks:read tasks:write", "tasks:read"]),
            None,
            Arc::from("api"),
        );
        assert_eq!(principal.subject(), "ci");
        assert_eq!(principal.id(), "token:ci");
        assert_eq!(
            principal.scopes().collect::<Vec<_>>(),
            ["tasks:read", "tasks:write"]
        );
        assert!(principal.require("tasks:write").is_ok());
        let refused = principal.require("admin");
        assert!(
            matches!(refused, Err(AuthError::InsufficientScope { ref scope, .. }) if scope == "admin")
        );
    }

    #[test]
    fn the_anonymous_principal_passes_every_check() {
        let anonymous = Principal::anonymous(Arc::from("api"));
        assert_eq!(anonymous.id(), "anonymous");
        assert_eq!(anonymous.subject(), "anonymous");
        assert!(anonymous.require("anything").is_ok());
    }
}
