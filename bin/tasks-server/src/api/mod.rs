//! The HTTP API: routes, middleware order and error handling.

pub mod body;
pub mod caller;
pub mod openapi;
pub mod problem;
mod task_json;
pub mod tasks;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::guard::{Guard, GuardContext};
use actix_web::http::Method;
use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpResponse, Route, web};

use problem::{ApiError, problem_for_any_error};

/// Per-app limits on request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a client may take to send the whole body.
    pub body_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 65_536,
            body_timeout_ms: 10_000,
        }
    }
}

fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone {
    move || std::future::ready(Err(ApiError::MethodNotAllowed(allow)))
}

/// Matches requests of one method, like `web::get()` and its siblings, whose `MethodGuard`
/// also records each method it checks in the request's extensions (an allocation per
/// request) for a 405 `Allow` header these resources build themselves
/// ([`method_not_allowed`]).
#[derive(Debug)]
struct MethodIs(Method);

impl Guard for MethodIs {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        ctx.head().method == self.0
    }
}

fn on(method: Method) -> Route {
    web::route().guard(MethodIs(method))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoSuchResource)
}

/// Mounts the API on an app that already holds `web::Data<ApiState>`.
pub fn configure(limits: Limits) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::PayloadConfig::new(limits.max_body_bytes))
            .app_data(limits)
            .service(
                web::resource("/v1/tasks")
                    .route(on(Method::GET).to(tasks::list))
                    .route(on(Method::POST).to(tasks::create))
                    .default_service(web::to(method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/v1/tasks/{id}")
                    .route(on(Method::GET).to(tasks::get))
                    .route(on(Method::PATCH).to(tasks::update))
                    .route(on(Method::DELETE).to(tasks::delete))
                    .default_service(web::to(method_not_allowed("GET, PATCH, DELETE"))),
            )
            .service(
                web::resource("/openapi.json")
                    .route(on(Method::GET).to(openapi::openapi_json))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .default_service(web::to(not_found));
    }
}

/// The API application: routes, the error-to-problem conversion, draining, and request
/// telemetry (outermost, so it sees the final response and times everything).
pub fn app(
    state: web::Data<tasks::ApiState>,
    health: web::Data<tasks_health::Health>,
    authenticator: web::Data<tasks_auth::Authenticator>,
    limits: Limits,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(health)
        .app_data(authenticator)
        .configure(configure(limits))
        .wrap(ErrorHandlers::new().default_handler(problem_for_any_error))
        .wrap(tasks_health::shutdown::CloseWhenDraining)
        .wrap(tasks_telemetry::http::Observe)
}
