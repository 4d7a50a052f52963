//! The HTTP API (docs/architecture.md §4), the whole service in-process against a real
//! PostgreSQL database: every row of the API table and every error status, plus the
//! cross-cutting promises (request ids, problem documents, 404/405, OpenAPI, byte-exact
//! round trips, fast 503s during a database outage and recovery after it).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tasks_test_support::fresh_database;
use tasks_test_support::http::{HttpClient, Method, StatusCode};
use tasks_test_support::poll::eventually_some;
use tasks_test_support::process::{RunOutput, ServiceCommand};
use uuid::Uuid;

use crate::support::{
    BIN, MERGE_PATCH_JSON, ProblemReply, TEST_OWNER, TestApp, error_fields, spawn_app,
    spawn_app_with, start_app,
};

/// Creates a task and returns it.
async fn create(api: &HttpClient, body: &Value) -> Value {
    api.post_json("/v1/tasks", body)
        .await
        .expect_json(StatusCode::CREATED)
}

/// Creates `n` tasks titled `prefix 0` … and returns their ids, oldest first.
async fn create_many(api: &HttpClient, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let task = create(api, &json!({"title": format!("{prefix} {i}")})).await;
        ids.push(task["id"].as_str().expect("id").to_owned());
    }
    ids
}

/// The service in-process on a fresh database, ready.
async fn app() -> TestApp {
    spawn_app(&fresh_database().await).await
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

// ---------------------------------------------------------------------------------------
// POST /v1/tasks
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn create_returns_201_with_location_etag_and_defaults() {
    let app = app().await;
    let api = &app.api;

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
    let full = create(
        api,
        &json!({
            "title": "Ship it",
            "description": "all of it",
            "status": "in_progress",
            "due_at": "2030-01-02T03:04:05+02:00",
        }),
    )
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
    assert_eq!(app.task_count().await, 2);
}

#[tokio::test]
async fn create_rejects_malformed_json_with_400() {
    let app = app().await;
    let api = &app.api;
    for body in [
        &b"{"[..],
        b"{\"title\": }",
        b"not json",
        b"",
        b"{\"title\": \"a\"} trailing",
        // Not UTF-8 at all, and invalid UTF-8 inside a string.
        b"\xff\xfe\xfd",
        b"{\"title\": \"caf\xe9\"}",
        b"{\"title\": \"\xed\xa0\x80 lone surrogate\"}",
        b"{\"title\": \"\\ud800 escaped lone surrogate\"}",
    ] {
        let reply = api.post_raw("/v1/tasks", "application/json", body).await;
        reply.expect_problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(app.task_count().await, 0);
}

#[tokio::test]
async fn create_rejects_bodies_over_the_limit_with_413() {
    let app = spawn_app_with(&fresh_database().await, |s| s.http.max_body_bytes = 1024).await;
    let api = &app.api;

    let skeleton = json!({"title": "big", "description": ""}).to_string();
    let body =
        json!({"title": "big", "description": "x".repeat(2048 - skeleton.len())}).to_string();
    assert_eq!(body.len(), 2048);
    api.post_raw("/v1/tasks", "application/json", body.clone())
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE);

    // The same limit guards PATCH.
    let task = create(api, &json!({"title": "small"})).await;
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
    create(api, &body).await;
    assert_eq!(app.task_count().await, 2);
}

#[tokio::test]
async fn create_requires_a_json_content_type_415() {
    let app = app().await;
    let api = &app.api;
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
    assert_eq!(app.task_count().await, 0);

    // Parameters and case do not matter.
    api.post_raw("/v1/tasks", "Application/JSON; charset=utf-8", body)
        .await
        .expect_json(StatusCode::CREATED);
}

#[tokio::test]
async fn create_validation_failures_are_422_with_field_errors() {
    let app = app().await;
    let api = &app.api;
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
            "201 four-byte characters",
            json!({"title": "🙂".repeat(201)}),
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
    assert_eq!(app.task_count().await, 0);

    // The limits themselves are accepted (characters, not bytes).
    let task = create(
        api,
        &json!({"title": "é".repeat(200), "description": "😀".repeat(10_000)}),
    )
    .await;
    assert_eq!(task["title"].as_str().expect("title").chars().count(), 200);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let app = app().await;
    let api = &app.api;
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
    assert_eq!(app.task_count().await, 1, "the retry created a task");

    // A different key is a different request.
    let other = api
        .send(post("key-2", body.clone()))
        .await
        .expect_json(StatusCode::CREATED);
    assert_ne!(other["id"], task["id"]);
    assert_eq!(app.task_count().await, 2);

    // The same key with another body is refused, and changes nothing.
    let reply = api
        .send(post(
            "key-1",
            json!({"title": "pay rent twice"}).to_string(),
        ))
        .await;
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.task_count().await, 2);
    // ... while the original still replays.
    let third = api.send(post("key-1", body)).await;
    assert_eq!(third.status, StatusCode::CREATED);
    assert_eq!(third.body, first.body);
}

