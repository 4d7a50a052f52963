//! Baseline (a): actix-web + deadpool-postgres, one pooled connection held per request,
//! the statement prepared once per connection (`prepare_cached`).

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tasks_bench_baseline::{BenchSettings, GET_BY_ID, respond};
use uuid::Uuid;

async fn get(id: web::Path<String>, pool: web::Data<Pool>) -> HttpResponse {
    let Ok(id) = Uuid::try_parse(&id) else {
        return HttpResponse::BadRequest().finish();
    };
    let Ok(client) = pool.get().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let row = match client.prepare_cached(GET_BY_ID).await {
        Ok(statement) => client.query_opt(&statement, &[&id]).await,
        Err(e) => Err(e),
    };
    respond(row)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = BenchSettings::from_env()?;
    let manager = Manager::from_config(
        settings.database.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(2)))
        .build()
        .context("building the pool")?;
    let pool = web::Data::new(pool);
    HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route("/v1/tasks/{id}", web::get().to(get))
    })
    .workers(settings.workers)
    .bind(&settings.listen)
    .with_context(|| format!("binding {}", settings.listen))?
    .run()
    .await
    .context("server")
}
