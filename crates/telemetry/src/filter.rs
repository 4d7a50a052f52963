//! The level filter of [`crate::init`]: `EnvFilter`, without its per-span bookkeeping when
//! no directive needs it.
//!
//! `EnvFilter` keeps a map of the spans that span- or field-based directives
//! (`target[span{field=value}]=level`) apply to, behind a `RwLock`, and takes that lock on
//! every span's creation, entry, exit, record and close, also when no such directive exists
//! and the map is always empty (tracing-subscriber 0.3.23; fixed upstream by
//! tokio-rs/tracing#3487, not released). Every worker thread takes the same lock: with the
//! server and database spans that is a few dozen atomic operations per request on one
//! cache line shared by all workers. With only `target=level` directives the callbacks
//! have nothing to do and are skipped here; the filtering itself (`register_callsite`,
//! `enabled`, `max_level_hint`) is `EnvFilter`'s, unchanged.

use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};

/// An `EnvFilter` layer that tells it about spans only when a directive depends on them.
pub(crate) struct Filter {
    inner: EnvFilter,
    /// Some directive names spans or fields (`[...]`): the span callbacks are needed.
    dynamic: bool,
}

impl Filter {
    /// `inner`, parsed from `directives`.
    pub(crate) fn new(inner: EnvFilter, directives: &str) -> Self {
        Self {
            inner,
            dynamic: has_span_directives(directives),
        }
    }
}

/// Whether any directive filters on spans or fields: in `EnvFilter`'s syntax those are the
/// ones with a `[...]` part (`target[span{field=value}]=level`, `[{field}]=level`).
fn has_span_directives(directives: &str) -> bool {
    directives.contains('[')
}

impl<S: Subscriber> Layer<S> for Filter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&self.inner, metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.inner)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&self.inner, metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.dynamic {
            self.inner.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if self.dynamic {
            self.inner.on_record(id, values, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.dynamic {
            self.inner.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.dynamic {
            self.inner.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.dynamic {
            self.inner.on_close(id, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn span_directives_are_recognised() {
        assert!(!has_span_directives("info"));
        assert!(!has_span_directives("warn,tasks_storage=debug,h2=off"));
        assert!(has_span_directives("info,tasks_storage[db]=debug"));
        assert!(has_span_directives("[{request_id}]=trace"));
    }

    /// Events kept by a test layer, as `level target message`.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let meta = event.metadata();
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", meta.level(), meta.target()));
        }
    }

    fn seen_with(directives: &str) -> Vec<String> {
        let seen = Seen::default();
        let filter = Filter::new(EnvFilter::builder().parse(directives).unwrap(), directives);
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "quiet", "hidden unless asked");
            tracing::info!(target: "quiet", "shown");
            tracing::debug!(target: "chatty", "shown");
            let span = tracing::info_span!("db", table = "tasks");
            span.in_scope(|| tracing::trace!(target: "quiet", "only in db spans"));
        });
        seen.0.lock().unwrap().clone()
    }

    #[test]
    fn static_directives_filter_as_env_filter_does() {
        assert_eq!(
            seen_with("info,chatty=debug"),
            ["INFO quiet", "DEBUG chatty"]
        );
    }

    #[test]
    fn span_directives_still_apply() {
        assert_eq!(
            seen_with("info,chatty=debug,[db]=trace"),
            ["INFO quiet", "DEBUG chatty", "TRACE quiet"]
        );
    }
}
