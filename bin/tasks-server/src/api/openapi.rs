//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::OpenApi;

use super::problem::Problem;
use super::tasks;

/// The API description served at `/openapi.json` and kept in `docs/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tasks API", description = "A small task tracking API over PostgreSQL. Errors are RFC 9457 problem documents; every response carries X-Request-Id.", license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")),
    paths(tasks::create, tasks::list, tasks::get, tasks::update, tasks::delete, openapi_json),
    components(schemas(tasks_domain::Task, tasks_domain::Status, tasks_domain::Page, tasks_domain::FieldError, Problem)),
    tags((name = "tasks", description = "Task tracking"), (name = "meta", description = "About the API"))
)]
pub struct ApiDoc;

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
