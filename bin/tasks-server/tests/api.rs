//! End-to-end tests of the HTTP API (docs/architecture.md §4) against the real `tasks-server`
//! binary and a real PostgreSQL database: every row of the API table and every error
//! status, plus the cross-cutting promises (request ids, problem documents, 404/405,
//! OpenAPI, byte-exact round trips, fast 503s during a database outage).

mod support;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::Server;
use uuid::Uuid;

const PROBLEM_JSON: &str = "application/problem+json";
const MERGE_PATCH_JSON: &str = "application/merge-patch+json";

/// A finished response: status, headers and the whole body.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header value"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    fn expect_json(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected status; reply: {self:?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content type {content_type:?}; reply: {self:?}"
        );
        self.json()
    }

    /// Asserts a complete RFC 9457 problem document with this status, whose
    /// `request_id` is the response's `X-Request-Id`; returns it.
    #[track_caller]
    fn expect_problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected status; reply: {self:?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with(PROBLEM_JSON),
            "content type {content_type:?}; reply: {self:?}"
        );
        let problem = self.json();
        assert!(problem["type"].is_string(), "no type: {problem}");
        assert!(
            problem["title"].as_str().is_some_and(|t| !t.is_empty()),
            "no title: {problem}"
        );
        assert_eq!(problem["status"], json!(status.as_u16()), "{problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "no detail: {problem}"
        );
        let request_id = self.header("x-request-id").expect("X-Request-Id header");
        assert_eq!(problem["request_id"], json!(request_id), "{problem}");
        problem
    }
}

/// The field names of a problem's `errors`, each checked to carry a message.
#[track_caller]
fn error_fields(problem: &Value) -> Vec<String> {
    let errors = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {problem}"));
    assert!(!errors.is_empty(), "empty errors array: {problem}");
    errors
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "no message: {e}"
            );
            e["field"]
                .as_str()
                .unwrap_or_else(|| panic!("no field: {e}"))
                .to_owned()
        })
        .collect()
}

/// A client for one server.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Self {
            http,
            base: server.api.clone(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request failed");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("read the body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `POST` raw bytes with a content type.
    async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        let body: Vec<u8> = body.into();
        self.send(
            self.request(Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        self.send(
            self.request(Method::PATCH, path)
                .header("content-type", content_type)
                .body(body.to_string()),
        )
        .await
    }

    /// Creates a task and returns it.
    async fn create(&self, body: &Value) -> Value {
        self.post_json("/v1/tasks", body)
            .await
            .expect_json(StatusCode::CREATED)
    }

    /// Creates `n` tasks titled `prefix 0` … and returns their ids, oldest first.
    async fn create_many(&self, n: usize, prefix: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let task = self
                .create(&json!({"title": format!("{prefix} {i}")}))
                .await;
            ids.push(task["id"].as_str().expect("id").to_owned());
        }
        ids
    }
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

fn newest_first(mut ids: Vec<String>) -> Vec<String> {
    ids.reverse();
    ids
}

#[track_caller]
fn assert_rfc3339(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

async fn task_count(server: &Server) -> i64 {
    let client = server.db.connect().await;
    client
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .expect("count tasks")
        .get(0)
}

// ---------------------------------------------------------------------------------------
// POST /v1/tasks
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn create_returns_201_with_location_etag_and_defaults() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);

    let reply = api
        .post_json("/v1/tasks", &json!({"title": "  Buy milk \n\t"}))
        .await;
    let task = reply.expect_json(StatusCode::CREATED);

    let id = task["id"].as_str().expect("id is a string");
    let uuid = Uuid::parse_str(id).expect("id is a UUID");
    assert_eq!(uuid.get_version_num(), 7, "id {id} is not a UUIDv7");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/tasks/{id}").as_str())
    );
    assert_eq!(reply.header("etag"), Some("\"1\""));
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["status"], "todo");
    assert_eq!(task["description"], Value::Null);
    assert_eq!(task["due_at"], Value::Null);
    assert_eq!(task["version"], 1);
    let created = assert_rfc3339(&task["created_at"]);
    let updated = assert_rfc3339(&task["updated_at"]);
    assert_eq!(created, updated);
    let age = chrono::Utc::now().signed_duration_since(created);
    assert!(
        age < chrono::TimeDelta::minutes(1) && age > chrono::TimeDelta::minutes(-1),
        "created_at {created} is not now"
    );
    let mut keys: Vec<&str> = task
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "due_at",
            "id",
            "status",
            "title",
            "updated_at",
            "version"
        ]
    );

    // Every field given: stored as given, and the Location serves the same task.
    let full = api
        .create(&json!({
            "title": "Ship it",
            "description": "all of it",
            "status": "in_progress",
            "due_at": "2030-01-02T03:04:05+02:00",
        }))
        .await;
    assert_eq!(full["description"], "all of it");
    assert_eq!(full["status"], "in_progress");
    assert_eq!(
        assert_rfc3339(&full["due_at"]),
        assert_rfc3339(&json!("2030-01-02T01:04:05Z"))
    );
    let fetched = api
        .get(&format!("/v1/tasks/{}", full["id"].as_str().expect("id")))
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(fetched, full);
    assert_eq!(task_count(&server).await, 2);
}

