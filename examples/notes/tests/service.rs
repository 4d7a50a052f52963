//! The notes service end to end: the real binary against a real PostgreSQL, configured
//! only through `NOTES_*` and a secrets directory, probed, used, and drained by SIGTERM.
//! The process comes from the workspace's harness (`tasks_test_support::process`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use serde_json::json;
use tasks_test_support::TestDatabase;
use tasks_test_support::http::StatusCode;
use tasks_test_support::process::{ServiceCommand, ServiceProcess};

const BIN: &str = env!("CARGO_BIN_EXE_notes-service");
const DRAIN_SECS: u64 = 2;
const TIMEOUT_SECS: u64 = 5;

/// The service on `db`: `NOTES_*` settings (the `TASKS_*` and `OTEL_*` variables of the
/// test process removed), the password and an API-token file (`notes:read`,
/// `notes:write`, the token sent by its API client) in the secrets directory; `extra` is
/// applied last.
fn notes(db: &TestDatabase, extra: &[(&str, &str)]) -> ServiceProcess {
    let token = tasks_auth::mint_api_token("notes-test", &["notes:read", "notes:write"]).unwrap();
    ServiceCommand::new(BIN, "NOTES")
        .scrub("TASKS_")
        .envs(
            db.env_for("NOTES")
                .into_iter()
                .filter(|(k, _)| k != "NOTES_DATABASE__PASSWORD"),
        )
        .secret_file("database.password", format!("{}\n", db.password))
        .secret_file("auth.api_tokens", format!("{}\n", token.line()))
        .bearer_token(token.token())
        .env("NOTES_SHUTDOWN__DRAIN_DELAY_SECS", DRAIN_SECS.to_string())
        .env("NOTES_SHUTDOWN__TIMEOUT_SECS", TIMEOUT_SECS.to_string())
        .envs(extra.iter().copied())
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_a_round_trip_metrics_and_the_sigterm_drain() {
    let db = tasks_test_support::fresh_database().await;
    // A TASKS_ variable that would be fatal to tasks-server means nothing to this service.
    let mut notes = notes(&db, &[("TASKS_HTTP__PORT", "not-a-port")]);
    notes.wait_ready().await;
    let (api, admin) = (notes.api().clone(), notes.admin().clone());
    admin.get("/livez").await.expect_status(StatusCode::OK);
    let ready = admin.get("/readyz").await.json();
    assert_eq!(ready["checks"]["database"]["status"], "ok", "{ready}");

    // The service's own migrations ran, under its own advisory-lock scope.
    let sql = db.connect().await;
    let applied: i64 = sql
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);

    // Callers authenticate.
    api.anonymous()
        .post_json("/notes", &json!({"body": "anonymous"}))
        .await
        .expect_status(StatusCode::UNAUTHORIZED);

    // One request round trip.
    let created = api
        .post_json("/notes", &json!({"body": "remember the milk"}))
        .await;
    let note = created.expect_json(StatusCode::CREATED);
    let location = created.header("location").unwrap().to_owned();
    assert_eq!(location, format!("/notes/{}", note["id"]));
    let fetched = api.get(&location).await;
    assert!(fetched.header("x-request-id").is_some());
    assert_eq!(fetched.expect_json(StatusCode::OK), note);
    api.get("/notes/999999999")
        .await
        .expect_status(StatusCode::NOT_FOUND);
    api.post_json("/notes", &json!({"body": ""}))
        .await
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);

    // Telemetry under this service's name, with route templates from the middleware.
    let metrics = admin.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"service_name="notes""#),
        "build_info names the service:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"http_route="/notes/{id}""#),
        "requests are measured by route:\n{metrics}"
    );

    // SIGTERM: not ready at once, the API still answers during the drain, then exit 0.
    notes.sigterm();
    let signalled = Instant::now();
    notes
        .wait_for_admin(
            "/readyz",
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(1),
        )
        .await;
    let during = api.fresh().get(&location).await;
    during.expect_status(StatusCode::OK);
    assert_eq!(during.header("connection"), Some("close"));
    assert!(
        signalled.elapsed() < Duration::from_secs(DRAIN_SECS),
        "checked within the drain window"
    );
    let status = notes
        .wait_exit(Duration::from_secs(DRAIN_SECS + TIMEOUT_SECS + 5))
        .await
        .unwrap_or_else(|| panic!("still running after the drain; log:\n{}", notes.log()));
    assert!(
        signalled.elapsed() >= Duration::from_secs(DRAIN_SECS),
        "served for the whole drain delay"
    );
    let log = notes.log();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        !log.contains(&db.password),
        "the password never reaches the log"
    );
    assert!(log.contains(r#""message":"stopped""#), "{log}");
}

/// Runs the service with `extra`, expecting it to exit 2 at once; its log.
async fn configuration_error(extra: &[(&str, &str)]) -> String {
    let db = tasks_test_support::fresh_database().await;
    let mut notes = notes(&db, extra);
    let status = notes
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits at once");
    let log = notes.log();
    assert_eq!(status.code(), Some(2), "{log}");
    log
}

#[tokio::test]
async fn an_unknown_notes_variable_is_a_configuration_error() {
    let log = configuration_error(&[("NOTES_DATABSE__HOST", "db.example")]).await;
    assert!(
        log.contains("databse.host: unknown configuration key (from NOTES_DATABSE__HOST)"),
        "{log}"
    );
}

#[tokio::test]
async fn a_key_of_another_service_is_refused() {
    let log = configuration_error(&[("NOTES_DATABASE__PIPELINED_READS", "false")]).await;
    assert!(
        log.contains(
            "database.pipelined_reads: unknown configuration key (from NOTES_DATABASE__PIPELINED_READS)"
        ),
        "{log}"
    );
}
