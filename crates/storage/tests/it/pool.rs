//! The pool against a real PostgreSQL: bounded waits, statement timeouts, password
//! rotation, recovery after a restart.

use crate::common;
use std::time::{Duration, Instant};

use tasks_postgres::pool::{Password, build_pool, ping};
use tasks_test_support::poll::{eventually, eventually_some};

#[tokio::test]
async fn statement_timeout_applies_to_every_connection() {
    let (_db, mut settings, _pool) = common::migrated().await;
    settings.statement_timeout = Duration::from_millis(200);
    let pool = build_pool(&settings).unwrap();
    let client = pool.get().await.unwrap();
    let error = client.query("SELECT pg_sleep(2)", &[]).await.unwrap_err();
    assert_eq!(
        tasks_postgres::Error::from_pg(error)
            .to_string()
            .split(':')
            .next(),
        Some("database unavailable")
    );
}

#[tokio::test]
async fn exhausted_pool_fails_fast_as_unavailable() {
    let (_db, mut settings, _pool) = common::migrated().await;
    settings.max_size = 1;
    settings.wait_timeout = Duration::from_millis(300);
    let pool = build_pool(&settings).unwrap();
    let _held = pool.get().await.unwrap();
    let started = Instant::now();
    let error = tasks_postgres::Error::from(pool.get().await.unwrap_err());
    assert!(
        matches!(error, tasks_postgres::Error::Unavailable(_)),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn password_file_is_reread_for_new_connections() {
    let (db, mut settings, _pool) = common::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database.password");
    std::fs::write(&file, "wrong-password\n").unwrap();
    settings.password = Password::File {
        path: file.clone(),
        fallback: "also-wrong".into(),
    };
    settings.max_size = 1;
    let pool = build_pool(&settings).unwrap();
    let refused = ping(&pool).await.unwrap_err();
    // A refused login (a rotation not yet everywhere) is "try again later", a 503.
    assert!(refused.is_unavailable(), "{refused}");
    // Rotate the Secret: the next connection uses the new content, no restart.
    std::fs::write(&file, format!("{}\n", db.password)).unwrap();
    ping(&pool).await.unwrap();
}

#[tokio::test]
async fn pool_recovers_after_the_database_restarts() {
    let server = tasks_test_support::private_server();
    let db = server.fresh_database().await;
    let mut settings = common::settings(&db);
    settings.max_size = 2;
    settings.wait_timeout = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_millis(500);
    let pool = build_pool(&settings).unwrap();
    ping(&pool).await.unwrap();

    server.stop();
    let started = Instant::now();
    let error = ping(&pool).await.unwrap_err();
    assert!(
        matches!(error, tasks_postgres::Error::Unavailable(_)),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails fast, no hang"
    );

    server.start();
    // Pooled connections died with the server; the pool replaces them by itself.
    eventually("the pool to recover", Duration::from_secs(10), || async {
        ping(&pool).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn shared_client_pipelines_reads_and_reconnects_after_a_restart() {
    use std::sync::Arc;
    use tasks_postgres::pipelined::PipelinedReader;

    let server = tasks_test_support::private_server();
    let db = server.fresh_database().await;
    let mut settings = common::settings(&db);
    settings.connect_timeout = Duration::from_millis(500);
    let shared = Arc::new(PipelinedReader::new(settings));
    // Many concurrent reads on one connection.
    let reads = (0..64_i32).map(|i| {
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.query("SELECT $1::int4 + 1", &[&i]).await.unwrap()[0].get::<_, i32>(0)
        })
    });
    let sums: Vec<i32> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(sums, (1..=64).collect::<Vec<_>>());

    server.stop();
    let error = shared.query("SELECT 1", &[]).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    server.start();
    // The closed connection is replaced on the next read, without a restart.
    let row = eventually_some(
        "the pipelined reader to recover",
        Duration::from_secs(10),
        || async { shared.query_opt("SELECT 41 + 1", &[]).await.ok() },
    )
    .await;
    assert_eq!(row.unwrap().get::<_, i32>(0), 42);
}

#[tokio::test]
async fn a_reader_spawning_on_a_local_set_drives_its_connection_there() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tasks_postgres::pipelined::PipelinedReader;

    static LOCAL_SPAWNS: AtomicUsize = AtomicUsize::new(0);
    let server = tasks_test_support::private_server();
    let db = server.fresh_database().await;
    let reader = Arc::new(
        PipelinedReader::new(common::settings(&db)).spawning_with(|driver| {
            LOCAL_SPAWNS.fetch_add(1, Ordering::SeqCst);
            // Panics outside a LocalSet: the read below proves it ran inside one.
            tokio::task::spawn_local(driver);
        }),
    );
    let local = tokio::task::LocalSet::new();
    let sums = local
        .run_until(async {
            let reads = (0..16_i32).map(|i| {
                let reader = reader.clone();
                tokio::task::spawn_local(async move {
                    reader.query_opt("SELECT $1::int4 * 2", &[&i]).await
                })
            });
            futures_util::future::join_all(reads).await
        })
        .await;
    let sums: Vec<i32> = sums
        .into_iter()
        .map(|read| read.unwrap().unwrap().unwrap().get::<_, i32>(0))
        .collect();
    assert_eq!(sums, (0..16).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(
        LOCAL_SPAWNS.load(Ordering::SeqCst),
        1,
        "one connection, driven by the given spawn"
    );
}

/// A TCP listener that accepts connections and never says a word: a database host whose
/// PostgreSQL hangs, or a proxy in front of nothing.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_is_unavailable_within_the_connect_timeout() {
    // The kernel completes the handshakes for the listener's backlog; nothing reads.
    let (_listener, port) = silent_server();
    let settings = tasks_postgres::pool::PoolSettings {
        host: "127.0.0.1".into(),
        port,
        sslmode: tasks_postgres::tls::SslMode::Disable,
        connect_timeout: Duration::from_millis(500),
        wait_timeout: Duration::from_millis(500),
        ..tasks_postgres::pool::PoolSettings::default()
    };

    let started = Instant::now();
    let direct = settings.connect(Duration::ZERO).await.unwrap_err();
    assert!(direct.is_unavailable(), "{direct}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let pool = build_pool(&settings).unwrap();
    let started = Instant::now();
    let pooled = ping(&pool).await.unwrap_err();
    assert!(pooled.is_unavailable(), "{pooled}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_missing_database_is_unavailable_not_a_server_error() {
    let (db, mut settings, _pool) = common::migrated().await;
    settings.name = format!("{}_not_created_yet", db.name);
    let error = settings.connect(Duration::ZERO).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
}
