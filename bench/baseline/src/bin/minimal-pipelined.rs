//! Baseline (b): actix-web with a few tokio-postgres clients shared by concurrent
//! requests. A client is never held exclusively: concurrent queries on one client are
//! pipelined on its connection, so a handful of connections serve every request.
//!
//! `BENCH_PIPELINE_MODE=shared` (default): `BENCH_CLIENTS` clients driven by one extra
//! runtime thread and shared by every worker — the shape the service could adopt for
//! single-statement reads beside its pool. `per-worker`: each worker connects its own
//! `BENCH_CLIENTS` clients, driven on its own thread (the fastest actix benchmark shape).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use tasks_bench_baseline::{BenchSettings, GET_BY_ID, respond};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// Clients with the statement prepared on each, picked round robin.
struct Clients {
    clients: Vec<(Client, Statement)>,
    next: AtomicUsize,
}

impl Clients {
    async fn connect(
        config: &tokio_postgres::Config,
        n: usize,
        spawn: impl Fn(
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, connection) = config.connect(NoTls).await.context("connecting")?;
            spawn(connection);
            let statement = client.prepare(GET_BY_ID).await.context("preparing")?;
            clients.push((client, statement));
        }
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> &(Client, Statement) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }
}

async fn get(id: web::Path<String>, clients: web::Data<Clients>) -> HttpResponse {
    let Ok(id) = Uuid::try_parse(&id) else {
        return HttpResponse::BadRequest().finish();
    };
    let (client, statement) = clients.pick();
    respond(client.query_opt(statement, &[&id]).await)
}

fn shared_clients(settings: &BenchSettings) -> anyhow::Result<web::Data<Clients>> {
    // The connections are driven by their own runtime thread, like a storage layer
    // that owns them independently of the HTTP workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("driver runtime")?;
    let config = settings.database.clone();
    let n = settings.clients;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pg-driver".into())
        .spawn(move || {
            runtime.block_on(async move {
                let clients = Clients::connect(&config, n, |c| {
                    tokio::spawn(async move {
                        let _ = c.await;
                    });
                })
                .await;
                let _ = tx.send(clients);
                std::future::pending::<()>().await;
            });
        })
        .context("driver thread")?;
    let clients = rx.recv().context("driver thread died")??;
    Ok(web::Data::from(Arc::new(clients)))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = BenchSettings::from_env()?;
    let server = if settings.per_worker {
        let config = settings.database.clone();
        let n = settings.clients;
        HttpServer::new(move || {
            let config = config.clone();
            App::new()
                .data_factory(move || {
                    let config = config.clone();
                    async move {
                        Clients::connect(&config, n, |c| {
                            actix_web::rt::spawn(async move {
                                let _ = c.await;
                            });
                        })
                        .await
                        .map_err(|e| eprintln!("{e:#}"))
                    }
                })
                .route("/v1/tasks/{id}", web::get().to(get))
        })
        .workers(settings.workers)
        .bind(&settings.listen)
        .with_context(|| format!("binding {}", settings.listen))?
        .run()
    } else {
        let clients = shared_clients(&settings)?;
        HttpServer::new(move || {
            App::new()
                .app_data(clients.clone())
                .route("/v1/tasks/{id}", web::get().to(get))
        })
        .workers(settings.workers)
        .bind(&settings.listen)
        .with_context(|| format!("binding {}", settings.listen))?
        .run()
    };
    server.await.context("server")
}
