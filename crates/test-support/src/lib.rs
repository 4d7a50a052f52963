//! Test harness shared by the workspace's integration tests: a real PostgreSQL server
//! started from the installed server binaries, a fresh, empty database per test, and the
//! one way to run and talk to a service under test:
//!
//! * [`http`]: the HTTP client of every test ([`http::HttpClient`], answering a
//!   [`http::Reply`]);
//! * [`in_process`]: a service run in the test process on a thread of its own (what a
//!   service's `spawn_app` is built on: no process per test);
//! * [`process`]: a service binary run as a real process ([`process::ServiceCommand`],
//!   [`process::ServiceProcess`]) for signals, exit codes and configuration errors;
//! * [`poll`]: waiting for a condition with a bounded timeout ([`poll::eventually`]).
//!
//! The database part:
//!
//! * [`fresh_database`] creates a database with a unique name on the shared test server
//!   of this test process (the server is initialised and started on first use).
//! * [`server`] is that shared server; [`private_server`] starts a separate one (own data
//!   directory and port, `fsync` on) for tests that stop and restart PostgreSQL without
//!   disturbing the tests running next to them.
//! * When `TASKS_TEST_DATABASE_URL` is set (`postgres://user:password@host:port/db` of a
//!   role allowed to `CREATE DATABASE`), that server is used instead of starting one; it
//!   cannot be stopped or started by the tests.
//!
//! The server binaries come from `PG_BINDIR`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/<major>/bin`. Without them every test using this crate panics
//! with an explanation: tests never skip silently. As root (`initdb` refuses to run as
//! root) the server runs as the unprivileged system user `tasks-pg`, created when missing.
//!
//! ```no_run
//! # async fn example() {
//! let db = tasks_test_support::fresh_database().await;
//! let client = db.connect().await;
//! client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.expect("create table");
//!
//! // A child process (e.g. the server binary) reaches the same database through:
//! let mut cmd = std::process::Command::new("tasks-server");
//! cmd.envs(db.env());
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

pub mod http;
pub mod in_process;
mod local;
pub mod poll;
pub mod process;

use local::LocalServer;

/// Environment variable naming an existing server to use instead of starting one.
pub const DATABASE_URL_ENV: &str = "TASKS_TEST_DATABASE_URL";

/// The superuser the harness creates in the clusters it initialises.
const LOCAL_USER: &str = "tasks_test";

/// How long a connection attempt may take before the test fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection facts of one fresh, empty database on a test server.
#[derive(Clone, PartialEq, Eq)]
pub struct TestDatabase {
    /// Host name or IP address of the server (`127.0.0.1` for servers started here).
    pub host: String,
    /// TCP port of the server.
    pub port: u16,
    /// Name of the database (unique per call of [`fresh_database`]).
    pub name: String,
    /// Role to log in as.
    pub user: String,
    /// Password of [`TestDatabase::user`].
    pub password: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

impl TestDatabase {
    /// The database as a URL: `postgres://user:password@host:port/name` (user, password
    /// and name percent-encoded where needed).
    pub fn url(&self) -> String {
        postgres_url(
            &self.host,
            self.port,
            &self.user,
            &self.password,
            &self.name,
        )
    }

    /// The settings a child process (`tasks-server`) needs to reach this database:
    /// `TASKS_DATABASE__HOST`, `__PORT`, `__NAME`, `__USER` and `__PASSWORD`.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_for("TASKS")
    }

    /// The same for a service configured through `<prefix>_*` variables:
    /// `<prefix>_DATABASE__HOST`, `__PORT`, `__NAME`, `__USER` and `__PASSWORD`.
    pub fn env_for(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("HOST", self.host.clone()),
            ("PORT", self.port.to_string()),
            ("NAME", self.name.clone()),
            ("USER", self.user.clone()),
            ("PASSWORD", self.password.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}_DATABASE__{k}"), v))
        .collect()
    }

