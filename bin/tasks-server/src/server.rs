//! `serve`: composition of the pool, health checks, both listeners, background work and
//! the graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::KeepAlive;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tasks_config::Loaded;
use tasks_domain::{IdempotencyStore, TaskRepository, TaskService};
use tasks_health::{Health, Kind};
use tasks_storage::idempotency::PgIdempotencyStore;
use tasks_storage::migrate::{Strategy, until_current};
use tasks_storage::pool::{PoolSettings, build_pool, ping};
use tasks_storage::shared::SharedClient;
use tasks_storage::tasks::PgTaskRepository;

use crate::api::tasks::ApiState;
use crate::api::{self, Limits};
use crate::settings::Settings;

/// The advisory-lock scope of this service's migrations.
pub const MIGRATION_SCOPE: &str = "tasks-server";

/// Runs the service until SIGTERM/SIGINT, then drains and returns.
pub async fn serve(loaded: Loaded<Settings>) -> anyhow::Result<()> {
    let settings = loaded.value.clone();
    let pool_settings = settings.pool_settings(&loaded.origin("database.password"));
    let pool = build_pool(&pool_settings).context("building the database pool")?;
    let workers = settings.workers();

    let health = Health::new();
    let ready_to_serve = Arc::new(AtomicBool::new(false));
    register_checks(&health, &pool, &ready_to_serve);
    tokio::spawn(prepare_schema(
        pool_settings.clone(),
        settings.database.migrate_on_start,
        ready_to_serve.clone(),
        health.clone(),
    ));
    tokio::spawn(purge_idempotency_keys(
        PgIdempotencyStore::new(pool.clone()),
        health.clone(),
    ));

    let idempotency: Arc<dyn IdempotencyStore> = Arc::new(PgIdempotencyStore::new(pool.clone()));
    let pipelined_reads = settings.database.pipelined_reads;
    // Called once per worker, on the worker's thread: each worker gets its own shared
    // read connection, driven by its own runtime (no cross-thread wake-ups).
    let worker_state = {
        let pool = pool.clone();
        let pool_settings = pool_settings.clone();
        move || {
            let repository = if pipelined_reads {
                PgTaskRepository::with_reader(
                    pool.clone(),
                    Arc::new(SharedClient::new(pool_settings.clone())),
                )
            } else {
                PgTaskRepository::new(pool.clone())
            };
            let repository: Arc<dyn TaskRepository> = Arc::new(repository);
            web::Data::new(ApiState {
                tasks: TaskService::new(repository),
                idempotency: idempotency.clone(),
            })
        }
    };
    let health_data = web::Data::new(health.clone());
    let limits = Limits {
        max_body_bytes: settings.http.max_body_bytes,
    };
    let timeout = settings.shutdown.timeout_secs;

    let api_health = health_data.clone();
    let api = HttpServer::new(move || api::app(worker_state(), api_health.clone(), limits))
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(timeout)
        .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
        .client_request_timeout(Duration::from_millis(settings.http.client_timeout_ms))
        .bind((settings.http.host.as_str(), settings.http.port))
        .with_context(|| {
            format!(
                "binding the API listener to {}:{}",
                settings.http.host, settings.http.port
            )
        })?
        .run();

    let scraped_pool = pool.clone();
    tasks_telemetry::metrics::global().on_scrape(move || {
        let status = scraped_pool.status();
        tasks_telemetry::metrics::global().set_pool(tasks_telemetry::metrics::PoolStats {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        });
    });
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(health_data.clone())
            .configure(tasks_health::routes)
            .route("/metrics", web::get().to(tasks_telemetry::metrics::handler))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind((settings.admin.host.as_str(), settings.admin.port))
    .with_context(|| {
        format!(
            "binding the admin listener to {}:{}",
            settings.admin.host, settings.admin.port
        )
    })?
    .run();

    tracing::info!(
        api = %format!("{}:{}", settings.http.host, settings.http.port),
        admin = %format!("{}:{}", settings.admin.host, settings.admin.port),
        workers,
        pool_max_size = pool_settings.max_size,
        "listening"
    );

    let drain = tokio::spawn(tasks_health::shutdown::drain_on_signal(
        health,
        settings.shutdown.drain_delay(),
        vec![api.handle(), admin.handle()],
    ));
    let (api_result, admin_result) = futures_util::future::join(api, admin).await;
    api_result.context("API server")?;
    admin_result.context("admin server")?;
    drain.abort();
    pool.close();
    tracing::info!("stopped");
    Ok(())
}

fn register_checks(
    health: &Health,
    pool: &deadpool_postgres::Pool,
    ready_to_serve: &Arc<AtomicBool>,
) {
    let pool = pool.clone();
    health.register(
        "database",
        Kind::Readiness,
        Duration::from_secs(2),
        Duration::from_secs(1),
        move || {
            let pool = pool.clone();
            async move { ping(&pool).await }
        },
    );
    let ready = ready_to_serve.clone();
    health.register(
        "migrations",
        Kind::Readiness,
        Duration::from_secs(1),
        Duration::ZERO,
        move || {
            let done = ready.load(Ordering::SeqCst);
            async move {
                if done {
                    Ok(())
                } else {
                    Err("schema migrations not yet applied")
                }
            }
        },
    );
}

/// Applies (or, without `migrate_on_start`, waits for someone else to apply) the
/// migrations, retrying while the database is late; readiness fails until then.
async fn prepare_schema(
    settings: PoolSettings,
    migrate: bool,
    ready: Arc<AtomicBool>,
    health: Health,
) {
    let strategy = if migrate {
        Strategy::Apply
    } else {
        Strategy::AwaitOthers
    };
    let current = until_current(
        &settings,
        tasks_storage::embedded::runner,
        MIGRATION_SCOPE,
        strategy,
        || health.is_shutting_down(),
    )
    .await;
    ready.store(current, Ordering::SeqCst);
}

/// Expired idempotency keys removed per statement by the background sweep.
const PURGE_BATCH: i64 = 1_000;

async fn purge_idempotency_keys(store: PgIdempotencyStore, health: Health) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        if health.is_shutting_down() {
            return;
        }
        // Small batches keep each DELETE short; repeat until a batch comes back short,
        // so keys can never expire faster than they are removed.
        let mut purged = 0;
        loop {
            match store.purge_expired(PURGE_BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < PURGE_BATCH.unsigned_abs() || health.is_shutting_down() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "idempotency key sweep skipped");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "expired idempotency keys removed");
        }
    }
}
