//! Migrations against a real PostgreSQL: fresh, re-run, and many concurrent migrators.

use crate::common;
use tasks_postgres::migrate::{pending, run_locked};

#[tokio::test]
async fn fresh_database_gets_every_migration_and_a_rerun_changes_nothing() {
    let db = tasks_test_support::fresh_database().await;
    let settings = common::settings(&db);
    let runner = tasks_storage::embedded::runner();
    let all = pending(&settings, &runner).await.unwrap();
    assert!(all.len() >= 2, "{all:?}");

    let first = run_locked(&settings, tasks_storage::embedded::runner(), "t")
        .await
        .unwrap();
    assert_eq!(first.applied.len(), all.len());
    assert!(pending(&settings, &runner).await.unwrap().is_empty());

    let second = run_locked(&settings, tasks_storage::embedded::runner(), "t")
        .await
        .unwrap();
    assert!(second.applied.is_empty());
}

#[tokio::test]
async fn a_schema_migrated_by_a_newer_release_still_starts_this_one() {
    // A rollback after the next release applied its expand migration: the database
    // holds a migration this binary has never heard of.
    let db = tasks_test_support::fresh_database().await;
    let settings = common::settings(&db);
    run_locked(&settings, tasks_storage::embedded::runner(), "t")
        .await
        .unwrap();
    let client = settings.connect(std::time::Duration::ZERO).await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE tasks ADD COLUMN next_release_note text; \
             INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             SELECT 9999, 'next_release_note', applied_on, '1' FROM refinery_schema_history LIMIT 1",
        )
        .await
        .unwrap();

    let rerun = run_locked(&settings, tasks_storage::embedded::runner(), "t")
        .await
        .expect("the previous release refuses a schema one release ahead");
    assert!(rerun.applied.is_empty());
    assert!(
        pending(&settings, &tasks_storage::embedded::runner())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn eight_concurrent_migrators_apply_each_migration_once() {
    let db = tasks_test_support::fresh_database().await;
    let settings = common::settings(&db);
    let migrators = (0..8).map(|_| {
        let settings = settings.clone();
        tokio::spawn(async move {
            run_locked(&settings, tasks_storage::embedded::runner(), "tasks").await
        })
    });
    let results = futures_util::future::join_all(migrators).await;
    let mut applied = Vec::new();
    for result in results {
        applied.extend(result.unwrap().unwrap().applied);
    }
    let expected = tasks_storage::embedded::runner().get_migrations().len();
    assert_eq!(
        applied.len(),
        expected,
        "each migration applied by exactly one migrator: {applied:?}"
    );
    let client = db.connect().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::try_from(expected).unwrap());
}

#[tokio::test]
async fn unreachable_database_is_reported_as_unavailable() {
    let db = tasks_test_support::fresh_database().await;
    let mut settings = common::settings(&db);
    settings.port = tasks_test_support::process::closed_port();
    let error = run_locked(&settings, tasks_storage::embedded::runner(), "t")
        .await
        .unwrap_err();
    assert!(
        matches!(error, tasks_postgres::Error::Unavailable(_)),
        "{error}"
    );
}

#[tokio::test]
async fn bring_schema_current_waits_for_another_migrator_then_applies_itself() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tasks_postgres::migrate::{Strategy, bring_schema_current};

    let db = tasks_test_support::fresh_database().await;
    let settings = common::settings(&db);

    // Waiting for someone else on an empty schema keeps retrying until told to stop.
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    let current = bring_schema_current(
        &settings,
        tasks_storage::embedded::runner,
        "t",
        Strategy::AwaitOthers,
        move || counted.fetch_add(1, Ordering::SeqCst) >= 2,
    )
    .await;
    assert!(!current, "nothing applied the migrations");
    assert!(
        checks.load(Ordering::SeqCst) >= 3,
        "it retried before giving up"
    );
    assert!(
        !pending(&settings, &tasks_storage::embedded::runner())
            .await
            .unwrap()
            .is_empty()
    );

    // Applying brings the schema current at once; waiting then succeeds too.
    for strategy in [Strategy::Apply, Strategy::AwaitOthers] {
        let current = bring_schema_current(
            &settings,
            tasks_storage::embedded::runner,
            "t",
            strategy,
            || false,
        )
        .await;
        assert!(current, "{strategy:?}");
        assert!(
            pending(&settings, &tasks_storage::embedded::runner())
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn tasks_written_before_owners_existed_belong_to_nobody_who_can_sign_in() {
    let db = tasks_test_support::fresh_database().await;
    let settings = common::settings(&db);
    let before_owners = tasks_storage::embedded::runner().set_target(refinery::Target::Version(2));
    run_locked(&settings, before_owners, "t").await.unwrap();
    let client = db.connect().await;
    // What a pod of the release before authentication writes, also during the rollout.
    let insert_without_owner = "INSERT INTO tasks (id, title, created_at, updated_at) \
         VALUES (gen_random_uuid(), 'written before', now(), now())";
    client.batch_execute(insert_without_owner).await.unwrap();

    run_locked(&settings, tasks_storage::embedded::runner(), "t")
        .await
        .unwrap();
    client.batch_execute(insert_without_owner).await.unwrap();
    let owners: Vec<String> = client
        .query("SELECT owner FROM tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(owners, ["legacy:unauthenticated", "legacy:unauthenticated"]);
}