    /// A new connection to this database; its connection task is spawned on the current
    /// tokio runtime. Panics with a clear message when the server cannot be reached.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect_to(
            &self.host,
            self.port,
            &self.user,
            &self.password,
            &self.name,
        )
        .await
    }
}

/// A PostgreSQL server used by tests: started by this crate, or the external server
/// named by `TASKS_TEST_DATABASE_URL`.
///
/// A server started by [`private_server`] is stopped and its directory removed when the
/// value is dropped; the shared server of [`server`] lives until the test process exits.
pub struct TestServer {
    host: String,
    port: u16,
    user: String,
    password: String,
    admin_db: String,
    local: Option<LocalServer>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .field("admin_db", &self.admin_db)
            .field("local", &self.local)
            .finish()
    }
}

impl TestServer {
    /// Starts a new local server (panics with an explanation when that is impossible).
    fn start_local(durable: bool) -> Self {
        let password = random_hex(32);
        let local = LocalServer::launch(LOCAL_USER, &password, durable).unwrap_or_else(|e| {
            panic!("tasks-test-support: cannot start a PostgreSQL test server: {e}")
        });
        Self {
            host: local::LISTEN_HOST.to_owned(),
            port: local.port(),
            user: LOCAL_USER.to_owned(),
            password,
            admin_db: "postgres".to_owned(),
            local: Some(local),
        }
    }

    /// The external server named by a `TASKS_TEST_DATABASE_URL` value.
    fn external(url: &str) -> Result<Self, String> {
        // The value holds a password: never echo it in an error.
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("{DATABASE_URL_ENV} is not a valid postgres:// URL: {e}"))?;
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path
                .to_str()
                .ok_or_else(|| format!("{DATABASE_URL_ENV}: the socket directory is not UTF-8"))?
                .to_owned(),
            None => return Err(format!("{DATABASE_URL_ENV} names no host")),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .ok_or_else(|| format!("{DATABASE_URL_ENV} names no user"))?
            .to_owned();
        let password = match config.get_password() {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| format!("{DATABASE_URL_ENV}: the password is not UTF-8"))?,
            None => String::new(),
        };
        let admin_db = config.get_dbname().unwrap_or("postgres").to_owned();
        Ok(Self {
            host,
            port,
            user,
            password,
            admin_db,
            local: None,
        })
    }

    /// Host name or IP address the server listens on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port the server listens on (unchanged by [`TestServer::stop`]/[`TestServer::start`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The role the harness logs in as (a superuser on servers started here).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password of [`TestServer::user`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL of the administrative database (`postgres` on servers started here).
    pub fn admin_url(&self) -> String {
        postgres_url(
            &self.host,
            self.port,
            &self.user,
            &self.password,
            &self.admin_db,
        )
    }

    /// Whether this is the server named by `TASKS_TEST_DATABASE_URL` (not started here).
    pub fn is_external(&self) -> bool {
        self.local.is_none()
    }

    /// The data directory of a server started here (`None` for an external server).
    pub fn data_dir(&self) -> Option<&Path> {
        self.local.as_ref().map(LocalServer::data_dir)
    }

    /// The server's log file of a server started here (`None` for an external server).
    pub fn log_file(&self) -> Option<&Path> {
        self.local.as_ref().map(LocalServer::log_file)
    }

    /// Fast shutdown (`pg_ctl stop -m fast`: clients are disconnected, a checkpoint is
    /// written); blocks until the server has stopped. Nothing to do when it is stopped.
    /// Panics for an external server.
    pub fn stop(&self) {
        self.local_or_panic("stop")
            .stop()
            .unwrap_or_else(|e| panic!("tasks-test-support: stopping the test server failed: {e}"));
    }

    /// Starts the server again on the same data directory and port; blocks until it
    /// accepts connections (bounded: 30 s). Nothing to do when it is running. Panics for
    /// an external server.
    pub fn start(&self) {
        self.local_or_panic("start")
            .start()
            .unwrap_or_else(|e| panic!("tasks-test-support: starting the test server failed: {e}"));
    }

    /// Whether the server accepts connections right now.
    pub fn is_accepting(&self) -> bool {
        match &self.local {
            Some(local) => local.is_accepting(),
            None => true,
        }
    }

    /// Creates a fresh, empty database with a unique name on this server.
    pub async fn fresh_database(&self) -> TestDatabase {
        let name = unique_database_name();
        let admin = connect_to(
            &self.host,
            self.port,
            &self.user,
            &self.password,
            &self.admin_db,
        )
        .await;
        // The name is generated here and a valid identifier: no quoting needed.
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "tasks-test-support: CREATE DATABASE {name} failed: {}",
                    error_text(&e)
                )
            });
        TestDatabase {
            host: self.host.clone(),
            port: self.port,
            name,
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }

    fn local_or_panic(&self, what: &str) -> &LocalServer {
        match &self.local {
            Some(local) => local,
            None => panic!(
                "tasks-test-support: cannot {what} the external test server named by \
                 {DATABASE_URL_ENV}; use private_server() for tests that stop or start PostgreSQL"
            ),
        }
    }
}

