//! Liveness and readiness for services on Kubernetes.
//!
//! A [`Health`] registry holds named asynchronous checks for two probes: [`Probe::Liveness`]
//! (is this process able to make progress? never an external system) and
//! [`Probe::Readiness`] (should traffic come here now? dependencies count). Each check has
//! a timeout and a short result cache, so a storm of probes costs a dependency at most one
//! call per cache period; concurrent probes share one in-flight call.
//!
//! [`Health::begin_shutdown`] makes readiness fail at once, so endpoints stop sending
//! traffic while the service drains. [`livez`] and [`readyz`] serve the results as JSON
//! with `200` or `503`:
//! `{"status":"ok"|"fail","checks":{"<name>":{"status":"ok"|"fail","duration_ms":0,"error":"…"}}}`.
//!
//! ```
//! use std::time::Duration;
//! use tasks_health::{CheckOptions, Health, Probe};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let health = Health::new();
//! health.register("cache", CheckOptions::readiness().cache_for(Duration::from_millis(500)), || async {
//!     Ok::<(), String>(()) // e.g. ping the cache
//! });
//! assert!(health.report(Probe::Readiness).await.is_ok());
//! health.begin_shutdown();
//! assert!(!health.report(Probe::Readiness).await.is_ok());
//! assert!(health.report(Probe::Liveness).await.is_ok());
//! # });
//! ```
//!
//! In an actix-web app: `App::new().app_data(web::Data::new(health)).configure(tasks_health::routes)`.
//! The [`shutdown`] module runs the graceful drain on SIGTERM.

#![deny(missing_docs)]

pub mod shutdown;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::Mutex;

/// Which probe a check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez`: failing restarts the container, so never depend on external systems.
    Liveness,
    /// `/readyz`: failing removes the pod from load balancing.
    Readiness,
}

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// How a check runs: the probe it answers, how long one run may take (a timeout is a
/// failure), and how long its result is reused (concurrent probes share one run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The probe this check answers.
    pub probe: Probe,
    /// Bound on one run of the check.
    pub timeout: Duration,
    /// How long a result is reused before the check runs again.
    pub cache_for: Duration,
}

impl CheckOptions {
    /// A readiness check with a one-second timeout and no caching.
    #[must_use]
    pub const fn readiness() -> Self {
        Self {
            probe: Probe::Readiness,
            timeout: Duration::from_secs(1),
            cache_for: Duration::ZERO,
        }
    }

    /// A liveness check with a one-second timeout and no caching.
    #[must_use]
    pub const fn liveness() -> Self {
        Self {
            probe: Probe::Liveness,
            ..Self::readiness()
        }
    }

    /// The same options with another timeout.
    #[must_use]
    pub const fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The same options with another cache period.
    #[must_use]
    pub const fn cache_for(self, cache_for: Duration) -> Self {
        Self { cache_for, ..self }
    }
}

struct Check {
    name: String,
    probe: Probe,
    timeout: Duration,
    cache_for: Duration,
    run: Box<CheckFn>,
    last: Mutex<Option<(Instant, CheckResult)>>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    /// `ok` or `fail`.
    pub status: Status,
    /// How long the check took (when it last ran).
    pub duration_ms: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What an operator should know although nothing failed (see [`Health::notice`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A check's or a report's verdict.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy.
    Ok,
    /// Unhealthy.
    Fail,
}

/// The results of every check answering one probe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `ok` when every check passed.
    pub status: Status,
    /// Each check by name.
    pub checks: BTreeMap<String, CheckResult>,
}

impl Report {
    /// Whether every check passed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// The registry of checks plus the shutdown flag. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<RwLock<Vec<Arc<Check>>>>,
    notices: Arc<RwLock<BTreeMap<String, String>>>,
    shutting_down: Arc<AtomicBool>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

/// The name under which the shutdown flag appears in readiness reports.
pub const SHUTDOWN_CHECK: &str = "shutdown";

impl Health {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a check under `name` (replacing one of the same name), answering the
    /// probe and with the timing `options` give.
    pub fn register<F, Fut, E>(&self, name: &str, options: CheckOptions, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let run: Box<CheckFn> = Box::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        let check = Arc::new(Check {
            name: name.to_owned(),
            probe: options.probe,
            timeout: options.timeout,
            cache_for: options.cache_for,
            run,
            last: Mutex::new(None),
        });
        if let Ok(mut checks) = self.checks.write() {
            checks.retain(|c| c.name != name);
            checks.push(check);
        }
    }

    /// Shows `detail` under `name` in every readiness report, as a passing entry: for a
    /// state that must not stop traffic but that an operator must not miss (e.g. a
    /// safeguard turned off by configuration).
    pub fn notice(&self, name: &str, detail: impl Into<String>) {
        if let Ok(mut notices) = self.notices.write() {
            notices.insert(name.to_owned(), detail.into());
        }
    }

