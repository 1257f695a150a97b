//! Tracing and metrics set-up, one way for every binary.
//!
//! Logs go to a writer (stderr, or the agent's log tail) as human-readable
//! text or JSON lines, with colour codes only on a terminal. In
//! `serviceradar-core` every HTTP request runs in an `http_request` span
//! carrying `request_id`, `method`, `route` and, once authenticated,
//! `tenant_id` and `user_id`. Prometheus metrics are recorded through the
//! `metrics` facade and rendered at `/metrics` (the families and their labels
//! are listed in `docs/monitoring.md`).

use std::str::FromStr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The control plane's default log filter (`RUST_LOG` overrides it): the
/// NATS client's own `event: ...` lines are left out, the hub client logs
/// them with context.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=info,async_nats=warn";

/// Which log lines are written, in `RUST_LOG` syntax
/// (`info,sqlx=warn,serviceradar_ingest=debug`).
///
/// A filter made only of `target=level` directives (every filter the docs
/// show) is decided once per call site and costs nothing when a span is
/// entered or left. Only a filter naming spans or span fields
/// (`[http_request{tenant_id=...}]=debug`) has to follow each span, which
/// `tracing-subscriber`'s `EnvFilter` does by taking a lock on every enter and
/// exit: a list request enters its span about 40 times (once per poll, and
/// sqlx polls its row stream inside the span), so the plain form is used
/// whenever it expresses the same filter.
pub struct LogFilter {
    layer: Box<dyn Layer<Registry> + Send + Sync>,
    follows_spans: bool,
}

impl LogFilter {
    /// Parses `directives`; the error says what is wrong with them.
    pub fn parse(directives: &str) -> Result<Self, String> {
        // EnvFilter's grammar is the reference: what it refuses is refused.
        let full = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        if !directives.contains('[')
            && let Ok(targets) = Targets::from_str(directives)
        {
            return Ok(Self::targets(targets));
        }
        Ok(Self::spans(full))
    }

    /// `RUST_LOG`, or [`DEFAULT_FILTER`] when it is unset or invalid.
    pub fn from_env_or_default() -> Self {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|directives| Self::parse(&directives).ok())
            .unwrap_or_else(Self::default_filter)
    }

    /// [`DEFAULT_FILTER`].
    pub fn default_filter() -> Self {
        Self::parse(DEFAULT_FILTER).unwrap_or_else(|_| Self::level(tracing::Level::INFO))
    }

    /// Everything at `level` and above.
    pub fn level(level: tracing::Level) -> Self {
        Self::targets(Targets::new().with_default(level))
    }

    /// Whether this filter follows spans (it has span or field directives).
    pub fn follows_spans(&self) -> bool {
        self.follows_spans
    }

    /// Targets and levels only.
    fn targets(targets: Targets) -> Self {
        Self {
            layer: targets.boxed(),
            follows_spans: false,
        }
    }

    /// Span or field directives.
    fn spans(filter: EnvFilter) -> Self {
        Self {
            layer: filter.boxed(),
            follows_spans: true,
        }
    }
}

/// Installs the global tracing subscriber writing to `writer` with
/// `RUST_LOG`, or [`DEFAULT_FILTER`] when it is unset or invalid.
pub fn init_tracing<W>(json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    init_tracing_with(LogFilter::from_env_or_default(), json, writer);
}

/// Installs the global tracing subscriber with `filter`, writing to `writer`.
/// Text logs carry colour codes only when stderr is a terminal (not when
/// redirected to a file or a journal). A second call (tests start several
/// apps) keeps the first subscriber.
pub fn init_tracing_with<W>(filter: LogFilter, json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = subscriber(filter, json, writer).try_init();
}

/// The subscriber [`init_tracing_with`] installs.
fn subscriber<W>(filter: LogFilter, json: bool, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let text = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let format = if json {
        text.json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed()
    } else {
        text.boxed()
    };
    tracing_subscriber::registry()
        .with(filter.layer)
        .with(format)
}

