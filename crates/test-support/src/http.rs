//! The one HTTP client of the workspace's tests: a thin wrapper over `reqwest` bound to a
//! base URL, answering with a [`Reply`] that holds the whole response (status, headers,
//! body) so assertions can look at it as often as they like.
//!
//! ```no_run
//! # async fn example() {
//! use tasks_test_support::http::{HttpClient, Method, StatusCode};
//!
//! let api = HttpClient::new("http://127.0.0.1:8080");
//! let created = api
//!     .post_json("/v1/tasks", &serde_json::json!({"title": "t"}))
//!     .await
//!     .expect_json(StatusCode::CREATED);
//! let reply = api
//!     .send(api.request(Method::GET, "/v1/tasks").header("x-request-id", "mine"))
//!     .await;
//! assert_eq!(reply.header("x-request-id"), Some("mine"));
//! # let _ = created;
//! # }
//! ```

use std::fmt;
use std::time::Duration;

pub use reqwest::header::HeaderMap;
pub use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// How long one request may take before the test fails (connect, send, read).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one base URL (`http://host:port`, no trailing slash), optionally sending
/// a bearer token with every request.
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .field("bearer", &self.bearer.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `base` with a [`REQUEST_TIMEOUT`] per request.
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("tasks-test-support: build the HTTP client");
        Self::with_client(base, http)
    }

    /// A client for `base` built by the caller (e.g. with another connection pool policy).
    pub fn with_client(base: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
            bearer: None,
        }
    }

    /// The same client sending `Authorization: Bearer <token>` with every request.
    #[must_use]
    pub fn with_bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// The same base URL and token over `http` (another connection pool policy, …).
    #[must_use]
    pub fn using(&self, http: reqwest::Client) -> Self {
        Self {
            http,
            ..self.clone()
        }
    }

    /// The same client with connections of its own (none shared with this one).
    #[must_use]
    pub fn fresh(&self) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("tasks-test-support: build the HTTP client");
        self.using(http)
    }

    /// The same client without credentials (for 401 answers).
    #[must_use]
    pub fn anonymous(&self) -> Self {
        Self {
            bearer: None,
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `host:port` of the base URL (for raw TCP connections).
    pub fn authority(&self) -> &str {
        let rest = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` (with the bearer token, if any), to be completed (headers, body)
    /// and passed to [`HttpClient::send`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and reads the whole response; `Err` when no response arrived.
    ///
    /// # Errors
    /// The transport error (refused, reset, timed out).
    pub async fn try_send(&self, request: RequestBuilder) -> Result<Reply, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends `request` and reads the whole response; panics when no response arrived.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let description = format!("{request:?}");
        self.try_send(request)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}; request: {description}"))
    }

    /// The status of `GET path`, or `None` when nothing answered: for polling.
    pub async fn status(&self, path: &str) -> Option<StatusCode> {
        self.request(Method::GET, path)
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    /// Waits until `GET path` answers `status`; panics naming the last answer after
    /// `within`.
    pub async fn wait_for_status(&self, path: &str, status: StatusCode, within: Duration) {
        let last = std::cell::Cell::new(None);
        let answered = crate::poll::poll_until(within, || {
            let last = &last;
            async move {
                last.set(self.status(path).await);
                (last.get() == Some(status)).then_some(())
            }
        })
        .await;
        assert!(
            answered.is_some(),
            "GET {} did not answer {status} within {within:?} (last: {:?})",
            self.url(path),
            last.get()
        );
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `POST` raw bytes with a content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Reply {
        let body: Vec<u8> = body.into();
        self.send(
            self.request(Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// `POST` a JSON document (`application/json`).
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    /// `PATCH` a JSON document with a content type (`application/merge-patch+json`, …).
    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        self.send(
            self.request(Method::PATCH, path)
                .header("content-type", content_type)
                .body(body.to_string()),
        )
        .await
    }
}

/// A finished response: status, headers and the whole body.
#[derive(Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// Every header.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(2_000).collect();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &shown)
            .finish()
    }
}

impl Reply {
    /// The value of header `name` (panics when it is not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header value"))
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics showing the body when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Asserts the status; returns the reply for more checks.
    #[track_caller]
    pub fn expect_status(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "unexpected status; reply: {self:?}");
        self
    }

    /// Asserts the status and an `application/json` body; returns the JSON.
    #[track_caller]
    pub fn expect_json(&self, status: StatusCode) -> Value {
        self.expect_status(status);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content type {content_type:?}; reply: {self:?}"
        );
        self.json()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn urls_and_authority_come_from_the_base() {
        let client = HttpClient::new("http://127.0.0.1:8080/");
        assert_eq!(client.base(), "http://127.0.0.1:8080");
        assert_eq!(client.url("/v1/tasks"), "http://127.0.0.1:8080/v1/tasks");
        assert_eq!(client.authority(), "127.0.0.1:8080");
    }

    #[test]
    fn the_bearer_token_goes_with_every_request_but_never_into_debug() {
        let client = HttpClient::new("http://127.0.0.1:1").with_bearer("tkn_secret");
        let request = client.request(Method::GET, "/x").build().unwrap();
        assert_eq!(
            request.headers()["authorization"].to_str().unwrap(),
            "Bearer tkn_secret"
        );
        assert!(!format!("{client:?}").contains("tkn_secret"));
        let anonymous = client
            .anonymous()
            .request(Method::GET, "/x")
            .build()
            .unwrap();
        assert!(anonymous.headers().get("authorization").is_none());
    }

    #[test]
    fn reply_reads_headers_and_json() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        let reply = Reply {
            status: StatusCode::OK,
            headers,
            body: br#"{"a":1}"#.to_vec(),
        };
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.expect_json(StatusCode::OK)["a"], 1);
        assert_eq!(reply.text(), r#"{"a":1}"#);
    }
}
