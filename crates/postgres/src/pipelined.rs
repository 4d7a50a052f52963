//! [`PipelinedReader`]: one connection shared by many concurrent requests, for
//! single-statement reads.
//!
//! tokio-postgres pipelines the queries issued concurrently on one client: they go out
//! back to back on the socket and the answers come back in order. A read that needs no
//! transaction therefore does not need a pooled connection of its own; sharing one
//! client roughly doubles read throughput where each request would otherwise hold a
//! pooled connection for its whole round trip. Writes and transactions stay on the pool.
//!
//! The client is opened on first use (on the calling task's runtime, e.g. one per actix
//! worker), reopened when it has closed (a restarted database), with the same password
//! re-read, TLS and `statement_timeout` as pooled connections. Statements are prepared
//! once per connection.

use std::sync::{Arc, Mutex, RwLock};

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::Error;
use crate::pool::{ConnectionDriver, PoolSettings};

struct Connection {
    client: Client,
    // A list, not a map: a reader has a handful of statements (one per read shape), and
    // scanning them costs less than hashing the SQL text on every read.
    statements: Mutex<Vec<(&'static str, Statement)>>,
}

/// Starts polling a connection's I/O: `tokio::spawn` unless told otherwise.
pub type Spawn = fn(ConnectionDriver);

fn spawn_on_runtime(driver: ConnectionDriver) {
    tokio::spawn(driver);
}

/// A lazily opened, self-healing connection for pipelined single-statement reads,
/// shared by concurrent requests. Cheap to share by `Arc`.
pub struct PipelinedReader {
    settings: PoolSettings,
    current: RwLock<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    spawn: Spawn,
}

impl std::fmt::Debug for PipelinedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedReader")
            .field("host", &self.settings.host)
            .finish_non_exhaustive()
    }
}

impl PipelinedReader {
    /// A client for `settings`; nothing is opened until the first query.
    #[must_use]
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            spawn: spawn_on_runtime,
        }
    }

    /// Polls each connection's I/O with `spawn` instead of `tokio::spawn`. A server
    /// whose requests run on a thread's `LocalSet` (an actix worker) passes its local
    /// spawn (`actix_web::rt::spawn`), so the connection is polled after the requests that
    /// woke it have all queued their queries: their messages leave in one write, where a
    /// task on the runtime's own queue is polled between them and writes more often.
    /// `spawn` runs where the first read (or a reconnect) runs.
    #[must_use]
    pub fn spawning_with(mut self, spawn: Spawn) -> Self {
        self.spawn = spawn;
        self
    }

    fn open_connection(&self) -> Option<Arc<Connection>> {
        let current = self.current.read().ok()?.clone()?;
        (!current.client.is_closed()).then_some(current)
    }

    async fn connection(&self) -> Result<Arc<Connection>, Error> {
        if let Some(connection) = self.open_connection() {
            return Ok(connection);
        }
        // Boxed: the connect future (start-up, TLS handshake) is several KB, and unboxed it
        // would be part of every read's future, which is moved and boxed on every request
        // although reconnects are rare.
        Box::pin(self.reconnect()).await
    }

    async fn reconnect(&self) -> Result<Arc<Connection>, Error> {
        // One task reconnects; the others wait for it (at most one connect timeout, so a
        // black-holed database cannot queue reads behind each other) rather than opening
        // their own.
        let _single_flight =
            tokio::time::timeout(self.settings.connect_timeout, self.connecting.lock())
                .await
                .map_err(|_| {
                    Error::Unavailable(
                        "timed out waiting for the shared connection to reopen".into(),
                    )
                })?;
        if let Some(connection) = self.open_connection() {
            return Ok(connection);
        }
        let (client, driver) = self
            .settings
            .connect_undriven(self.settings.statement_timeout)
            .await?;
        (self.spawn)(driver);
        let connection = Arc::new(Connection {
            client,
            statements: Mutex::new(Vec::new()),
        });
        if let Ok(mut current) = self.current.write() {
            *current = Some(connection.clone());
        }
        Ok(connection)
    }

    /// The statement prepared on `connection` for `sql`, when it has been.
    fn cached_statement(connection: &Connection, sql: &'static str) -> Option<Statement> {
        connection.statements.lock().ok().and_then(|s| {
            s.iter()
                .find(|(known, _)| *known == sql)
                .map(|(_, st)| st.clone())
        })
    }

    async fn statement(connection: &Connection, sql: &'static str) -> Result<Statement, Error> {
        if let Some(statement) = Self::cached_statement(connection, sql) {
            return Ok(statement);
        }
        // Boxed: a statement is prepared once per connection, and unboxed the prepare
        // future would be part of every read's future, which the repository boxes on every
        // request (a larger box leaves malloc's per-thread cache for its slower bins).
        Box::pin(Self::prepare(connection, sql)).await
    }

    async fn prepare(connection: &Connection, sql: &'static str) -> Result<Statement, Error> {
        let statement = connection
            .client
            .prepare(sql)
            .await
            .map_err(Error::from_pg)?;
        if let Ok(mut statements) = connection.statements.lock() {
            // Two reads may have prepared it concurrently; one entry is enough.
            if !statements.iter().any(|(known, _)| *known == sql) {
                statements.push((sql, statement.clone()));
            }
        }
        Ok(statement)
    }

    /// Runs a read returning rows. A connection found closed is reopened and the query
    /// retried once, so a database restart costs no failed read once it is back.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached; others as the driver says.
    pub async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let mut retried = false;
        loop {
            let connection = self.connection().await?;
            let statement = Self::statement(&connection, sql).await;
            let outcome = match statement {
                Ok(statement) => connection
                    .client
                    .query(&statement, params)
                    .await
                    .map_err(Error::from_pg),
                Err(error) => Err(error),
            };
            match outcome {
                Err(_) if !retried && connection.client.is_closed() => retried = true,
                other => return other,
            }
        }
    }

    /// Runs a read and returns its first row, if any (any others are read and dropped);
    /// reopens and retries as [`PipelinedReader::query`] does.
    ///
    /// # Errors
    /// As [`PipelinedReader::query`].
    pub async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let mut retried = false;
        loop {
            let connection = self.connection().await?;
            let statement = Self::statement(&connection, sql).await;
            let outcome = match statement {
                Ok(statement) => first_row(&connection.client, &statement, params)
                    .await
                    .map_err(Error::from_pg),
                Err(error) => Err(error),
            };
            match outcome {
                Err(_) if !retried && connection.client.is_closed() => retried = true,
                other => return other,
            }
        }
    }
}

