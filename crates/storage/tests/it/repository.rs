//! The tasks repository and idempotency store against a real PostgreSQL.

use crate::common;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use tasks_domain::{
    Claim, DeleteOutcome, IdempotencyStore, ListQuery, NewTask, Owner, RecordedAnswer, Status,
    TaskPatch, TaskRepository, TaskService, UpdateOutcome,
};
use tasks_storage::idempotency::PgIdempotencyStore;
use tasks_storage::tasks::PgTaskRepository;
use uuid::Uuid;

/// The owner these tests act for.
fn alice() -> Owner {
    Owner::new("token:alice").unwrap()
}

fn new_task(title: &str) -> tasks_domain::Task {
    NewTask::from_json(
        &json!({"title": title, "description": "d", "due_at": "2030-01-01T00:00:00.123456Z"}),
    )
    .unwrap()
    .into_task(Utc::now())
}

#[tokio::test]
async fn crud_round_trip_preserves_every_field() {
    let (_db, _s, pool) = common::migrated().await;
    let repo = PgTaskRepository::new(pool);
    let task = new_task("Write tests");
    repo.insert(&alice(), &task).await.unwrap();
    assert_eq!(
        repo.get(&alice(), task.id).await.unwrap(),
        Some(task.clone())
    );
    assert_eq!(repo.get(&alice(), Uuid::now_v7()).await.unwrap(), None);

    let patch = TaskPatch::from_json(&json!({"status": "done", "description": null})).unwrap();
    let UpdateOutcome::Updated(updated) = repo
        .update(&alice(), task.id, &patch, Some(1), Utc::now())
        .await
        .unwrap()
    else {
        panic!("expected an update");
    };
    assert_eq!(
        (updated.status, updated.description.clone(), updated.version),
        (Status::Done, None, 2)
    );
    assert_eq!(updated.title, task.title);
    assert_eq!(updated.due_at, task.due_at);
    assert_eq!(
        repo.delete(&alice(), task.id, Some(2)).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(repo.get(&alice(), task.id).await.unwrap(), None);
    assert_eq!(
        repo.delete(&alice(), task.id, None).await.unwrap(),
        DeleteOutcome::NotFound
    );
}

#[tokio::test]
async fn stale_versions_conflict_and_change_nothing() {
    let (_db, _s, pool) = common::migrated().await;
    let repo = PgTaskRepository::new(pool);
    let task = new_task("Contended");
    repo.insert(&alice(), &task).await.unwrap();
    let patch = TaskPatch::from_json(&json!({"title": "first"})).unwrap();
    assert!(matches!(
        repo.update(&alice(), task.id, &patch, Some(1), Utc::now())
            .await
            .unwrap(),
        UpdateOutcome::Updated(_)
    ));
    let late = TaskPatch::from_json(&json!({"title": "second"})).unwrap();
    assert_eq!(
        repo.update(&alice(), task.id, &late, Some(1), Utc::now())
            .await
            .unwrap(),
        UpdateOutcome::VersionMismatch
    );
    assert_eq!(
        repo.delete(&alice(), task.id, Some(1)).await.unwrap(),
        DeleteOutcome::VersionMismatch
    );
    assert_eq!(
        repo.update(&alice(), Uuid::now_v7(), &late, None, Utc::now())
            .await
            .unwrap(),
        UpdateOutcome::NotFound
    );
    let current = repo.get(&alice(), task.id).await.unwrap().unwrap();
    assert_eq!((current.title.as_str(), current.version), ("first", 2));
}

#[tokio::test]
async fn concurrent_updates_with_the_same_version_let_exactly_one_win() {
    let (_db, _s, pool) = common::migrated().await;
    let repo = Arc::new(PgTaskRepository::new(pool));
    let task = new_task("Race");
    repo.insert(&alice(), &task).await.unwrap();
    let attempts = (0..8).map(|i| {
        let repo = repo.clone();
        tokio::spawn(async move {
            let patch = TaskPatch::from_json(&json!({"title": format!("writer {i}")})).unwrap();
            repo.update(&alice(), task.id, &patch, Some(1), Utc::now())
                .await
                .unwrap()
        })
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let wins = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), UpdateOutcome::Updated(_)))
        .count();
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn pagination_is_stable_while_rows_are_inserted() {
    let (_db, _s, pool) = common::migrated().await;
    pagination_walk(Arc::new(PgTaskRepository::new(pool))).await;
}

#[tokio::test]
async fn pagination_through_the_pipelined_reader_is_stable_too() {
    let (_db, settings, pool) = common::migrated().await;
    let reader = Arc::new(tasks_postgres::pipelined::PipelinedReader::new(settings));
    pagination_walk(Arc::new(PgTaskRepository::with_reader(pool, reader))).await;
}

async fn pagination_walk(repo: Arc<dyn TaskRepository>) {
    let service = TaskService::new(repo.clone());
    let mut originals = Vec::new();
    for i in 0..25 {
        originals.push(service.create(&alice(), &json!({"title": format!("task {i}"), "status": if i % 2 == 0 { "todo" } else { "done" }})).await.unwrap().id);
    }
    // Walk pages of 4 while a writer keeps inserting newer tasks.
    let writer = {
        let service = service.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                service
                    .create(&alice(), &json!({"title": format!("late {i}")}))
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = ListQuery::parse(None, Some("4"), cursor.as_deref()).unwrap();
        let page = service.list(&alice(), &query).await.unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    writer.await.unwrap();
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no task appears twice");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first"
    );
    for id in &originals {
        assert!(
            unique.contains(id),
            "every task that existed before the walk is seen"
        );
    }

    let done = service
        .list(
            &alice(),
            &ListQuery::parse(Some("done"), Some("100"), None).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(done.items.len(), 12);
    assert!(done.items.iter().all(|t| t.status == Status::Done));
    assert_eq!(done.next_cursor, None);
}

#[tokio::test]
async fn idempotency_claims_replays_mismatches_and_in_flight() {
    let (_db, _s, pool) = common::migrated().await;
    let store = PgIdempotencyStore::new(pool.clone());
    assert_eq!(
        store.claim(&alice(), "k1", b"fp-a").await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.claim(&alice(), "k1", b"fp-a").await.unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        store.claim(&alice(), "k1", b"fp-b").await.unwrap(),
        Claim::Mismatch
    );
    let response = RecordedAnswer {
        code: 201,
        metadata: vec![("location".into(), "/v1/tasks/x".into())],
        body: b"{\"id\":\"x\"}".to_vec(),
    };
    store.complete(&alice(), "k1", &response).await.unwrap();
    assert_eq!(
        store.claim(&alice(), "k1", b"fp-a").await.unwrap(),
        Claim::Replay(response)
    );
    assert_eq!(
        store.claim(&alice(), "k1", b"fp-b").await.unwrap(),
        Claim::Mismatch
    );

    assert_eq!(
        store.claim(&alice(), "k2", b"fp").await.unwrap(),
        Claim::Claimed
    );
    store.release(&alice(), "k2").await.unwrap();
    assert_eq!(
        store.claim(&alice(), "k2", b"fp").await.unwrap(),
        Claim::Claimed,
        "a released key can be claimed again"
    );

    // Concurrent first uses: exactly one claims.
    let claims = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.claim(&alice(), "k3", b"same").await.unwrap() })
    });
    let outcomes = futures_util::future::join_all(claims).await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|c| *c.as_ref().unwrap() == Claim::Claimed)
            .count(),
        1
    );
}

