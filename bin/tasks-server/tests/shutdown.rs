//! The SIGTERM drain (docs/architecture.md §3), through the real binary: readiness fails at once,
//! the API keeps answering for the drain delay, in-flight requests finish, exit 0.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use support::Server;

const DRAIN_SECS: u64 = 2;
const TIMEOUT_SECS: u64 = 15;

async fn poll<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_finishes_in_flight_requests_and_exits_zero() {
    let drain = DRAIN_SECS.to_string();
    let timeout = TIMEOUT_SECS.to_string();
    let mut server = Server::start(&[
        ("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", drain.as_str()),
        ("TASKS_SHUTDOWN__TIMEOUT_SECS", timeout.as_str()),
    ])
    .await;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&serde_json::json!({"title": "slow one"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // Hold the task's row lock so a PATCH stays in flight for as long as we like.
    let mut blocker = server.db.connect().await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM tasks WHERE id = $1::text::uuid FOR UPDATE",
        &[&id],
    )
    .await
    .unwrap();
    let in_flight = tokio::spawn({
        let url = format!("{}/v1/tasks/{id}", server.api);
        async move {
            reqwest::Client::new()
                .patch(url)
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"status":"done"}"#)
                .send()
                .await
        }
    });
    let watcher = server.db.connect().await;
    poll(
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
    let admin = format!("{}/readyz", server.admin);
    poll("readiness to fail", Duration::from_secs(1), || async {
        http.get(&admin)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let body: serde_json::Value = http.get(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["checks"]["shutdown"]["status"], "fail");

    // During the drain the API still serves, asking clients to close their connections.
    let during = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{id}", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(during.status(), 200);
    assert_eq!(
        during
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(DRAIN_SECS),
        "checked within the drain window"
    );

    // After the drain the listener closes; the in-flight request is still running.
    let api_addr = server.api.trim_start_matches("http://").to_owned();
    poll(
        "the API listener to close",
        Duration::from_secs(DRAIN_SECS + 3),
        || {
            let addr = api_addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_err() }
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
    assert_eq!(finished.status(), 200, "the in-flight request completed");

    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECS + TIMEOUT_SECS))
        .expect("exited within drain + timeout");
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_the_drain_open() {
    let mut server = Server::start(&[
        ("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", "1"),
        ("TASKS_SHUTDOWN__TIMEOUT_SECS", "30"),
    ])
    .await;
    // A pooling client leaves its connection open after the response.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    assert_eq!(
        http.get(format!("{}/v1/tasks", server.api))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
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
    let mut server = Server::spawn(late.clone(), &[]);
    let http = reqwest::Client::new();
    let livez = format!("{}/livez", server.admin);
    poll("liveness", Duration::from_secs(10), || async {
        http.get(&livez)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let readyz = http
        .get(format!("{}/readyz", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let body: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["status"], "fail");

    let admin = server_db.connect().await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{}\"", late.name))
        .await
        .unwrap();
    server.wait_ready().await;
    let created = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&serde_json::json!({"title": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    server.sigterm();
    assert!(
        server
            .wait_exit(Duration::from_secs(20))
            .expect("exited")
            .success()
    );
}