/// The first row of a query, the others read and dropped: without collecting the rows
/// into a `Vec` first (an allocation and a collecting stream per read).
async fn first_row(
    client: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    // Boxed: `query_raw`'s future keeps room for preparing a statement given as SQL text
    // (its `ToStatement` path, never taken here), which makes it ~1 KB. Unboxed it was most
    // of every read's future, and with it the repository's future `async_trait` boxes on
    // each request went over glibc's per-thread cache limit (1,032 bytes), so that box's
    // malloc took the slow path (~1.1k instructions against ~60–160 from the cache). Boxed
    // on its own, both boxes are served by the cache (docs/performance.md, seventh round).
    let rows = Box::pin(client.query_raw(statement, params.iter().copied())).await?;
    let mut rows = std::pin::pin!(rows);
    let mut first = None;
    while let Some(row) = rows.try_next().await? {
        first.get_or_insert(row);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// glibc's per-thread cache serves allocations of up to 1,032 bytes; a larger one
    /// takes malloc's slow path (~1.1k instructions per request, docs/performance.md).
    const TCACHE_MAX: usize = 1_032;

    type Params = &'static [&'static (dyn ToSql + Sync)];

    /// The size of the future `make` returns, without a connection to call it with.
    fn future_size<A, B, C, F: Future>(_make: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn query_raw(
        client: &'static Client,
        statement: &'static Statement,
        params: Params,
    ) -> impl Future<Output = Result<tokio_postgres::RowStream, tokio_postgres::Error>> {
        client.query_raw(statement, params.iter().copied())
    }

    fn query_opt(
        reader: &'static PipelinedReader,
        sql: &'static str,
        params: Params,
    ) -> impl Future<Output = Result<Option<Row>, Error>> {
        reader.query_opt(sql, params)
    }

    // The read's future is part of the future the repository boxes on every request
    // (tasks-storage checks that one against the limit); it was 1,208 bytes before
    // `first_row` boxed `query_raw`'s future.
    #[test]
    fn the_read_future_is_small() {
        let size = future_size(query_opt);
        assert!(
            size <= 512,
            "PipelinedReader::query_opt's future is {size} bytes"
        );
    }

    // `first_row` boxes `query_raw`'s future on every read: over the limit, that box
    // would cost the slow path it was boxed to avoid (it is exactly 1,032 bytes with
    // tokio-postgres 0.7.18).
    #[test]
    fn the_boxed_query_fits_the_per_thread_cache() {
        let size = future_size(query_raw);
        assert!(
            size <= TCACHE_MAX,
            "tokio-postgres' query_raw future is {size} bytes"
        );
    }
}
