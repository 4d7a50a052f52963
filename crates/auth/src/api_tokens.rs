//! Static API tokens for machine clients, kept as hashes in a file that is re-read when it
//! changes.
//!
//! # The file
//!
//! One token per line, `#` starts a comment (to the end of the line), blank lines are
//! ignored:
//!
//! ```text
//! # principal   hash of the token                                                  scopes
//! ci            sha256:3b4c…(64 hex digits)                                        tasks:read,tasks:write
//! helm-test     sha256:9f1e…                                                       tasks:read
//! ```
//!
//! - the principal: letters, digits and `.`, `_`, `-`, `:`, `@` (up to 128 characters);
//!   several lines may name the same principal (a token and its successor while clients
//!   move over);
//! - `sha256:` and the lower- or upper-case hex SHA-256 of the whole token, `tkn_` prefix
//!   included ([`hash_api_token`]); the file never holds the tokens themselves;
//! - the scopes, separated by commas (no spaces).
//!
//! Tokens are 256 random bits from the operating system, so a single fast hash is
//! enough: there is no dictionary to attack, unlike passwords.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::principal::{AuthMethod, Principal};

/// The prefix of every API token [`mint_api_token`] makes, so tokens are recognisable
/// (secret scanners, logs reviews) and told apart from JWTs.
pub const TOKEN_PREFIX: &str = "tkn_";

/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// The longest principal name.
const MAX_PRINCIPAL_LEN: usize = 128;

/// A malformed or unreadable API-token file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiTokensError {
    /// A line is malformed.
    #[error("{source_name}:{line}: {message}")]
    Malformed {
        /// The file (or "inline" for tokens given as a value).
        source_name: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong (never the line's content).
        message: String,
    },
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A principal name or scope that cannot go in the token file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The principal name is not allowed.
    #[error("principal names are 1 to 128 letters, digits, '.', '_', '-', ':' or '@' characters")]
    InvalidPrincipal,
    /// A scope is not allowed.
    #[error("scopes are non-empty printable ASCII without spaces, commas, quotes or backslashes")]
    InvalidScope,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}

/// A freshly minted API token: show [`MintedToken::token`] to its owner once, and put
/// [`MintedToken::line`] in the token file. `Debug` never shows the token.
pub struct MintedToken {
    token: String,
    line: String,
}

impl MintedToken {
    /// The token itself (`tkn_` and 43 base64url characters). It is stored nowhere: print
    /// it once.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The line for the token file: principal, hash and scopes.
    #[must_use]
    pub fn line(&self) -> &str {
        &self.line
    }
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"[REDACTED]")
            .field("line", &self.line)
            .finish()
    }
}

/// Mints a new API token for `principal` with `scopes`: `tkn_` followed by 256 bits from
/// the operating system's random number generator, base64url-encoded.
///
/// # Errors
/// [`MintError`] for a principal or scope the file format cannot hold, or a failing
/// random number generator.
pub fn mint_api_token(principal: &str, scopes: &[&str]) -> Result<MintedToken, MintError> {
    if !valid_principal(principal) {
        return Err(MintError::InvalidPrincipal);
    }
    if scopes.is_empty() || !scopes.iter().all(|s| valid_scope(s)) {
        return Err(MintError::InvalidScope);
    }
    let mut random = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut random).map_err(MintError::Random)?;
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let line = format!(
        "{principal} {} {}",
        hash_api_token(&token),
        scopes.join(",")
    );
    Ok(MintedToken { token, line })
}

/// The hash the token file holds for `token`: `sha256:` and 64 lower-case hex digits.
#[must_use]
pub fn hash_api_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(digest(token)))
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn valid_principal(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PRINCIPAL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:@".contains(&b))
}

/// RFC 6749 scope-token characters, without the comma the file uses as a separator.
fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && !b"\"\\,".contains(&b))
}

struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// A parsed set of API tokens.
pub(crate) struct ApiTokenSet {
    entries: Vec<Entry>,
}

