//! The harness of this test binary, on top of `tasks-test-support`:
//!
//! * [`spawn_app`]: the whole service in-process ([`tasks_server::Application`]) on a
//!   fresh database of the caller's, on loopback port 0, returned once `/readyz` answers
//!   200. API behaviour is tested this way: no process per test. [`spawn_app_with`]
//!   adjusts the settings first; [`start_app`] does not wait for readiness (for a
//!   database that is unreachable on purpose).
//! * [`tasks_process`]: the real binary as a process, for what only a process shows
//!   (signals, exit codes, configuration errors, logs, telemetry from `OTEL_*`).
//! * [`ProblemReply::expect_problem`] and [`error_fields`]: the API's RFC 9457 problem
//!   documents.
//!
//! Authentication is on, as in production: each service gets an API-token file with one
//! minted token ([`TEST_PRINCIPAL`], scopes `tasks:read` and `tasks:write`), and its API
//! client sends that token; `api.anonymous()` sends none.
//!
//! Telemetry metrics are process-global: in-process tests never assert exact metric
//! counts (another app in this process may change them); the metrics test runs a process.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tasks_auth::{MintedToken, mint_api_token};
use tasks_runtime::ListenerSettings;
use tasks_server::settings::Settings;
use tasks_server::{Application, SecretOrigins};
use tasks_test_support::TestDatabase;
use tasks_test_support::http::{HttpClient, Reply, StatusCode};
use tasks_test_support::in_process::{InProcess, Started};
use tasks_test_support::process::{READY_TIMEOUT, ServiceCommand};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tasks-server");

/// The principal of the tests' API token.
pub const TEST_PRINCIPAL: &str = "test-client";
/// What the service records as the owner of what [`TEST_PRINCIPAL`] creates
/// (`tasks_auth::Principal::id` of an API token).
pub const TEST_OWNER: &str = "token:test-client";

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const MERGE_PATCH_JSON: &str = "application/merge-patch+json";

/// The service running in this process.
#[derive(Debug)]
pub struct TestApp {
    /// A client of the API listener, sending the test token.
    pub api: HttpClient,
    /// A client of the admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin: HttpClient,
    /// The database the service was given.
    pub db: TestDatabase,
    /// The API token [`TestApp::api`] sends ([`TEST_PRINCIPAL`], read and write).
    pub token: String,
    running: InProcess<(SocketAddr, SocketAddr)>,
}

impl TestApp {
    /// Tasks in the database, counted with SQL.
    pub async fn task_count(&self) -> i64 {
        self.db
            .connect()
            .await
            .query_one("SELECT count(*) FROM tasks", &[])
            .await
            .expect("count tasks")
            .get(0)
    }

    /// Whether the service is still running (it never stops by itself).
    pub fn is_running(&self) -> bool {
        !self.running.is_finished()
    }
}

/// A new API token for [`TEST_PRINCIPAL`] with the scopes `tasks:read` and `tasks:write`:
/// the token for the client, the line for the service's token file.
pub fn test_token() -> MintedToken {
    mint_api_token(TEST_PRINCIPAL, &["tasks:read", "tasks:write"]).expect("mint a test token")
}

/// The settings of an in-process service on `db`: loopback port 0 for both listeners,
/// two workers, no drain delay, `auth.api_tokens` holding `token`'s line.
pub fn test_settings(db: &TestDatabase, token: &MintedToken) -> Settings {
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".to_owned();
    settings.http.port = 0;
    settings.http.workers = 2;
    settings.admin = ListenerSettings::loopback(0);
    settings.shutdown.drain_delay_secs = 0;
    let database = &mut settings.database.common;
    database.host = db.host.clone();
    database.port = db.port;
    database.name = db.name.clone();
    database.user = db.user.clone();
    database.password = Some(db.password.clone().into());
    settings.auth.api_tokens = Some(format!("{}\n", token.line()).into());
    settings
}

/// The service on `db`, ready.
pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// The service on `db` with `configure` applied to [`test_settings`], ready.
pub async fn spawn_app_with(db: &TestDatabase, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let app = start_app(db, configure).await;
    app.admin
        .wait_for_status("/readyz", StatusCode::OK, READY_TIMEOUT)
        .await;
    app
}

/// The service on `db` with `configure` applied to [`test_settings`], returned as soon
/// as its listeners are bound.
pub async fn start_app(db: &TestDatabase, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let token = test_token();
    let mut settings = test_settings(db, &token);
    configure(&mut settings);
    let running = InProcess::start("tasks-server", move || {
        let app = Application::build(&settings, &SecretOrigins::plain())?.handle_signals(false);
        let stop = app.stop_handle();
        anyhow::Ok(Started {
            info: (app.api_address(), app.admin_address()),
            stop: Box::new(move || stop.stop()),
            run: Box::pin(
                async move { app.run_until_stopped().await.map_err(|e| format!("{e:#}")) },
            ),
        })
    })
    .await;
    let (api, admin) = *running.info();
    TestApp {
        api: HttpClient::new(format!("http://{api}")).with_bearer(token.token()),
        admin: HttpClient::new(format!("http://{admin}")),
        db: db.clone(),
        token: token.token().to_owned(),
        running,
    }
}

/// `tasks-server` as a process (see `tasks_test_support::process`), with JSON logs, two
/// workers and no drain delay; add the database with [`tasks_process`].
pub fn tasks_command() -> ServiceCommand {
    ServiceCommand::new(BIN, "TASKS").envs([
        ("TASKS_LOG__FORMAT", "json"),
        ("TASKS_HTTP__WORKERS", "2"),
        ("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", "0"),
    ])
}

/// [`tasks_command`] on `db`, with an API-token file (`auth.api_tokens` in the secrets
/// directory) whose token the process's API client sends.
pub fn tasks_process(db: &TestDatabase) -> ServiceCommand {
    let token = test_token();
    tasks_command()
        .envs(db.env())
        .secret_file("auth.api_tokens", format!("{}\n", token.line()))
        .bearer_token(token.token())
}

/// The API's problem documents.
pub trait ProblemReply {
    /// Asserts a complete RFC 9457 problem document with this status, whose
    /// `request_id` is the response's `X-Request-Id`; returns it.
    #[track_caller]
    fn expect_problem(&self, status: StatusCode) -> Value;
}

impl ProblemReply for Reply {
    #[track_caller]
    fn expect_problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected status; reply: {self:?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with(PROBLEM_JSON),
            "content type {content_type:?}; reply: {self:?}"
        );
        let problem = self.json();
        assert!(problem["type"].is_string(), "no type: {problem}");
        assert!(
            problem["title"].as_str().is_some_and(|t| !t.is_empty()),
            "no title: {problem}"
        );
        assert_eq!(problem["status"], json!(status.as_u16()), "{problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "no detail: {problem}"
        );
        let request_id = self.header("x-request-id").expect("X-Request-Id header");
        assert_eq!(problem["request_id"], json!(request_id), "{problem}");
        problem
    }
}

/// The field names of a problem's `errors`, each checked to carry a message.
#[track_caller]
pub fn error_fields(problem: &Value) -> Vec<String> {
    let errors = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {problem}"));
    assert!(!errors.is_empty(), "empty errors array: {problem}");
    errors
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "no message: {e}"
            );
            e["field"]
                .as_str()
                .unwrap_or_else(|| panic!("no field: {e}"))
                .to_owned()
        })
        .collect()
}
