//! One running service: its listeners, its readiness, its database and its drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Server, ServiceFactory};
use actix_web::http::KeepAlive;
use actix_web::{App, HttpServer, web};
use deadpool_postgres::Pool;
use tasks_health::shutdown::{ShutdownSettings, StopHandle, StopRequests};
use tasks_health::{CheckOptions, Health};
use tasks_postgres::migrate::{Strategy, bring_schema_current};
use tasks_postgres::pool::{PoolSettings, ping};
use tasks_telemetry::metrics::{self, PoolStats};

use crate::ListenerSettings;

/// Why a service could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A listener could not bind its address.
    #[error("binding the {listener} listener to {address}: {source}")]
    Bind {
        /// `API` or `admin`.
        listener: &'static str,
        /// The address it was told to bind.
        address: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A listener failed while serving.
    #[error("{listener} server: {source}")]
    Serve {
        /// `API` or `admin`.
        listener: &'static str,
        /// What failed.
        source: std::io::Error,
    },
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("installing the SIGTERM/SIGINT handlers: {0}")]
    Signals(std::io::Error),
}

/// Tuning of the API listener; the defaults suit most services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiOptions {
    /// Worker threads; 0 = the CPUs this process may use.
    pub workers: usize,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// How long a client may take to send its request head.
    pub client_request_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            workers: 0,
            keep_alive: Duration::from_secs(5),
            client_request_timeout: Duration::from_secs(5),
        }
    }
}

/// The schema a service migrates before it is ready.
#[derive(Debug, Clone, Copy)]
pub struct SchemaMigrations {
    /// The service's embedded migrations (`refinery::embed_migrations!`'s `runner`).
    pub runner: fn() -> refinery::Runner,
    /// The advisory-lock scope, distinct per service sharing a database.
    pub scope: &'static str,
    /// Apply them here, or wait for another process to.
    pub strategy: Strategy,
}

/// Binds an `HttpServer` to a [`ListenerSettings`] without actix's own signal handling
/// (the drain owns SIGTERM) and starts it: `(Server, SocketAddr)`, or
/// [`RuntimeError::Bind`] naming the listener and the address. A macro, so the long list
/// of `HttpServer` bounds is written once, on [`Service::serve_api`].
macro_rules! bind_and_start {
    ($name:expr, $server:expr, $listener:expr) => {{
        let listener: &ListenerSettings = $listener;
        let bind_error = |source| RuntimeError::Bind {
            listener: $name,
            address: format!("{}:{}", listener.host, listener.port),
            source,
        };
        match $server
            .disable_signals()
            .bind((listener.host.as_str(), listener.port))
        {
            Err(source) => Err(bind_error(source)),
            Ok(server) => match server.addrs().first().copied() {
                Some(address) => Ok((server.run(), address)),
                None => Err(bind_error(std::io::Error::other("no address bound"))),
            },
        }
    }};
}

/// Readiness check names a service with a database reports.
const DATABASE_CHECK: &str = "database";
const MIGRATIONS_CHECK: &str = "migrations";

/// A service being composed, then run until stopped. See the crate documentation.
pub struct Service {
    health: Health,
    shutdown: ShutdownSettings,
    requests: StopRequests,
    handle_signals: bool,
    api: Option<(Server, SocketAddr)>,
    admin: Option<(Server, SocketAddr)>,
    pool: Option<Pool>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("health", &self.health)
            .field("shutdown", &self.shutdown)
            .field("api", &self.api.as_ref().map(|(_, address)| address))
            .field("admin", &self.admin.as_ref().map(|(_, address)| address))
            .field("database", &self.pool.is_some())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with no listeners yet, draining as `shutdown` says.
    #[must_use]
    pub fn new(shutdown: ShutdownSettings) -> Self {
        Self {
            health: Health::new(),
            shutdown,
            requests: StopRequests::new(),
            handle_signals: true,
            api: None,
            admin: None,
            pool: None,
        }
    }

    /// Whether SIGTERM and SIGINT start the drain (default true). In-process tests turn
    /// it off and use [`Service::stop_handle`].
    #[must_use]
    pub fn handle_signals(mut self, enabled: bool) -> Self {
        self.handle_signals = enabled;
        self
    }

    /// The health registry: register the service's own checks here; the API app needs
    /// it as `web::Data<Health>` for `close_when_draining`.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Stops the service as SIGTERM would, from anywhere.
    #[must_use]
    pub fn stop_handle(&self) -> StopHandle {
        self.requests.handle()
    }

