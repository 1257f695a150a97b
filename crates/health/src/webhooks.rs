//! Alert notifications by webhook.
//!
//! Raising or resolving an alert enqueues one durable `deliver_webhook` job
//! per webhook of the tenant ([`notify`]); the job queue retries failures
//! with exponential backoff. Each attempt is logged in `webhook_deliveries`.
//!
//! The request is a JSON `POST` signed with the webhook's secret:
//! `X-ServiceRadar-Timestamp: <unix seconds>` and
//! `X-ServiceRadar-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//! Receivers recompute the HMAC over the raw body and reject old timestamps.
//! Redirects are not followed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serviceradar_domain::{TenantId, TenantScope};
use serviceradar_store::Store;
use serviceradar_store::health::Alert;
use serviceradar_store::jobs::{Job, NewJob};
use sha2::Sha256;
use uuid::Uuid;

use serviceradar_identity::Pki;
use serviceradar_jobs::{JobHandler, JobResult, Jobs};

/// Kind of the webhook delivery job.
pub const DELIVER_WEBHOOK: &str = "deliver_webhook";
/// Event name of a raised alert.
pub const EVENT_RAISED: &str = "alert.raised";
/// Event name of a resolved alert.
pub const EVENT_RESOLVED: &str = "alert.resolved";

/// AAD of a webhook's sealed secret.
pub fn secret_aad(tenant: TenantId, webhook: Uuid) -> Vec<u8> {
    format!("tenant:{tenant}:webhook:{webhook}:secret").into_bytes()
}

/// The signature header value of `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Enqueues a delivery of `event` for `alert` to every webhook of its tenant.
/// Failures are logged: an alert is never lost because a webhook is.
pub async fn notify(store: &Store, alert: &Alert, event: &str) {
    let scoped = store.scoped(TenantScope::for_system_task(alert.tenant_id));
    let hooks = match scoped.all_webhook_ids().await {
        Ok(hooks) => hooks,
        Err(e) => {
            tracing::error!(error = %e, "listing webhooks failed");
            return;
        }
    };
    for hook in hooks {
        let job = NewJob::new(
            DELIVER_WEBHOOK,
            serde_json::json!({ "tenant_id": alert.tenant_id, "webhook_id": hook,
                "alert_id": alert.id, "event": event }),
        )
        .dedupe(format!("webhook:{hook}:{}:{event}", alert.id));
        if let Err(e) = store.enqueue_job(&job, Some(alert.tenant_id)).await {
            tracing::error!(error = %e, webhook_id = %hook, "enqueueing a webhook delivery failed");
        }
    }
}

/// Registers the delivery handler.
pub fn register(jobs: &mut Jobs, store: Store, pki: Arc<Pki>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the webhook HTTP client builds with a crypto provider installed");
    jobs.register(
        DELIVER_WEBHOOK,
        Arc::new(DeliverWebhook { store, pki, client }),
    );
}

struct DeliverWebhook {
    store: Store,
    pki: Arc<Pki>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Payload {
    tenant_id: TenantId,
    webhook_id: Uuid,
    alert_id: Uuid,
    event: String,
}

impl DeliverWebhook {
    async fn deliver(&self, job: &Job) -> JobResult {
        let p: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| format!("bad deliver_webhook payload: {e}"))?;
        let scoped = self.store.scoped(TenantScope::for_system_task(p.tenant_id));
        let (hook, alert) = match (
            scoped.webhook(p.webhook_id).await,
            scoped.alert(p.alert_id).await,
        ) {
            (Ok(h), Ok(a)) => (h, a),
            // Deleted meanwhile: nothing to deliver.
            (Err(serviceradar_store::StoreError::NotFound), _)
            | (_, Err(serviceradar_store::StoreError::NotFound)) => return Ok(()),
            (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
        };
        let sealed = scoped
            .webhook_secret_sealed(hook.id)
            .await
            .map_err(|e| e.to_string())?;
        let secret = self
            .pki
            .open(&sealed, &secret_aad(p.tenant_id, hook.id))
            .map_err(|e| format!("opening the webhook secret: {e:#}"))?;
        let body = serde_json::to_vec(&serde_json::json!({
            "event": p.event,
            "alert": alert,
        }))
        .map_err(|e| e.to_string())?;
        let timestamp = serviceradar_store::now_ms() / 1000;
        let result = self
            .client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-serviceradar-event", &p.event)
            .header("x-serviceradar-timestamp", timestamp.to_string())
            .header(
                "x-serviceradar-signature",
                signature(secret.as_bytes(), timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        let (code, error) = match &result {
            Ok(r) if r.status().is_success() => (Some(i64::from(r.status().as_u16())), None),
            Ok(r) => (
                Some(i64::from(r.status().as_u16())),
                Some(format!("endpoint answered {}", r.status())),
            ),
            Err(e) => (None, Some(format!("request failed: {e}"))),
        };
        if let Err(e) = scoped
            .record_delivery(
                hook.id,
                alert.id,
                &p.event,
                job.attempts,
                code,
                error.as_deref(),
            )
            .await
        {
            tracing::warn!(error = %e, "logging the webhook delivery failed");
        }
        metrics::counter!("serviceradar_webhook_deliveries_total",
            "outcome" => if error.is_none() { "ok" } else { "error" })
        .increment(1);
        match error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl JobHandler for DeliverWebhook {
    fn run<'a>(&'a self, job: &'a Job) -> Pin<Box<dyn Future<Output = JobResult> + Send + 'a>> {
        Box::pin(self.deliver(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2 shape: key "Jefe", message "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert_ne!(sig, signature(b"Jefe", 1, b"what do ya want for nothing?"));
        assert_ne!(sig, signature(b"Jeff", 0, b"what do ya want for nothing?"));
    }
}
