//! Gateway-initiated mode (seed 004) of a site's agent: people read how its
//! polling goes and put it back to dial-out. The endpoint itself is
//! registered at onboarding only ([`crate::enrollment`]: an enrollment token
//! created with `agent_endpoint`, stored with the agent when the box redeems
//! it), never set by a request of its own and never taken from anything the
//! agent sends.

use serviceradar_domain::{Action, Actor, EdgeSiteId};
use serviceradar_store::agent_polls::AgentPoll;

use crate::{Control, ControlError};

impl Control {
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

    /// Puts the site's agent back to dial-out (the gateway stops polling;
    /// the agent must then run with its `gateway_url` again). Going back to
    /// gateway-initiated mode takes a new enrollment: a token created with
    /// `agent_endpoint`, redeemed on the box.
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
