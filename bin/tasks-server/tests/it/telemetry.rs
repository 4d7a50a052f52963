//! Observability through the real binary: spans reach a real OTLP/HTTP receiver with
//! the caller's trace id and a database child span; a dead collector costs nothing;
//! `/metrics` parses and counts exactly; the database password appears nowhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use tasks_test_support::http::{Method, StatusCode};
use tasks_test_support::poll::{eventually, eventually_some};
use tasks_test_support::process::{ServiceProcess, closed_port, free_ports};

use crate::support::tasks_process;

/// `tasks-server` on a fresh database with `env` (the `OTEL_*` variables), ready.
async fn start(env: &[(&str, &str)]) -> (ServiceProcess, tasks_test_support::TestDatabase) {
    let db = tasks_test_support::fresh_database().await;
    let mut server = tasks_process(&db).envs(env.iter().copied()).spawn();
    server.wait_ready().await;
    (server, db)
}

/// Creates a task with the caller's trace context.
async fn traced_create(server: &ServiceProcess, title: &str) {
    let api = server.api();
    api.send(
        api.request(Method::POST, "/v1/tasks")
            .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
            .json(&json!({"title": title})),
    )
    .await
    .expect_status(StatusCode::CREATED);
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    raw: Vec<u8>,
}

/// A real OTLP/HTTP trace receiver on a loopback port.
async fn receiver() -> (String, Arc<Mutex<Received>>, actix_web::dev::ServerHandle) {
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = web::Data::from(received.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(sink.clone()).route(
            "/v1/traces",
            web::post().to(
                |body: web::Bytes, sink: web::Data<Mutex<Received>>| async move {
                    let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                    let mut sink = sink.lock().unwrap();
                    sink.raw.extend_from_slice(&body);
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            sink.spans.extend(scope.spans);
                        }
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let running = server.run();
    let handle = running.handle();
    tokio::spawn(running);
    (format!("http://127.0.0.1:{port}"), received, handle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[actix_web::test]
async fn server_and_database_spans_reach_the_collector_with_the_callers_trace_id() {
    let (endpoint, received, collector) = receiver().await;
    let (mut server, db) = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "tasks-under-test"),
    ])
    .await;
    traced_create(&server, "traced").await;

    let (server_span, db_span) = eventually_some(
        "a server span with a database child",
        Duration::from_secs(15),
        || async {
            let got = received.lock().unwrap();
            let server_span = got
                .spans
                .iter()
                .find(|s| hex(&s.trace_id) == TRACE_ID && attribute(s, "http.route").is_some())?;
            let child = got.spans.iter().find(|s| {
                s.parent_span_id == server_span.span_id
                    || (hex(&s.trace_id) == TRACE_ID && attribute(s, "db.system.name").is_some())
            })?;
            attribute(child, "db.system.name")?;
            Some((server_span.clone(), child.clone()))
        },
    )
    .await;
    assert_eq!(
        hex(&server_span.parent_span_id),
        PARENT_SPAN,
        "continues the caller's trace"
    );
    assert_eq!(server_span.name, "POST /v1/tasks");
    assert!(
        matches!(
            attribute(&server_span, "http.response.status_code"),
            Some(AnyValue::IntValue(201))
        ),
        "{:?}",
        server_span.attributes
    );
    assert!(
        matches!(attribute(&server_span, "http.request.method"), Some(AnyValue::StringValue(m)) if m == "POST")
    );
    assert!(
        matches!(attribute(&server_span, "network.protocol.version"), Some(AnyValue::StringValue(v)) if v == "1.1"),
        "{:?}",
        server_span.attributes
    );
    assert!(
        attribute(&server_span, "error.type").is_none(),
        "a 201 is no error: {:?}",
        server_span.attributes
    );
    assert!(
        matches!(attribute(&db_span, "db.system.name"), Some(AnyValue::StringValue(s)) if s == "postgresql")
    );
    assert!(
        matches!(attribute(&db_span, "db.operation.name"), Some(AnyValue::StringValue(s)) if s == "INSERT")
    );
    assert_eq!(hex(&db_span.trace_id), TRACE_ID);

    // Spans still batched at shutdown are flushed.
    let before = received.lock().unwrap().spans.len();
    server
        .api()
        .get("/v1/tasks?limit=1")
        .await
        .expect_status(StatusCode::OK);
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{}", server.log());
    assert!(
        received.lock().unwrap().spans.len() > before,
        "the last spans were flushed on shutdown"
    );

    let secret = db.password.clone();
    assert!(
        !String::from_utf8_lossy(&received.lock().unwrap().raw).contains(&secret),
        "no secret in spans"
    );
    assert!(!server.log().contains(&secret), "no secret in logs");
    let log = server.log();
    let access = log
        .lines()
        .find(|l| l.contains("\"http.access\"") && l.contains(TRACE_ID))
        .expect("an access log line");
    let access: serde_json::Value = serde_json::from_str(access).unwrap();
    assert_eq!(access["route"], "/v1/tasks");
    assert_eq!(access["status"], 201);
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    collector.stop(false).await;
}

#[actix_web::test]
async fn a_dead_collector_never_fails_or_slows_requests() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let (mut server, _db) = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    for i in 0..50 {
        let started = Instant::now();
        server
            .api()
            .post_json("/v1/tasks", &json!({"title": format!("t{i}")}))
            .await
            .expect_status(StatusCode::CREATED);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    server.sigterm();
    let exited = Instant::now();
    let status = server.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{}", server.log());
    assert!(exited.elapsed() < Duration::from_secs(15));
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |b| b.count)
            }
            _ => 0.0,
        })
        .sum()
}

