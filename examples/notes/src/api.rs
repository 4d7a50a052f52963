//! `POST /notes` and `GET /notes/{id}`.

use actix_web::{HttpResponse, web};
use deadpool_postgres::Pool;
use deadpool_postgres::tokio_postgres::Row;
use deadpool_postgres::tokio_postgres::types::ToSql;
use serde::{Deserialize, Serialize};
use tasks_auth::{AuthError, Principal};

/// Longest accepted note, in characters (the table's CHECK says the same).
const MAX_CHARS: usize = 10_000;

/// A stored note.
#[derive(Debug, Serialize)]
pub struct Note {
    /// Assigned by the database.
    pub id: i64,
    /// The text.
    pub body: String,
}

/// The body of `POST /notes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    /// 1–10,000 characters.
    pub body: String,
}

/// Mounts the API routes (for `App::configure`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(64 * 1024))
        .route("/notes", web::post().to(create))
        .route("/notes/{id}", web::get().to(read));
}

/// The scope that lets a caller read notes.
pub const READ_SCOPE: &str = "notes:read";
/// The scope that lets a caller write notes.
pub const WRITE_SCOPE: &str = "notes:write";

async fn create(
    principal: Principal,
    pool: web::Data<Pool>,
    note: web::Json<NewNote>,
) -> Result<HttpResponse, AuthError> {
    principal.require(WRITE_SCOPE)?;
    Ok(insert(&pool, note.into_inner()).await)
}

async fn insert(pool: &Pool, note: NewNote) -> HttpResponse {
    let chars = note.body.chars().count();
    if chars == 0 || chars > MAX_CHARS {
        return HttpResponse::UnprocessableEntity()
            .json(error_body("body must be 1 to 10000 characters"));
    }
    let inserted = query_one(
        pool,
        "INSERT INTO notes (body) VALUES ($1) RETURNING id",
        &[&note.body],
    )
    .await;
    match inserted {
        Ok(Some(row)) => {
            let id: i64 = row.get(0);
            HttpResponse::Created()
                .insert_header(("Location", format!("/notes/{id}")))
                .json(Note {
                    id,
                    body: note.body,
                })
        }
        Ok(None) => HttpResponse::InternalServerError().finish(),
        Err(error) => database_error(&error),
    }
}

async fn read(
    principal: Principal,
    pool: web::Data<Pool>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AuthError> {
    principal.require(READ_SCOPE)?;
    let id = id.into_inner();
    Ok(
        match query_one(&pool, "SELECT body FROM notes WHERE id = $1", &[&id]).await {
            Ok(Some(row)) => HttpResponse::Ok().json(Note {
                id,
                body: row.get(0),
            }),
            Ok(None) => HttpResponse::NotFound().json(error_body("no such note")),
            Err(error) => database_error(&error),
        },
    )
}

/// One statement on a pooled connection, errors classified by `tasks-postgres`.
async fn query_one(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tasks_postgres::Error> {
    let client = pool.get().await.map_err(tasks_postgres::Error::from_pool)?;
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(tasks_postgres::Error::from_pg)?;
    client
        .query_opt(&statement, params)
        .await
        .map_err(tasks_postgres::Error::from_pg)
}

/// 503 with `Retry-After` when the database is unavailable, an opaque 500 otherwise.
fn database_error(error: &tasks_postgres::Error) -> HttpResponse {
    if error.is_unavailable() {
        tracing::warn!(%error, "database unavailable");
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(error_body("database unavailable"))
    } else {
        tracing::error!(%error, "database error");
        HttpResponse::InternalServerError().json(error_body("internal error"))
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
}

fn error_body(message: &'static str) -> ErrorBody {
    ErrorBody { error: message }
}
