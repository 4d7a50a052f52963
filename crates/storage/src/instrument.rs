//! Tracing and metrics around each repository operation.

use std::time::Instant;

use tasks_domain::RepositoryError;
use tasks_telemetry::span::in_span;

/// Runs one repository operation in an OpenTelemetry client span and records its
/// duration (`db.client.operation.duration`). Parameter values are never recorded.
///
/// The operation is passed as a closure making its future, not as the future: an
/// `async fn` keeps a future argument in its state next to the one it awaits (rustc does
/// not overlap them), which doubled the size of every repository future — the future
/// `async_trait` moves into a box on each call.
///
/// It runs in the span through [`in_span`] rather than `Instrument::instrument`, which
/// enters the span once more to drop the completed operation (~800 instructions a call).
pub(crate) async fn instrumented<T, F>(
    name: &'static str,
    operation: &'static str,
    collection: &'static str,
    work: impl FnOnce() -> F,
) -> Result<T, RepositoryError>
where
    F: std::future::Future<Output = Result<T, RepositoryError>>,
{
    let span = tracing::info_span!(
        "db",
        otel.name = name,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = collection,
    );
    let started = Instant::now();
    let outcome = in_span(work(), span).await;
    tasks_telemetry::metrics::global().observe_db(operation, collection, started.elapsed());
    outcome
}
