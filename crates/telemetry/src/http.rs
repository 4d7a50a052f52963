//! Request correlation for actix-web: request ids, W3C trace context, the server span,
//! HTTP metrics and one access-log event per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::global;

/// The correlation header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route label of requests that matched no route (bounds label cardinality).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The current request's id (echoed from the client's `X-Request-Id` when it is 1–128
/// visible ASCII characters, otherwise generated), in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id of `req`, if the [`observe`] middleware ran.
    #[must_use]
    pub fn of(req: &HttpRequest) -> Option<String> {
        req.extensions().get::<Self>().map(|id| id.0.clone())
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

fn acceptable_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    ((1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_owned())
}

/// Semantic conventions: known methods by name, anything else as `_OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// The trace id of an incoming `traceparent` header (used when no exporter runs, so the
/// access log still correlates with the caller's trace).
fn traceparent_trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let id = value.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

struct Active(&'static str);

impl Drop for Active {
    fn drop(&mut self) {
        global().http_active.with_label_values(&[self.0]).dec();
    }
}

/// The middleware (`App::wrap(from_fn(observe))`, outermost so it sees the final
/// response): assigns the request id, continues the caller's trace, runs the request in
/// a server span, records `http.server.*` metrics and logs one access event. Never logs
/// bodies, query strings or headers.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(acceptable_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = method_label(req.method());
    // Resolved from the app's resource map up front, so the span is named at creation.
    let route = req
        .request()
        .resource_map()
        .match_pattern(req.path())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = %route,
        http.response.status_code = Empty,
        url.path = req.path(),
        url.scheme = "http",
        network.protocol.version = protocol_version(req.version()),
        "error.type" = Empty,
        request_id = %id,
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(req.headers())));
    let _ = span.set_parent(parent);
    let span_trace = span.context().span().span_context().clone();
    let trace_id = if span_trace.is_valid() {
        Some(span_trace.trace_id().to_string())
    } else {
        traceparent_trace_id(req.headers())
    };

    global().http_active.with_label_values(&[method]).inc();
    let active = Active(method);
    let outcome = next.call(req).instrument(span.clone()).await;
    drop(active);

    let status = match &outcome {
        Ok(res) => res.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let elapsed = started.elapsed();
    let code = status.as_u16();
    span.record("http.response.status_code", i64::from(code));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        // HTTP semantic conventions: without a more specific error, the status code.
        span.record("error.type", status.as_str());
    }
    global()
        .http_duration
        .with_label_values(&[method, route.as_str(), status.as_str()])
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            target: "http.access",
            method,
            route = %route,
            status = code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = %id,
            trace_id = trace_id.as_deref().unwrap_or(""),
            "request"
        );
    });

    let mut res = outcome?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    Ok(res)
}

/// `network.protocol.version` as the HTTP semantic conventions spell it (`1.1`, `2`).
fn protocol_version(version: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, test as actix_test, web};

    use super::*;

    #[actix_web::test]
    async fn ids_are_echoed_or_generated_and_routes_are_templates() {
        let app = actix_test::init_service(
            App::new()
                .route(
                    "/items/{id}",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
                .wrap(actix_web::middleware::from_fn(observe)),
        )
        .await;
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/items/42")
                .insert_header(("x-request-id", "abc-1"))
                .to_request(),
        )
        .await;
        assert_eq!(res.headers().get("x-request-id").unwrap(), "abc-1");
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/nowhere/7")
                .insert_header(("x-request-id", "bad id with spaces"))
                .to_request(),
        )
        .await;
        let generated = res
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(generated.len(), 32);
        let text = global().render();
        assert!(text.contains(r#"http_route="/items/{id}""#), "{text}");
        assert!(text.contains(r#"http_route="unmatched""#), "{text}");
        assert!(!text.contains("/items/42"), "raw paths never become labels");
    }

    #[test]
    fn traceparent_trace_ids_are_validated() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            traceparent_trace_id(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        headers.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        assert_eq!(traceparent_trace_id(&headers), None);
    }
}
