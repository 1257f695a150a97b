//! A site's onboarding packages and the enrollment conflicts to resolve.
//!
//! Onboarding packages (the material a site/agent enrollment token or a
//! site-bundle download hands out) have the package lifecycle: created with
//! the token, downloaded when it is redeemed, installed when the site's agent
//! first reports, expired when the token expires unredeemed, revoked when
//! the token is revoked unredeemed (revoking a token does not cut off a box
//! that joined, so a fetched package keeps its state). Listing a site's
//! packages first expires its lapsed ones.
//!
//! A conflict is a `conflict` event of an enrollment token: another host
//! presenting a spent single-use token, or a renewal from another machine.
//! It is never a second agent or leaf; it stays open until an operator
//! resolves it (who and when is recorded).

use serde::{Deserialize, Serialize};
use serviceradar_domain::validate::FieldError;
use serviceradar_domain::{Action, Actor, EdgeSiteId};
use serviceradar_store::{
    ConflictFilter, EnrollmentConflict, OnboardingFilter, OnboardingPackage, Page, now_ms,
};

use crate::params::{parse_filter, parse_id_filter};
use crate::{Control, ControlError, PageParams};

/// What to do once a conflict is resolved, said in every answer.
pub const RESOLVE_NEXT_STEPS: &str = "The site keeps its enrolled host; nothing was issued to the \
     other machine. To move the site to the new host, create a new enrollment token for the site \
     and run `serviceradar-cli site init --token ...` there (revoke the old token if it is still \
     usable). If the other machine is a clone, remove it.";

/// Filters for a site's onboarding packages.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct OnboardingPackageQuery {
    /// Only packages in this status (`created`, `downloaded`, `installed`,
    /// `expired`, `revoked`).
    pub status: Option<String>,
}

/// An onboarding package as listed.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OnboardingPackageView {
    /// Id.
    pub id: String,
    /// Its site.
    pub site_id: String,
    /// Its enrollment token (source `token`).
    pub token_id: Option<String>,
    /// `token` (an enrollment token's material) or `bundle` (a site-bundle
    /// download).
    pub source: String,
    /// `created`, `downloaded`, `installed`, `expired` or `revoked`.
    pub status: &'static str,
    /// Creation (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
    /// When it expires if not downloaded (Unix ms).
    pub expires_at: Option<i64>,
    /// When its material was fetched (Unix ms).
    pub downloaded_at: Option<i64>,
    /// When the site's agent first reported after that (Unix ms).
    pub installed_at: Option<i64>,
}

impl From<OnboardingPackage> for OnboardingPackageView {
    fn from(p: OnboardingPackage) -> Self {
        Self {
            id: p.id.to_string(),
            site_id: p.edge_site_id.to_string(),
            token_id: p.token_id.map(|t| t.to_string()),
            source: p.source,
            status: p.status.as_str(),
            created_at: p.created_at,
            updated_at: p.updated_at,
            expires_at: p.expires_at,
            downloaded_at: p.downloaded_at,
            installed_at: p.installed_at,
        }
    }
}

/// Filters for listing conflicts.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ConflictQuery {
    /// Only conflicts of this site.
    pub site_id: Option<String>,
    /// `open` or `resolved`.
    pub state: Option<String>,
}

/// Whether a conflict still needs an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictState {
    /// Nobody resolved it yet.
    Open,
    /// An operator resolved it.
    Resolved,
}

impl ConflictState {
    /// `open` or `resolved`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for ConflictState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "resolved" => Ok(Self::Resolved),
            _ => Err("must be open or resolved".into()),
        }
    }
}

/// An enrollment conflict as listed.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentConflictView {
    /// Id.
    pub id: String,
    /// The token presented.
    pub token_id: String,
    /// Its site.
    pub site_id: String,
    /// The other host's name, as it said.
    pub hostname: Option<String>,
    /// Where the request came from.
    pub remote_addr: Option<String>,
    /// What happened.
    pub detail: Option<String>,
    /// When (Unix ms).
    pub at: i64,
    /// `open` or `resolved`.
    pub state: &'static str,
    /// When it was resolved (Unix ms).
    pub resolved_at: Option<i64>,
    /// Who resolved it (user id).
    pub resolved_by: Option<String>,
}

impl From<EnrollmentConflict> for EnrollmentConflictView {
    fn from(c: EnrollmentConflict) -> Self {
        let state = if c.resolved_at.is_some() {
            ConflictState::Resolved
        } else {
            ConflictState::Open
        };
        Self {
            id: c.id.to_string(),
            token_id: c.token_id.to_string(),
            site_id: c.edge_site_id.to_string(),
            hostname: c.hostname,
            remote_addr: c.remote_addr,
            detail: c.detail,
            at: c.at,
            state: state.as_str(),
            resolved_at: c.resolved_at,
            resolved_by: c.resolved_by,
        }
    }
}

/// A resolved conflict and what to do next.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResolvedConflict {
    /// The conflict, now resolved.
    pub conflict: EnrollmentConflictView,
    /// What to do next (moving the site to the new host takes a new token).
    pub next_steps: &'static str,
}

impl Control {
    /// A page of a site's onboarding packages (404 for another tenant's
    /// site). The site's lapsed unredeemed ones are expired first.
    pub async fn list_onboarding_packages(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        query: &OnboardingPackageQuery,
        page: &PageParams,
    ) -> Result<Page<OnboardingPackageView>, ControlError> {
        let (scoped, page, status) = self.listing(actor, Action::ReadPackages, page, |errors| {
            parse_filter("status", query.status.as_deref(), errors)
        })?;
        scoped.site(site).await?;
        let expired = scoped.expire_onboarding_packages(site, now_ms()).await?;
        if expired > 0 {
            tracing::info!(tenant_id = %actor.tenant_id, site_id = %site, expired,
                "onboarding packages expired");
        }
        Ok(scoped
            .list_onboarding_packages(
                &OnboardingFilter {
                    edge_site_id: Some(site),
                    status,
                },
                &page,
            )
            .await?
            .map(Into::into))
    }

    /// A page of the tenant's enrollment conflicts, oldest first.
    pub async fn list_enrollment_conflicts(
        &self,
        actor: &Actor,
        query: &ConflictQuery,
        page: &PageParams,
    ) -> Result<Page<EnrollmentConflictView>, ControlError> {
        let (scoped, page, filter) = self.listing(actor, Action::ReadSites, page, |errors| {
            let state: Option<ConflictState> = match query.state.as_deref() {
                None | Some("") => None,
                Some(raw) => errors.check(
                    "state",
                    raw.parse().map_err(|m: String| FieldError::new("state", m)),
                ),
            };
            ConflictFilter {
                edge_site_id: parse_id_filter(
                    "site_id",
                    query.site_id.as_deref(),
                    "a site id",
                    errors,
                ),
                open: state.map(|s| s == ConflictState::Open),
            }
        })?;
        Ok(scoped
            .list_enrollment_conflicts(&filter, &page)
            .await?
            .map(Into::into))
    }

    /// Resolves an open conflict (operator or above): records who and when;
    /// a resolved one answers 409.
    pub async fn resolve_enrollment_conflict(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
    ) -> Result<ResolvedConflict, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let conflict = scoped
            .resolve_enrollment_conflict(id, &actor.user_id.to_string())
            .await?;
        tracing::info!(tenant_id = %actor.tenant_id, site_id = %conflict.edge_site_id,
            conflict_id = %id, "enrollment conflict resolved");
        Ok(ResolvedConflict {
            conflict: conflict.into(),
            next_steps: RESOLVE_NEXT_STEPS,
        })
    }
}
