//! The SIGTERM drain (docs/architecture.md §3), through the real binary: readiness fails at once,
//! the API keeps answering for the drain delay, in-flight requests finish, exit 0.

use std::time::{Duration, Instant};

use serde_json::json;
use tasks_test_support::http::{Method, StatusCode};
use tasks_test_support::poll::eventually;

use crate::support::{MERGE_PATCH_JSON, tasks_process};

const DRAIN_SECS: u64 = 2;
const TIMEOUT_SECS: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_finishes_in_flight_requests_and_exits_zero() {
    let db = tasks_test_support::fresh_database().await;
    let mut server = tasks_process(&db)
        .env("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", DRAIN_SECS.to_string())
        .env("TASKS_SHUTDOWN__TIMEOUT_SECS", TIMEOUT_SECS.to_string())
        .spawn();
    server.wait_ready().await;
    let (api, admin) = (server.api().clone(), server.admin().clone());
    let created = api
        .post_json("/v1/tasks", &json!({"title": "slow one"}))
        .await
        .expect_json(StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();

    // Hold the task's row lock so a PATCH stays in flight for as long as we like.
    let mut blocker = db.connect().await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM tasks WHERE id = $1::text::uuid FOR UPDATE",
        &[&id],
    )
    .await
    .unwrap();
    let in_flight = tokio::spawn({
        let request = api
            .request(Method::PATCH, &format!("/v1/tasks/{id}"))
            .header("content-type", MERGE_PATCH_JSON)
            .body(r#"{"status":"done"}"#);
        let api = api.clone();
        async move { api.try_send(request).await }
    });
    let watcher = db.connect().await;
    eventually(
        "the PATCH to wait on the row lock",
        Duration::from_secs(10),
        || async {
            let row = watcher
                .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
                .await
                .unwrap();
            row.get::<_, i64>(0) > 0
        },
    )
    .await;

    server.sigterm();
    let signalled = Instant::now();
    admin
        .wait_for_status(
            "/readyz",
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(1),
        )
        .await;
    let body = admin.get("/readyz").await.json();
    assert_eq!(body["checks"]["shutdown"]["status"], "fail");

    // During the drain the API still serves, asking clients to close their connections.
    let during = api.fresh().get(&format!("/v1/tasks/{id}")).await;
    during.expect_status(StatusCode::OK);
    assert_eq!(during.header("connection"), Some("close"));
    assert!(
        signalled.elapsed() < Duration::from_secs(DRAIN_SECS),
        "checked within the drain window"
    );

    // After the drain the listener closes; the in-flight request is still running.
    eventually(
        "the API listener to close",
        Duration::from_secs(DRAIN_SECS + 3),
        || async {
            tokio::net::TcpStream::connect(api.authority())
                .await
                .is_err()
        },
    )
    .await;
    assert!(
        signalled.elapsed() >= Duration::from_secs(DRAIN_SECS),
        "served for the whole drain delay"
    );
    assert!(
        !in_flight.is_finished(),
        "the slow request is still in flight"
    );

    tx.commit().await.unwrap();
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(
        finished.status,
        StatusCode::OK,
        "the in-flight request completed"
    );

    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECS + TIMEOUT_SECS))
        .await
        .expect("exited within drain + timeout");
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_the_drain_open() {
    let db = tasks_test_support::fresh_database().await;
    let mut server = tasks_process(&db)
        .env("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", "1")
        .env("TASKS_SHUTDOWN__TIMEOUT_SECS", "30")
        .spawn();
    server.wait_ready().await;
    // A pooling client leaves its connection open after the response.
    let pooling = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let api = server.api().using(pooling);
    api.get("/v1/tasks").await.expect_status(StatusCode::OK);
    let signalled = Instant::now();
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exited");
    assert!(status.success(), "{}", server.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?}, close to the 30 s timeout",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_late_at_start_keeps_liveness_and_recovers_readiness() {
    // The server starts before its database exists: live, not ready, no crash loop.
    let server_db = tasks_test_support::fresh_database().await;
    let mut late = server_db.clone();
    late.name = format!("{}_late", server_db.name);
    let mut server = tasks_process(&late).spawn();
    server
        .wait_for_admin("/livez", StatusCode::OK, Duration::from_secs(10))
        .await;
    let readyz = server.admin().get("/readyz").await;
    readyz.expect_status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.json()["checks"]["database"]["status"], "fail");

    let admin = server_db.connect().await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{}\"", late.name))
        .await
        .unwrap();
    server.wait_ready().await;
    server
        .api()
        .post_json("/v1/tasks", &json!({"title": "late"}))
        .await
        .expect_status(StatusCode::CREATED);
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exited");
    assert!(status.success(), "{}", server.log());
}