#[tokio::test]
async fn create_rejects_malformed_json_with_400() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    for body in [
        "{",
        "{\"title\": }",
        "not json",
        "",
        "{\"title\": \"a\"} trailing",
    ] {
        let reply = api.post_raw("/v1/tasks", "application/json", body).await;
        reply.expect_problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(task_count(&server).await, 0);
}

#[tokio::test]
async fn create_rejects_bodies_over_the_limit_with_413() {
    let server = Server::start(&[("TASKS_HTTP__MAX_BODY_BYTES", "1024")]).await;
    let api = Api::new(&server);

    let skeleton = json!({"title": "big", "description": ""}).to_string();
    let body =
        json!({"title": "big", "description": "x".repeat(2048 - skeleton.len())}).to_string();
    assert_eq!(body.len(), 2048);
    api.post_raw("/v1/tasks", "application/json", body.clone())
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE);

    // The same limit guards PATCH.
    let task = api.create(&json!({"title": "small"})).await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().expect("id"));
    api.send(
        api.request(Method::PATCH, &path)
            .header("content-type", MERGE_PATCH_JSON)
            .body(body),
    )
    .await
    .expect_problem(StatusCode::PAYLOAD_TOO_LARGE);

    // A body under the limit is fine.
    let body = json!({"title": "fits", "description": "x".repeat(900)});
    api.create(&body).await;
    assert_eq!(task_count(&server).await, 2);
}

#[tokio::test]
async fn create_requires_a_json_content_type_415() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let body = json!({"title": "t"}).to_string();

    api.post_raw("/v1/tasks", "text/plain", body.clone())
        .await
        .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.post_raw("/v1/tasks", "application/x-www-form-urlencoded", "title=t")
        .await
        .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // No Content-Type at all.
    api.send(api.request(Method::POST, "/v1/tasks").body(body.clone()))
        .await
        .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(task_count(&server).await, 0);

    // Parameters and case do not matter.
    api.post_raw("/v1/tasks", "Application/JSON; charset=utf-8", body)
        .await
        .expect_json(StatusCode::CREATED);
}

#[tokio::test]
async fn create_validation_failures_are_422_with_field_errors() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("empty title", json!({"title": ""}), &["title"]),
        ("blank title", json!({"title": "  \t\n "}), &["title"]),
        ("missing title", json!({}), &["title"]),
        ("non-string title", json!({"title": 5}), &["title"]),
        (
            "201-character title",
            json!({"title": "a".repeat(201)}),
            &["title"],
        ),
        (
            "10,001-character description",
            json!({"title": "t", "description": "d".repeat(10_001)}),
            &["description"],
        ),
        (
            "bad status",
            json!({"title": "t", "status": "blocked"}),
            &["status"],
        ),
        (
            "null status",
            json!({"title": "t", "status": null}),
            &["status"],
        ),
        (
            "bad due_at",
            json!({"title": "t", "due_at": "tomorrow"}),
            &["due_at"],
        ),
        (
            "date-only due_at",
            json!({"title": "t", "due_at": "2030-01-02"}),
            &["due_at"],
        ),
        (
            "unknown field",
            json!({"title": "t", "priority": 1}),
            &["priority"],
        ),
        (
            "client-chosen id",
            json!({"title": "t", "id": Uuid::now_v7()}),
            &["id"],
        ),
        ("array body", json!([{"title": "t"}]), &["body"]),
        ("string body", json!("t"), &["body"]),
        ("null body", Value::Null, &["body"]),
        (
            "every problem at once",
            json!({"title": "", "status": "x", "due_at": 1, "extra": true}),
            &["due_at", "extra", "status", "title"],
        ),
    ];
    for (name, body, fields) in cases {
        let reply = api.post_json("/v1/tasks", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {reply:?}"
        );
        let problem = reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), fields, "{name}: {problem}");
    }
    assert_eq!(task_count(&server).await, 0);

    // The limits themselves are accepted (characters, not bytes).
    let task = api
        .create(&json!({"title": "é".repeat(200), "description": "😀".repeat(10_000)}))
        .await;
    assert_eq!(task["title"].as_str().expect("title").chars().count(), 200);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let body = json!({"title": "pay rent", "description": "once"}).to_string();
    let post = |key: &'static str, body: String| {
        api.request(Method::POST, "/v1/tasks")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
    };

    let first = api.send(post("key-1", body.clone())).await;
    let task = first.expect_json(StatusCode::CREATED);
    let second = api.send(post("key-1", body.clone())).await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    assert_eq!(second.body, first.body, "replayed body differs");
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(second.header("etag"), first.header("etag"));
    assert!(
        second
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{second:?}"
    );
    assert_eq!(task_count(&server).await, 1, "the retry created a task");

    // A different key is a different request.
    let other = api
        .send(post("key-2", body.clone()))
        .await
        .expect_json(StatusCode::CREATED);
    assert_ne!(other["id"], task["id"]);
    assert_eq!(task_count(&server).await, 2);

    // The same key with another body is refused, and changes nothing.
    let reply = api
        .send(post(
            "key-1",
            json!({"title": "pay rent twice"}).to_string(),
        ))
        .await;
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(task_count(&server).await, 2);
    // ... while the original still replays.
    let third = api.send(post("key-1", body)).await;
    assert_eq!(third.status, StatusCode::CREATED);
    assert_eq!(third.body, first.body);
}

