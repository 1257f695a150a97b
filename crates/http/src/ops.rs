//! What operators and orchestrators probe: liveness (`/healthz`), readiness
//! (`/readyz`: the database answers and no tenant's ingestion has been
//! failing too long) on the public port, and the Prometheus page
//! (`/metrics`) for the separate metrics listener.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serviceradar_ingest::IngestStatus;
use serviceradar_store::Store;

/// What readiness looks at besides the database.
#[derive(Clone)]
pub struct Readiness {
    /// Each tenant's ingestion pipeline.
    pub ingest: IngestStatus,
    /// How long a tenant's ingestion may fail before the process is not
    /// ready (zero: ingestion never affects readiness).
    pub stall: Duration,
}

/// `/healthz` and `/readyz`.
pub fn probes(store: Store, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state((store, readiness))
}

/// `/metrics`, rendering `metrics` (serve it on its own listener, never the
/// public API port).
pub fn metrics(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .with_state(metrics)
}

/// Liveness: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers, and no tenant's ingestion has been
/// failing for [`Readiness::stall`] or longer. The answer names no tenant
/// (this port is public): `GET /api/v1/ingest` tells each tenant its own
/// state, and the per-tenant metrics tell the operator.
async fn readyz(State((store, readiness)): State<(Store, Readiness)>) -> Response {
    if let Err(e) = store.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    let stalled = if readiness.stall.is_zero() {
        Vec::new()
    } else {
        readiness.ingest.stalled(readiness.stall)
    };
    if !stalled.is_empty() {
        for pipeline in &stalled {
            tracing::warn!(tenant = %pipeline.tenant, error = ?pipeline.last_error.as_ref().map(|(_, e)| e),
                "readiness: ingestion failing for {:?}", pipeline.failing_for().unwrap_or_default());
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "ingestion failing for {} tenant(s) for over {} s",
                stalled.len(),
                readiness.stall.as_secs_f64()
            ),
        )
            .into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

async fn metrics_page(State(metrics): State<PrometheusHandle>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}
