//! Waiting for a condition with a bounded timeout, instead of sleeping blindly.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use tasks_test_support::poll::{eventually, poll_until};
//!
//! let started = std::time::Instant::now();
//! eventually("20 ms to pass", Duration::from_secs(5), || async {
//!     started.elapsed() >= Duration::from_millis(20)
//! })
//! .await;
//! let never: Option<()> = poll_until(Duration::from_millis(50), || async { None }).await;
//! assert!(never.is_none());
//! # });
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are re-evaluated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Evaluates `attempt` every [`POLL_INTERVAL`] until it returns `Some`, at most for
/// `within` (the attempt is always made at least once); `None` when time ran out.
pub async fn poll_until<T, F, Fut>(within: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `condition` holds; panics naming `what` after `within`.
#[track_caller]
pub fn eventually<'a, F, Fut>(
    what: &'a str,
    within: Duration,
    mut condition: F,
) -> impl Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = bool> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let held = poll_until(within, || {
            let check = condition();
            async move { check.await.then_some(()) }
        })
        .await;
        assert!(
            held.is_some(),
            "timed out after {within:?} waiting for {what} (at {caller})"
        );
    }
}

/// Waits until `attempt` returns `Some` and returns it; panics naming `what` after
/// `within`.
#[track_caller]
pub fn eventually_some<'a, T, F, Fut>(
    what: &'a str,
    within: Duration,
    attempt: F,
) -> impl Future<Output = T> + 'a
where
    T: 'a,
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = Option<T>> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        poll_until(within, attempt).await.unwrap_or_else(|| {
            panic!("timed out after {within:?} waiting for {what} (at {caller})")
        })
    }
}

/// The blocking form of [`poll_until`], for code outside a runtime.
pub fn poll_until_blocking<T>(
    within: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use std::cell::Cell;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn poll_until_returns_the_first_value() {
        let calls = Cell::new(0);
        let value = runtime().block_on(poll_until(Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { (n == 3).then_some(n) }
        }));
        assert_eq!(value, Some(3));
    }

    #[test]
    fn poll_until_tries_once_even_without_time() {
        let value = runtime().block_on(poll_until(Duration::ZERO, || async { Some(1) }));
        assert_eq!(value, Some(1));
        assert_eq!(poll_until_blocking(Duration::ZERO, || Some(2)), Some(2));
    }

    #[test]
    #[should_panic(expected = "timed out after 50ms waiting for the impossible")]
    fn eventually_names_what_it_waited_for() {
        runtime().block_on(eventually(
            "the impossible",
            Duration::from_millis(50),
            || async { false },
        ));
    }

    #[test]
    fn eventually_some_returns_the_value() {
        let value = runtime().block_on(eventually_some(
            "a value",
            Duration::from_secs(1),
            || async { Some("v") },
        ));
        assert_eq!(value, "v");
    }
}
