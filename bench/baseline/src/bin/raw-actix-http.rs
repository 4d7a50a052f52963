//! Baseline (c), the top one: the shape of the fastest actix entries of the TechEmpower
//! single-query test, written here for this table. No actix-web at all: a raw
//! `actix-http` service per worker; each worker owns ONE tokio-postgres connection on which
//! concurrent requests pipeline, with the statement prepared when the worker starts; the
//! row is serialised straight into a buffer the worker reuses, and the response body is a
//! slice of it. It answers `GET /v1/tasks/{id}` with the same statement, the same JSON
//! fields and the same entity tag as `tasks-server`, and 404 for anything else.
//!
//! It is the reference `just bench` leads with: what this workload costs in Rust with
//! nothing but the HTTP parser, the driver and the JSON between the socket and PostgreSQL.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_http::header::{CONTENT_TYPE, ETAG, HeaderValue};
use actix_http::{HttpService, Request, Response, StatusCode};
use actix_server::Server;
use actix_service::{Service, ServiceFactory};
use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use tasks_bench_baseline::{BenchSettings, GET_BY_ID, Task};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

const PREFIX: &str = "/v1/tasks/";

/// One worker's state: its connection, its prepared statement, its output buffer.
struct Worker {
    client: Client,
    get_by_id: Statement,
    buffer: RefCell<BytesMut>,
}

impl Worker {
    fn empty(status: StatusCode) -> Response<Bytes> {
        Response::with_body(status, Bytes::new())
    }

    async fn get(self: Rc<Self>, id: Uuid) -> Response<Bytes> {
        let row = match self.client.query_opt(&self.get_by_id, &[&id]).await {
            Ok(Some(row)) => row,
            Ok(None) => return Self::empty(StatusCode::NOT_FOUND),
            Err(_) => return Self::empty(StatusCode::SERVICE_UNAVAILABLE),
        };
        let Ok(task) = Task::from_row(&row) else {
            return Self::empty(StatusCode::SERVICE_UNAVAILABLE);
        };
        let (body, etag) = {
            let mut buffer = self.buffer.borrow_mut();
            buffer.reserve(512);
            let mut writer = (&mut *buffer).writer();
            if serde_json::to_writer(&mut writer, &task).is_err() {
                return Self::empty(StatusCode::INTERNAL_SERVER_ERROR);
            }
            (buffer.split().freeze(), HeaderValue::try_from(task.etag()))
        };
        let mut response = Response::with_body(StatusCode::OK, body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(etag) = etag {
            headers.insert(ETAG, etag);
        }
        response
    }
}

/// The per-request service: a cheap handle on the worker.
struct Handler(Rc<Worker>);

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl Service<Request> for Handler {
    type Response = Response<Bytes>;
    type Error = actix_http::Error;
    type Future = LocalFuture<Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, request: Request) -> Self::Future {
        let id = request
            .path()
            .strip_prefix(PREFIX)
            .and_then(|id| Uuid::try_parse(id).ok());
        match id {
            Some(id) if request.method() == actix_http::Method::GET => {
                let worker = self.0.clone();
                Box::pin(async move { Ok(worker.get(id).await) })
            }
            _ => Box::pin(std::future::ready(Ok(Worker::empty(StatusCode::NOT_FOUND)))),
        }
    }
}

/// Makes one [`Handler`] per worker: connects, spawns the connection on the worker's
/// runtime, prepares the statement.
#[derive(Clone)]
struct Connect(tokio_postgres::Config);

impl ServiceFactory<Request> for Connect {
    type Response = Response<Bytes>;
    type Error = actix_http::Error;
    type Config = ();
    type Service = Handler;
    type InitError = ();
    type Future = LocalFuture<Result<Handler, ()>>;

    fn new_service(&self, (): ()) -> Self::Future {
        let config = self.0.clone();
        Box::pin(async move {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|error| eprintln!("connecting: {error}"))?;
            actix_rt::spawn(async move {
                let _ = connection.await;
            });
            let get_by_id = client
                .prepare(GET_BY_ID)
                .await
                .map_err(|error| eprintln!("preparing: {error}"))?;
            Ok(Handler(Rc::new(Worker {
                client,
                get_by_id,
                buffer: RefCell::new(BytesMut::with_capacity(64 * 1024)),
            })))
        })
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let settings = BenchSettings::from_env()?;
    let config = Connect(settings.database.clone());
    Server::build()
        .bind("raw-actix-http", &settings.listen, move || {
            HttpService::build().h1(config.clone()).tcp()
        })
        .with_context(|| format!("binding {}", settings.listen))?
        .workers(settings.workers)
        .run()
        .await
        .context("server")
}
