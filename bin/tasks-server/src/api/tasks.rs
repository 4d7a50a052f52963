//! `/v1/tasks` handlers.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tasks_domain::{
    Claim, IdempotencyStore, ListQuery, Precondition, RecordedAnswer, Task, TaskRepository,
    TaskService, is_valid_idempotency_key,
};
use uuid::Uuid;

use super::body::Body;
use super::caller::{Reader, Writer};
use super::openapi::{
    IdempotencyKeyHeader, PageSchema, StatusSchema, TaskSchema, new_description_input,
    patched_description_input, title_input,
};
use super::problem::{ApiError, Problem};
use super::task_json;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The use cases.
    pub tasks: TaskService<dyn TaskRepository>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiState")
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn etag(task: &Task) -> String {
    format!("\"{}\"", task.version)
}

/// The entity tag as a header value, formatted on the stack (no intermediate `String`).
/// The number goes through serde_json (itoa, the same digits as `Display`) rather than
/// `write!` and `core::fmt` (~350 fewer instructions a response).
fn etag_value(task: &Task) -> Option<HeaderValue> {
    use std::io::Write as _;
    let mut text = [0_u8; 24];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    cursor.write_all(b"\"").ok()?;
    serde_json::to_writer(&mut cursor, &task.version).ok()?;
    cursor.write_all(b"\"").ok()?;
    let len = usize::try_from(cursor.position()).ok()?;
    HeaderValue::from_bytes(text.get(..len)?).ok()
}

/// A typical task's JSON fits; serialising into a buffer of this size avoids the
/// reallocations of growing one from empty.
const TASK_JSON_CAPACITY: usize = 512;

fn task_response(status: StatusCode, task: &Task) -> HttpResponse {
    // Written straight into the buffer that becomes the body (no intermediate value, no
    // regrowth for an ordinary task), timestamps without serde (see `task_json`).
    let mut body = BytesMut::with_capacity(TASK_JSON_CAPACITY);
    if let Err(error) = task_json::write_task(&mut body, task) {
        return ApiError::from(tasks_domain::DomainError::Repository(
            tasks_domain::RepositoryError::Other(error.into()),
        ))
        .error_response();
    }
    let mut response = HttpResponse::build(status);
    response.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    if let Some(etag) = etag_value(task) {
        response.insert_header((header::ETAG, etag));
    }
    if status == StatusCode::CREATED {
        response.insert_header((header::LOCATION, format!("/v1/tasks/{}", task.id)));
    }
    response.body(body.freeze())
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::MalformedId(format!("{raw:?} is not a UUID")))
}

/// The task id of `/v1/tasks/{id}`, parsed. Read from the segment the router already
/// matched rather than through `web::Path<String>` (a `String`, an app-data look-up and a
/// serde pass per request). A segment with a `%` is still percent-encoded there: it goes
/// through `web::Path<String>`, which decodes it, so the id (and the error quoting it)
/// is what it was.
async fn task_id(req: &HttpRequest) -> Result<Uuid, ApiError> {
    match req.match_info().get("id") {
        Some(raw) if !raw.contains('%') => parse_id(raw),
        _ => {
            let decoded = web::Path::<String>::extract(req)
                .await
                .map_err(|error| ApiError::MalformedId(error.to_string()))?;
            parse_id(&decoded)
        }
    }
}