#[tokio::test]
async fn idempotency_key_in_flight_is_409() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let body = json!({"title": "slow"}).to_string();
    // The server's fingerprint: SHA-256 over the request line and the raw body.
    let fingerprint = Sha256::new()
        .chain_update(b"POST /v1/tasks\n")
        .chain_update(body.as_bytes())
        .finalize()
        .to_vec();
    let client = server.db.connect().await;
    client
        .execute(
            "INSERT INTO idempotency_keys (key, fingerprint) VALUES ($1, $2)",
            &[&"busy-key", &fingerprint],
        )
        .await
        .expect("insert an in-flight key");

    let reply = api
        .send(
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .header("idempotency-key", "busy-key")
                .body(body),
        )
        .await;
    reply.expect_problem(StatusCode::CONFLICT);
    assert_eq!(task_count(&server).await, 0);

    // A different body under the in-flight key is a reused key, not a conflict.
    let reply = api
        .send(
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .header("idempotency-key", "busy-key")
                .body(json!({"title": "other"}).to_string()),
        )
        .await;
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(task_count(&server).await, 0);
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_create_one_task() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let body = json!({"title": "exactly once"}).to_string();
    let replies = futures_util::future::join_all((0..8).map(|_| {
        api.send(
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .header("idempotency-key", "race")
                .body(body.clone()),
        )
    }))
    .await;
    let mut created = Vec::new();
    for reply in &replies {
        match reply.status {
            StatusCode::CREATED => created.push(reply.json()),
            StatusCode::CONFLICT => {
                reply.expect_problem(StatusCode::CONFLICT);
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    assert!(!created.is_empty(), "no request succeeded: {replies:?}");
    assert!(
        created.iter().all(|t| t == &created[0]),
        "different tasks: {created:?}"
    );
    assert_eq!(task_count(&server).await, 1);
}

#[tokio::test]
async fn invalid_idempotency_keys_are_400() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    for key in [String::new(), "k".repeat(256)] {
        let reply = api
            .send(
                api.request(Method::POST, "/v1/tasks")
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .body(json!({"title": "t"}).to_string()),
            )
            .await;
        reply.expect_problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(task_count(&server).await, 0);
}

// ---------------------------------------------------------------------------------------
// GET /v1/tasks/{id}
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn get_returns_the_task_with_its_etag() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api.create(&json!({"title": "read me"})).await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));

    let reply = api.get(&path).await;
    assert_eq!(reply.expect_json(StatusCode::OK), created);
    assert_eq!(reply.header("etag"), Some("\"1\""));
    // Ids are case-insensitive UUIDs.
    let upper = path
        .to_ascii_uppercase()
        .replace("/V1/TASKS/", "/v1/tasks/");
    assert_eq!(api.get(&upper).await.expect_json(StatusCode::OK), created);
}

#[tokio::test]
async fn get_with_matching_if_none_match_is_304() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api.create(&json!({"title": "cache me"})).await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));
    let etag = api
        .get(&path)
        .await
        .header("etag")
        .expect("etag")
        .to_owned();

    for tag in [etag.as_str(), "*", "\"7\", \"1\"", "W/\"1\""] {
        let reply = api
            .send(api.request(Method::GET, &path).header("if-none-match", tag))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{tag}: {reply:?}");
        assert!(reply.body.is_empty(), "304 with a body: {reply:?}");
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        assert!(reply.header("x-request-id").is_some());
    }
    // A stale tag gets the full task.
    let reply = api
        .send(
            api.request(Method::GET, &path)
                .header("if-none-match", "\"2\""),
        )
        .await;
    assert_eq!(reply.expect_json(StatusCode::OK), created);
}

