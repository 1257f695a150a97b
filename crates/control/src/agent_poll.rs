//! Gateway-initiated mode (seed 004) of a site's agent: people set where
//! the agent listens (which puts it in that mode), read how its polling
//! goes, and put it back to dial-out. The endpoint comes only from here
//! (an operator, parsed once into `domain::agent_poll` types), never from
//! anything the agent sends.

use serviceradar_domain::agent_poll::PollTarget;
use serviceradar_domain::{Action, Actor, EdgeSiteId};
use serviceradar_store::agent_polls::AgentPoll;

use crate::{Control, ControlError};

/// Raw input of `PUT .../agent/endpoint`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// `host:port` where the agent listens (IPv6 in brackets), as the
    /// gateway reaches it; not an unspecified address such as `0.0.0.0`.
    pub endpoint: String,
    /// Seconds between polls (5-3600, default 30).
    pub poll_interval_secs: Option<i64>,
}

impl Control {
    /// Puts the site's agent in gateway-initiated mode at the given
    /// endpoint (or changes it): the gateway polls it from now on.
    pub async fn set_agent_endpoint(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        input: &EndpointInput,
    ) -> Result<AgentPoll, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        Self::live_agent(&scoped, site).await?;
        // Out of u32's range is out of the interval's range too (0 is refused).
        let interval = input
            .poll_interval_secs
            .map(|v| u32::try_from(v).unwrap_or(0));
        let target = PollTarget::parse(&input.endpoint, interval)?;
        let poll = scoped
            .set_agent_poll(site, &target.endpoint, target.interval)
            .await?;
        tracing::info!(tenant_id = %actor.scope().tenant_id(), site_id = %site,
            endpoint = %poll.endpoint, "agent set to gateway-initiated mode");
        Ok(poll)
    }

    /// How the gateway polls the site's agent; `None` in dial-out mode.
    pub async fn agent_endpoint(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
    ) -> Result<Option<AgentPoll>, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        scoped
            .agent_for_site(site)
            .await?
            .ok_or(ControlError::NotFound)?;
        Ok(scoped.agent_poll(site).await?)
    }

    /// Puts the site's agent back to dial-out (the gateway stops polling).
    pub async fn remove_agent_endpoint(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
    ) -> Result<(), ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        scoped
            .agent_for_site(site)
            .await?
            .ok_or(ControlError::NotFound)?;
        scoped.remove_agent_poll(site).await?;
        tracing::info!(tenant_id = %actor.scope().tenant_id(), site_id = %site,
            "agent set to dial-out mode");
        Ok(())
    }
}