impl ApiTokenSet {
    /// Parses the file format described in the [module docs](self).
    pub(crate) fn parse(
        text: &str,
        source_name: &str,
        realm: &Arc<str>,
    ) -> Result<Self, ApiTokensError> {
        let malformed = |line: usize, message: &str| ApiTokensError::Malformed {
            source_name: source_name.to_owned(),
            line,
            message: message.to_owned(),
        };
        let mut entries: Vec<(usize, Entry)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let content = raw.split('#').next().unwrap_or_default();
            let fields: Vec<&str> = content.split_whitespace().collect();
            let (principal, hash, scopes) = match fields.as_slice() {
                [] => continue,
                [principal, hash, scopes] => (*principal, *hash, *scopes),
                [_, _, _, ..] => {
                    return Err(malformed(
                        number,
                        "unexpected text after the scopes (separate scopes with commas, not spaces)",
                    ));
                }
                _ => {
                    return Err(malformed(
                        number,
                        "expected `<principal> sha256:<64 hex digits> <scope>[,<scope>...]`",
                    ));
                }
            };
            if !valid_principal(principal) {
                return Err(malformed(
                    number,
                    "the principal must be 1 to 128 letters, digits, '.', '_', '-', ':' or '@' characters",
                ));
            }
            if hash.starts_with(TOKEN_PREFIX) {
                return Err(malformed(
                    number,
                    "this is a plain token, not its hash: the file must hold only `sha256:<hex>` of each token",
                ));
            }
            let hash = hash
                .strip_prefix("sha256:")
                .and_then(|hex| <[u8; 32]>::try_from(hex::decode(hex).ok()?.as_slice()).ok())
                .ok_or_else(|| {
                    malformed(
                        number,
                        "expected the token's hash as sha256:<64 hex digits>",
                    )
                })?;
            let scopes: Vec<Box<str>> = scopes.split(',').map(Box::from).collect();
            if !scopes.iter().all(|s| valid_scope(s)) {
                return Err(malformed(
                    number,
                    "scopes are comma-separated printable ASCII without quotes or backslashes",
                ));
            }
            if let Some((first, _)) = entries.iter().find(|(_, e)| e.hash == hash) {
                return Err(malformed(
                    number,
                    &format!("the same token hash is already on line {first}"),
                ));
            }
            let principal =
                Principal::new(AuthMethod::ApiToken, principal, scopes, None, realm.clone());
            entries.push((number, Entry { hash, principal }));
        }
        Ok(Self {
            entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry whose hash equals `hash`. Every entry is compared in constant time and
    /// the scan never stops early, so timing says nothing about which bytes matched.
    fn find(&self, hash: &[u8; 32]) -> Option<&Principal> {
        let mut found = subtle::CtOption::new(0u64, 0u8.into());
        for (index, entry) in self.entries.iter().enumerate() {
            let candidate = subtle::CtOption::new(index as u64, entry.hash.ct_eq(hash));
            found = subtle::CtOption::conditional_select(&found, &candidate, candidate.is_some());
        }
        Option::<u64>::from(found)
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| self.entries.get(index))
            .map(|entry| &entry.principal)
    }
}

/// What identifies a version of the file: a Kubernetes Secret update swaps the `..data`
/// symlink to a new directory, which changes the inode; an edit in place changes the
/// modification time or the length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        // `metadata` follows symlinks: the stamp is that of the file the path now names.
        let metadata = std::fs::metadata(path)?;
        Ok(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt as _;
                (metadata.dev(), metadata.ino())
            },
        })
    }
}

enum Source {
    File {
        path: PathBuf,
        stamp: Mutex<Option<FileStamp>>,
    },
    Inline,
}

/// The API tokens in force, re-read when their file changes.
pub(crate) struct ApiTokenStore {
    source: Source,
    current: RwLock<Arc<ApiTokenSet>>,
    /// Why the file's current version is not in force, when it is not.
    reload_error: Mutex<Option<String>>,
    realm: Arc<str>,
    started: Instant,
    next_check_ms: AtomicU64,
    interval: Duration,
}

impl ApiTokenStore {
    pub(crate) fn from_file(
        path: PathBuf,
        realm: Arc<str>,
        interval: Duration,
    ) -> Result<Self, ApiTokensError> {
        let stamp = FileStamp::of(&path).map_err(|source| ApiTokensError::Io {
            path: path.clone(),
            source,
        })?;
        let set = read_set(&path, &realm)?;
        tracing::info!(file = %path.display(), tokens = set.len(), "API tokens loaded");
        Ok(Self {
            source: Source::File {
                path,
                stamp: Mutex::new(Some(stamp)),
            },
            current: RwLock::new(Arc::new(set)),
            reload_error: Mutex::new(None),
            realm,
            started: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            interval,
        })
    }

    pub(crate) fn inline(text: &str, realm: Arc<str>) -> Result<Self, ApiTokensError> {
        let set = ApiTokenSet::parse(text, "inline", &realm)?;
        Ok(Self {
            source: Source::Inline,
            current: RwLock::new(Arc::new(set)),
            reload_error: Mutex::new(None),
            realm,
            started: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            interval: Duration::MAX,
        })
    }

    /// The principal for `token`, if it is a configured token.
    pub(crate) fn lookup(&self, token: &str) -> Option<Principal> {
        self.maybe_reload();
        let hash = digest(token);
        let set = self.current.read().unwrap_or_else(PoisonError::into_inner);
        set.find(&hash).cloned()
    }