static SHARED: OnceLock<TestServer> = OnceLock::new();

/// The server shared by all tests of this test process: the one named by
/// `TASKS_TEST_DATABASE_URL`, or else a local one started on first use (with
/// `fsync=off`: fast, and still safe across [`TestServer::stop`]/[`TestServer::start`]).
/// It is stopped and its directory removed when the test process exits.
pub fn server() -> &'static TestServer {
    SHARED.get_or_init(|| match std::env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => {
            TestServer::external(url.trim()).unwrap_or_else(|e| panic!("tasks-test-support: {e}"))
        }
        _ => TestServer::start_local(false),
    })
}

/// A server of its own (own data directory and port, `fsync` on) for tests that stop and
/// start PostgreSQL or check durability without disturbing other tests. It is stopped and
/// its directory removed when dropped (or when the test process exits, whichever is
/// first). Always started locally, even when `TASKS_TEST_DATABASE_URL` is set.
pub fn private_server() -> TestServer {
    TestServer::start_local(true)
}

/// Creates a fresh, empty database (unique name) on the shared server, starting the
/// server on first use. Must be called within a tokio runtime.
pub async fn fresh_database() -> TestDatabase {
    let shared = match SHARED.get() {
        Some(shared) => shared,
        // Starting the server blocks for a second or two: keep it off the runtime's
        // worker threads.
        None => match tokio::task::spawn_blocking(server).await {
            Ok(shared) => shared,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("tasks-test-support: starting the test server was cancelled: {e}"),
        },
    };
    shared.fresh_database().await
}

async fn connect_to(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .application_name("tasks-test-support")
        .connect_timeout(CONNECT_TIMEOUT);
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            let label = format!("{dbname} on {host}:{port}");
            tokio::spawn(async move {
                // Ends when the client is dropped; an error here is usually a stopped
                // server (outage tests): report it, the test decides what it means.
                if let Err(e) = connection.await {
                    eprintln!("tasks-test-support: connection to {label} ended: {e}");
                }
            });
            client
        }
        Err(e) => panic!(
            "tasks-test-support: cannot connect to database {dbname:?} on {host}:{port} as {user:?}: {}",
            error_text(&e)
        ),
    }
}

/// The error with its causes (tokio-postgres's Display alone often says only "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn postgres_url(host: &str, port: u16, user: &str, password: &str, dbname: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!(
        "postgres://{}:{}@{host}:{port}/{}",
        percent_encode(user),
        percent_encode(password),
        percent_encode(dbname)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `tasks_test_<counter>_<pid>_<random>`: unique within the process (counter), across
/// concurrent test processes (pid) and across runs against one external server (random).
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("tasks_test_{n}_{}_{}", std::process::id(), random_hex(8))
}

/// Random hex digits from std's randomly keyed SipHash (fresh keys per call), mixed with
/// the clock, the pid and a counter: unpredictable enough for throwaway test passwords
/// and names on a loopback-only server, without another dependency.
pub(crate) fn random_hex(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests;
