//! Shared set-up for the storage integration tests.

use std::time::Duration;

use tasks_postgres::pool::{Password, PoolSettings, build_pool};
use tasks_postgres::tls::SslMode;
use tasks_test_support::TestDatabase;

pub fn settings(db: &TestDatabase) -> PoolSettings {
    PoolSettings {
        host: db.host.clone(),
        port: db.port,
        name: db.name.clone(),
        user: db.user.clone(),
        password: Password::Value(db.password.clone().into()),
        sslmode: SslMode::Disable,
        max_size: 8,
        // Generous: a test may open all eight connections at once (SCRAM, a backend
        // fork each) on a loaded 2-core CI machine, where 2 s once timed out. Tests of
        // the timeouts themselves set their own.
        wait_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        ..PoolSettings::default()
    }
}

/// A fresh database with the schema applied, and a pool on it.
pub async fn migrated() -> (TestDatabase, PoolSettings, deadpool_postgres::Pool) {
    let db = tasks_test_support::fresh_database().await;
    let settings = settings(&db);
    tasks_postgres::migrate::run_locked(&settings, tasks_storage::embedded::runner(), "test")
        .await
        .unwrap();
    let pool = build_pool(&settings).unwrap();
    (db, settings, pool)
}