    /// Makes readiness fail from now on (liveness is unaffected).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`Health::begin_shutdown`] was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Runs (or reuses cached results of) every check answering `probe`, concurrently.
    pub async fn report(&self, probe: Probe) -> Report {
        let checks: Vec<Arc<Check>> = match self.checks.read() {
            Ok(checks) => checks
                .iter()
                .filter(|c| c.probe == probe)
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        let results = futures_util::future::join_all(checks.iter().map(|c| run_check(c))).await;
        let mut map: BTreeMap<String, CheckResult> =
            checks.iter().map(|c| c.name.clone()).zip(results).collect();
        if probe == Probe::Readiness && self.is_shutting_down() {
            map.insert(
                SHUTDOWN_CHECK.to_owned(),
                CheckResult {
                    status: Status::Fail,
                    duration_ms: 0,
                    error: Some("shutting down".to_owned()),
                    detail: None,
                },
            );
        }
        if probe == Probe::Readiness
            && let Ok(notices) = self.notices.read()
        {
            for (name, detail) in notices.iter() {
                map.insert(
                    name.clone(),
                    CheckResult {
                        status: Status::Ok,
                        duration_ms: 0,
                        error: None,
                        detail: Some(detail.clone()),
                    },
                );
            }
        }
        let status = if map.values().all(|r| r.status == Status::Ok) {
            Status::Ok
        } else {
            Status::Fail
        };
        Report {
            status,
            checks: map,
        }
    }
}

async fn run_check(check: &Check) -> CheckResult {
    let mut last = check.last.lock().await;
    if let Some((at, result)) = last.as_ref()
        && at.elapsed() < check.cache_for
    {
        return result.clone();
    }
    let started = Instant::now();
    let outcome = tokio::time::timeout(check.timeout, (check.run)()).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let result = match outcome {
        Ok(Ok(())) => CheckResult {
            status: Status::Ok,
            duration_ms,
            error: None,
            detail: None,
        },
        Ok(Err(error)) => CheckResult {
            status: Status::Fail,
            duration_ms,
            error: Some(error),
            detail: None,
        },
        Err(_) => CheckResult {
            status: Status::Fail,
            duration_ms,
            error: Some(format!("timed out after {} ms", check.timeout.as_millis())),
            detail: None,
        },
    };
    *last = Some((Instant::now(), result.clone()));
    result
}

fn respond(report: &Report) -> HttpResponse {
    let mut response = if report.is_ok() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header(("Cache-Control", "no-store"))
        .json(report)
}

/// `GET /livez`: liveness checks; `200` or `503`. Needs `web::Data<Health>`.
pub async fn livez(health: web::Data<Health>) -> HttpResponse {
    respond(&health.report(Probe::Liveness).await)
}

/// `GET /readyz`: readiness checks and the shutdown flag; `200` or `503`.
/// Needs `web::Data<Health>`.
pub async fn readyz(health: web::Data<Health>) -> HttpResponse {
    respond(&health.report(Probe::Readiness).await)
}

/// Mounts `/livez` and `/readyz` (for `App::configure`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/livez", web::get().to(livez))
        .route("/readyz", web::get().to(readyz));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use actix_web::{App, test};

    use super::*;

    #[tokio::test]
    async fn failing_and_timed_out_checks_fail_the_report() {
        let health = Health::new();
        health.register("ok", CheckOptions::readiness(), || async {
            Ok::<(), String>(())
        });
        health.register("broken", CheckOptions::readiness(), || async {
            Err::<(), _>("db down")
        });
        health.register(
            "slow",
            CheckOptions::readiness().timeout(Duration::from_millis(20)),
            || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<(), String>(())
            },
        );
        let report = health.report(Probe::Readiness).await;
        assert_eq!(report.status, Status::Fail);
        assert_eq!(report.checks["ok"].status, Status::Ok);
        assert_eq!(report.checks["broken"].error.as_deref(), Some("db down"));
        assert!(
            report.checks["slow"]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("timed out"))
        );
        assert!(
            health.report(Probe::Liveness).await.is_ok(),
            "readiness checks never affect liveness"
        );
    }

    #[tokio::test]
    async fn results_are_cached_and_concurrent_probes_share_one_run() {
        let calls = Arc::new(AtomicUsize::new(0));
        let health = Health::new();
        let counter = calls.clone();
        health.register(
            "db",
            CheckOptions::readiness().cache_for(Duration::from_secs(60)),
            move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<(), String>(())
                }
            },
        );
        let probes = (0..20).map(|_| health.report(Probe::Readiness));
        futures_util::future::join_all(probes).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn notices_show_in_readiness_reports_without_failing_them() {
        let health = Health::new();
        health.notice("authentication", "disabled by configuration");
        let report = health.report(Probe::Readiness).await;
        assert!(report.is_ok());
        assert_eq!(
            report.checks["authentication"].detail.as_deref(),
            Some("disabled by configuration")
        );
        assert!(health.report(Probe::Liveness).await.checks.is_empty());
    }

    #[tokio::test]
    async fn expired_cache_runs_the_check_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let health = Health::new();
        let counter = calls.clone();
        health.register("db", CheckOptions::readiness(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), String>(()) }
        });
        health.report(Probe::Readiness).await;
        health.report(Probe::Readiness).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[actix_web::test]
    async fn handlers_answer_json_with_status_codes() {
        let health = Health::new();
        health.register("self", CheckOptions::liveness(), || async {
            Ok::<(), String>(())
        });
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(health.clone()))
                .configure(routes),
        )
        .await;

        let res =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(res.status(), 200);
        health.begin_shutdown();
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(res.status(), 503);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["status"], "fail");
        assert_eq!(body["checks"]["shutdown"]["status"], "fail");

        let res =
            test::call_service(&app, test::TestRequest::get().uri("/livez").to_request()).await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["checks"]["self"]["status"], "ok");
    }
}
