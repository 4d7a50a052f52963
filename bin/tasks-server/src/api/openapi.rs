//! The OpenAPI 3.1 document, generated from the handlers' annotations and the schemas
//! below. The domain knows nothing of OpenAPI: its types are described here, and every
//! limit the document states comes from the domain's constants.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use tasks_domain::{
    CURSOR_PATTERN, DEFAULT_PAGE_LIMIT, DESCRIPTION_MAX_CHARS, IDEMPOTENCY_KEY_MAX_LEN,
    IDEMPOTENCY_KEY_PATTERN, MAX_PAGE_LIMIT, Status, TITLE_MAX_CHARS,
};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr, Required, Schema};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};
use uuid::Uuid;

use super::problem::Problem;
use super::tasks;

/// The API description served at `/openapi.json` and kept in `docs/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tasks API", description = "A small task tracking API over PostgreSQL. Errors are RFC 9457 problem documents; every response carries X-Request-Id.", license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")),
    paths(tasks::create, tasks::list, tasks::get, tasks::update, tasks::delete, openapi_json),
    components(schemas(TaskSchema, StatusSchema, PageSchema, FieldErrorSchema, Problem)),
    tags((name = "tasks", description = "Task tracking"), (name = "meta", description = "About the API")),
    modifiers(&Authentication)
)]
pub struct ApiDoc;

/// Declares the bearer scheme (OIDC access tokens or API tokens) and, on every `/v1/*`
/// operation, the scope it requires and the 401/403/503 answers of RFC 6750. Each caller
/// sees and changes only its own tasks: another caller's task is a 404.
struct Authentication;

impl utoipa::Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::content::ContentBuilder;
        use utoipa::openapi::header::Header;
        use utoipa::openapi::response::ResponseBuilder;
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };

        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API token")
                    .description(Some(format!(
                        "An OIDC access token from the configured issuer (scopes in its `scope` or \
                     `scp` claim) or a static API token. `{}` reads, `{}` writes.",
                        super::caller::READ_SCOPE,
                        super::caller::WRITE_SCOPE
                    )))
                    .build(),
            ),
        );
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        let challenge =
            || Header::new(ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)));
        let api_paths = openapi
            .paths
            .paths
            .iter_mut()
            .filter(|(path, _)| path.starts_with("/v1/"));
        for (_, item) in api_paths {
            let operations = [
                (&mut item.get, super::caller::READ_SCOPE),
                (&mut item.post, super::caller::WRITE_SCOPE),
                (&mut item.patch, super::caller::WRITE_SCOPE),
                (&mut item.delete, super::caller::WRITE_SCOPE),
            ];
            for (operation, scope) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                operation.security = Some(vec![SecurityRequirement::new(BEARER_SCHEME, [scope])]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    ResponseBuilder::new()
                        .description("Missing, malformed, expired or unknown credentials")
                        .header("WWW-Authenticate", challenge())
                        .content(PROBLEM_MEDIA_TYPE, problem())
                        .into(),
                );
                responses.insert(
                    "403".into(),
                    ResponseBuilder::new()
                        .description(format!("The credentials lack the `{scope}` scope"))
                        .header("WWW-Authenticate", challenge())
                        .content(PROBLEM_MEDIA_TYPE, problem())
                        .into(),
                );
                responses.entry("503".into()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("Database or identity provider unavailable")
                        .content(PROBLEM_MEDIA_TYPE, problem())
                        .into()
                });
                if operation.request_body.is_some() {
                    responses.insert(
                        "408".into(),
                        ResponseBuilder::new()
                            .description("The body was not received in time")
                            .content(PROBLEM_MEDIA_TYPE, problem())
                            .into(),
                    );
                }
            }
        }
    }
}

/// The name of the bearer security scheme.
const BEARER_SCHEME: &str = "bearer";
/// The media type of problem documents.
const PROBLEM_MEDIA_TYPE: &str = super::problem::PROBLEM_JSON;

/// The document as pretty JSON (what `docs/openapi.json` holds).
#[must_use]
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

// The schema of `tasks_domain::Task` (its doc comment is the description).
/// A task as stored and returned.
#[derive(ToSchema)]
#[schema(as = Task)]
#[allow(dead_code)] // documentation only: responses serialize the domain type
pub struct TaskSchema {
    /// UUIDv7: time-ordered, so ids sort newest last.
    id: Uuid,
    /// See [`stored_title`].
    #[schema(schema_with = stored_title)]
    title: String,
    /// See [`stored_description`].
    #[schema(schema_with = stored_description)]
    description: Option<String>,
    /// Workflow state.
    status: StatusSchema,
    /// When it is due (RFC 3339).
    due_at: Option<DateTime<Utc>>,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
    /// Incremented on every change; the `ETag`.
    version: i64,
}

