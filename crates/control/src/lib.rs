//! The use-case layer: what a tenant's people (and scripts) can do, one
//! function each, shared by the JSON API, the web UI and the CLI-facing
//! endpoints so none of them copies another's logic.
//!
//! Every use-case takes the authenticated [`Actor`] and authorizes inside, so
//! a new front end cannot forget a check; inputs arrive as the raw strings a
//! form or JSON body carries and are parsed here, once, into `domain` types
//! (all field errors of a request are reported together). Results are domain
//! and store types; presentation is the caller's business.
//!
//! * [`sites`] — edge sites and leaf servers (create with the provisioning
//!   job, delete with NATS revocation), config regeneration and drift, the
//!   site bundle.
//! * [`packages`] — collector packages, their bundles and revocation.
//! * [`devices`] — devices registered at sites, revocation, certificates from CSRs.
//! * [`enrollment`] — enrollment tokens and their redemption;
//!   [`onboarding`] — a site's onboarding packages and the enrollment
//!   conflicts to resolve.
//! * [`users`], [`tokens`], [`sessions`] — people and their credentials.
//! * [`alerts`] — alerts, webhooks and site agents.
//! * [`agent_control`] — commands to a site's agent and its configured checks.
//! * [`telemetry`] — ingested events, metrics and logs.
//! * [`error`] — [`ControlError`], with a stable code per kind.

pub mod agent_control;
pub mod agent_poll;
pub mod alerts;
pub mod devices;
pub mod enrollment;
pub mod error;
pub mod onboarding;
pub mod packages;
pub mod params;
pub mod sessions;
pub mod sites;
pub mod telemetry;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use serviceradar_auth::SessionSettings;
use serviceradar_domain::Actor;
use serviceradar_domain::policy::Action;
use serviceradar_domain::validate::FieldErrors;
use serviceradar_identity::Pki;
use serviceradar_jobs::Jobs;
use serviceradar_provisioning::ProvisioningSettings;
use serviceradar_store::{PageRequest, Scoped, Store};

pub use error::ControlError;
pub use params::PageParams;

/// Settings the use-cases read.
#[derive(Debug, Clone, Default)]
pub struct ControlSettings {
    /// What provisioning writes into configs and bundles.
    pub provisioning: ProvisioningSettings,
    /// Session lifetime and cookie flags.
    pub sessions: SessionSettings,
    /// Sign-in throttling.
    pub throttle: throttle::ThrottleSettings,
    /// Where webhooks may point.
    pub webhooks: serviceradar_health::webhooks::WebhookSettings,
    /// The ingestion pipelines' live status, shared with the ingest
    /// supervisor that reports into it (what [`telemetry`]'s
    /// `ingest_status` shows a tenant).
    pub ingest_status: serviceradar_ingest::IngestStatus,
    /// Reads the tenants' dead letters back from the hub (shared with the
    /// ingest pipelines, which register their connections in it).
    pub dead_letters: serviceradar_ingest::DeadLetters,
    /// Where device changes are announced, so this replica's ingest
    /// pipeline syncs the device registry's copy on the hub at once.
    pub device_changes: serviceradar_ingest::DeviceChanges,
    /// Enrollment tokens: the URL they carry, certificate lifetime.
    pub enrollment: enrollment::EnrollmentSettings,
    /// The hub's own view of leaf links (shared with the leaf connection
    /// follower, which registers its connection in it).
    pub hub_view: serviceradar_hub::leaf_view::HubView,
    /// The replica's agent control streams (shared with its gateway):
    /// commands and config pushes go through it. `None` without a gateway
    /// (commands are then `offline`).
    pub agent_links: Option<serviceradar_gateway::links::AgentLinks>,
    /// Gateway-initiated mode: which agent endpoints the platform may dial
    /// and the poll interval bounds (the gateway's poller applies the same).
    pub agent_polls: serviceradar_domain::agent_poll::PollRules,
}

/// The use-cases, over the services they need. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    pki: Arc<Pki>,
    jobs: Arc<Jobs>,
    throttle: throttle::LoginThrottle,
    settings: ControlSettings,
}

impl Control {
    /// The use-cases over `store`, `pki` and the registered `jobs`.
    pub fn new(store: Store, pki: Arc<Pki>, jobs: Arc<Jobs>, settings: ControlSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                pki,
                jobs,
                throttle: throttle::LoginThrottle::new(settings.throttle.clone()),
                settings,
            }),
        }
    }

    /// The store (liveness checks and tests).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The settings.
    pub fn settings(&self) -> &ControlSettings {
        &self.inner.settings
    }

    /// The operator's rules for agent endpoints and poll intervals.
    fn poll_rules(&self) -> &serviceradar_domain::agent_poll::PollRules {
        &self.inner.settings.agent_polls
    }

    fn pki(&self) -> &Pki {
        &self.inner.pki
    }

    /// A list request's tenant-scoped store, page and filter, once `actor`
    /// may perform `action` and the page and `filter` inputs parsed (every
    /// field error of the request reported together).
    fn listing<F>(
        &self,
        actor: &Actor,
        action: Action,
        page: &PageParams,
        filter: impl FnOnce(&mut FieldErrors) -> F,
    ) -> Result<(Scoped<'_>, PageRequest, F), ControlError> {
        let scoped = self.scoped(actor, action)?;
        let mut errors = FieldErrors::default();
        let page = page.parse(&mut errors);
        let filter = filter(&mut errors);
        errors.into_result()?;
        Ok((scoped, page, filter))
    }

    /// `actor`'s tenant-scoped store, once `actor` may perform `action`.
    fn scoped(&self, actor: &Actor, action: Action) -> Result<Scoped<'_>, ControlError> {
        actor.authorize(action)?;
        Ok(self.inner.store.scoped(actor.scope()))
    }
}
