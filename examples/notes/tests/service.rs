//! The notes service end to end: the real binary against a real PostgreSQL, configured
//! only through `NOTES_*` and a secrets directory, probed, used, and drained by SIGTERM.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tasks_test_support::TestDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_notes-service");
const DRAIN_SECS: u64 = 2;
const TIMEOUT_SECS: u64 = 5;

/// A running `notes-service` process; killed on drop.
struct Notes {
    child: Child,
    api: String,
    admin: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Notes {
    /// Spawns the service on `db` with the password in `NOTES_SECRETS_DIR/database.password`.
    /// Every `NOTES_*`, `TASKS_*` and `OTEL_*` variable of the test process is removed
    /// first; `extra` is applied last.
    fn spawn(db: &TestDatabase, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(
            secrets.join("database.password"),
            format!("{}\n", db.password),
        )
        .unwrap();
        let log_path = dir.path().join("notes.log");
        let log = File::create(&log_path).unwrap();
        let (api_port, admin_port) = free_ports();

        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if ["NOTES_", "TASKS_", "OTEL_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                command.env_remove(&key);
            }
        }
        let child = command
            .envs([
                ("NOTES_HTTP__HOST", "127.0.0.1".to_owned()),
                ("NOTES_HTTP__PORT", api_port.to_string()),
                ("NOTES_ADMIN__HOST", "127.0.0.1".to_owned()),
                ("NOTES_ADMIN__PORT", admin_port.to_string()),
                ("NOTES_DATABASE__HOST", db.host.clone()),
                ("NOTES_DATABASE__PORT", db.port.to_string()),
                ("NOTES_DATABASE__NAME", db.name.clone()),
                ("NOTES_DATABASE__USER", db.user.clone()),
                ("NOTES_SECRETS_DIR", secrets.to_str().unwrap().to_owned()),
                ("NOTES_SHUTDOWN__DRAIN_DELAY_SECS", DRAIN_SECS.to_string()),
                ("NOTES_SHUTDOWN__TIMEOUT_SECS", TIMEOUT_SECS.to_string()),
            ])
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn notes-service");
        Self {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            log_path,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    fn sigterm(&self) {
        // Through kill(1): the workspace forbids `unsafe`.
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `condition` every 20 ms; panics with the service log after `limit` or when the
    /// process has exited.
    async fn poll<F, Fut>(&mut self, what: &str, limit: Duration, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Notes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn status_of(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_a_round_trip_metrics_and_the_sigterm_drain() {
    let db = tasks_test_support::fresh_database().await;
    // A TASKS_ variable that would be fatal to tasks-server means nothing to this service.
    let mut notes = Notes::spawn(&db, &[("TASKS_HTTP__PORT", "not-a-port")]);
    let http = client();
    let (livez, readyz) = (
        format!("{}/livez", notes.admin),
        format!("{}/readyz", notes.admin),
    );

    let (h, url) = (http.clone(), readyz.clone());
    notes
        .poll("/readyz 200", Duration::from_secs(30), move || {
            let (h, url) = (h.clone(), url.clone());
            async move { status_of(&h, &url).await == Some(200) }
        })
        .await;
    assert_eq!(status_of(&http, &livez).await, Some(200));
    let ready: serde_json::Value = http
        .get(&readyz)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["database"]["status"], "ok", "{ready}");

    // The service's own migrations ran, under its own advisory-lock scope.
    let sql = db.connect().await;
    let applied: i64 = sql
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);

    // One request round trip.
    let created = http
        .post(format!("{}/notes", notes.api))
        .json(&serde_json::json!({"body": "remember the milk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let note: serde_json::Value = created.json().await.unwrap();
    assert_eq!(location, format!("/notes/{}", note["id"]));
    let fetched = http
        .get(format!("{}{location}", notes.api))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.headers().contains_key("x-request-id"));
    assert_eq!(fetched.json::<serde_json::Value>().await.unwrap(), note);
    let missing = status_of(&http, &format!("{}/notes/999999999", notes.api)).await;
    assert_eq!(missing, Some(404));
    let empty = http
        .post(format!("{}/notes", notes.api))
        .json(&serde_json::json!({"body": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 422);

    // Telemetry under this service's name, with route templates from the middleware.
    let metrics = http
        .get(format!("{}/metrics", notes.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let (h, url) = (http.clone(), readyz.clone());
    notes
        .poll(
            "/readyz 503 after SIGTERM",
            Duration::from_secs(1),
            move || {
                let (h, url) = (h.clone(), url.clone());
                async move { status_of(&h, &url).await == Some(503) }
            },
        )
        .await;
    let during = client()
        .get(format!("{}{location}", notes.api))
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
    let status = notes
        .wait_exit(Duration::from_secs(DRAIN_SECS + TIMEOUT_SECS + 5))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_notes_variable_is_a_configuration_error() {
    let db = tasks_test_support::fresh_database().await;
    let mut notes = Notes::spawn(&db, &[("NOTES_DATABSE__HOST", "db.example")]);
    let status = notes
        .wait_exit(Duration::from_secs(10))
        .expect("exits at once");
    let log = notes.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("databse.host: unknown configuration key (from NOTES_DATABSE__HOST)"),
        "{log}"
    );
}

#[tokio::test]
async fn a_key_of_another_service_is_refused() {
    let db = tasks_test_support::fresh_database().await;
    let mut notes = Notes::spawn(&db, &[("NOTES_DATABASE__PIPELINED_READS", "false")]);
    let status = notes
        .wait_exit(Duration::from_secs(10))
        .expect("exits at once");
    let log = notes.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(
            "database.pipelined_reads: unknown configuration key (from NOTES_DATABASE__PIPELINED_READS)"
        ),
        "{log}"
    );
}