    /// Makes readiness depend on the database: a `database` check (a ping, 2 s timeout,
    /// cached for 1 s so probes cannot storm it) and a `migrations` check that passes once
    /// a background task has brought the schema up to date. That task retries while the
    /// database is late, so the service starts (live, not ready) before its database.
    /// The pool's state is published on every metrics scrape, and the pool is closed
    /// when the service stops. Call it from within the runtime.
    pub fn attach_database(
        &mut self,
        pool: Pool,
        settings: PoolSettings,
        migrations: SchemaMigrations,
    ) {
        let checked_pool = pool.clone();
        self.health.register(
            DATABASE_CHECK,
            CheckOptions::readiness()
                .timeout(Duration::from_secs(2))
                .cache_for(Duration::from_secs(1)),
            move || {
                let pool = checked_pool.clone();
                async move { ping(&pool).await }
            },
        );
        let schema_current = Arc::new(AtomicBool::new(false));
        let current = schema_current.clone();
        self.health
            .register(MIGRATIONS_CHECK, CheckOptions::readiness(), move || {
                let done = current.load(Ordering::SeqCst);
                async move {
                    if done {
                        Ok(())
                    } else {
                        Err("schema migrations not yet applied")
                    }
                }
            });
        let health = self.health.clone();
        tokio::spawn(async move {
            let current = bring_schema_current(
                &settings,
                migrations.runner,
                migrations.scope,
                migrations.strategy,
                || health.is_shutting_down(),
            )
            .await;
            schema_current.store(current, Ordering::SeqCst);
        });
        // A weak reference: the scrape must not keep a stopped service's pool alive.
        let scraped = pool.weak();
        metrics::global().on_scrape(move || {
            if let Some(pool) = scraped.upgrade() {
                let status = pool.status();
                metrics::global().set_pool(PoolStats {
                    max: status.max_size,
                    open: status.size,
                    idle: status.available,
                    waiting: status.waiting,
                });
            }
        });
        self.pool = Some(pool);
    }

    /// Binds the API listener with `factory` (an `App` per worker) and starts it.
    /// Returns the bound address (port 0 picks a free port).
    ///
    /// # Errors
    /// [`RuntimeError::Bind`] when the address cannot be bound.
    pub fn serve_api<F, I, S, B>(
        &mut self,
        factory: F,
        listener: &ListenerSettings,
        options: ApiOptions,
    ) -> Result<SocketAddr, RuntimeError>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: std::fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as actix_web::dev::Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let mut server = HttpServer::new(factory)
            .keep_alive(KeepAlive::Timeout(options.keep_alive))
            .client_request_timeout(options.client_request_timeout);
        if options.workers > 0 {
            server = server.workers(options.workers);
        }
        let server = server.shutdown_timeout(self.shutdown.timeout_secs);
        let bound = bind_and_start!("API", server, listener)?;
        let address = bound.1;
        self.api = Some(bound);
        Ok(address)
    }

    /// Binds the admin listener (`/livez`, `/readyz`, `/metrics`, one worker) and starts
    /// it. Returns the bound address.
    ///
    /// # Errors
    /// [`RuntimeError::Bind`] when the address cannot be bound.
    pub fn serve_admin(&mut self, listener: &ListenerSettings) -> Result<SocketAddr, RuntimeError> {
        let health = web::Data::new(self.health.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(health.clone())
                .configure(tasks_health::routes)
                .route("/metrics", web::get().to(metrics::handler))
        })
        .workers(1)
        .shutdown_timeout(1);
        let bound = bind_and_start!("admin", server, listener)?;
        let address = bound.1;
        self.admin = Some(bound);
        Ok(address)
    }

    /// Serves until the first stop request (SIGTERM, SIGINT or a [`StopHandle`]), then
    /// drains: readiness fails at once, traffic is served for the drain delay, the API
    /// stops accepting and finishes in-flight requests within the shutdown timeout, then
    /// the admin listener stops and the pool closes.
    ///
    /// # Errors
    /// Signal handlers that cannot be installed, or a listener that failed.
    pub async fn run_until_stopped(self) -> Result<(), RuntimeError> {
        let Self {
            health,
            shutdown,
            requests,
            handle_signals,
            api,
            admin,
            pool,
        } = self;
        let signals = if handle_signals {
            Some(
                requests
                    .listen_for_signals()
                    .map_err(RuntimeError::Signals)?,
            )
        } else {
            None
        };
        tracing::info!(
            api = ?api.as_ref().map(|(_, address)| address),
            admin = ?admin.as_ref().map(|(_, address)| address),
            "listening"
        );
        // API first, admin last: probes keep answering until the API has drained.
        let servers: Vec<(&'static str, Server)> = [("API", api), ("admin", admin)]
            .into_iter()
            .filter_map(|(name, bound)| bound.map(|(server, _)| (name, server)))
            .collect();
        let handles = servers.iter().map(|(_, server)| server.handle()).collect();
        let drain = tokio::spawn(tasks_health::shutdown::drain(
            health,
            shutdown.drain_delay(),
            handles,
            requests,
        ));
        let results =
            futures_util::future::join_all(servers.into_iter().map(|(name, server)| async move {
                server.await.map_err(|source| RuntimeError::Serve {
                    listener: name,
                    source,
                })
            }))
            .await;
        drain.abort();
        if let Some(signals) = signals {
            signals.abort();
        }
        if let Some(pool) = pool {
            pool.close();
        }
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        tracing::info!("stopped");
        Ok(())
    }
}