/// Accepts `application/json` and any `+json` type (e.g. `application/merge-patch+json`).
fn require_json(req: &HttpRequest, advertised: &'static str) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(advertised));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(advertised))
    }
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// The entity tags of an `If-Match` / `If-None-Match` header: `None` when absent, an
/// error when present but empty. Tags that are not ours simply never match.
fn entity_tags(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<Vec<String>>, ApiError> {
    let mut values = headers.get_all(name).peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut tags = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| ApiError::BadHeader(label))?;
        tags.extend(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    if tags.is_empty() && headers.get_all(name).all(|v| v.is_empty()) {
        return Err(ApiError::BadHeader(label));
    }
    Ok(Some(tags))
}

/// `If-Match`: `*` or a list of strong entity tags `"<version>"`. Weak, foreign or
/// malformed tags never match (RFC 9110 requires strong comparison), so they fail the
/// precondition.
fn if_match(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let Some(tags) = entity_tags(headers, &header::IF_MATCH, "If-Match")? else {
        return Ok(None);
    };
    if tags.iter().any(|t| t == "*") {
        return Ok(Some(Precondition::Exists));
    }
    // A tag that is not one of our versions is a version no task has.
    let versions = tags
        .iter()
        .map(|t| {
            t.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .collect();
    Ok(Some(Precondition::VersionIn(versions)))
}

/// `If-None-Match` (weak comparison): whether the client's copy is current.
fn none_match(headers: &HeaderMap, task: &Task) -> Result<bool, ApiError> {
    let Some(tags) = entity_tags(headers, &header::IF_NONE_MATCH, "If-None-Match")? else {
        return Ok(false);
    };
    let current = etag(task);
    Ok(tags
        .iter()
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == current))
}

/// Create a task.
#[utoipa::path(
    post, path = "/v1/tasks", tag = "tasks",
    request_body(content = inline(NewTaskBody), content_type = "application/json"),
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = TaskSchema, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid task, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    Writer(owner): Writer,
    req: HttpRequest,
    Body(body): Body,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_json(&req, "application/json")?;
    let key = match req.headers().get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::BadHeader("Idempotency-Key"))?;
            if !is_valid_idempotency_key(key) {
                return Err(ApiError::BadHeader("Idempotency-Key"));
            }
            Some(key.to_owned())
        }
    };
    let Some(key) = key else {
        let input = parse_json(&body)?;
        let task = state.tasks.create(&owner, &input).await?;
        return Ok(task_response(StatusCode::CREATED, &task));
    };

    let fingerprint = Sha256::new()
        .chain_update(b"POST /v1/tasks\n")
        .chain_update(&body)
        .finalize();
    match state
        .idempotency
        .claim(&owner, &key, &fingerprint)
        .await
        .map_err(tasks_domain::DomainError::from)?
    {
        Claim::Replay(stored) => return Ok(replay(&stored)),
        Claim::Mismatch => return Err(ApiError::IdempotencyMismatch),
        Claim::InFlight => return Err(ApiError::IdempotencyInFlight),
        Claim::Claimed => {}
    }
    // The task and the response a retry replays are stored in one transaction: a
    // retry finds either both or neither, never a task without its answer.
    let outcome = match parse_json(&body) {
        Ok(input) => state
            .tasks
            .create_idempotent(&owner, &input, &key, created_response)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Some(task)) => Ok(task_response(StatusCode::CREATED, &task)),
        // Another request with this key was answered first: a retry replays its answer.
        Ok(None) => Err(ApiError::IdempotencyInFlight),
        Err(error) => {
            // Rejections and failures are not recorded: the key is released, so the
            // client may correct the request and retry with the same key.
            if let Err(e) = state.idempotency.release(&owner, &key).await {
                tracing::warn!(error = %super::problem::error_chain(&e), "could not release idempotency key");
            }
            Err(error)
        }
    }
}

/// The response recorded for a created task, replayed to retries of its request: its
/// status, the headers worth replaying and the body.
fn created_response(task: &Task) -> RecordedAnswer {
    RecordedAnswer {
        code: StatusCode::CREATED.as_u16(),
        metadata: vec![
            ("location".into(), format!("/v1/tasks/{}", task.id)),
            ("etag".into(), etag(task)),
            ("content-type".into(), "application/json".into()),
        ],
        body: serde_json::to_vec(task).unwrap_or_default(),
    }
}

fn replay(stored: &RecordedAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(stored.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in &stored.metadata {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.insert_header((name.as_str(), value));
        }
    }
    response.insert_header(("idempotent-replayed", "true"));
    response.body(stored.body.clone())
}

