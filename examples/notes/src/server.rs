//! Composition: pool, migrations, health, both listeners and the graceful drain, each
//! from a reusable crate.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tasks_config::Loaded;
use tasks_health::{Health, Kind};
use tasks_postgres::migrate::{Strategy, until_current};
use tasks_postgres::pool::{PoolSettings, build_pool, ping};

use crate::settings::Settings;

/// The advisory-lock scope of this service's migrations (distinct from other services').
pub const MIGRATION_SCOPE: &str = "notes";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serves until SIGTERM/SIGINT, drains, and returns.
///
/// # Errors
/// Invalid pool settings, a listener that cannot bind, or a server that fails.
pub async fn serve(loaded: Loaded<Settings>) -> Result<(), Box<dyn Error>> {
    let settings = &loaded.value;
    let pool_settings = settings.pool_settings(&loaded.origin("database.password"));
    let pool = build_pool(&pool_settings)?;

    let health = Health::new();
    let migrated = Arc::new(AtomicBool::new(false));
    let (check_pool, check_migrated) = (pool.clone(), migrated.clone());
    health.register(
        "database",
        Kind::Readiness,
        Duration::from_secs(2),
        Duration::from_secs(1),
        move || {
            let pool = check_pool.clone();
            let migrated = check_migrated.load(Ordering::SeqCst);
            async move {
                ping(&pool).await.map_err(|e| e.to_string())?;
                migrated
                    .then_some(())
                    .ok_or_else(|| "migrations not yet applied".to_owned())
            }
        },
    );
    let strategy = if settings.database.migrate_on_start {
        Strategy::Apply
    } else {
        Strategy::AwaitOthers
    };
    tokio::spawn(migrate(pool_settings, strategy, migrated, health.clone()));

    let health_data = web::Data::new(health.clone());
    let api_health = health_data.clone();
    let pool_data = web::Data::new(pool.clone());
    let api = HttpServer::new(move || {
        App::new()
            .app_data(pool_data.clone())
            .app_data(api_health.clone())
            .configure(crate::api::routes)
            .wrap(from_fn(tasks_health::shutdown::close_when_draining))
            .wrap(from_fn(tasks_telemetry::http::observe))
    })
    .disable_signals()
    .shutdown_timeout(settings.shutdown.timeout_secs)
    .bind((settings.http.host.as_str(), settings.http.port))?
    .run();
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(health_data.clone())
            .configure(tasks_health::routes)
            .route("/metrics", web::get().to(tasks_telemetry::metrics::handler))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind((settings.admin.host.as_str(), settings.admin.port))?
    .run();
    tracing::info!(
        api = %format!("{}:{}", settings.http.host, settings.http.port),
        admin = %format!("{}:{}", settings.admin.host, settings.admin.port),
        "listening"
    );

    let drain = tokio::spawn(tasks_health::shutdown::drain_on_signal(
        health,
        settings.shutdown.drain_delay(),
        vec![api.handle(), admin.handle()],
    ));
    let (api_result, admin_result) = tokio::join!(api, admin);
    drain.abort();
    pool.close();
    api_result?;
    admin_result?;
    tracing::info!("stopped");
    Ok(())
}

/// Applies the migrations under the advisory lock (or, without
/// `database.migrate_on_start`, waits for another process to), retrying while the
/// database is late; readiness fails until the schema is current.
async fn migrate(
    settings: PoolSettings,
    strategy: Strategy,
    migrated: Arc<AtomicBool>,
    health: Health,
) {
    let current = until_current(
        &settings,
        embedded::migrations::runner,
        MIGRATION_SCOPE,
        strategy,
        || health.is_shutting_down(),
    )
    .await;
    migrated.store(current, Ordering::SeqCst);
}
