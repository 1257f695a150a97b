//! Alerts (list, acknowledge, resolve by hand), alert webhooks (the signing
//! secret is returned once and stored sealed) and sites' edge agents.

use rand::RngCore;
use serde::Deserialize;
use serviceradar_domain::net::may_connect;
use serviceradar_domain::state::{AlertEvent, AlertStatus};
use serviceradar_domain::validate::{WebhookHost, WebhookUrl};
use serviceradar_domain::{Action, Actor, EdgeSiteId, Secret};
use serviceradar_health::webhooks;
use serviceradar_store::Page;
use serviceradar_store::health::{AgentRecord, Alert, Webhook, WebhookDelivery};

use crate::params::parse_filter;
use crate::{Control, ControlError, PageParams};

/// Filters for listing alerts.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct AlertQuery {
    /// Only alerts in this status.
    pub status: Option<String>,
}

/// A new webhook.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL receiving alert notifications.
    pub url: String,
}

/// A created webhook and its signing secret (shown once).
#[derive(Debug)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: Webhook,
    /// HMAC-SHA256 key for `X-ServiceRadar-Signature`.
    pub secret: Secret,
}

/// A site's edge agent and the latest result of each of its checks.
#[derive(Debug, Clone)]
pub struct SiteAgent {
    /// The agent.
    pub agent: AgentRecord,
    /// Its checks' latest results, by name.
    pub checks: Vec<serviceradar_store::AgentCheck>,
    /// The config version it acknowledged over its control stream, and
    /// when (Unix ms).
    pub config_ack: Option<(String, i64)>,
}

impl Control {
    /// Whether the platform may call `url`'s host as written: a name of the
    /// local machine or an address outside the public ones (unless the
    /// operator allowed its range) is refused here; names are checked again,
    /// resolved, at every delivery.
    fn may_call(&self, url: &WebhookUrl) -> bool {
        let allowed = &self.settings().webhooks.allow_internal;
        match url.host() {
            WebhookHost::Ip(ip) => may_connect(ip, allowed),
            WebhookHost::Name(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name != "localhost" && !name.ends_with(".localhost")
            }
        }
    }

    /// A page of alerts, oldest first.
    pub async fn list_alerts(
        &self,
        actor: &Actor,
        query: &AlertQuery,
        page: &PageParams,
    ) -> Result<Page<Alert>, ControlError> {
        let (scoped, page, status) = self.listing(actor, Action::ReadData, page, |errors| {
            parse_filter::<AlertStatus>("status", query.status.as_deref(), errors)
        })?;
        Ok(scoped.list_alerts(status, &page).await?)
    }

    /// One alert.
    pub async fn alert(&self, actor: &Actor, id: uuid::Uuid) -> Result<Alert, ControlError> {
        let scoped = self.scoped(actor, Action::ReadData)?;
        Ok(scoped.alert(id).await?)
    }

    /// Acknowledges or resolves an alert; resolving notifies the webhooks.
    pub async fn transition_alert(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
        event: AlertEvent,
    ) -> Result<Alert, ControlError> {
        let scoped = self.scoped(actor, Action::WriteAlerts)?;
        let user = actor.user_id.to_string();
        let alert = scoped.transition_alert(id, event, Some(&user)).await?;
        tracing::info!(alert_id = %id, status = %alert.status, "alert changed by a user");
        if event == AlertEvent::Resolve {
            webhooks::notify(self.store(), &alert, webhooks::EVENT_RESOLVED).await;
        }
        Ok(alert)
    }

    /// A page of the tenant's webhooks.
    pub async fn list_webhooks(
        &self,
        actor: &Actor,
        page: &PageParams,
    ) -> Result<Page<Webhook>, ControlError> {
        let (scoped, page, ()) = self.listing(actor, Action::ManageWebhooks, page, |_| ())?;
        Ok(scoped.list_webhooks(&page).await?)
    }

    /// Creates a webhook with a fresh signing secret.
    pub async fn create_webhook(
        &self,
        actor: &Actor,
        input: &CreateWebhook,
    ) -> Result<CreatedWebhook, ControlError> {
        let scoped = self.scoped(actor, Action::ManageWebhooks)?;
        let url =
            WebhookUrl::parse(&input.url).map_err(|e| ControlError::field("url", e.message))?;
        if !self.may_call(&url) {
            return Err(ControlError::field("url", webhooks::REFUSED_INTERNAL));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = Secret::new(format!("whsec_{}", hex::encode(bytes)));
        let id = uuid::Uuid::now_v7();
        let sealed = self
            .pki()
            .seal(secret.expose(), &webhooks::secret_aad(actor.tenant_id, id));
        let webhook = scoped.create_webhook(id, url.as_str(), &sealed).await?;
        tracing::info!(webhook_id = %id, "webhook created");
        Ok(CreatedWebhook { webhook, secret })
    }

    /// Deletes a webhook.
    pub async fn delete_webhook(&self, actor: &Actor, id: uuid::Uuid) -> Result<(), ControlError> {
        let scoped = self.scoped(actor, Action::ManageWebhooks)?;
        Ok(scoped.delete_webhook(id).await?)
    }

    /// The delivery log of a webhook.
    pub async fn list_deliveries(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
        page: &PageParams,
    ) -> Result<Page<WebhookDelivery>, ControlError> {
        let (scoped, page, ()) = self.listing(actor, Action::ManageWebhooks, page, |_| ())?;
        scoped.webhook(id).await?;
        Ok(scoped.list_deliveries(id, &page).await?)
    }

    /// The site's edge agent (not found until provisioning issued its certificate).
    pub async fn site_agent(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
    ) -> Result<SiteAgent, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        let agent = scoped
            .agent_for_site(site)
            .await?
            .ok_or(ControlError::NotFound)?;
        let checks = scoped.agent_checks(agent.id).await?;
        let config_ack = scoped.agent_config_ack(agent.id).await?;
        Ok(SiteAgent {
            agent,
            checks,
            config_ack,
        })
    }

    /// Revokes the site's edge agent: the gateway refuses its certificate.
    pub async fn revoke_site_agent(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
    ) -> Result<AgentRecord, ControlError> {
        let scoped = self.scoped(actor, Action::DeleteSites)?;
        let agent = scoped.revoke_agent(site).await?;
        // What its boxes fetched no longer works: their onboarding packages
        // are revoked with it.
        let packages = scoped.revoke_fetched_onboarding_packages(site).await?;
        // Its open control stream, on whichever replica, is closed.
        if let Some(links) = &self.settings().agent_links {
            links.revoked(actor.scope().tenant_id(), agent.id).await;
        }
        tracing::warn!(site_id = %site, agent_id = %agent.id, revoked_packages = packages,
            "edge agent revoked");
        Ok(agent)
    }
}