#[tokio::test]
async fn get_unknown_id_is_404_and_malformed_id_is_400() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    api.get(&format!("/v1/tasks/{}", Uuid::now_v7()))
        .await
        .expect_problem(StatusCode::NOT_FOUND);
    for bad in [
        "not-a-uuid",
        "123",
        "0190a0b4-0000-7000-8000-00000000000",
        "%20",
    ] {
        api.get(&format!("/v1/tasks/{bad}"))
            .await
            .expect_problem(StatusCode::BAD_REQUEST);
    }
}

// ---------------------------------------------------------------------------------------
// GET /v1/tasks
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn list_is_newest_first_with_a_default_limit_of_20() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);

    let empty = api.get("/v1/tasks").await.expect_json(StatusCode::OK);
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));

    let ids = newest_first(api.create_many(22, "task").await);
    let page = api.get("/v1/tasks").await.expect_json(StatusCode::OK);
    let mut keys: Vec<&String> = page.as_object().expect("object").keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["items", "next_cursor"]);
    assert_eq!(ids_of(&page), ids[..20]);
    let cursor = page["next_cursor"].as_str().expect("a next cursor");

    let rest = api
        .get(&format!("/v1/tasks?cursor={cursor}"))
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(ids_of(&rest), ids[20..]);
    assert_eq!(rest["next_cursor"], Value::Null);

    // Items are whole tasks.
    let first = &page["items"][0];
    let fetched = api
        .get(&format!("/v1/tasks/{}", ids[0]))
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(first, &fetched);
}

#[tokio::test]
async fn list_limit_bounds() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let ids = newest_first(api.create_many(3, "t").await);

    let one = api
        .get("/v1/tasks?limit=1")
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(ids_of(&one), ids[..1]);
    assert!(one["next_cursor"].is_string());
    let hundred = api
        .get("/v1/tasks?limit=100")
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(ids_of(&hundred), ids);
    assert_eq!(hundred["next_cursor"], Value::Null);
    // Exactly as many as the limit: no further page.
    let three = api
        .get("/v1/tasks?limit=3")
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(ids_of(&three), ids);
    assert_eq!(three["next_cursor"], Value::Null);

    for bad in ["0", "101", "-1", "abc", "", "1.5", "99999999999"] {
        let reply = api.get(&format!("/v1/tasks?limit={bad}")).await;
        let problem = reply.expect_problem(StatusCode::BAD_REQUEST);
        assert_eq!(error_fields(&problem), ["limit"], "limit={bad}: {problem}");
    }
}

#[tokio::test]
async fn list_rejects_bad_cursors_and_statuses_with_400() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    api.create_many(2, "t").await;
    for bad in ["zz", "abc", "djE6", "not%20a%20cursor", "%00"] {
        let problem = api
            .get(&format!("/v1/tasks?cursor={bad}"))
            .await
            .expect_problem(StatusCode::BAD_REQUEST);
        assert_eq!(
            error_fields(&problem),
            ["cursor"],
            "cursor={bad}: {problem}"
        );
    }
    for bad in ["blocked", "TODO", ""] {
        let problem = api
            .get(&format!("/v1/tasks?status={bad}"))
            .await
            .expect_problem(StatusCode::BAD_REQUEST);
        assert_eq!(
            error_fields(&problem),
            ["status"],
            "status={bad}: {problem}"
        );
    }
}

#[tokio::test]
async fn list_filters_by_status() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let mut by_status: Vec<(&str, Vec<String>)> =
        vec![("todo", vec![]), ("in_progress", vec![]), ("done", vec![])];
    for i in 0..7 {
        let (status, ids) = &mut by_status[i % 3];
        let task = api
            .create(&json!({"title": format!("t{i}"), "status": status}))
            .await;
        ids.push(task["id"].as_str().expect("id").to_owned());
    }
    for (status, ids) in by_status {
        let expected = newest_first(ids);
        let page = api
            .get(&format!("/v1/tasks?status={status}"))
            .await
            .expect_json(StatusCode::OK);
        assert_eq!(ids_of(&page), expected, "status={status}");
        assert!(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|t| t["status"] == status)
        );
        // Paging within a filter.
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/tasks?status={status}&limit=1&cursor={c}"),
                None => format!("/v1/tasks?status={status}&limit=1"),
            };
            let page = api.get(&path).await.expect_json(StatusCode::OK);
            walked.extend(ids_of(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(walked.len() <= expected.len(), "paging does not end");
        }
        assert_eq!(walked, expected, "paged status={status}");
    }
}