    /// How many tokens are in force.
    pub(crate) fn len(&self) -> usize {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Why the token file's latest version was rejected (the previous tokens are then
    /// still in force); `None` when the file in force is the latest.
    pub(crate) fn reload_error(&self) -> Option<String> {
        self.reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_reload_error(&self, error: Option<String>) {
        *self
            .reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// At most once per interval (one caller wins the slot), checks whether the file
    /// changed and, if so, re-reads it. A file that fails to parse or read keeps the
    /// previous set in force and is logged once per change.
    fn maybe_reload(&self) {
        let Source::File { path, stamp } = &self.source else {
            return;
        };
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_check_ms.load(Ordering::Relaxed);
        if now < next {
            return;
        }
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if self
            .next_check_ms
            .compare_exchange(
                next,
                now.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let mut last = stamp.lock().unwrap_or_else(PoisonError::into_inner);
        let current = match FileStamp::of(path) {
            Ok(current) => current,
            Err(error) => {
                if last.take().is_some() {
                    tracing::error!(file = %path.display(), %error,
                        "API token file unreadable; the previous tokens stay in force");
                    self.set_reload_error(Some(format!("{}: {error}", path.display())));
                }
                return;
            }
        };
        if last.as_ref() == Some(&current) {
            return;
        }
        *last = Some(current);
        match read_set(path, &self.realm) {
            Ok(set) => {
                tracing::info!(file = %path.display(), tokens = set.len(), "API tokens reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                self.set_reload_error(None);
            }
            Err(error) => {
                tracing::error!(%error, "API token file rejected; the previous tokens stay in force");
                self.set_reload_error(Some(error.to_string()));
            }
        }
    }
}

fn read_set(path: &Path, realm: &Arc<str>) -> Result<ApiTokenSet, ApiTokensError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiTokensError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ApiTokenSet::parse(&text, &path.display().to_string(), realm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> Arc<str> {
        Arc::from("api")
    }

    #[test]
    fn minted_tokens_verify_against_their_line() {
        let minted = mint_api_token("ci", &["tasks:read", "tasks:write"]).expect("mints");
        assert!(minted.token().starts_with(TOKEN_PREFIX));
        assert_eq!(minted.token().len(), TOKEN_PREFIX.len() + 43);
        assert!(minted.line().starts_with("ci sha256:"));
        assert!(minted.line().ends_with(" tasks:read,tasks:write"));
        assert!(!minted.line().contains(minted.token()));
        assert!(!format!("{minted:?}").contains(minted.token()));

        let set = ApiTokenSet::parse(minted.line(), "inline", &realm()).expect("parses");
        let principal = set.find(&digest(minted.token())).expect("found");
        assert_eq!(principal.id(), "token:ci");
        assert!(set.find(&digest("tkn_other")).is_none());

        let other = mint_api_token("ci", &["tasks:read"]).expect("mints");
        assert_ne!(other.token(), minted.token(), "tokens are random");
    }

    #[test]
    fn minting_refuses_what_the_file_cannot_hold() {
        assert!(matches!(
            mint_api_token("a b", &["x"]),
            Err(MintError::InvalidPrincipal)
        ));
        assert!(matches!(
            mint_api_token("", &["x"]),
            Err(MintError::InvalidPrincipal)
        ));
        assert!(matches!(
            mint_api_token("ci", &[]),
            Err(MintError::InvalidScope)
        ));
        assert!(matches!(
            mint_api_token("ci", &["a,b"]),
            Err(MintError::InvalidScope)
        ));
    }

    #[test]
    fn comments_blank_lines_and_several_tokens_per_principal() {
        let a = mint_api_token("ci", &["r"]).expect("mints");
        let b = mint_api_token("ci", &["r", "w"]).expect("mints");
        let text = format!("# tokens\n\n{}   # old one\n  {}\n", a.line(), b.line());
        let set = ApiTokenSet::parse(&text, "f", &realm()).expect("parses");
        assert_eq!(set.len(), 2);
        let second = set.find(&digest(b.token())).expect("found");
        assert_eq!(second.scopes().collect::<Vec<_>>(), ["r", "w"]);
    }

    #[test]
    fn malformed_lines_are_named_by_number_without_their_content() {
        let minted = mint_api_token("ci", &["r"]).expect("mints");
        let cases = [
            ("ci\n".to_owned(), 1, "expected"),
            (
                format!("# c\nci {} r extra\n", hash_api_token("x")),
                2,
                "unexpected text",
            ),
            (
                format!("c i! {} r\n", hash_api_token("x")),
                1,
                "unexpected text",
            ),
            (format!("c!i {} r\n", hash_api_token("x")), 1, "principal"),
            (format!("ci {} r\n", minted.token()), 1, "plain token"),
            ("ci sha256:abcd r\n".to_owned(), 1, "sha256:<64 hex digits>"),
            (format!("ci {} r,\n", hash_api_token("x")), 1, "scopes"),
            (
                format!("ci {h} r\nci2 {h} r\n", h = hash_api_token("x")),
                2,
                "already on line 1",
            ),
        ];
        for (text, line, needle) in cases {
            let error = ApiTokenSet::parse(&text, "tokens.txt", &realm())
                .err()
                .unwrap_or_else(|| panic!("refused: {text}"));
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("tokens.txt:{line}: ")),
                "{message}"
            );
            assert!(message.contains(needle), "{message}");
            assert!(!message.contains(minted.token()), "{message}");
        }
    }
}