/// Fetch one task.
#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)"),
           ("If-None-Match" = Option<String>, Header, nullable = false, min_length = 1, description = "ETag held by the client")),
    responses(
        (status = 200, description = "The task", body = TaskSchema, headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    Reader(owner): Reader,
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let task = state.tasks.get(&owner, task_id(&req).await?).await?;
    if none_match(req.headers(), &task)? {
        let mut response = HttpResponse::NotModified();
        if let Some(etag) = etag_value(&task) {
            response.insert_header((header::ETAG, etag));
        }
        return Ok(response.finish());
    }
    Ok(task_response(StatusCode::OK, &task))
}

/// Raw list parameters; validated by the domain (documented in [`super::openapi`]).
#[derive(Debug, Deserialize)]
pub struct ListParams {
    /// Only tasks in this state.
    status: Option<String>,
    /// Page size.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List tasks, newest first.
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks",
    params(ListParams),
    responses(
        (status = 200, description = "One page", body = PageSchema),
        (status = 400, description = "Bad limit, cursor or status", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    Reader(owner): Reader,
    params: web::Query<ListParams>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(
        params.status.as_deref(),
        params.limit.as_deref(),
        params.cursor.as_deref(),
    )?;
    Ok(HttpResponse::Ok().json(state.tasks.list(&owner, &query).await?))
}

/// Change a task (JSON merge patch).
#[utoipa::path(
    patch, path = "/v1/tasks/{id}", tag = "tasks",
    request_body(content = inline(PatchTaskBody), content_type = "application/merge-patch+json"),
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)"),
           ("If-Match" = Option<String>, Header, nullable = false, min_length = 1, description = "Only apply if the task still has this ETag")),
    responses(
        (status = 200, description = "Updated", body = TaskSchema, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The task changed since the given ETag", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid change", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    Writer(owner): Writer,
    req: HttpRequest,
    Body(body): Body,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&req).await?;
    require_json(&req, "application/merge-patch+json")?;
    let precondition = if_match(req.headers())?;
    let input = parse_json(&body)?;
    let task = state
        .tasks
        .update(&owner, id, &input, precondition.as_ref())
        .await?;
    Ok(task_response(StatusCode::OK, &task))
}

/// Delete a task.
#[utoipa::path(
    delete, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)"),
           ("If-Match" = Option<String>, Header, nullable = false, min_length = 1, description = "Only delete if the task still has this ETag")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The task changed since the given ETag", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    Writer(owner): Writer,
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&req).await?;
    let precondition = if_match(req.headers())?;
    state
        .tasks
        .delete(&owner, id, precondition.as_ref())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Body of `POST /v1/tasks` (documentation only; validation lives in the domain).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct NewTaskBody {
    /// See [`title_input`].
    #[schema(schema_with = title_input)]
    title: String,
    /// See [`new_description_input`].
    #[schema(schema_with = new_description_input)]
    description: Option<String>,
    /// Defaults to `todo`.
    #[schema(nullable = false, value_type = Option<StatusSchema>)]
    status: Option<tasks_domain::Status>,
    /// RFC 3339 date-time.
    #[schema(format = DateTime)]
    due_at: Option<String>,
}

/// Body of `PATCH /v1/tasks/{id}`: members present are changed; `null` clears
/// `description` and `due_at`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PatchTaskBody {
    /// See [`title_input`].
    #[schema(schema_with = title_input)]
    title: Option<String>,
    /// See [`patched_description_input`].
    #[schema(schema_with = patched_description_input)]
    description: Option<String>,
    /// New state.
    #[schema(nullable = false, value_type = Option<StatusSchema>)]
    status: Option<tasks_domain::Status>,
    /// RFC 3339 date-time, or null.
    #[schema(format = DateTime)]
    due_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[actix_web::test]
    async fn task_ids_are_read_from_the_matched_segment() {
        let id = Uuid::try_parse("01936f0e-8c3a-7b2d-9e4f-a1b2c3d4e5f6").unwrap();
        let req = TestRequest::default()
            .param("id", id.to_string())
            .to_http_request();
        assert_eq!(task_id(&req).await.unwrap(), id);
        // Percent-encoded hex digits are decoded, as `web::Path<String>` decodes them.
        let encoded = "%301936f0e-8c3a-7b2d-9e4f-%611b2c3d4e5f6";
        let req = TestRequest::default()
            .param("id", encoded)
            .to_http_request();
        assert_eq!(task_id(&req).await.unwrap(), id);
    }

    #[actix_web::test]
    async fn malformed_ids_are_quoted_decoded() {
        for (segment, quoted) in [("zz", "\"zz\""), ("not%20a%20uuid", "\"not a uuid\"")] {
            let req = TestRequest::default()
                .param("id", segment)
                .to_http_request();
            match task_id(&req).await {
                Err(ApiError::MalformedId(message)) => {
                    assert_eq!(message, format!("{quoted} is not a UUID"));
                }
                other => panic!("{segment}: {other:?}"),
            }
        }
    }
}