#[tokio::test]
async fn idempotency_key_in_flight_is_409() {
    let app = app().await;
    let api = &app.api;
    let body = json!({"title": "slow"}).to_string();
    // The server's fingerprint: SHA-256 over the request line and the raw body.
    let fingerprint = Sha256::new()
        .chain_update(b"POST /v1/tasks\n")
        .chain_update(body.as_bytes())
        .finalize()
        .to_vec();
    let client = app.db.connect().await;
    client
        .execute(
            "INSERT INTO idempotency_answers (principal, key, fingerprint) VALUES ($1, $2, $3)",
            &[&TEST_OWNER, &"busy-key", &fingerprint],
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
    assert_eq!(app.task_count().await, 0);

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
    assert_eq!(app.task_count().await, 0);
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_create_one_task() {
    let app = app().await;
    let api = &app.api;
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
    assert_eq!(app.task_count().await, 1);
}

#[tokio::test]
async fn invalid_idempotency_keys_are_400() {
    let app = app().await;
    let api = &app.api;
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
    assert_eq!(app.task_count().await, 0);
}

// ---------------------------------------------------------------------------------------
// GET /v1/tasks/{id}
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn get_returns_the_task_with_its_etag() {
    let app = app().await;
    let api = &app.api;
    let created = create(api, &json!({"title": "read me"})).await;
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
    let app = app().await;
    let api = &app.api;
    let created = create(api, &json!({"title": "cache me"})).await;
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
    let app = app().await;
    let api = &app.api;
    api.get(&format!("/v1/tasks/{}", Uuid::now_v7()))
        .await
        .expect_problem(StatusCode::NOT_FOUND);
    for bad in [
        "not-a-uuid",
        "123",
        "0190a0b4-0000-7000-8000-00000000000",
        "%20",
        // Invalid UTF-8 in the path.
        "%ff%fe",
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
    let app = app().await;
    let api = &app.api;

    let empty = api.get("/v1/tasks").await.expect_json(StatusCode::OK);
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));

    let ids = newest_first(create_many(api, 22, "task").await);
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
    let app = app().await;
    let api = &app.api;
    let ids = newest_first(create_many(api, 3, "t").await);

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

    for bad in [
        "0",
        "101",
        "-1",
        "-9223372036854775808",
        "4294967297",
        "99999999999",
        "99999999999999999999999999999999",
        "abc",
        "",
        "1.5",
        "1e3",
        "%00",
        "%C0%AF",
    ] {
        let reply = api.get(&format!("/v1/tasks?limit={bad}")).await;
        let problem = reply.expect_problem(StatusCode::BAD_REQUEST);
        assert_eq!(error_fields(&problem), ["limit"], "limit={bad}: {problem}");
    }
    // A leading plus sign may reasonably be accepted or refused, never a 5xx.
    let plus = api.get("/v1/tasks?limit=+5").await;
    if plus.status != StatusCode::OK {
        plus.expect_problem(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn list_rejects_bad_cursors_and_statuses_with_400() {
    let app = app().await;
    let api = &app.api;
    create_many(api, 2, "t").await;
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
    // (`%ff%fe` is invalid UTF-8 in the query string.)
    for bad in ["blocked", "TODO", "", "%ff%fe"] {
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
    let app = app().await;
    let api = &app.api;
    let mut by_status: Vec<(&str, Vec<String>)> =
        vec![("todo", vec![]), ("in_progress", vec![]), ("done", vec![])];
    for i in 0..7 {
        let (status, ids) = &mut by_status[i % 3];
        let task = create(api, &json!({"title": format!("t{i}"), "status": status})).await;
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
    let app = app().await;
    let api = &app.api;
    let expected = newest_first(create_many(api, 5, "walk").await);

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
    create(api, &json!({"title": "newcomer"})).await;
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
    let app = app().await;
    let api = &app.api;
    let created = create(
        api,
        &json!({
            "title": "draft",
            "description": "words",
            "due_at": "2031-05-06T07:08:09Z",
        }),
    )
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
    let app = app().await;
    let api = &app.api;
    let created = create(api, &json!({"title": "contended"})).await;
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
    let app = app().await;
    let api = &app.api;
    let created = create(api, &json!({"title": "target"})).await;
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
    let app = app().await;
    let api = &app.api;
    let created = create(api, &json!({"title": "doomed"})).await;
    let keep = create(api, &json!({"title": "kept"})).await;
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
    let app = app().await;
    let api = &app.api;
    let created = create(api, &json!({"title": "guarded"})).await;
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

    // A precondition on a task that does not exist fails like one on a changed task
    // (ADR 0009: nothing tells a caller whether an id is taken); without one, 404.
    api.send(
        api.request(Method::DELETE, &path)
            .header("if-match", "\"2\""),
    )
    .await
    .expect_problem(StatusCode::PRECONDITION_FAILED);
    api.delete(&path)
        .await
        .expect_problem(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Cross-cutting
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let app = app().await;
    let api = &app.api;
    let task = create(api, &json!({"title": "traced"})).await;
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
    let app = app().await;
    let api = &app.api;
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
    let app = app().await;
    let api = &app.api;
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
    assert_eq!(app.task_count().await, 0);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let app = app().await;
    let api = &app.api;
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
    let app = app().await;
    let api = &app.api;
    let samples = [
        // RTL text with an embedded LTR run and directional marks.
        "مهمة: اشترِ الحليب \u{200F}(2 لتر)\u{200E} — עברית",
        // Emoji: ZWJ sequence, flag, skin tone, astral plane.
        "👩‍💻 deploy 🇺🇳 👍🏽 𝄞 𠜎",
        // SQL metacharacters and quoting.
        "Robert'); DROP TABLE tasks;-- \" ' ` \\ % _ $1 :name ?",
        // Combining characters, zero-width space, line and paragraph separators.
        "e\u{301}\u{200B}x\u{2028}y\u{2029}z\ttab",
        // Explicit bidi controls.
        "\u{202E}txt.exe\u{202C} bidi override",
        // ZWJ family, flags.
        "👩‍👩‍👧‍👦 family, 🇩🇪 flag, 🙂 smile",
        // Normalization must not happen.
        "e\u{301} combining vs é precomposed",
        "Robert'); DELETE FROM tasks WHERE ('1'='1",
        "100% _under_ \\backslash\\ $1 $$dollar$$ ::uuid",
        "\"quoted\" <tag> &amp; {json} [array] \t tab",
        "\u{feff}BOM, \u{200b}zero width, \u{fffd} replacement",
        "𝕳𝖊𝖑𝖑𝖔 𝟙𝟚𝟛 astral plane",
    ];
    let description = format!(
        "{}\n{}\r\nthird line ☃",
        samples.join("\n"),
        "\\u0000 is not NUL"
    );
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
    let client = app.db.connect().await;
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

    // Metacharacters in query parameters and ids are inert: 400, and the table is intact.
    for path in [
        "/v1/tasks?status=todo'%20OR%20'1'='1",
        "/v1/tasks?cursor=';--",
        "/v1/tasks/1'%20OR%20'1'='1",
    ] {
        api.get(path).await.expect_problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        app.task_count().await,
        i64::try_from(samples.len()).expect("count")
    );
}

#[tokio::test]
async fn text_postgresql_cannot_store_is_a_client_error_not_a_5xx() {
    // docs/architecture.md §4: no input, however malformed, yields a 5xx. U+0000 is valid JSON
    // and a valid Rust string, but PostgreSQL `text` cannot hold it: a 422 naming the field.
    let app = app().await;
    let api = &app.api;
    let task = create(api, &json!({"title": "clean"})).await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().expect("id"));
    for (name, request, field) in [
        (
            "POST title",
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .body(json!({"title": "nul\u{0}byte"}).to_string()),
            "title",
        ),
        (
            "POST description",
            api.request(Method::POST, "/v1/tasks")
                .header("content-type", "application/json")
                .body(json!({"title": "t", "description": "nul\u{0}byte"}).to_string()),
            "description",
        ),
        (
            "PATCH title",
            api.request(Method::PATCH, &path)
                .header("content-type", MERGE_PATCH_JSON)
                .body(json!({"title": "nul \u{0} inside"}).to_string()),
            "title",
        ),
        (
            "PATCH description",
            api.request(Method::PATCH, &path)
                .header("content-type", MERGE_PATCH_JSON)
                .body(json!({"description": "nul\u{0}byte"}).to_string()),
            "description",
        ),
    ] {
        let problem = api
            .send(request)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), [field], "{name}: {problem}");
    }
    assert_eq!(app.task_count().await, 1);
}

/// Every kind of request answers a 503 problem with a numeric `Retry-After` within
/// `budget` (`task` may or may not exist).
async fn assert_fast_503s(api: &HttpClient, task: &str, budget: Duration) {
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
            api.request(Method::GET, &format!("/v1/tasks/{task}")),
        ),
        ("GET list", api.request(Method::GET, "/v1/tasks")),
        (
            "PATCH",
            api.request(Method::PATCH, &format!("/v1/tasks/{task}"))
                .header("content-type", MERGE_PATCH_JSON)
                .body(json!({"status": "done"}).to_string()),
        ),
        (
            "DELETE",
            api.request(Method::DELETE, &format!("/v1/tasks/{task}")),
        ),
    ];
    for (name, request) in requests {
        let started = Instant::now();
        let reply = api.send(request).await;
        let took = started.elapsed();
        assert!(
            took < budget,
            "{name}: 503 took {took:?} (budget {budget:?})"
        );
        reply.expect_problem(StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = reply
            .header("retry-after")
            .unwrap_or_else(|| panic!("{name}: no Retry-After: {reply:?}"));
        assert!(
            retry_after.parse::<u64>().is_ok(),
            "{name}: Retry-After {retry_after:?}"
        );
    }
}

#[tokio::test]
async fn database_outage_answers_503_quickly_and_recovers_without_restart() {
    // A PostgreSQL of its own, stopped and started by this test.
    let postgres = tokio::task::spawn_blocking(tasks_test_support::private_server)
        .await
        .expect("start a private PostgreSQL");
    let db = postgres.fresh_database().await;
    let postgres = tokio::task::spawn_blocking(move || {
        postgres.stop();
        postgres
    })
    .await
    .expect("stop PostgreSQL");
    // Pool wait and connect timeout bound every answer during an outage.
    let budget = Duration::from_millis(1000 + 1000);
    let app = start_app(&db, |s| {
        s.database.common.pool_timeout_ms = 1000;
        s.database.common.connect_timeout_ms = 1000;
    })
    .await;
    let (api, admin) = (&app.api, &app.admin);

    // Unreachable from the start: live, not ready, every request a fast 503.
    admin
        .wait_for_status("/livez", StatusCode::OK, Duration::from_secs(30))
        .await;
    admin
        .get("/readyz")
        .await
        .expect_status(StatusCode::SERVICE_UNAVAILABLE);
    assert_fast_503s(api, &Uuid::now_v7().to_string(), budget).await;

    // The database arrives: migrations run, the service becomes ready.
    let postgres = tokio::task::spawn_blocking(move || {
        postgres.start();
        postgres
    })
    .await
    .expect("start PostgreSQL");
    admin
        .wait_for_status("/readyz", StatusCode::OK, Duration::from_secs(30))
        .await;
    let created = create(api, &json!({"title": "survives the outage"})).await;
    let id = created["id"].as_str().expect("id").to_owned();

    // Lost while serving: fast 503s again; liveness holds (no restarts for a database
    // outage), readiness fails.
    let postgres = tokio::task::spawn_blocking(move || {
        postgres.stop();
        postgres
    })
    .await
    .expect("stop PostgreSQL");
    assert_fast_503s(api, &id, budget).await;
    admin
        .wait_for_status(
            "/readyz",
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        )
        .await;
    admin.get("/livez").await.expect_status(StatusCode::OK);

    // Back again: the same service recovers without a restart.
    let _postgres = tokio::task::spawn_blocking(move || {
        postgres.start();
        postgres
    })
    .await
    .expect("start PostgreSQL");
    let path = format!("/v1/tasks/{id}");
    let task = eventually_some(
        "the task to be readable again",
        Duration::from_secs(20),
        || async {
            let reply = api.get(&path).await;
            (reply.status == StatusCode::OK).then(|| reply.json())
        },
    )
    .await;
    assert_eq!(task["title"], "survives the outage");
    admin
        .wait_for_status("/readyz", StatusCode::OK, Duration::from_secs(10))
        .await;
    create(api, &json!({"title": "after the outage"})).await;
    assert!(app.is_running(), "the service stopped during the outage");
}

/// Runs `tasks-server round-trip BASE_URL` (the Helm test's command) to completion.
/// Runs `tasks-server round-trip BASE_URL --token-file FILE` (the Helm test's command)
/// with the app's token to completion.
fn round_trip_command(app: &TestApp, base_url: &str) -> RunOutput {
    let dir = tempfile::tempdir().expect("temporary directory");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", app.token)).expect("write the token file");
    ServiceCommand::new(BIN, "TASKS")
        .args([
            "round-trip",
            base_url,
            "--timeout-secs",
            "5",
            "--token-file",
        ])
        .arg(&token_file)
        .output()
}

#[tokio::test]
async fn round_trip_command_creates_reads_back_and_deletes_a_task() {
    let app = app().await;
    let before = app.task_count().await;
    let out = round_trip_command(&app, app.api.base());
    assert!(out.success(), "{}", out.report());
    assert!(
        out.stdout.contains("created, read back and deleted"),
        "{}",
        out.report()
    );
    assert_eq!(
        app.task_count().await,
        before,
        "the round trip leaves nothing behind"
    );
}

#[tokio::test]
async fn round_trip_command_fails_naming_the_step_that_went_wrong() {
    let app = app().await;
    // The admin listener has no task routes: the first step answers 404.
    let out = round_trip_command(&app, app.admin.base());
    assert!(!out.success(), "{}", out.report());
    assert!(
        out.stderr.contains("POST /v1/tasks answered 404, not 201"),
        "{}",
        out.report()
    );
}
