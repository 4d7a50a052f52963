//! [`InSpan`]: a future run inside a span, like tracing's `Instrumented`, without entering
//! the span once more after the future has completed.
//!
//! `Instrumented` drops the future it wraps inside its span, which is right, but it does
//! so when `Instrumented` itself is dropped — after the future has completed, in a span
//! enter and exit of their own (the registry's span stack and every layer's callbacks:
//! ~800 instructions per drop on the GET by id path, docs/performance.md). [`InSpan`]
//! drops the wrapped future as soon as it completes, still inside the enter of that last
//! poll, so the common case pays nothing more; a future dropped before completing
//! (a cancelled request) is still dropped inside its span, as with `Instrumented`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// `future`, polled and dropped inside `span` ([`in_span`]).
    ///
    /// # Panics
    /// Polled again after it has completed: the wrapped future is gone by then, as an
    /// `async fn`'s state is, and the same contract violation panics the same way.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct InSpan<F> {
        #[pin]
        future: Option<F>,
        span: tracing::Span,
    }

    impl<F> PinnedDrop for InSpan<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // Only a future that never completed is still here: drop it where its own
            // events (if any) belong, as `Instrumented` does.
            if this.future.as_mut().as_pin_mut().is_some() {
                let _entered = this.span.enter();
                this.future.set(None);
            }
        }
    }
}

/// Runs `future` inside `span`: each poll enters it, and the future is dropped inside it
/// too (see the module documentation for how this differs from `Future::instrument`).
pub fn in_span<F: Future>(future: F, span: tracing::Span) -> InSpan<F> {
    InSpan {
        future: Some(future),
        span,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("InSpan polled after completion");
        };
        let output = std::task::ready!(future.poll(cx));
        // Dropped now, while the span is still entered for this poll.
        this.future.set(None);
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::Subscriber;
    use tracing::span::Id;
    use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    use super::*;

    /// Records "enter <name>", "exit <name>" and each event's message with the name of
    /// the span it happened in.
    #[derive(Clone, Default)]
    struct Journal(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Journal {
        fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
            let name = ctx.span(id).map_or("?", |s| s.name());
            self.0.lock().unwrap().push(format!("enter {name}"));
        }

        fn on_exit(&self, id: &Id, ctx: LayerContext<'_, S>) {
            let name = ctx.span(id).map_or("?", |s| s.name());
            self.0.lock().unwrap().push(format!("exit {name}"));
        }

        fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
            let span = ctx.event_span(event).map_or("none", |s| s.name());
            self.0
                .lock()
                .unwrap()
                .push(format!("event {} in {span}", event.metadata().name()));
        }
    }

    /// Logs an event when dropped, to see in which span a drop happens.
    struct LogsOnDrop;

    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::info!(name: "dropped", "dropped");
        }
    }

    fn with_journal(test: impl FnOnce()) -> Vec<String> {
        let journal = Journal::default();
        let subscriber = tracing_subscriber::registry().with(journal.clone());
        tracing::subscriber::with_default(subscriber, test);
        journal.0.lock().unwrap().clone()
    }

    /// Ready at once, holding something that logs when dropped.
    struct ReadyHolding {
        _guard: LogsOnDrop,
    }

    impl Future for ReadyHolding {
        type Output = u8;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u8> {
            Poll::Ready(7)
        }
    }

    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        future.poll(&mut cx)
    }

    #[test]
    fn a_completed_future_is_dropped_inside_its_last_poll() {
        let lines = with_journal(|| {
            let future = in_span(
                ReadyHolding { _guard: LogsOnDrop },
                tracing::info_span!("work"),
            );
            let mut future = std::pin::pin!(future);
            assert_eq!(poll_once(future.as_mut()), Poll::Ready(7));
            tracing::info!(name: "completed", "completed");
        });
        // One enter and one exit, the drop inside them; nothing more when the wrapper
        // itself is dropped (after "completed", at the end of the closure).
        assert_eq!(
            lines,
            [
                "enter work",
                "event dropped in work",
                "exit work",
                "event completed in none"
            ]
        );
    }

    #[test]
    fn a_cancelled_future_is_dropped_inside_its_span() {
        let lines = with_journal(|| {
            let guard = LogsOnDrop;
            let future = in_span(
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                },
                tracing::info_span!("work"),
            );
            let mut future = Box::pin(future);
            assert_eq!(poll_once(future.as_mut()), Poll::Pending);
            drop(future);
        });
        assert_eq!(
            lines,
            [
                "enter work",
                "exit work",
                "enter work",
                "event dropped in work",
                "exit work"
            ]
        );
    }

    #[test]
    fn a_disabled_span_still_runs_the_future() {
        let future = in_span(async { "done" }, tracing::Span::none());
        let mut future = std::pin::pin!(future);
        assert_eq!(poll_once(future.as_mut()), Poll::Ready("done"));
    }
}
