//! The composition root: the tasks service built from its settings, then run until
//! stopped. Everything generic (listeners, readiness, migrate-then-ready, the drain)
//! comes from `tasks-runtime`; this file wires the tasks-specific parts into it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use tasks_config::Origin;
use tasks_domain::{IdempotencyStore, TaskRepository, TaskService};
use tasks_health::Health;
use tasks_postgres::migrate::Strategy;
use tasks_postgres::pipelined::PipelinedReader;
use tasks_postgres::pool::build_pool;
use tasks_runtime::{ApiOptions, SchemaMigrations, Service, StopHandle};
use tasks_storage::idempotency::PgIdempotencyStore;
use tasks_storage::tasks::PgTaskRepository;

use crate::api::tasks::ApiState;
use crate::api::{self, Limits};
use crate::settings::Settings;

/// The advisory-lock scope of this service's migrations.
pub const MIGRATION_SCOPE: &str = "tasks-server";

/// The tasks service, bound and started, not yet stopped.
#[derive(Debug)]
pub struct Application {
    service: Service,
    api_address: SocketAddr,
    admin_address: SocketAddr,
}

impl Application {
    /// Builds the service from `settings` and starts its listeners: the pool (no
    /// connection is opened yet), readiness on the database and the schema, the
    /// migrations in the background, the API and admin listeners (port 0 binds a free
    /// port), and the idempotency-key sweep. `password_origin` is where
    /// `database.password` came from (a secret file is re-read for every new connection).
    /// Call it on the actix runtime.
    ///
    /// # Errors
    /// Invalid pool settings or a listener that cannot bind.
    pub fn build(settings: &Settings, password_origin: &Origin) -> anyhow::Result<Self> {
        let pool_settings = settings.pool_settings(password_origin);
        let pool = build_pool(&pool_settings).context("building the database pool")?;
        let workers = settings.workers();

        let mut service = Service::new(settings.shutdown.clone());
        service.attach_database(
            pool.clone(),
            pool_settings.clone(),
            SchemaMigrations {
                runner: tasks_storage::embedded::runner,
                scope: MIGRATION_SCOPE,
                strategy: if settings.database.common.migrate_on_start {
                    Strategy::Apply
                } else {
                    Strategy::AwaitOthers
                },
            },
        );
        let idempotency = PgIdempotencyStore::new(pool.clone());
        tokio::spawn(purge_idempotency_keys(
            idempotency.clone(),
            service.health().clone(),
        ));

        let idempotency: Arc<dyn IdempotencyStore> = Arc::new(idempotency);
        let pipelined_reads = settings.database.pipelined_reads;
        // Called once per worker, on the worker's thread: each worker gets its own
        // pipelined reader, driven by its own runtime (no cross-thread wake-ups).
        let worker_state = move || {
            let repository = if pipelined_reads {
                PgTaskRepository::with_reader(
                    pool.clone(),
                    Arc::new(PipelinedReader::new(pool_settings.clone())),
                )
            } else {
                PgTaskRepository::new(pool.clone())
            };
            let repository: Arc<dyn TaskRepository> = Arc::new(repository);
            web::Data::new(ApiState {
                tasks: TaskService::new(repository),
                idempotency: idempotency.clone(),
            })
        };
        let health = web::Data::new(service.health().clone());
        let limits = Limits {
            max_body_bytes: settings.http.max_body_bytes,
        };
        let api_address = service.serve_api(
            move || api::app(worker_state(), health.clone(), limits),
            &settings.http.listener(),
            ApiOptions {
                workers,
                keep_alive: Duration::from_secs(5),
                client_request_timeout: Duration::from_millis(settings.http.client_timeout_ms),
            },
        )?;
        let admin_address = service.serve_admin(&settings.admin)?;
        tracing::info!(
            workers,
            pool_max_size = settings.pool_max_size(),
            "tasks service built"
        );
        Ok(Self {
            service,
            api_address,
            admin_address,
        })
    }

    /// Whether SIGTERM and SIGINT start the drain (default true); in-process tests turn
    /// it off and stop through [`Application::stop_handle`].
    #[must_use]
    pub fn handle_signals(mut self, enabled: bool) -> Self {
        self.service = self.service.handle_signals(enabled);
        self
    }

    /// The bound API address.
    #[must_use]
    pub fn api_address(&self) -> SocketAddr {
        self.api_address
    }

    /// The bound admin address (`/livez`, `/readyz`, `/metrics`).
    #[must_use]
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// The health registry (readiness turns 503 once the drain begins).
    #[must_use]
    pub fn health(&self) -> &Health {
        self.service.health()
    }

    /// Stops the service as SIGTERM would.
    #[must_use]
    pub fn stop_handle(&self) -> StopHandle {
        self.service.stop_handle()
    }

    /// Serves until stopped, then drains (see `tasks_runtime::Service::run_until_stopped`).
    ///
    /// # Errors
    /// A listener that failed while serving.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        Ok(self.service.run_until_stopped().await?)
    }
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
