//! Prometheus metrics: one process-wide registry, OpenTelemetry semantic-convention names
//! (dots become underscores, units become suffixes), labels with bounded cardinality.

use std::cell::RefCell;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use actix_web::HttpResponse;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Histogram buckets (seconds) recommended by the HTTP semantic conventions.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Every metric this crate maintains.
pub struct Metrics {
    registry: Registry,
    /// `http.server.request.duration`, by method, route template and status code.
    pub http_duration: HistogramVec,
    /// `http.server.active_requests`, by method.
    pub http_active: IntGaugeVec,
    /// `db.client.operation.duration`, by operation and collection.
    pub db_duration: HistogramVec,
    /// `db.client.connection.count`, by state (`idle`, `used`).
    pub db_connections: IntGaugeVec,
    /// `db.client.connection.max`.
    pub db_connections_max: IntGauge,
    /// `db.client.connection.pending_requests`.
    pub db_pending: IntGauge,
    /// `build_info`: 1, labelled with the service, version and git revision.
    pub build_info: IntGaugeVec,
    refreshers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let vec = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    vec
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    vec
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge =
        IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(gauge.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    gauge
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    // The names are constants of this crate: a failure here is a bug caught by its tests.
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .unwrap_or_else(|e| panic!("process metrics: {e}"));
    Metrics {
        http_duration: histogram(
            &registry,
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        ),
        http_active: gauge_vec(
            &registry,
            "http_server_active_requests",
            "Number of active HTTP server requests.",
            &["http_request_method"],
        ),
        db_duration: histogram(
            &registry,
            "db_client_operation_duration_seconds",
            "Duration of database client operations.",
            &["db_system_name", "db_operation_name", "db_collection_name"],
        ),
        db_connections: gauge_vec(
            &registry,
            "db_client_connection_count",
            "Number of connections that are currently in the state described by the state label.",
            &["state"],
        ),
        db_connections_max: gauge(
            &registry,
            "db_client_connection_max",
            "The maximum number of open connections allowed.",
        ),
        db_pending: gauge(
            &registry,
            "db_client_connection_pending_requests",
            "Number of current requests waiting for an open connection.",
        ),
        build_info: gauge_vec(
            &registry,
            "build_info",
            "Build information: always 1.",
            &["service_name", "version", "revision"],
        ),
        refreshers: Mutex::new(Vec::new()),
        registry,
    }
});

/// The process-wide metrics.
#[must_use]
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Most (operation, collection) pairs a thread keeps resolved.
const CACHED_DB_LABEL_SETS: usize = 32;

/// A resolved `db.client.operation.duration` child: operation, collection.
type DbDurationChild = (Box<str>, Box<str>, Histogram);

thread_local! {
    static DB_DURATIONS: RefCell<Vec<DbDurationChild>> = const { RefCell::new(Vec::new()) };
}

/// A connection pool's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Most connections allowed.
    pub max: usize,
    /// Open connections.
    pub open: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Records one database operation. The histogram of each (operation, collection)
    /// is resolved once per thread: the registry's look-up hashes the labels and takes a
    /// lock, on every request otherwise.
    pub fn observe_db(&self, operation: &str, collection: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        DB_DURATIONS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((.., histogram)) = cache
                .iter()
                .find(|(o, c, _)| &**o == operation && &**c == collection)
            {
                histogram.observe(seconds);
                return;
            }
            let histogram =
                self.db_duration
                    .with_label_values(&["postgresql", operation, collection]);
            histogram.observe(seconds);
            if cache.len() < CACHED_DB_LABEL_SETS {
                cache.push((operation.into(), collection.into(), histogram));
            }
        });
    }

    /// Publishes a pool's state.
    pub fn set_pool(&self, stats: PoolStats) {
        self.db_connections_max.set(as_i64(stats.max));
        self.db_connections
            .with_label_values(&["idle"])
            .set(as_i64(stats.idle));
        self.db_connections
            .with_label_values(&["used"])
            .set(as_i64(stats.open.saturating_sub(stats.idle)));
        self.db_pending.set(as_i64(stats.waiting));
    }

    /// Sets `build_info{service_name, version, revision} 1`.
    pub fn set_build_info(&self, service_name: &str, version: &str, revision: &str) {
        self.build_info
            .with_label_values(&[service_name, version, revision])
            .set(1);
    }

    /// Runs `refresh` before every scrape (e.g. to read a pool's state).
    pub fn on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut refreshers) = self.refreshers.lock() {
            refreshers.push(Box::new(refresh));
        }
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        if let Ok(refreshers) = self.refreshers.lock() {
            refreshers.iter().for_each(|refresh| refresh());
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn handler() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(global().render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_the_semantic_conventions() {
        let metrics = global();
        metrics.set_build_info("svc", "1.2.3", "abc");
        metrics.observe_db("SELECT", "things", Duration::from_millis(3));
        metrics.set_pool(PoolStats {
            max: 8,
            open: 3,
            idle: 1,
            waiting: 0,
        });
        let text = metrics.render();
        for expected in [
            "build_info{revision=\"abc\",service_name=\"svc\",version=\"1.2.3\"} 1",
            "db_client_operation_duration_seconds_count{db_collection_name=\"things\",db_operation_name=\"SELECT\",db_system_name=\"postgresql\"} 1",
            "db_client_connection_count{state=\"used\"} 2",
            "db_client_connection_max 8",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
