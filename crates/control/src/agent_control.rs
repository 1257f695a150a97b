//! Talking to a site's edge agent: commands (issued, delivered over the
//! agent's control stream by whichever replica holds it, kept per site with
//! their status and result) and the checks configured for the agent (every
//! change is pushed to the agent at once).
//!
//! One call also changes the checks of many agents at once
//! ([`Control::apply_agent_checks`]: every agent of the tenant, or those of
//! listed sites), pushed to each over its stream.
//!
//! A command for an agent with no open control stream on any replica is
//! stored as `offline` and refused with `409 agent_offline` at once
//! ([`ControlError::AgentOffline`]); the history keeps it. A listening
//! agent (gateway-initiated mode) has no stream: its commands wait as
//! `pending` and the gateway hands them over at its next poll.

use serde::Deserialize;
use serviceradar_domain::agent_control::{
    CheckConfig, CommandKind, CommandStatus, CommandTtl, RawCheck,
};
use serviceradar_domain::validate::FieldErrors;
use serviceradar_domain::{Action, Actor, EdgeSiteId};
use serviceradar_store::health::AgentRecord;
use serviceradar_store::{AgentCommand, Page, Scoped, StoredUpload};

use crate::{Control, ControlError, PageParams};

/// A command to issue.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IssueCommand {
    /// `run_checks`, `reload_config`, `renew_certificates` or `collect_diagnostics`.
    pub kind: String,
    /// Seconds the agent has to finish it (1-3600, default 60).
    pub ttl_secs: Option<i64>,
}

/// A check to add or change.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// Unique per agent (`[a-z0-9._-]`, 1-64); ignored on change (the path names it).
    #[serde(default)]
    pub name: String,
    /// `nats_leaf`, `tcp`, `http`, `dns` or `icmp`.
    pub kind: String,
    /// `host:port` (tcp), URL (http, nats_leaf), name (dns), host (icmp).
    pub target: String,
    /// Seconds between runs (5-86400, default 30).
    pub interval_secs: Option<i64>,
    /// Milliseconds one run may take (100-60000 and less than the interval; default 5000).
    pub timeout_ms: Option<i64>,
}

impl CheckInput {
    fn parse(&self, name: &str) -> Result<CheckConfig, FieldErrors> {
        CheckConfig::parse(&RawCheck {
            name,
            kind: &self.kind,
            target: &self.target,
            interval_secs: self.interval_secs,
            timeout_ms: self.timeout_ms,
        })
    }
}

/// Most checks set, or names removed, by one tenant-wide change; most sites
/// one may name (more: apply it to every site).
pub const MAX_APPLY_CHECKS: usize = 100;
/// Most sites one tenant-wide change may name.
pub const MAX_APPLY_SITES: usize = 1_000;

/// A change to the checks of many agents at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplyChecks {
    /// The sites whose agents change (at most 1,000); omitted: every site
    /// of the tenant with an unrevoked agent.
    pub site_ids: Option<Vec<String>>,
    /// Checks added to each agent, or replacing its check of the same name
    /// (at most 100; `name` required).
    #[serde(default)]
    pub set: Vec<CheckInput>,
    /// Names of checks removed from each agent that has them (at most 100).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// What a tenant-wide change did.
#[derive(Debug, Clone)]
pub struct AppliedChecks {
    /// The agents changed (each is pushed its new config).
    pub agents: usize,
    /// Checks set on each.
    pub set: Vec<CheckConfig>,
    /// Names removed from each.
    pub removed: Vec<String>,
}

/// The checks configured for an agent and the config version it runs.
#[derive(Debug, Clone)]
pub struct AgentChecks {
    /// Configured checks, by name.
    pub checks: Vec<CheckConfig>,
    /// The config version the agent acknowledged last, and when (Unix ms).
    pub acked: Option<(String, i64)>,
    /// When the configured checks last changed (Unix ms; the agent's
    /// creation when they never did): an acknowledgement older than this
    /// is of an earlier config.
    pub changed_at: i64,
}

impl Control {
    /// The site's agent, unless it is missing (`NotFound`) or revoked
    /// (`Conflict`): what every change to an agent starts from.
    pub(crate) async fn live_agent(
        scoped: &Scoped<'_>,
        site: EdgeSiteId,
    ) -> Result<AgentRecord, ControlError> {
        let agent = scoped
            .agent_for_site(site)
            .await?
            .ok_or(ControlError::NotFound)?;
        if agent.revoked_at.is_some() {
            return Err(ControlError::Conflict(
                "the site's agent was revoked".to_owned(),
            ));
        }
        Ok(agent)
    }

