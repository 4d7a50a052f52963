//! The graceful drain of a service behind Kubernetes endpoints.
//!
//! On SIGTERM (or SIGINT) [`drain_on_signal`] fails readiness at once, keeps serving for
//! the drain delay while endpoints stop routing here, then stops the servers gracefully:
//! they stop accepting and give in-flight requests their shutdown timeout. While draining,
//! [`close_when_draining`] marks every response `Connection: close`, so keep-alive
//! connections cannot hold the drain open. A second signal means hurry: it skips the rest of the
//! delay and stops the servers without waiting for in-flight requests.
//! A shell-less image cannot run a `preStop: sleep`, so the process owns the drain.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web;
use tokio::signal::unix::{SignalKind, signal};

use crate::Health;

/// The drain's timing: a configuration section (`shutdown.drain_delay_secs`,
/// `shutdown.timeout_secs`) a service can nest in its settings as is.
///
/// Kubernetes waits `terminationGracePeriodSeconds` for the whole drain, so keep
/// `drain_delay_secs + timeout_secs` below it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// After SIGTERM, readiness fails while traffic is still served for this long, so
    /// endpoints stop routing here before the listener closes.
    pub drain_delay_secs: u64,
    /// Then in-flight requests get this long to finish (the servers'
    /// `shutdown_timeout`).
    pub timeout_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            drain_delay_secs: 5,
            timeout_secs: 20,
        }
    }
}

impl ShutdownSettings {
    /// The drain delay to pass to [`drain_on_signal`].
    #[must_use]
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }
}

/// Middleware (`App::wrap(from_fn(close_when_draining))`) asking clients to close their
/// connections once shutdown has begun. Needs `web::Data<Health>` in the app.
pub async fn close_when_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let draining = req
        .app_data::<web::Data<Health>>()
        .is_some_and(|h| h.is_shutting_down());
    let mut res = next.call(req).await?;
    if draining {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// Waits for SIGTERM or SIGINT, then drains: readiness fails, traffic is served for
/// `drain_delay`, then each server in `servers` is stopped gracefully, in order (put the
/// API first and the admin listener last, so probes keep answering until the end).
/// Build the servers with `disable_signals()` and their `shutdown_timeout`.
pub async fn drain_on_signal(health: Health, drain_delay: Duration, servers: Vec<ServerHandle>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; the process will not drain on SIGTERM");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    health.begin_shutdown();
    tracing::info!(
        signal = name,
        drain_delay_secs = drain_delay.as_secs(),
        "shutdown requested; draining"
    );
    let forced = tokio::select! {
        () = tokio::time::sleep(drain_delay) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    tracing::info!(
        forced,
        "no longer accepting connections; finishing in-flight requests"
    );
    for server in servers {
        server.stop(!forced).await;
    }
}
