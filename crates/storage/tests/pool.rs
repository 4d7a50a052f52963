//! The pool against a real PostgreSQL: bounded waits, statement timeouts, password
//! rotation, recovery after a restart.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use tasks_storage::StorageError;
use tasks_storage::pool::{Password, build_pool, ping};

#[tokio::test]
async fn statement_timeout_applies_to_every_connection() {
    let (_db, mut settings, _pool) = common::migrated().await;
    settings.statement_timeout = Duration::from_millis(200);
    let pool = build_pool(&settings).unwrap();
    let client = pool.get().await.unwrap();
    let error = client.query("SELECT pg_sleep(2)", &[]).await.unwrap_err();
    assert_eq!(
        StorageError::from_pg(error).to_string().split(':').next(),
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
    let error = StorageError::from(pool.get().await.unwrap_err());
    assert!(matches!(error, StorageError::Unavailable(_)), "{error}");
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
    assert!(ping(&pool).await.is_err(), "the wrong password is rejected");
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
    assert!(matches!(error, StorageError::Unavailable(_)), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails fast, no hang"
    );

    server.start();
    // Pooled connections died with the server; the pool replaces them by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ping(&pool).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("pool did not recover: {e}"),
        }
    }
}