#[tokio::test]
async fn expired_keys_are_reclaimable_and_purged_in_bounded_batches() {
    let (db, _s, pool) = common::migrated().await;
    let store = PgIdempotencyStore::new(pool);
    let client = db.connect().await;
    store.claim(&alice(), "old", b"fp").await.unwrap();
    store
        .complete(
            &alice(),
            "old",
            &RecordedAnswer {
                code: 201,
                metadata: vec![],
                body: vec![],
            },
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO idempotency_answers (principal, key, fingerprint, status_code, created_at) \
             SELECT 'token:alice', 'expired-' || g, '\\x00', 201, now() - interval '25 hours' FROM generate_series(1, 30) g; \
             UPDATE idempotency_answers SET created_at = now() - interval '25 hours' WHERE key = 'old'",
        )
        .await
        .unwrap();
    assert_eq!(
        store.claim(&alice(), "old", b"other").await.unwrap(),
        Claim::Claimed,
        "an expired key starts over"
    );
    assert_eq!(store.purge_expired(10).await.unwrap(), 10);
    assert_eq!(store.purge_expired(100).await.unwrap(), 20);
    let left: i64 = client
        .query_one("SELECT count(*) FROM idempotency_answers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

async fn count_tasks(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .unwrap()
        .get(0)
}

fn answer_for(task: &tasks_domain::Task) -> RecordedAnswer {
    RecordedAnswer {
        code: 201,
        metadata: vec![("location".into(), format!("/v1/tasks/{}", task.id))],
        body: serde_json::to_vec(task).unwrap(),
    }
}

#[tokio::test]
async fn a_task_and_the_answer_to_its_key_are_stored_together_or_not_at_all() {
    let (_db, _s, pool) = common::migrated().await;
    let store = PgIdempotencyStore::new(pool.clone());
    let repo = PgTaskRepository::new(pool.clone());

    // Claimed and unanswered: the task and the answer are stored, and a retry replays it.
    assert_eq!(
        store.claim(&alice(), "k", b"fp").await.unwrap(),
        Claim::Claimed
    );
    let task = new_task("once");
    assert!(
        repo.insert_with_answer(&alice(), &task, "k", &answer_for(&task))
            .await
            .unwrap()
    );
    assert_eq!(
        repo.get(&alice(), task.id).await.unwrap().unwrap().title,
        "once"
    );
    assert_eq!(
        store.claim(&alice(), "k", b"fp").await.unwrap(),
        Claim::Replay(answer_for(&task))
    );

    // Already answered: a second task for the same key is not stored.
    let second = new_task("twice");
    assert!(
        !repo
            .insert_with_answer(&alice(), &second, "k", &answer_for(&second))
            .await
            .unwrap()
    );
    assert!(repo.get(&alice(), second.id).await.unwrap().is_none());

    // Never claimed (or released): nothing is stored.
    let stray = new_task("stray");
    assert!(
        !repo
            .insert_with_answer(&alice(), &stray, "unclaimed", &answer_for(&stray))
            .await
            .unwrap()
    );
    assert_eq!(count_tasks(&pool).await, 1);
}

#[tokio::test]
async fn racing_requests_holding_the_same_key_create_exactly_one_task() {
    let (_db, _s, pool) = common::migrated().await;
    let store = PgIdempotencyStore::new(pool.clone());
    let repo = PgTaskRepository::new(pool.clone());
    // Both believe they hold the claim, as after an abandoned claim is taken over while
    // its first holder is still running.
    assert_eq!(
        store.claim(&alice(), "race", b"fp").await.unwrap(),
        Claim::Claimed
    );
    let attempts = (0..8).map(|i| {
        let repo = repo.clone();
        tokio::spawn(async move {
            let task = new_task(&format!("attempt {i}"));
            repo.insert_with_answer(&alice(), &task, "race", &answer_for(&task))
                .await
                .unwrap()
        })
    });
    let stored: Vec<bool> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.iter().filter(|s| **s).count(), 1, "{stored:?}");
    assert_eq!(count_tasks(&pool).await, 1);
}

#[tokio::test]
async fn a_failed_insert_leaves_the_key_unanswered() {
    let (_db, _s, pool) = common::migrated().await;
    let store = PgIdempotencyStore::new(pool.clone());
    let repo = PgTaskRepository::new(pool.clone());
    let existing = new_task("existing");
    repo.insert(&alice(), &existing).await.unwrap();
    assert_eq!(
        store.claim(&alice(), "dup", b"fp").await.unwrap(),
        Claim::Claimed
    );
    // The same id again violates the primary key: the transaction rolls back whole.
    assert!(
        repo.insert_with_answer(&alice(), &existing, "dup", &answer_for(&existing))
            .await
            .is_err()
    );
    assert_eq!(
        store.claim(&alice(), "dup", b"fp").await.unwrap(),
        Claim::InFlight,
        "still claimed, not answered"
    );
    assert_eq!(count_tasks(&pool).await, 1);
}

#[tokio::test]
async fn another_owners_tasks_do_not_exist_for_a_caller() {
    let (_db, _s, pool) = common::migrated().await;
    let repo = PgTaskRepository::new(pool);
    let bob = Owner::new("token:bob").unwrap();
    let task = new_task("Alice's");
    repo.insert(&alice(), &task).await.unwrap();

    assert_eq!(repo.get(&bob, task.id).await.unwrap(), None);
    let query = ListQuery::parse(None, None, None).unwrap();
    assert!(repo.list(&bob, &query).await.unwrap().is_empty());
    let patch = TaskPatch::from_json(&json!({"title": "Bob's now"})).unwrap();
    assert_eq!(
        repo.update(&bob, task.id, &patch, None, Utc::now())
            .await
            .unwrap(),
        UpdateOutcome::NotFound,
        "not a version mismatch: that would reveal the task exists"
    );
    assert_eq!(
        repo.update(&bob, task.id, &patch, Some(1), Utc::now())
            .await
            .unwrap(),
        UpdateOutcome::NotFound
    );
    assert_eq!(
        repo.delete(&bob, task.id, None).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert_eq!(
        repo.get(&alice(), task.id).await.unwrap(),
        Some(task),
        "nothing Bob did changed Alice's task"
    );
    assert_eq!(repo.list(&alice(), &query).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_same_idempotency_key_is_independent_per_owner() {
    let (_db, _s, pool) = common::migrated().await;
    let store = PgIdempotencyStore::new(pool);
    let bob = Owner::new("token:bob").unwrap();
    assert_eq!(
        store.claim(&alice(), "shared", b"alice").await.unwrap(),
        Claim::Claimed
    );
    let answer = RecordedAnswer {
        code: 201,
        metadata: vec![],
        body: b"alice's answer".to_vec(),
    };
    store.complete(&alice(), "shared", &answer).await.unwrap();
    assert_eq!(
        store.claim(&bob, "shared", b"bob").await.unwrap(),
        Claim::Claimed,
        "Bob neither replays Alice's answer nor collides with her key"
    );
    assert_eq!(
        store.claim(&alice(), "shared", b"alice").await.unwrap(),
        Claim::Replay(answer)
    );
}