#[tokio::test]
async fn walking_all_pages_returns_every_task_once_newest_first() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let expected = newest_first(api.create_many(5, "walk").await);

    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=2&cursor={c}"),
            None => "/v1/tasks?limit=2".to_owned(),
        };
        let page = api.get(&path).await.expect_json(StatusCode::OK);
        let ids = ids_of(&page);
        sizes.push(ids.len());
        walked.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(sizes.len() <= 5, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(walked, expected);

    // Pages are stable while new tasks are created: a cursor continues where it was.
    let first = api
        .get("/v1/tasks?limit=2")
        .await
        .expect_json(StatusCode::OK);
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    api.create(&json!({"title": "newcomer"})).await;
    let second = api
        .get(&format!("/v1/tasks?limit=2&cursor={cursor}"))
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(ids_of(&second), expected[2..4]);
}

// ---------------------------------------------------------------------------------------
// PATCH /v1/tasks/{id}
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn patch_applies_a_json_merge_patch() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api
        .create(&json!({
            "title": "draft",
            "description": "words",
            "due_at": "2031-05-06T07:08:09Z",
        }))
        .await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));

    let reply = api
        .patch(&path, MERGE_PATCH_JSON, &json!({"status": "done"}))
        .await;
    let patched = reply.expect_json(StatusCode::OK);
    assert_eq!(reply.header("etag"), Some("\"2\""));
    assert_eq!(patched["status"], "done");
    assert_eq!(patched["version"], 2);
    for unchanged in ["id", "title", "description", "due_at", "created_at"] {
        assert_eq!(
            patched[unchanged], created[unchanged],
            "{unchanged} changed"
        );
    }
    assert!(assert_rfc3339(&patched["updated_at"]) >= assert_rfc3339(&created["updated_at"]));
    assert_eq!(
        api.get(&path).await.expect_json(StatusCode::OK),
        patched,
        "GET disagrees with the PATCH response"
    );

    // application/json is accepted too; null clears; the title is trimmed.
    let reply = api
        .patch(
            &path,
            "application/json",
            &json!({"description": null, "due_at": null, "title": "  final  "}),
        )
        .await;
    let cleared = reply.expect_json(StatusCode::OK);
    assert_eq!(reply.header("etag"), Some("\"3\""));
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["due_at"], Value::Null);
    assert_eq!(cleared["title"], "final");
    assert_eq!(cleared["status"], "done");
    assert_eq!(cleared["version"], 3);
    assert_eq!(api.get(&path).await.expect_json(StatusCode::OK), cleared);

    // Setting fields back.
    let set = api
        .patch(
            &path,
            MERGE_PATCH_JSON,
            &json!({"description": "again", "due_at": "2032-01-01T00:00:00Z", "status": "todo"}),
        )
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(set["description"], "again");
    assert_eq!(set["status"], "todo");
    assert_eq!(
        assert_rfc3339(&set["due_at"]),
        assert_rfc3339(&json!("2032-01-01T00:00:00Z"))
    );
}

#[tokio::test]
async fn patch_honours_if_match() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api.create(&json!({"title": "contended"})).await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));
    let patch_if = |tag: &'static str, body: Value| {
        api.request(Method::PATCH, &path)
            .header("content-type", MERGE_PATCH_JSON)
            .header("if-match", tag)
            .body(body.to_string())
    };

    let reply = api.send(patch_if("\"1\"", json!({"title": "mine"}))).await;
    assert_eq!(reply.expect_json(StatusCode::OK)["title"], "mine");
    assert_eq!(reply.header("etag"), Some("\"2\""));

    // Someone else's view is stale now.
    api.send(patch_if("\"1\"", json!({"title": "theirs"})))
        .await
        .expect_problem(StatusCode::PRECONDITION_FAILED);
    api.send(patch_if("W/\"2\"", json!({"title": "weak"})))
        .await
        .expect_problem(StatusCode::PRECONDITION_FAILED);
    let current = api.get(&path).await.expect_json(StatusCode::OK);
    assert_eq!(current["title"], "mine");
    assert_eq!(current["version"], 2);

    // A list containing the current tag, and `*`, match.
    let reply = api
        .send(patch_if("\"1\", \"2\"", json!({"status": "done"})))
        .await;
    assert_eq!(reply.expect_json(StatusCode::OK)["version"], 3);
    let reply = api
        .send(patch_if("*", json!({"status": "in_progress"})))
        .await;
    assert_eq!(reply.expect_json(StatusCode::OK)["version"], 4);
}