    /// Issues a command to the site's agent and hands it to the replica
    /// holding the agent's control stream. An agent with no stream fails
    /// fast: the command is stored `offline` and
    /// [`ControlError::AgentOffline`] returned. A listening agent's
    /// (gateway-initiated mode) stays `pending` until the gateway polls it
    /// (`gateway::poller`) or its time to live runs out.
    pub async fn issue_agent_command(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        input: &IssueCommand,
    ) -> Result<AgentCommand, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        // Another tenant's site is 404 whatever the body says.
        let agent = Self::live_agent(&scoped, site).await?;
        let mut errors = FieldErrors::default();
        let kind = errors.check("kind", CommandKind::parse(&input.kind));
        let ttl = errors.check("ttl_secs", CommandTtl::parse(input.ttl_secs));
        let (kind, ttl) = crate::error::finish(errors, kind.zip(ttl))?;
        let command = scoped
            .insert_agent_command(site, agent.id, kind, ttl.secs(), &actor.user_id.to_string())
            .await?;
        // A listening agent (gateway-initiated mode) has no stream: its
        // command waits `pending` for the gateway's next poll of it.
        if let Some(poll) = scoped.agent_poll(site).await? {
            let sooner = scoped.poll_agent_now(site).await?;
            let note = if sooner {
                "waiting for the gateway's next poll of the agent (gateway-initiated mode), \
                 brought forward to now; its result comes with a poll a second later"
                    .to_owned()
            } else {
                format!(
                    "waiting for the gateway's next poll of the agent (gateway-initiated mode, \
                     every {} s, or its retry while it does not answer); its result comes with \
                     a poll a second later",
                    poll.interval_secs
                )
            };
            scoped.note_agent_command(command.id, &note).await?;
            tracing::info!(site_id = %site, agent_id = %agent.id, command_id = %command.id,
                kind = kind.as_str(), "agent command queued for the next poll");
            return Ok(scoped.agent_command(command.id).await?);
        }
        let status = match &self.settings().agent_links {
            Some(links) => links.deliver(actor.scope().tenant_id(), &command).await?,
            None => {
                scoped
                    .set_agent_command_status(
                        command.id,
                        CommandStatus::Offline,
                        Some("this replica runs no agent gateway"),
                        None,
                    )
                    .await?;
                CommandStatus::Offline
            }
        };
        tracing::info!(site_id = %site, agent_id = %agent.id, command_id = %command.id,
            kind = kind.as_str(), status = status.as_str(), "agent command issued");
        if status == CommandStatus::Offline {
            return Err(ControlError::AgentOffline(command.id));
        }
        Ok(scoped.agent_command(command.id).await?)
    }

    /// The site's command history, oldest first.
    pub async fn list_agent_commands(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        page: &PageParams,
    ) -> Result<Page<AgentCommand>, ControlError> {
        let (scoped, page, ()) = self.listing(actor, Action::ReadSites, page, |_| ())?;
        scoped.site(site).await?;
        Ok(scoped.list_agent_commands(site, &page).await?)
    }

    /// The site's newest commands, newest first (at most `limit`, up to
    /// 200): what the site page shows.
    pub async fn recent_agent_commands(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        limit: u32,
    ) -> Result<Vec<AgentCommand>, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        scoped.site(site).await?;
        Ok(scoped.recent_agent_commands(site, limit).await?)
    }

    /// One command of the site (`id` as the path gave it: authorized
    /// before it is parsed, so a caller without the right gets 403, not 404).
    pub async fn agent_command(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        id: &str,
    ) -> Result<AgentCommand, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        let id: uuid::Uuid = id.parse().map_err(|_| ControlError::NotFound)?;
        let command = scoped.agent_command(id).await?;
        if command.edge_site_id != site {
            return Err(ControlError::NotFound);
        }
        Ok(command)
    }

    /// The results uploads of the site's agent (`PushResults`), created
    /// within the query's time range, oldest first.
    pub async fn list_agent_results(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        query: &crate::telemetry::TelemetryQuery,
        page: &PageParams,
    ) -> Result<Page<StoredUpload>, ControlError> {
        let (scoped, page, range) =
            self.listing(actor, Action::ReadData, page, |errors| query.range(errors))?;
        scoped.site(site).await?;
        Ok(scoped.agent_uploads(site, range, &page).await?)
    }

    /// One results upload of the site with its content (`id` as the path
    /// gave it).
    pub async fn agent_result(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        id: &str,
    ) -> Result<(StoredUpload, Vec<u8>), ControlError> {
        let scoped = self.scoped(actor, Action::ReadData)?;
        let id: uuid::Uuid = id.parse().map_err(|_| ControlError::NotFound)?;
        Ok(scoped.agent_upload(site, id).await?)
    }

    /// The checks configured for the site's agent.
    pub async fn agent_checks(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
    ) -> Result<AgentChecks, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        let agent = scoped
            .agent_for_site(site)
            .await?
            .ok_or(ControlError::NotFound)?;
        Ok(AgentChecks {
            checks: scoped.agent_check_configs(agent.id).await?,
            acked: scoped.agent_config_ack(agent.id).await?,
            changed_at: scoped.agent_config_changed_at(agent.id).await?,
        })
    }

    /// Adds a check to the site's agent (pushed to it at once).
    pub async fn add_agent_check(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        input: &CheckInput,
    ) -> Result<CheckConfig, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let agent = Self::live_agent(&scoped, site).await?;
        let check = input.parse(&input.name)?;
        scoped.add_agent_check_config(agent.id, &check).await?;
        self.config_changed(actor, agent.id).await;
        Ok(check)
    }

    /// Changes the check `name` of the site's agent (pushed to it at once).
    pub async fn change_agent_check(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        name: &str,
        input: &CheckInput,
    ) -> Result<CheckConfig, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let agent = Self::live_agent(&scoped, site).await?;
        let check = input.parse(name)?;
        scoped.update_agent_check_config(agent.id, &check).await?;
        self.config_changed(actor, agent.id).await;
        Ok(check)
    }

    /// Removes the check `name` of the site's agent (pushed to it at once).
    pub async fn remove_agent_check(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        name: &str,
    ) -> Result<(), ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let agent = Self::live_agent(&scoped, site).await?;
        scoped.delete_agent_check_config(agent.id, name).await?;
        self.config_changed(actor, agent.id).await;
        Ok(())
    }

    /// Changes the checks of many agents of the tenant at once (every
    /// unrevoked agent, or those of `site_ids`), in one transaction: each
    /// check of `set` is added or replaces the agent's check of that name,
    /// each name of `remove` is removed; every changed agent is pushed its
    /// config over its control stream (on any replica) at once. Field
    /// errors name the element (`set[2].target`, `site_ids[0]`); nothing is
    /// written unless all of it is valid.
    pub async fn apply_agent_checks(
        &self,
        actor: &Actor,
        input: &ApplyChecks,
    ) -> Result<AppliedChecks, ControlError> {
        use serviceradar_domain::validate::FieldError;
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let mut errors = FieldErrors::default();
        if input.set.is_empty() && input.remove.is_empty() {
            errors.0.push(FieldError::new(
                "set",
                "give checks to set or names to remove",
            ));
        }
        for (field, n) in [("set", input.set.len()), ("remove", input.remove.len())] {
            if n > MAX_APPLY_CHECKS {
                errors.0.push(FieldError::new(
                    field,
                    format!("at most {MAX_APPLY_CHECKS} in one change"),
                ));
            }
        }
        let mut set = Vec::new();
        for (i, check) in input.set.iter().enumerate().take(MAX_APPLY_CHECKS) {
            match check.parse(&check.name) {
                Ok(parsed) => {
                    if set.iter().any(|c: &CheckConfig| c.name == parsed.name) {
                        errors.0.push(FieldError::new(
                            format!("set[{i}].name"),
                            "is set twice in this change",
                        ));
                    }
                    set.push(parsed);
                }
                Err(e) => errors.0.extend(e.0.into_iter().map(|mut f| {
                    f.field = format!("set[{i}].{}", f.field);
                    f
                })),
            }
        }
        let mut removed = Vec::new();
        for (i, name) in input.remove.iter().enumerate().take(MAX_APPLY_CHECKS) {
            match CheckConfig::parse_name(name) {
                Ok(name) if set.iter().any(|c| c.name == name) => errors.0.push(FieldError::new(
                    format!("remove[{i}]"),
                    "is also set in this change",
                )),
                Ok(name) => removed.push(name),
                Err(e) => errors
                    .0
                    .push(FieldError::new(format!("remove[{i}]"), e.message)),
            }
        }
        let sites = match &input.site_ids {
            None => None,
            Some(ids) if ids.is_empty() || ids.len() > MAX_APPLY_SITES => {
                errors.0.push(FieldError::new(
                    "site_ids",
                    format!("name 1 to {MAX_APPLY_SITES} sites, or leave it out for every site"),
                ));
                None
            }
            Some(ids) => {
                let mut sites = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    match id.parse::<EdgeSiteId>() {
                        Ok(site) if !sites.contains(&site) => sites.push(site),
                        Ok(_) => {}
                        Err(_) => errors.0.push(FieldError::new(
                            format!("site_ids[{i}]"),
                            "is not a site id",
                        )),
                    }
                }
                Some(sites)
            }
        };
        errors.into_result()?;
        let changed = scoped
            .apply_agent_check_set(sites.as_deref(), &set, &removed)
            .await?;
        let agents: Vec<uuid::Uuid> = changed.iter().map(|(agent, _)| *agent).collect();
        if let Some(links) = &self.settings().agent_links {
            links
                .configs_changed(actor.scope().tenant_id(), &agents)
                .await;
        }
        tracing::info!(
            agents = agents.len(),
            set = set.len(),
            removed = removed.len(),
            whole_tenant = sites.is_none(),
            "checks applied to many agents"
        );
        Ok(AppliedChecks {
            agents: agents.len(),
            set,
            removed,
        })
    }

    async fn config_changed(&self, actor: &Actor, agent: uuid::Uuid) {
        if let Some(links) = &self.settings().agent_links {
            links.config_changed(actor.scope().tenant_id(), agent).await;
        }
    }
}
