//! Request correlation for actix-web: request ids, W3C trace context, the server span,
//! HTTP metrics and one access-log event per request.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use prometheus::{Histogram, IntGauge};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::global;
use crate::span::{InSpan, in_span};

/// The correlation header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route label of requests that matched no route (bounds label cardinality).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The current request's id (echoed from the client's `X-Request-Id` when it is 1–128
/// visible ASCII characters, otherwise generated), in the request's extensions. Held as
/// the header value it is echoed as, so the id is built once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id of `req`, if the [`observe`] middleware ran.
    #[must_use]
    pub fn of(req: &HttpRequest) -> Option<String> {
        req.extensions()
            .get::<Self>()
            .map(|id| id.as_str().to_owned())
    }

    /// The id (visible ASCII by construction).
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

/// Whether an OpenTelemetry exporter runs (set by [`crate::init`]). Without one, the
/// server span has no OpenTelemetry context to continue, so the propagator and the
/// span-context look-ups are skipped and the caller's `traceparent` is read directly.
static EXPORTING: AtomicBool = AtomicBool::new(true);

pub(crate) fn set_exporting(exporting: bool) {
    EXPORTING.store(exporting, Ordering::Relaxed);
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

/// The client's id when acceptable: the header value itself is reused (no copy).
fn acceptable_id(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    ((1..=128).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic))
        .then(|| value.clone())
}

thread_local! {
    /// splitmix64 state, seeded once per thread from the OS (through std's hasher keys).
    static ID_STATE: Cell<u64> = Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(std::process::id().into());
        hasher.finish()
    });
}

fn next_random() -> u64 {
    ID_STATE.with(|state| {
        let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A new id: a UUIDv7 (time-ordered to the millisecond) in its 32-digit simple form. The
/// random bits come from a per-thread generator rather than `Uuid::now_v7`, which asks
/// the kernel for randomness (a system call) on every id; request ids correlate, they
/// are not secrets.
fn generated_id() -> HeaderValue {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (high, low) = (next_random(), next_random());
    let mut random = [0_u8; 10];
    random[..8].copy_from_slice(&high.to_le_bytes());
    random[8..].copy_from_slice(&low.to_le_bytes()[..2]);
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    let mut text = [0_u8; uuid::fmt::Simple::LENGTH];
    let text = uuid.simple().encode_lower(&mut text);
    // 32 lowercase hex digits are always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("0"))
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

/// The W3C trace-context header.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace id of an incoming `traceparent` header (used when no exporter runs, so the
/// access log still correlates with the caller's trace). Looked up by a constant name: a
/// `&str` name is parsed and validated on every look-up (~500 instructions a request).
fn traceparent_trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let id = value.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// Most label sets a worker thread keeps resolved; beyond it (never with bounded labels)
/// the registry is asked each time.
const CACHED_LABEL_SETS: usize = 64;

/// A resolved `http.server.request.duration` child: method, status code, route.
type DurationChild = (&'static str, u16, Box<str>, Histogram);

thread_local! {
    /// `http.server.active_requests` children resolved once per method, per thread.
    static ACTIVE: RefCell<Vec<(&'static str, IntGauge)>> = const { RefCell::new(Vec::new()) };
    /// `http.server.request.duration` children resolved once per (method, route,
    /// status), per thread: the registry's look-up hashes the labels and takes a lock.
    static DURATIONS: RefCell<Vec<DurationChild>> = const { RefCell::new(Vec::new()) };
}

fn active_gauge(method: &'static str) -> IntGauge {
    ACTIVE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, gauge)) = cache.iter().find(|(m, _)| *m == method) {
            return gauge.clone();
        }
        let gauge = global().http_active.with_label_values(&[method]);
        cache.push((method, gauge.clone()));
        gauge
    })
}

fn observe_duration(method: &'static str, route: &str, status: u16, seconds: f64) {
    DURATIONS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((.., histogram)) = cache
            .iter()
            .find(|(m, s, r, _)| *s == status && *m == method && &**r == route)
        {
            histogram.observe(seconds);
            return;
        }
        let code = actix_web::http::StatusCode::from_u16(status)
            .map_or_else(|_| status.to_string(), |s| s.as_str().to_owned());
        let histogram = global()
            .http_duration
            .with_label_values(&[method, route, code.as_str()]);
        histogram.observe(seconds);
        if cache.len() < CACHED_LABEL_SETS {
            cache.push((method, status, route.into(), histogram));
        }
    });
}

struct Active(IntGauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware as a function (`App::wrap(from_fn(observe))`, outermost so it sees
/// the final response): assigns the request id, continues the caller's trace, runs the
/// request in a server span, records `http.server.*` metrics and logs one access event.
/// Never logs bodies, query strings or headers. [`Observe`] does the same without
/// `from_fn`'s two boxed futures per request.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let pending = Pending::begin(&req);
    let outcome = in_span(next.call(req), pending.span.clone()).await;
    pending.finish(outcome)
}

/// [`observe`] as a [`Transform`] (`App::wrap(Observe)`, outermost): the work before the
/// request is done synchronously in `call`, and the wrapped service's own future is
/// polled inside [`ObserveFuture`], a concrete type, where `from_fn` boxes both its own
/// future and the wrapped service's (two allocations per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct Observe;

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(ObserveService { service }))
    }
}

