//! Tracing and metrics set-up, one way for every binary.
//!
//! Logs go to a writer (stderr, or the agent's log tail) as human-readable
//! text or JSON lines, with colour codes only on a terminal. In
//! `serviceradar-core` every HTTP request runs in an `http_request` span
//! carrying `request_id`, `method`, `route` and, once authenticated,
//! `tenant_id` and `user_id`. Prometheus metrics are recorded through the
//! `metrics` facade and rendered at `/metrics` (the families and their labels
//! are listed in `docs/monitoring.md`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
pub use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The control plane's default log filter (`RUST_LOG` overrides it): the
/// NATS client's own `event: ...` lines are left out, the hub client logs
/// them with context.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=info,async_nats=warn";

/// Installs the global tracing subscriber writing to `writer` with
/// `RUST_LOG`, or [`DEFAULT_FILTER`] when it is unset or invalid.
pub fn init_tracing<W>(json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    init_tracing_with(filter, json, writer);
}

/// Installs the global tracing subscriber with `filter`, writing to `writer`.
/// Text logs carry colour codes only when stderr is a terminal (not when
/// redirected to a file or a journal). A second call (tests start several
/// apps) keeps the first subscriber.
pub fn init_tracing_with<W>(filter: EnvFilter, json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
    let _ = result;
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
