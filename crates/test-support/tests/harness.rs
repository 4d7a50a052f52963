//! The harness against real PostgreSQL servers.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use tasks_test_support::{fresh_database, private_server, server};

async fn table_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn fresh_database_is_empty_and_writable() {
    let db = fresh_database().await;
    let client = db.connect().await;
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, db.name);
    assert_eq!(table_count(&client).await, 0);

    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)")
        .await
        .unwrap();
    client
        .execute("INSERT INTO t VALUES ($1, $2)", &[&1_i32, &"hello"])
        .await
        .unwrap();
    let note: String = client
        .query_one("SELECT note FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "hello");

    // The URL names the same database.
    let (by_url, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(table_count(&by_url).await, 1);
    assert_eq!(db.host, server().host());
    assert_eq!(db.port, server().port());
}

#[tokio::test]
async fn two_fresh_databases_are_distinct() {
    let (a, b) = tokio::join!(fresh_database(), fresh_database());
    assert_ne!(a.name, b.name);
    let (ca, cb) = (a.connect().await, b.connect().await);
    ca.batch_execute("CREATE TABLE only_in_a (id int)")
        .await
        .unwrap();
    assert_eq!(table_count(&ca).await, 1);
    assert_eq!(table_count(&cb).await, 0);
}

#[test]
fn fresh_database_works_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = fresh_database().await;
        let client = db.connect().await;
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
}

#[tokio::test]
async fn private_server_keeps_acknowledged_writes_across_a_restart() {
    let private = tokio::task::spawn_blocking(private_server).await.unwrap();
    assert!(!private.is_external());
    assert_ne!(private.port(), server().port());
    let fsync: String = {
        let db = private.fresh_database().await;
        let client = db.connect().await;
        client.query_one("SHOW fsync", &[]).await.unwrap().get(0)
    };
    assert_eq!(
        fsync, "on",
        "the private server keeps fsync on for durability tests"
    );

    let db = private.fresh_database().await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY)")
        .await
        .unwrap();
    for id in 0..100_i32 {
        client
            .execute("INSERT INTO kept VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    let port = private.port();

    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        private
    })
    .await
    .unwrap();
    assert!(!private.is_accepting());
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "the old connection is gone"
    );
    let refused = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "connecting to a stopped server fails");

    let private = tokio::task::spawn_blocking(move || {
        private.start();
        private
    })
    .await
    .unwrap();
    assert_eq!(private.port(), port);
    let client = db.connect().await;
    let (count, sum): (i64, i64) = {
        let row = client
            .query_one("SELECT count(*), sum(id) FROM kept", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((count, sum), (100, 4950));

    // Dropping the server stops it and removes its directory.
    let dir = private.data_dir().unwrap().parent().unwrap().to_owned();
    assert!(dir.exists());
    drop(client);
    tokio::task::spawn_blocking(move || drop(private))
        .await
        .unwrap();
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn stop_and_start_are_idempotent() {
    let private = private_server();
    private.start(); // running already: only waits
    assert!(private.is_accepting());
    private.stop();
    private.stop(); // stopped already: nothing to do
    assert!(!private.is_accepting());
    private.start();
    assert!(private.is_accepting());
}