#[actix_web::test]
async fn metrics_parse_and_count_exactly_the_requests_made() {
    // A process of its own: metrics are process-global, so only a process counts exactly.
    let (server, db) = start(&[]).await;
    let api = server.api();
    let scrape = || async { server.admin().get("/metrics").await.text() };
    let labels = [
        ("http_request_method", "POST"),
        ("http_route", "/v1/tasks"),
        ("http_response_status_code", "201"),
    ];
    let before = sample(
        &scrape().await,
        "http_server_request_duration_seconds_count",
        &labels,
    );
    for i in 0..7 {
        api.post_json("/v1/tasks", &json!({"title": format!("m{i}")}))
            .await
            .expect_status(StatusCode::CREATED);
    }
    api.get("/v1/tasks/not-a-uuid").await;
    api.get(&format!("/no/such/{}", uuid::Uuid::now_v7())).await;
    let text = scrape().await;
    assert_eq!(
        sample(&text, "http_server_request_duration_seconds_count", &labels) - before,
        7.0
    );
    // (The parser does not cope with braces inside label values; match the line itself.)
    assert!(text.contains(
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="400",http_route="/v1/tasks/{id}"} 1"#
    ), "{text}");
    assert!(
        sample(
            &text,
            "http_server_request_duration_seconds_count",
            &[("http_route", "unmatched")]
        ) >= 1.0
    );
    assert!(!text.contains("/no/such/"), "raw paths never become labels");
    assert!(
        sample(
            &text,
            "db_client_operation_duration_seconds_count",
            &[("db_operation_name", "INSERT")]
        ) >= 7.0
    );
    assert!(sample(&text, "db_client_connection_max", &[]) >= 1.0);
    assert!(sample(&text, "process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(
        sample(&text, "build_info", &[("service_name", "tasks-server")]),
        1.0
    );
    assert!(!text.contains(&db.password), "no secret in metrics");
}

mod grpc {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };

    use super::*;

    struct Sink(Arc<Mutex<Received>>);

    #[tonic::async_trait]
    impl TraceService for Sink {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut sink = self.0.lock().unwrap();
            for resource in request.into_inner().resource_spans {
                for scope in resource.scope_spans {
                    sink.spans.extend(scope.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    /// A real OTLP/gRPC trace receiver on a loopback port.
    async fn receiver() -> (String, Arc<Mutex<Received>>) {
        let received = Arc::new(Mutex::new(Received::default()));
        let [port] = free_ports();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let service = TraceServiceServer::new(Sink(received.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(addr),
        );
        eventually(
            "the gRPC receiver to start",
            Duration::from_secs(10),
            || async { tokio::net::TcpStream::connect(addr).await.is_ok() },
        )
        .await;
        (format!("http://127.0.0.1:{port}"), received)
    }

    #[actix_web::test]
    async fn spans_reach_a_grpc_collector_when_the_protocol_says_grpc() {
        let (endpoint, received) = receiver().await;
        let (mut server, _db) = start(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .await;
        traced_create(&server, "over grpc").await;
        let arrived = tasks_test_support::poll::poll_until(Duration::from_secs(15), || async {
            received
                .lock()
                .unwrap()
                .spans
                .iter()
                .any(|s| hex(&s.trace_id) == TRACE_ID && s.name == "POST /v1/tasks")
                .then_some(())
        })
        .await;
        assert!(
            arrived.is_some(),
            "no server span arrived over gRPC\n{}",
            server.log()
        );
        server.sigterm();
        let status = server.wait_exit(Duration::from_secs(20)).await.unwrap();
        assert!(status.success(), "{}", server.log());
    }
}