#[tokio::test]
async fn patch_errors() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api.create(&json!({"title": "target"})).await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));

    // 404 unknown, 400 malformed id.
    api.patch(
        &format!("/v1/tasks/{}", Uuid::now_v7()),
        MERGE_PATCH_JSON,
        &json!({"title": "x"}),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND);
    api.patch("/v1/tasks/nope", MERGE_PATCH_JSON, &json!({"title": "x"}))
        .await
        .expect_problem(StatusCode::BAD_REQUEST);

    // 422 invalid changes.
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"title": null}), &["title"]),
        (json!({"title": ""}), &["title"]),
        (json!({"title": "a".repeat(201)}), &["title"]),
        (json!({"status": "bogus"}), &["status"]),
        (json!({"status": null}), &["status"]),
        (json!({"due_at": "soon"}), &["due_at"]),
        (json!({"description": 7}), &["description"]),
        (json!({"description": "d".repeat(10_001)}), &["description"]),
        (json!({"version": 9}), &["version"]),
        (json!([]), &["body"]),
    ];
    for (body, fields) in cases {
        let problem = api
            .patch(&path, MERGE_PATCH_JSON, &body)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), fields, "{body}: {problem}");
    }

    // 415 wrong content type; 400 malformed JSON.
    api.send(
        api.request(Method::PATCH, &path)
            .header("content-type", "text/plain")
            .body(json!({"title": "x"}).to_string()),
    )
    .await
    .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.send(
        api.request(Method::PATCH, &path)
            .body(json!({"title": "x"}).to_string()),
    )
    .await
    .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.send(
        api.request(Method::PATCH, &path)
            .header("content-type", MERGE_PATCH_JSON)
            .body("{\"title\":"),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST);

    // Nothing changed.
    assert_eq!(api.get(&path).await.expect_json(StatusCode::OK), created);
}

