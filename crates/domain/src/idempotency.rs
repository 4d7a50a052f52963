use async_trait::async_trait;

use crate::{Owner, RepositoryError};

/// Longest idempotency key, in bytes (keys are visible ASCII, so also in characters).
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;
/// The shape of an idempotency key: 1 to [`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII
/// characters (`!` to `~`), for API documents.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

/// Whether `key` is an acceptable idempotency key ([`IDEMPOTENCY_KEY_PATTERN`], at most
/// [`IDEMPOTENCY_KEY_MAX_LEN`] long).
#[must_use]
pub fn is_valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The first answer to a request that carried an idempotency key, kept so that its
/// retries get the same answer. The domain and storage keep it verbatim and never look
/// inside: the layer that answers requests decides what the parts mean (the HTTP API
/// puts its status code, the headers worth replaying and the body here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAnswer {
    /// The outcome code (the HTTP API's status code).
    pub code: u16,
    /// Named values replayed with the body (the HTTP API's headers).
    pub metadata: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// The result of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the caller must process the request, then answer the key — with
    /// `complete`, or atomically with what it stores
    /// (`TaskRepository::insert_with_answer`) — or `release` it.
    Claimed,
    /// Already completed for the same request: replay this answer.
    Replay(RecordedAnswer),
    /// Another request with this key is still being processed.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Remembers requests by `Idempotency-Key` so retries are safe. Keys are scoped per
/// [`Owner`]: two owners using the same key get two independent results.
///
/// Keys expire (implementations choose how long; 24 hours is the documented policy).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a request whose content hashes to `fingerprint`.
    async fn claim(
        &self,
        owner: &Owner,
        key: &str,
        fingerprint: &[u8],
    ) -> Result<Claim, RepositoryError>;

    /// Records the answer of a claimed key.
    async fn complete(
        &self,
        owner: &Owner,
        key: &str,
        answer: &RecordedAnswer,
    ) -> Result<(), RepositoryError>;

    /// Forgets a claimed key whose request failed without an answer worth replaying.
    async fn release(&self, owner: &Owner, key: &str) -> Result<(), RepositoryError>;
}
