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
use std::net::SocketAddr;

use serviceradar_domain::net::{IpRange, may_connect};
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

/// Where webhooks may be delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Internal ranges the operator allows as webhook targets (self-hosted
    /// installs); public addresses are always allowed, nothing else is.
    pub allow_internal: Vec<IpRange>,
}

/// Why a webhook may not be called, in words the tenant sees.
pub const REFUSED_INTERNAL: &str = "refused: the webhook's host is not a public address (loopback, private, link-local and similar ranges are not called)";

/// Picks the address to connect to from what the webhook's host resolved to:
/// the first one the platform may connect to, or `None` when any of them is
/// internal (a name that resolves to an internal address is refused whole,
/// rather than connecting to whichever answer looks harmless).
pub fn pick_address(resolved: &[SocketAddr], settings: &WebhookSettings) -> Option<SocketAddr> {
    let allowed = |a: &SocketAddr| may_connect(a.ip(), &settings.allow_internal);
    (!resolved.is_empty() && resolved.iter().all(allowed)).then(|| resolved[0])
}

/// Registers the delivery handler.
pub fn register(jobs: &mut Jobs, store: Store, pki: Arc<Pki>, settings: WebhookSettings) {
    jobs.register(
        DELIVER_WEBHOOK,
        Arc::new(DeliverWebhook {
            store,
            pki,
            settings,
        }),
    );
}

struct DeliverWebhook {
    store: Store,
    pki: Arc<Pki>,
    settings: WebhookSettings,
}

/// Why a delivery did not reach the endpoint.
enum Unreachable {
    /// The host resolves to an address the platform must not call.
    Refused,
    /// DNS, connection or client failure (detail in the log only).
    Failed(String),
}

impl DeliverWebhook {
    /// Resolves the URL's host once, checks every address, and builds a
    /// client pinned to the checked address (so a second DNS answer cannot
    /// point the request elsewhere: no DNS rebinding).
    async fn pinned_client(&self, url: &str) -> Result<reqwest::Client, Unreachable> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Unreachable::Failed(e.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| Unreachable::Failed("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let resolved: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Unreachable::Failed(format!("resolving {host}: {e}")))?
                .collect(),
        };
        let addr = pick_address(&resolved, &self.settings).ok_or(Unreachable::Refused)?;
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve(&host, addr)
            .build()
            .map_err(|e| Unreachable::Failed(e.to_string()))
    }
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
        let client = self.pinned_client(&hook.url).await;
        let result = match &client {
            Ok(client) => Some(
                client
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
                    .await,
            ),
            Err(_) => None,
        };
        // The delivery log (which tenants read) says what happened in
        // general terms; connection details go to the operator's log only.
        let (code, error) = match (&client, &result) {
            (Err(Unreachable::Refused), _) => {
                tracing::warn!(webhook_id = %hook.id, "webhook host is not a public address; refused");
                (None, Some(REFUSED_INTERNAL.to_owned()))
            }
            (Err(Unreachable::Failed(detail)), _) => {
                tracing::warn!(webhook_id = %hook.id, error = %detail, "webhook delivery failed");
                (
                    None,
                    Some("delivery failed: the endpoint could not be reached".to_owned()),
                )
            }
            (Ok(_), Some(Ok(r))) if r.status().is_success() => {
                (Some(i64::from(r.status().as_u16())), None)
            }
            (Ok(_), Some(Ok(r))) => (
                Some(i64::from(r.status().as_u16())),
                Some(format!("endpoint answered {}", r.status())),
            ),
            (Ok(_), Some(Err(e))) => {
                tracing::warn!(webhook_id = %hook.id, error = %e, "webhook delivery failed");
                (
                    None,
                    Some("delivery failed: the endpoint could not be reached".to_owned()),
                )
            }
            (Ok(_), None) => (None, Some("delivery failed".to_owned())),
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
    fn a_host_resolving_to_any_internal_address_is_refused() {
        let none = WebhookSettings::default();
        let public: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        assert_eq!(pick_address(&[public], &none), Some(public));
        assert_eq!(pick_address(&[loopback], &none), None);
        assert_eq!(
            pick_address(&[public, metadata], &none),
            None,
            "rebinding-style mixed answers"
        );
        assert_eq!(pick_address(&[], &none), None);
        let lab = WebhookSettings {
            allow_internal: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert_eq!(pick_address(&[loopback], &lab), Some(loopback));
        assert_eq!(pick_address(&[metadata], &lab), None);
    }

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