// ---------------------------------------------------------------------------------------
// DELETE /v1/tasks/{id}
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_removes_the_task() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api.create(&json!({"title": "doomed"})).await;
    let keep = api.create(&json!({"title": "kept"})).await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));

    let reply = api.delete(&path).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!(reply.body.is_empty());
    api.get(&path).await.expect_problem(StatusCode::NOT_FOUND);
    api.delete(&path)
        .await
        .expect_problem(StatusCode::NOT_FOUND);
    let page = api.get("/v1/tasks").await.expect_json(StatusCode::OK);
    assert_eq!(ids_of(&page), [keep["id"].as_str().expect("id").to_owned()]);

    api.delete(&format!("/v1/tasks/{}", Uuid::now_v7()))
        .await
        .expect_problem(StatusCode::NOT_FOUND);
    api.delete("/v1/tasks/not-a-uuid")
        .await
        .expect_problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delete_honours_if_match() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let created = api.create(&json!({"title": "guarded"})).await;
    let path = format!("/v1/tasks/{}", created["id"].as_str().expect("id"));
    api.patch(&path, MERGE_PATCH_JSON, &json!({"status": "done"}))
        .await
        .expect_json(StatusCode::OK);

    api.send(
        api.request(Method::DELETE, &path)
            .header("if-match", "\"1\""),
    )
    .await
    .expect_problem(StatusCode::PRECONDITION_FAILED);
    api.get(&path).await.expect_json(StatusCode::OK);

    let reply = api
        .send(
            api.request(Method::DELETE, &path)
                .header("if-match", "\"2\""),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    api.get(&path).await.expect_problem(StatusCode::NOT_FOUND);

    // A precondition on a task that does not exist is still a 404.
    api.send(
        api.request(Method::DELETE, &path)
            .header("if-match", "\"2\""),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Cross-cutting
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let task = api.create(&json!({"title": "traced"})).await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().expect("id"));

    let mut seen = Vec::new();
    let replies = vec![
        api.get(&path).await,
        api.get("/v1/tasks").await,
        api.get("/openapi.json").await,
        api.get(&format!("/v1/tasks/{}", Uuid::now_v7())).await,
        api.get("/nowhere").await,
        api.send(api.request(Method::PUT, "/v1/tasks")).await,
        api.post_raw("/v1/tasks", "text/plain", "x").await,
        api.send(api.request(Method::GET, &path).header("if-none-match", "*"))
            .await,
        api.delete(&path).await,
    ];
    for reply in &replies {
        let id = reply
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id: {reply:?}"));
        assert!(!id.is_empty());
        seen.push(id.to_owned());
        if reply.status.is_client_error() {
            reply.expect_problem(reply.status);
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "request ids repeat: {seen:?}");

    // The client's id is echoed, on successes and in problem bodies.
    let reply = api
        .send(
            api.request(Method::GET, "/v1/tasks")
                .header("x-request-id", "client-chosen-42"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-request-id"), Some("client-chosen-42"));
    let reply = api
        .send(
            api.request(Method::GET, &path)
                .header("x-request-id", "trace-me.please"),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-me.please"));
    let problem = reply.expect_problem(StatusCode::NOT_FOUND);
    assert_eq!(problem["request_id"], "trace-me.please");
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    for path in [
        "/",
        "/nowhere",
        "/v1",
        "/v2/tasks",
        "/v1/taskz",
        "/v1/tasks/0190a0b4-0000-7000-8000-000000000000/comments",
    ] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        reply.expect_problem(StatusCode::NOT_FOUND);
    }
    api.send(api.request(Method::POST, "/nowhere").body("{}"))
        .await
        .expect_problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let item = format!("/v1/tasks/{}", Uuid::now_v7());
    let cases: Vec<(Method, &str, &[&str])> = vec![
        (Method::PUT, "/v1/tasks", &["GET", "POST"]),
        (Method::DELETE, "/v1/tasks", &["GET", "POST"]),
        (Method::PATCH, "/v1/tasks", &["GET", "POST"]),
        (Method::POST, &item, &["GET", "PATCH", "DELETE"]),
        (Method::PUT, &item, &["GET", "PATCH", "DELETE"]),
        (Method::POST, "/openapi.json", &["GET"]),
    ];
    for (method, path, allowed) in cases {
        let reply = api
            .send(
                api.request(method.clone(), path)
                    .header("content-type", "application/json")
                    .body("{\"title\": \"t\"}"),
            )
            .await;
        reply.expect_problem(StatusCode::METHOD_NOT_ALLOWED);
        let allow = reply
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header: {reply:?}"));
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.sort_unstable();
        let mut expected = allowed.to_vec();
        expected.sort_unstable();
        assert_eq!(listed, expected, "{method} {path}");
    }
    assert_eq!(task_count(&server).await, 0);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let document = api.get("/openapi.json").await.expect_json(StatusCode::OK);
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "openapi {version}");
    let paths = document["paths"].as_object().expect("paths");
    for path in ["/v1/tasks", "/v1/tasks/{id}"] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    for method in ["get", "post"] {
        assert!(
            document["paths"]["/v1/tasks"][method].is_object(),
            "{method}"
        );
    }
    for method in ["get", "patch", "delete"] {
        assert!(
            document["paths"]["/v1/tasks/{id}"][method].is_object(),
            "{method}"
        );
    }
}

#[tokio::test]
async fn unicode_and_sql_metacharacters_round_trip_exactly() {
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let samples = [
        // RTL text with an embedded LTR run and directional marks.
        "مهمة: اشترِ الحليب \u{200F}(2 لتر)\u{200E} — עברית",
        // Emoji: ZWJ sequence, flag, skin tone, astral plane.
        "👩‍💻 deploy 🇺🇳 👍🏽 𝄞 𠜎",
        // SQL metacharacters and quoting.
        "Robert'); DROP TABLE tasks;-- \" ' ` \\ % _ $1 :name ?",
        // Combining characters, zero-width space, line and paragraph separators.
        "e\u{301}\u{200B}x\u{2028}y\u{2029}z\ttab",
    ];
    let description = format!("{}\n{}", samples.join("\n"), "\\u0000 is not NUL");
    let mut ids = Vec::new();
    for title in samples {
        let reply = api
            .post_json(
                "/v1/tasks",
                &json!({"title": title, "description": description}),
            )
            .await;
        let task = reply.expect_json(StatusCode::CREATED);
        assert_eq!(task["title"], title);
        assert_eq!(task["description"], description.as_str());
        let id = task["id"].as_str().expect("id").to_owned();
        let fetched = api
            .get(&format!("/v1/tasks/{id}"))
            .await
            .expect_json(StatusCode::OK);
        assert_eq!(fetched["title"], title, "GET changed the title");
        assert_eq!(fetched["description"], description.as_str());
        ids.push((id, title));
    }
    // Stored byte for byte.
    let client = server.db.connect().await;
    for (id, title) in &ids {
        let row = client
            .query_one(
                "SELECT convert_to(title, 'UTF8'), convert_to(description, 'UTF8') \
                 FROM tasks WHERE id::text = $1",
                &[id],
            )
            .await
            .expect("read back");
        let stored_title: Vec<u8> = row.get(0);
        let stored_description: Vec<u8> = row.get(1);
        assert_eq!(stored_title, title.as_bytes());
        assert_eq!(stored_description, description.as_bytes());
    }
    // The table survived, and the list shows the same text.
    let page = api.get("/v1/tasks").await.expect_json(StatusCode::OK);
    let titles: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["title"].as_str().expect("title"))
        .collect();
    let mut expected: Vec<&str> = samples.to_vec();
    expected.reverse();
    assert_eq!(titles, expected);

    // Patching with the same text keeps it too.
    let (id, _) = &ids[0];
    let patched = api
        .patch(
            &format!("/v1/tasks/{id}"),
            MERGE_PATCH_JSON,
            &json!({"title": samples[2], "description": samples[1]}),
        )
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(patched["title"], samples[2]);
    assert_eq!(patched["description"], samples[1]);
}

#[tokio::test]
async fn text_postgresql_cannot_store_is_a_client_error_not_a_5xx() {
    // docs/architecture.md §4: no input, however malformed, yields a 5xx. U+0000 is valid JSON
    // and a valid Rust string, but PostgreSQL `text` cannot hold it.
    let server = Server::start(&[]).await;
    let api = Api::new(&server);
    let task = api.create(&json!({"title": "clean"})).await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().expect("id"));
    let mut server_errors = Vec::new();
    for (name, request) in [
        (
            "POST title",
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .body(json!({"title": "nul\u{0}byte"}).to_string()),
        ),
        (
            "POST description",
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .body(json!({"title": "t", "description": "nul\u{0}byte"}).to_string()),
        ),
        (
            "PATCH title",
            api.request(Method::PATCH, &path)
                .header("content-type", MERGE_PATCH_JSON)
                .body(json!({"title": "nul\u{0}byte"}).to_string()),
        ),
        (
            "PATCH description",
            api.request(Method::PATCH, &path)
                .header("content-type", MERGE_PATCH_JSON)
                .body(json!({"description": "nul\u{0}byte"}).to_string()),
        ),
    ] {
        let reply = api.send(request).await;
        if reply.status.is_server_error() {
            server_errors.push(format!("{name}: {}", reply.status));
        } else if reply.status.is_client_error() {
            reply.expect_problem(reply.status);
        }
    }
    let failures: Vec<String> = server
        .log()
        .lines()
        .filter(|l| l.contains("request failed"))
        .map(str::to_owned)
        .collect();
    assert!(
        server_errors.is_empty(),
        "5xx for client input (U+0000 in a string): {server_errors:?}\nserver log:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn database_outage_answers_503_quickly() {
    // A port nobody listens on.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port().to_string()
    };
    let server = Server::start_without_waiting(&[
        ("TASKS_DATABASE__HOST", "127.0.0.1"),
        ("TASKS_DATABASE__PORT", closed_port.as_str()),
        ("TASKS_DATABASE__POOL_TIMEOUT_MS", "500"),
        ("TASKS_DATABASE__CONNECT_TIMEOUT_MS", "500"),
    ])
    .await;
    let api = Api::new(&server);
    let admin = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");

    // Liveness does not depend on the database.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = admin.get(format!("{}/livez", server.admin)).send().await;
        if live.as_ref().is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/livez never answered 200: {live:?}\nlog:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = admin
        .get(format!("{}/readyz", server.admin))
        .send()
        .await
        .expect("/readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    let id = Uuid::now_v7();
    let requests = vec![
        (
            "POST",
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .body(json!({"title": "lost"}).to_string()),
        ),
        (
            "POST with Idempotency-Key",
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .header("idempotency-key", "outage")
                .body(json!({"title": "lost"}).to_string()),
        ),
        (
            "GET one",
            api.request(Method::GET, &format!("/v1/tasks/{id}")),
        ),
        ("GET list", api.request(Method::GET, "/v1/tasks")),
        (
            "PATCH",
            api.request(Method::PATCH, &format!("/v1/tasks/{id}"))
                .header("content-type", MERGE_PATCH_JSON)
                .body(json!({"status": "done"}).to_string()),
        ),
        (
            "DELETE",
            api.request(Method::DELETE, &format!("/v1/tasks/{id}")),
        ),
    ];
    for (name, request) in requests {
        let started = Instant::now();
        let reply = api.send(request).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{name} took {took:?}");
        reply.expect_problem(StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = reply
            .header("retry-after")
            .unwrap_or_else(|| panic!("{name}: no Retry-After: {reply:?}"));
        assert!(
            retry_after.parse::<u64>().is_ok(),
            "{name}: Retry-After {retry_after:?}"
        );
    }

    // Still alive afterwards.
    let live = admin
        .get(format!("{}/livez", server.admin))
        .send()
        .await
        .expect("/livez");
    assert_eq!(live.status(), StatusCode::OK);
}

/// Runs `tasks-server round-trip BASE_URL` (the Helm test's command) to completion.
async fn round_trip_command(base_url: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::BIN)
            .args(["round-trip", &base_url, "--timeout-secs", "5"])
            .output()
            .expect("run tasks-server round-trip")
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn round_trip_command_creates_reads_back_and_deletes_a_task() {
    let server = Server::start(&[]).await;
    let before = task_count(&server).await;
    let out = round_trip_command(server.api.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("created, read back and deleted"),
        "{stdout}"
    );
    assert_eq!(
        task_count(&server).await,
        before,
        "the round trip leaves nothing behind"
    );
}

#[tokio::test]
async fn round_trip_command_fails_naming_the_step_that_went_wrong() {
    let server = Server::start(&[]).await;
    // The admin listener has no task routes: the first step answers 404.
    let out = round_trip_command(server.admin.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("POST /v1/tasks answered 404, not 201"),
        "{stderr}"
    );
}
