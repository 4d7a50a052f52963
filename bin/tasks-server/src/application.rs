//! The composition root: the tasks service built from its settings, then run until
//! stopped. Everything generic (listeners, readiness, migrate-then-ready, the drain)
//! comes from `tasks-runtime`; this file wires the tasks-specific parts into it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use tasks_auth::Authenticator;
use tasks_config::{Loaded, Origin};
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

/// Where the secrets came from: a value read from a secret file (or a `_FILE` variable) is
/// re-read from that file when it changes (password rotation, API tokens added or revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretOrigins {
    /// Where `database.password` came from.
    pub database_password: Origin,
    /// Where `auth.api_tokens` came from.
    pub api_tokens: Origin,
}

impl SecretOrigins {
    /// The origins recorded by the configuration loader.
    #[must_use]
    pub fn of(loaded: &Loaded<Settings>) -> Self {
        Self {
            database_password: loaded.origin("database.password"),
            api_tokens: loaded.origin("auth.api_tokens"),
        }
    }

    /// Secrets given as plain values (tests that build [`Settings`] directly).
    #[must_use]
    pub fn plain() -> Self {
        Self {
            database_password: Origin::Default,
            api_tokens: Origin::Default,
        }
    }
}

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
    /// port), authentication (the issuer's keys are fetched in the background), and the
    /// idempotency-key sweep. Call it on the actix runtime.
    ///
    /// # Errors
    /// Invalid pool settings, an unreadable API-token file, or a listener that cannot bind.
    pub fn build(settings: &Settings, secrets: &SecretOrigins) -> anyhow::Result<Self> {
        let pool_settings = settings.pool_settings(&secrets.database_password);
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
        let authenticator = settings
            .auth
            .authenticator(&secrets.api_tokens)
            .context("setting up authentication")?;
        announce_authentication(&authenticator, service.health());
        let idempotency = PgIdempotencyStore::new(pool.clone());
        tokio::spawn(purge_idempotency_keys(
            idempotency.clone(),
            service.health().clone(),
        ));

        let idempotency: Arc<dyn IdempotencyStore> = Arc::new(idempotency);
        let pipelined_reads = settings.database.pipelined_reads;
        // Called once per worker, on the worker's thread: each worker gets its own
        // pipelined reader, driven on the worker's LocalSet with its requests (no
        // cross-thread wake-ups, and the queries of one wake-up leave in one write).
        let worker_state = move || {
            let repository = if pipelined_reads {
                let reader = PipelinedReader::new(pool_settings.clone()).spawning_with(|driver| {
                    actix_web::rt::spawn(driver);
                });
                PgTaskRepository::with_reader(pool.clone(), Arc::new(reader))
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
        let authenticator = web::Data::new(authenticator);
        let limits = Limits {
            max_body_bytes: settings.http.max_body_bytes,
            body_timeout_ms: settings.http.body_timeout_ms,
        };
        let api_address = service.serve_api(
            move || {
                api::app(
                    worker_state(),
                    health.clone(),
                    authenticator.clone(),
                    limits,
                )
            },
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

/// Says how requests are authenticated, loudly when they are not, and fetches the
/// issuer's keys in the background (an issuer that is down does not delay the start).
fn announce_authentication(authenticator: &Authenticator, health: &Health) {
    if !authenticator.is_enabled() {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.enabled=false): every request is served as an \
             anonymous caller holding every scope; never run this way where the API is reachable"
        );
        health.notice(
            "authentication",
            "disabled by auth.enabled=false: every request is anonymous with every scope",
        );
        return;
    }
    tracing::info!(
        api_tokens = authenticator.api_token_count(),
        "authentication required on /v1/*"
    );
    let authenticator = authenticator.clone();
    tokio::spawn(async move {
        if let Err(error) = authenticator.warm_up().await {
            tracing::warn!(%error, "identity provider not reachable yet; API tokens work, JWTs get 503 until its keys are fetched");
        }
    });
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