/// The buckets of `http_request_duration_seconds` (seconds): from a cached
/// page to the 30-s request timeout.
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder (installed on first call).
///
/// API latency is a real histogram (`http_request_duration_seconds_bucket`
/// by `method` and `route`, the matched route pattern, so the label is
/// bounded), which Prometheus can aggregate across replicas; without
/// buckets the exporter would render a summary, whose quantiles cannot be.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("http_request_duration_seconds".into()),
                HTTP_DURATION_BUCKETS,
            ) {
                Ok(builder) => builder,
                // Only an empty bucket list is refused; ours is not.
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then our handle
            // renders an empty page, which the /metrics test would catch.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The messages of a fixed set of events: target and level, in and out of
    /// a request span.
    const MESSAGES: [&str; 12] = [
        "ingest error",
        "ingest info",
        "ingest debug",
        "sqlx info",
        "sqlx warn",
        "sqlx_postgres info",
        "tower_http info",
        "async_nats info",
        "async_nats warn",
        "api debug in request",
        "api info in request",
        "api debug outside",
    ];

    /// The messages `filter` lets through, sorted.
    ///
    /// One subscriber at a time: `tracing` caches each event's interest
    /// across every live subscriber, and a subscriber of a test running
    /// at the same moment could have the events cached as uninteresting
    /// while this one's span directives wanted them (about 1 run in 150 of
    /// this module's tests dropped the in-request lines, session 31). The
    /// cache is also rebuilt once this subscriber is the default.
    fn written_by(filter: LogFilter) -> Vec<&'static str> {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = subscriber(filter, false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::callsite::rebuild_interest_cache();
            tracing::error!(target: "serviceradar_ingest::fetch", "ingest error");
            tracing::info!(target: "serviceradar_ingest::fetch", "ingest info");
            tracing::debug!(target: "serviceradar_ingest::fetch", "ingest debug");
            tracing::info!(target: "sqlx::query", "sqlx info");
            tracing::warn!(target: "sqlx::query", "sqlx warn");
            tracing::info!(target: "sqlx_postgres::options", "sqlx_postgres info");
            tracing::info!(target: "tower_http::trace", "tower_http info");
            tracing::info!(target: "async_nats", "async_nats info");
            tracing::warn!(target: "async_nats", "async_nats warn");
            tracing::info_span!("http_request", tenant_id = "t-1").in_scope(|| {
                tracing::debug!(target: "serviceradar_api::sites", "api debug in request");
                tracing::info!(target: "serviceradar_api::sites", "api info in request");
            });
            tracing::debug!(target: "serviceradar_api::sites", "api debug outside");
        });
        let text = String::from_utf8_lossy(&out.0.lock().expect("capture lock")).into_owned();
        let mut seen: Vec<&'static str> = text
            .lines()
            .filter_map(|line| MESSAGES.into_iter().find(|m| line.ends_with(m)))
            .collect();
        seen.sort_unstable();
        seen
    }

    fn written(directives: &str) -> Vec<&'static str> {
        written_by(LogFilter::parse(directives).expect("directives parse"))
    }

    #[test]
    fn the_default_filter_writes_what_it_always_did() {
        assert!(!LogFilter::default_filter().follows_spans());
        assert_eq!(
            written(DEFAULT_FILTER),
            [
                "api info in request",
                "async_nats warn",
                "ingest error",
                "ingest info",
                // `sqlx=warn` is a prefix: it covers `sqlx_postgres` too.
                "sqlx warn",
                "tower_http info",
            ]
        );
    }

    #[test]
    fn target_only_filters_skip_span_tracking_and_let_the_same_lines_through() {
        for directives in [
            DEFAULT_FILTER,
            "info",
            "warn",
            "debug",
            "off",
            "error,serviceradar_ingest=debug",
            "INFO,sqlx=off,serviceradar_api=trace",
            "serviceradar_ingest",
            "trace,async_nats=warn,async_nats=error",
            "sqlx=info,sqlx::query=error",
        ] {
            let filter = LogFilter::parse(directives).expect("directives parse");
            assert!(
                !filter.follows_spans(),
                "{directives}: took the span-tracking form"
            );
            // EnvFilter is the reference grammar and behaviour.
            let reference = EnvFilter::try_new(directives).expect("EnvFilter parses");
            assert_eq!(
                written_by(filter),
                written_by(LogFilter::spans(reference)),
                "{directives}"
            );
        }
    }

    #[test]
    fn span_directives_still_filter_by_span() {
        let directives = "warn,[http_request{tenant_id}]=debug";
        assert!(
            LogFilter::parse(directives)
                .expect("parses")
                .follows_spans()
        );
        assert_eq!(
            written(directives),
            [
                "api debug in request",
                "api info in request",
                "async_nats warn",
                "ingest error",
                "sqlx warn",
            ]
        );
    }

    #[test]
    fn invalid_directives_are_refused_with_the_reason() {
        for bad in ["info,sqlx=loud", "a=b=c"] {
            let err = LogFilter::parse(bad).err().expect("refused");
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