// The schema of `tasks_domain::Page`.
/// One page of tasks.
#[derive(ToSchema)]
#[schema(as = Page)]
#[allow(dead_code)] // documentation only: responses serialize the domain type
pub struct PageSchema {
    /// Tasks, newest first.
    items: Vec<TaskSchema>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

// The schema of `tasks_domain::FieldError`.
/// One invalid input field.
#[derive(ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)] // documentation only: responses serialize the domain type
pub struct FieldErrorSchema {
    /// The field's name (a JSON member or a query parameter).
    field: String,
    /// What is wrong with it.
    message: String,
}

/// The schema of [`tasks_domain::Status`]: its wire names, in workflow order.
pub struct StatusSchema;

impl PartialSchema for StatusSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A task's workflow state."))
            .enum_values(Some(Status::ALL.map(Status::as_str)))
            .into()
    }
}

impl ToSchema for StatusSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Status")
    }
}

/// What the domain accepts as a title, as a pattern: at least one character that is
/// neither white space (`char::is_whitespace`, trimmed away) nor NUL, and no NUL at all.
const TITLE_PATTERN: &str = r"^[^\u0000]*[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000][^\u0000]*$";
/// No NUL characters (PostgreSQL text cannot hold them).
const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// `n` with a comma between groups of three digits (`10,000`), as prose writes it.
fn with_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn nullable_string() -> SchemaType {
    SchemaType::from_iter([Type::String, Type::Null])
}

/// `Task.title`.
fn stored_title() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("1–{TITLE_MAX_CHARS} characters, trimmed.")))
        .into()
}

/// `Task.description`.
fn stored_description() -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable_string())
        .description(Some(format!(
            "Up to {} characters.",
            with_thousands(DESCRIPTION_MAX_CHARS)
        )))
        .into()
}

/// The `title` of a create or patch body.
pub fn title_input() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "1–{TITLE_MAX_CHARS} characters after trimming Unicode white space (so at least one other\ncharacter); no NUL characters."
        )))
        .min_length(Some(1))
        .max_length(Some(TITLE_MAX_CHARS))
        .pattern(Some(TITLE_PATTERN))
        .into()
}

fn description_input(description: String) -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable_string())
        .description(Some(description))
        .max_length(Some(DESCRIPTION_MAX_CHARS))
        .pattern(Some(NO_NUL_PATTERN))
        .into()
}

/// The `description` of a create body.
pub fn new_description_input() -> Schema {
    description_input(format!(
        "Up to {} characters; no NUL characters.",
        with_thousands(DESCRIPTION_MAX_CHARS)
    ))
}

/// The `description` of a patch body (`null` clears it).
pub fn patched_description_input() -> Schema {
    description_input(format!(
        "Up to {} characters, or null; no NUL characters.",
        with_thousands(DESCRIPTION_MAX_CHARS)
    ))
}

fn optional_parameter(name: &str, location: ParameterIn, description: String) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .description(Some(description))
        .required(Required::False)
}

/// The `Idempotency-Key` header of `POST /v1/tasks` (`params(IdempotencyKeyHeader)`).
pub struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![idempotency_key_parameter()]
    }
}

fn idempotency_key_parameter() -> Parameter {
    optional_parameter(
        "Idempotency-Key",
        ParameterIn::Header,
        format!(
            "Makes retries safe: the first response is replayed for 24 hours (1–{IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters)"
        ),
    )
    .schema(Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(IDEMPOTENCY_KEY_MAX_LEN))
            .pattern(Some(IDEMPOTENCY_KEY_PATTERN)),
    ))
    .build()
}

/// The query parameters of `GET /v1/tasks`.
impl IntoParams for tasks::ListParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        list_parameters()
    }
}

fn list_parameters() -> Vec<Parameter> {
    let status = optional_parameter(
        "status",
        ParameterIn::Query,
        "Only tasks in this state: `todo`, `in_progress` or `done`.".to_owned(),
    )
    .schema(Some(Ref::from_schema_name(StatusSchema::name())))
    .build();
    let limit = optional_parameter(
        "limit",
        ParameterIn::Query,
        format!("Page size, 1–{MAX_PAGE_LIMIT} (default {DEFAULT_PAGE_LIMIT})."),
    )
    .schema(Some(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1))
            .maximum(Some(MAX_PAGE_LIMIT)),
    ))
    .build();
    let cursor = optional_parameter(
        "cursor",
        ParameterIn::Query,
        "`next_cursor` of the previous page (opaque).".to_owned(),
    )
    .schema(Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(CURSOR_PATTERN)),
    ))
    .build();
    vec![status, limit, cursor]
}

#[cfg(test)]
mod tests {
    use super::with_thousands;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (200, "200"),
            (10_000, "10,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(with_thousands(n), text);
        }
    }
}
