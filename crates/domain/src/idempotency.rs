use async_trait::async_trait;

use crate::RepositoryError;

/// A response kept so a retried request gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers worth replaying (`Location`, `ETag`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// The result of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the caller must process the request, then answer the key — with
    /// `complete`, or atomically with what it stores (`TaskRepository::insert_answering`)
    /// — or `release` it.
    Claimed,
    /// Already completed for the same request: replay this response.
    Replay(StoredResponse),
    /// Another request with this key is still being processed.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Remembers requests by `Idempotency-Key` so retries are safe.
///
/// Keys expire (implementations choose how long; 24 hours is the documented policy).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a request whose content hashes to `fingerprint`.
    async fn claim(&self, key: &str, fingerprint: &[u8]) -> Result<Claim, RepositoryError>;

    /// Records the response of a claimed key.
    async fn complete(&self, key: &str, response: &StoredResponse) -> Result<(), RepositoryError>;

    /// Forgets a claimed key whose request failed without an answer worth replaying.
    async fn release(&self, key: &str) -> Result<(), RepositoryError>;
}
