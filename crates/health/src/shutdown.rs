//! The graceful drain of a service behind Kubernetes endpoints.
//!
//! On the first stop request (SIGTERM, SIGINT or a [`StopHandle`]) [`drain`] fails readiness at once, keeps serving for
//! the drain delay while endpoints stop routing here, then stops the servers gracefully:
//! they stop accepting and give in-flight requests their shutdown timeout. While draining,
//! [`close_when_draining`] marks every response `Connection: close`, so keep-alive
//! connections cannot hold the drain open. A second request means hurry: it skips the rest of the
//! delay and stops the servers without waiting for in-flight requests.
//! A shell-less image cannot run a `preStop: sleep`, so the process owns the drain.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{
    ServerHandle, Service, ServiceRequest, ServiceResponse, Transform, forward_ready,
};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web;
use futures_util::FutureExt as _;
use futures_util::future::{Either, Map, Ready, ready};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

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
    /// The drain delay to pass to [`drain`].
    #[must_use]
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }
}

/// Middleware (`App::wrap(from_fn(close_when_draining))`) asking clients to close their
/// connections once shutdown has begun. Needs `web::Data<Health>` in the app.
/// [`CloseWhenDraining`] does the same without `from_fn`'s boxed futures.
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

/// [`close_when_draining`] as a middleware type (`App::wrap(CloseWhenDraining)`): the same
/// behaviour without the two futures `from_fn` boxes per request. While serving, the
/// response future is the wrapped service's own; while draining, that future with the
/// `Connection: close` marking mapped onto its response.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloseWhenDraining;

impl<S, B> Transform<S, ServiceRequest> for CloseWhenDraining
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = CloseWhenDrainingService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CloseWhenDrainingService { service }))
    }
}

/// The service [`CloseWhenDraining`] wraps around the app.
#[derive(Debug)]
pub struct CloseWhenDrainingService<S> {
    service: S,
}

/// What a response becomes while draining.
type Marked<B> = fn(
    Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<B>, actix_web::Error>;

fn mark_close<B>(
    outcome: Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    outcome.map(|mut res| {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        res
    })
}

impl<S, B> Service<ServiceRequest> for CloseWhenDrainingService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Either<S::Future, Map<S::Future, Marked<B>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let draining = req
            .app_data::<web::Data<Health>>()
            .is_some_and(|h| h.is_shutting_down());
        let response = self.service.call(req);
        if draining {
            Either::Right(response.map(mark_close::<B> as Marked<B>))
        } else {
            Either::Left(response)
        }
    }
}

/// Where stop requests come from: SIGTERM and SIGINT once [`StopRequests::listen_for_signals`]
/// is called, and every [`StopHandle`] (tests and embedding programs stop a service without
/// signalling the whole process). The first request starts the drain, a second one hurries it.
#[derive(Debug)]
pub struct StopRequests {
    sender: mpsc::UnboundedSender<&'static str>,
    receiver: mpsc::UnboundedReceiver<&'static str>,
}

impl Default for StopRequests {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self { sender, receiver }
    }
}

impl StopRequests {
    /// No requests yet, and no signal handlers installed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that asks for a stop as SIGTERM would.
    #[must_use]
    pub fn handle(&self) -> StopHandle {
        StopHandle {
            sender: self.sender.clone(),
        }
    }

    /// Turns SIGTERM and SIGINT into stop requests, from a task on the current runtime.
    ///
    /// # Errors
    /// The signal handlers cannot be installed.
    pub fn listen_for_signals(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let sender = self.sender.clone();
        Ok(tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if sender.send(name).is_err() {
                    return;
                }
            }
        }))
    }

    async fn next(&mut self) -> &'static str {
        // The receiver holds a sender of its own, so the channel never closes.
        self.receiver.recv().await.unwrap_or("stop handle")
    }
}

/// Asks a service to stop, as SIGTERM would: the drain runs in full. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle {
    sender: mpsc::UnboundedSender<&'static str>,
}

impl StopHandle {
    /// Requests the stop; a second request skips the rest of the drain.
    pub fn stop(&self) {
        // The service has already stopped when nobody receives: nothing to do.
        let _ = self.sender.send("stop handle");
    }
}

/// Waits for the first stop request, then drains: readiness fails, traffic is served for
/// `drain_delay`, then each server in `servers` is stopped gracefully, in order (put the
/// API first and the admin listener last, so probes keep answering until the end). A
/// second request during the delay stops them at once, without waiting for in-flight
/// requests. Build the servers with `disable_signals()` and their `shutdown_timeout`.
pub async fn drain(
    health: Health,
    drain_delay: Duration,
    servers: Vec<ServerHandle>,
    mut requests: StopRequests,
) {
    let reason = requests.next().await;
    health.begin_shutdown();
    tracing::info!(
        signal = reason,
        drain_delay_secs = drain_delay.as_secs(),
        "shutdown requested; draining"
    );
    let forced = tokio::select! {
        () = tokio::time::sleep(drain_delay) => false,
        _ = requests.next() => true,
    };
    tracing::info!(
        forced,
        "no longer accepting connections; finishing in-flight requests"
    );
    for server in servers {
        server.stop(!forced).await;
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, test};

    use super::*;

    #[actix_web::test]
    async fn responses_ask_to_close_only_while_draining() {
        let health = Health::new();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(health.clone()))
                .route("/", web::get().to(HttpResponse::Ok))
                .wrap(CloseWhenDraining),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_ne!(
            res.response().head().connection_type(),
            ConnectionType::Close
        );
        health.begin_shutdown();
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert!(res.status().is_success());
        assert_eq!(
            res.response().head().connection_type(),
            ConnectionType::Close
        );
    }
}
