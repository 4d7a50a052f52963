//! Composition: the notes routes on the `tasks-runtime` skeleton, which brings the admin
//! listener, readiness on the database, migrate-then-ready and the graceful drain.

use std::error::Error;

use actix_web::middleware::from_fn;
use actix_web::{App, web};
use tasks_config::Loaded;
use tasks_postgres::migrate::Strategy;
use tasks_postgres::pool::build_pool;
use tasks_runtime::{ApiOptions, SchemaMigrations, Service};

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

    let mut service = Service::new(settings.shutdown.clone());
    service.attach_database(
        pool.clone(),
        pool_settings,
        SchemaMigrations {
            runner: embedded::migrations::runner,
            scope: MIGRATION_SCOPE,
            strategy: if settings.database.migrate_on_start {
                Strategy::Apply
            } else {
                Strategy::AwaitOthers
            },
        },
    );
    let authenticator = settings
        .auth
        .authenticator(&loaded.origin("auth.api_tokens"))?;
    let warming = authenticator.clone();
    tokio::spawn(async move {
        if let Err(error) = warming.warm_up().await {
            tracing::warn!(%error, "identity provider not reachable yet; API tokens work");
        }
    });
    let authenticator = web::Data::new(authenticator);
    let health = web::Data::new(service.health().clone());
    let pool = web::Data::new(pool);
    service.serve_api(
        move || {
            App::new()
                .app_data(pool.clone())
                .app_data(health.clone())
                .app_data(authenticator.clone())
                .configure(crate::api::routes)
                .wrap(from_fn(tasks_health::shutdown::close_when_draining))
                .wrap(from_fn(tasks_telemetry::http::observe))
        },
        &settings.http,
        ApiOptions::default(),
    )?;
    service.serve_admin(&settings.admin)?;
    service.run_until_stopped().await?;
    Ok(())
}
