//! A service run in the test process, on a thread of its own with its own actix system:
//! no process per test, and any test runtime (`#[tokio::test]`, current-thread or not)
//! can use it, because the service never shares the test's runtime.
//!
//! A service crate wraps [`InProcess::start`] in its own `spawn_app`: the closure builds
//! the service on the new thread (so it may bind listeners and spawn tasks there) and
//! returns what the test needs to know (addresses), how to stop it, and the future that
//! runs it until stopped.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use tasks_test_support::in_process::{InProcess, Started};
//!
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let service = InProcess::start("example", move || {
//!     Ok::<_, std::io::Error>(Started {
//!         info: 42,
//!         stop: Box::new(move || {
//!             let _ = stop_tx.send(());
//!         }),
//!         run: Box::pin(async move {
//!             let _ = stop_rx.await;
//!             Ok(())
//!         }),
//!     })
//! })
//! .await;
//! assert_eq!(*service.info(), 42);
//! service.stop().await.expect("stopped cleanly");
//! # });
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// What a started service hands back to [`InProcess::start`].
pub struct Started<T> {
    /// What the test needs to know about it (bound addresses, handles).
    pub info: T,
    /// Asks the service to stop (as SIGTERM would); called once.
    pub stop: Box<dyn FnOnce() + Send>,
    /// Runs the service until it has stopped; polled on the service's own thread.
    pub run: Pin<Box<dyn Future<Output = Result<(), String>>>>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Started<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A service running on its own thread; asked to stop when dropped.
pub struct InProcess<T> {
    info: T,
    stop: Option<Box<dyn FnOnce() + Send>>,
    finished: Option<oneshot::Receiver<Result<(), String>>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for InProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("info", &self.info)
            .field("stopping", &self.stop.is_none())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> InProcess<T> {
    /// Starts a thread named `name` with an actix system, runs `build` on it and, once it
    /// returned, the service until it stops. Panics with the error when `build` fails.
    pub async fn start<E, B>(name: &str, build: B) -> Self
    where
        E: Display,
        B: FnOnce() -> Result<Started<T>, E> + Send + 'static,
    {
        let (started_tx, started_rx) = oneshot::channel();
        let (finished_tx, finished_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    match build() {
                        Ok(Started { info, stop, run }) => {
                            if started_tx.send(Ok((info, stop))).is_ok() {
                                let _ = finished_tx.send(run.await);
                            }
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
            })
            .expect("tasks-test-support: spawn the service thread");
        match started_rx.await {
            Ok(Ok((info, stop))) => Self {
                info,
                stop: Some(stop),
                finished: Some(finished_rx),
                thread: Some(thread),
            },
            Ok(Err(e)) => panic!("tasks-test-support: {name} failed to start: {e}"),
            Err(_) => {
                // The thread ended without a word: it panicked; show that panic.
                match thread.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => panic!("tasks-test-support: {name} ended while starting"),
                }
            }
        }
    }
}

impl<T> InProcess<T> {
    /// What the service handed back when it started.
    pub fn info(&self) -> &T {
        &self.info
    }

    /// Whether the service has stopped running (stopped, failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the service to stop and waits until it has; its outcome.
    ///
    /// # Errors
    /// What the service's run reported, or that its thread panicked.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            stop();
        }
        let finished = self.finished.take();
        let outcome = match finished {
            Some(finished) => finished
                .await
                .unwrap_or_else(|_| Err("the service thread panicked".to_owned())),
            None => Ok(()),
        };
        if let Some(thread) = self.thread.take() {
            // It has finished its run: joining is immediate.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        outcome
    }
}

impl<T> Drop for InProcess<T> {
    fn drop(&mut self) {
        // The thread ends by itself once the service has drained.
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn waiting_service() -> Started<&'static str> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        Started {
            info: "running",
            stop: Box::new(move || {
                let _ = stop_tx.send(());
            }),
            run: Box::pin(async move {
                // Actix's runtime is there: spawning on it works.
                let handle = actix_rt::spawn(async { 7 });
                assert_eq!(handle.await.unwrap(), 7);
                let _ = stop_rx.await;
                Err("stopped on request".to_owned())
            }),
        }
    }

    #[tokio::test]
    async fn a_service_runs_until_stopped_and_reports_its_outcome() {
        let service = InProcess::start("waiting", || Ok::<_, String>(waiting_service())).await;
        assert_eq!(*service.info(), "running");
        assert!(!service.is_finished());
        assert_eq!(service.stop().await, Err("stopped on request".to_owned()));
    }

    #[tokio::test]
    #[should_panic(expected = "broken failed to start: cannot bind")]
    async fn a_failed_build_is_a_panic_naming_the_error() {
        InProcess::<()>::start("broken", || Err::<Started<()>, _>("cannot bind")).await;
    }
}