/// The service [`Observe`] wraps around the application.
#[derive(Debug)]
pub struct ObserveService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = ObserveFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let pending = Pending::begin(&req);
        // `InSpan`, not `Instrumented`: the completed future is dropped inside the span
        // enter of its last poll, not in one more enter and exit when this future is
        // dropped (see `crate::span`).
        let inner = in_span(self.service.call(req), pending.span.clone());
        ObserveFuture {
            inner,
            pending: Some(pending),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ObserveService`]: the wrapped service's future in the server
    /// span, then the outcome recorded.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: InSpan<F>,
        pending: Option<Pending>,
    }
}

impl<F, B> Future for ObserveFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.inner.poll(cx));
        match this.pending.take() {
            Some(pending) => Poll::Ready(pending.finish(outcome)),
            // Not reached: polled again after completion (a caller's bug), `InSpan`
            // panics before this, as the futures it wraps would.
            None => Poll::Ready(outcome),
        }
    }
}

/// What [`observe`] knows about a request before the application runs.
struct Pending {
    started: Instant,
    id_value: HeaderValue,
    request_id: RequestId,
    method: &'static str,
    early_route: Option<String>,
    span: tracing::Span,
    trace_id: Option<String>,
    active: Active,
}

impl Pending {
    /// Assigns the request id, opens the server span and counts the request as active.
    fn begin(req: &ServiceRequest) -> Self {
        let started = Instant::now();
        let id_value = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(acceptable_id)
            .unwrap_or_else(generated_id);
        let request_id = RequestId(id_value.clone());
        let method = method_label(req.method());
        let exporting = EXPORTING.load(Ordering::Relaxed);
        // With an exporter the span is named before the request runs, so the route comes
        // from matching the path against the app's resource map (its patterns are
        // regexes: costly). Without one the span's name is seen by nobody, and the route
        // is read after routing from the resource ids the router recorded, which matches
        // nothing again.
        let early_route = exporting.then(|| {
            req.request()
                .resource_map()
                .match_pattern(req.path())
                .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned())
        });
        let id = request_id.as_str();
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            http.route = Empty,
            http.response.status_code = Empty,
            url.path = req.path(),
            url.scheme = "http",
            network.protocol.version = protocol_version(req.version()),
            "error.type" = Empty,
            request_id = id,
        );
        if let Some(route) = &early_route {
            record_route(&span, method, route);
        }
        let trace_id = if exporting {
            let parent = opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&Headers(req.headers()))
            });
            let _ = span.set_parent(parent);
            let span_trace = span.context().span().span_context().clone();
            if span_trace.is_valid() {
                Some(span_trace.trace_id().to_string())
            } else {
                traceparent_trace_id(req.headers())
            }
        } else {
            traceparent_trace_id(req.headers())
        };
        req.extensions_mut().insert(request_id.clone());

        let gauge = active_gauge(method);
        gauge.inc();
        Self {
            started,
            id_value,
            request_id,
            method,
            early_route,
            span,
            trace_id,
            active: Active(gauge),
        }
    }

    /// Records the outcome (span fields, metrics, the access event) and echoes the id.
    fn finish<B>(
        self,
        outcome: Result<ServiceResponse<B>, actix_web::Error>,
    ) -> Result<ServiceResponse<B>, actix_web::Error> {
        let Self {
            started,
            id_value,
            request_id,
            method,
            early_route,
            span,
            trace_id,
            active,
        } = self;
        drop(active);

        let status = match &outcome {
            Ok(res) => res.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        let route = match (early_route, &outcome) {
            (Some(route), _) => route,
            (None, Ok(res)) => {
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
                record_route(&span, method, &route);
                route
            }
            // A middleware failed before a response existed: nothing says which route it
            // was.
            (None, Err(_)) => UNMATCHED_ROUTE.to_owned(),
        };
        let elapsed = started.elapsed();
        let code = status.as_u16();
        span.record("http.response.status_code", i64::from(code));
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            // HTTP semantic conventions: without a more specific error, the status code.
            span.record("error.type", status.as_str());
        }
        observe_duration(method, &route, code, elapsed.as_secs_f64());
        let id = request_id.as_str();
        span.in_scope(|| {
            tracing::info!(
                target: "http.access",
                method,
                route = route.as_str(),
                status = code,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                request_id = id,
                trace_id = trace_id.as_deref().unwrap_or(""),
                "request"
            );
        });

        let mut res = outcome?;
        res.headers_mut().insert(REQUEST_ID.clone(), id_value);
        Ok(res)
    }
}

fn record_route(span: &tracing::Span, method: &str, route: &str) {
    span.record("otel.name", format_args!("{method} {route}"));
    span.record("http.route", route);
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
