//! The edge sites list (filter, search, keyset pages, count, live badges)
//! and a site's detail page with its confirmations (regenerate, delete),
//! enrollment tokens, onboarding packages and conflicts to resolve, and
//! the agent's configured checks and commands (their forms: [`super::agent`]).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serviceradar_control::alerts::AlertQuery;
use serviceradar_control::onboarding::{ConflictQuery, OnboardingPackageQuery};
use serviceradar_control::packages::PackageQuery;
use serviceradar_control::sites::{LeafLayout, SiteQuery, UpdateSite};
use serviceradar_control::{ControlError, PageParams};
use serviceradar_domain::EdgeSiteId;
use serviceradar_domain::resources::{EdgeSite, NatsLeafServer};
use serviceradar_domain::state::{AlertStatus, LeafStatus, SiteStatus};
use serviceradar_store::health::Alert;
use serviceradar_store::now_ms;

use super::render;
use crate::session::{Posted, Viewer};
use crate::view::{Badge, Chrome, When};
use crate::{WebError, WebState};

/// A site as pages show it.
pub struct SiteView {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub nats_leaf_url: String,
    pub created: When,
    pub last_seen: Option<When>,
}

impl SiteView {
    pub fn of(site: &EdgeSite, now: i64) -> Self {
        Self {
            id: site.id.to_string(),
            name: site.name.to_string(),
            slug: site.slug.to_string(),
            nats_leaf_url: site.nats_leaf_url.to_string(),
            created: When::at(site.created_at, now),
            last_seen: When::maybe(site.last_seen_at, now),
        }
    }
}

/// A site id from the path (malformed: 404, like another tenant's).
pub fn site_id(raw: &str) -> Result<EdgeSiteId, WebError> {
    raw.parse().map_err(|_| WebError::not_found())
}

/// A row of the list: the site as loaded (rendered straight from it).
pub struct SiteRow<'a> {
    site: &'a EdgeSite,
    status: Badge,
    leaf: Badge,
    last_seen: Option<When>,
    created: When,
}

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage<'a> {
    chrome: Chrome,
    title: String,
    live: String,
    rows: Vec<SiteRow<'a>>,
    /// Matching sites (at most the count's cap: then `more`).
    total: i64,
    /// `total` as shown: "1,000".
    shown: String,
    more: bool,
    statuses: Vec<String>,
    status: String,
    q: String,
    filtered: bool,
    first: Option<String>,
    next: Option<String>,
}

/// Query of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    name: Option<String>,
    cursor: Option<String>,
}

fn list_url(status: &str, name: &str, cursor: Option<&str>) -> String {
    let mut pairs = Vec::new();
    if !status.is_empty() {
        pairs.push(("status", status));
    }
    if !name.is_empty() {
        pairs.push(("name", name));
    }
    if let Some(c) = cursor {
        pairs.push(("cursor", c));
    }
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() {
        "/admin/edge-sites".into()
    } else {
        format!("/admin/edge-sites?{query}")
    }
}

/// `GET /admin/edge-sites`.
pub async fn list(
    State(state): State<WebState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let status = q.status.clone().unwrap_or_default();
    let name = q.name.clone().unwrap_or_default().trim().to_string();
    let overview = state
        .control
        .site_overview(
            &viewer.auth.actor,
            &SiteQuery {
                status: Some(status.clone()),
                name: Some(name.clone()),
            },
            &PageParams {
                limit: Some(50),
                cursor: q.cursor.clone(),
            },
        )
        .await?;
    let now = now_ms();
    let rows = overview
        .sites
        .items
        .iter()
        .map(|(site, leaf)| SiteRow {
            site,
            status: Badge::of(site.status.as_str()),
            leaf: Badge::of(leaf.as_ref().map_or("unknown", |l| l.as_str())),
            last_seen: When::maybe(site.last_seen_at, now),
            created: When::at(site.created_at, now),
        })
        .collect();
    let page = SitesPage {
        chrome: Chrome::new(&viewer, "sites"),
        title: "Edge sites".into(),
        live: "/admin/events".into(),
        rows,
        total: overview.total,
        shown: thousands(overview.total),
        more: overview.more,
        statuses: SiteStatus::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        filtered: !status.is_empty() || !name.is_empty(),
        first: q.cursor.as_ref().map(|_| list_url(&status, &name, None)),
        next: overview
            .sites
            .next_cursor
            .as_deref()
            .map(|c| list_url(&status, &name, Some(c))),
        status,
        q: name,
    };
    render(&page)
}

/// `12345` as "12,345".
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub struct LeafView {
    /// `connected since` / `disconnected since`, when the link changed.
    link_since: Option<When>,
    /// When provisioning last issued the certificate and config.
    provisioned: Option<When>,
    /// Whether the leaf has a certificate (provisioned before the time was
    /// recorded when `provisioned` is `None`).
    issued: bool,
    upstream_url: String,
    local_listen: String,
    updated: When,
    cert_expires: Option<When>,
    checksum: String,
    last_error: String,
}

pub struct AgentView {
    last_seen: Option<When>,
    version: String,
    hostname: String,
    cert_expires: When,
    /// Set for a box enrolled with a token: its own certificates' expiry.
    edge_cert_expires: Option<When>,
    renewed: Option<When>,
    /// The last refused renewal: when and why.
    renewal_refused: Option<(When, String)>,
    revoked: bool,
    /// The latest result of each check.
    checks: Vec<CheckRow>,
    /// Set in gateway-initiated mode: how the gateway's polls of it go.
    polled: Option<PolledView>,
}

/// A listening agent (gateway-initiated mode) as its site page shows it:
/// where the gateway reaches it and how its polls go.
pub struct PolledView {
    endpoint: String,
    interval_secs: i64,
    reachability: Badge,
    failures: i64,
    failing_since: Option<When>,
    last_success: Option<When>,
    last_error: String,
    next_poll: When,
}

impl PolledView {
    fn of(poll: &serviceradar_store::agent_polls::AgentPoll, now: i64) -> Self {
        Self {
            endpoint: poll.endpoint.clone(),
            interval_secs: poll.interval_secs,
            reachability: Badge::of(poll.reachability.as_str()),
            failures: poll.failures,
            failing_since: When::maybe(poll.failing_since, now),
            last_success: When::maybe(poll.last_success_at, now),
            last_error: poll.last_error.clone().unwrap_or_default(),
            next_poll: When::at(poll.next_poll_at, now),
        }
    }
}

/// One check's latest result on the agent card.
pub struct CheckRow {
    name: String,
    target: String,
    badge: Badge,
    message: String,
    observed: When,
}

/// One command of the agent's recent history on the site page.
pub struct CommandRow {
    id: String,
    kind: &'static str,
    badge: Badge,
    message: String,
    issued: When,
    changed: When,
}

/// One registered device on the site page.
pub struct DeviceRow {
    name: String,
    badge: Badge,
    cert_expires: Option<When>,
    registered: When,
}

pub struct CollectorRow {
    name: String,
    kind: String,
    badge: Badge,
    created: When,
}

/// An alert row (shared with the alerts page).
pub struct AlertRow {
    pub id: String,
    pub kind: String,
    pub message: String,
    pub site_id: String,
    pub site_name: String,
    pub badge: Badge,
    pub created: When,
    pub can_ack: bool,
    pub can_resolve: bool,
}

impl AlertRow {
    pub fn of(alert: &Alert, site_name: String, now: i64) -> Self {
        let unresolved = alert.status != AlertStatus::Resolved;
        Self {
            id: alert.id.to_string(),
            kind: alert.kind.clone(),
            message: alert.message.clone(),
            site_id: alert.edge_site_id.to_string(),
            site_name,
            badge: Badge::alert(alert.status),
            created: When::at(alert.created_at, now),
            can_ack: unresolved && alert.status != AlertStatus::Acknowledged,
            can_resolve: unresolved,
        }
    }
}

#[derive(Template)]
#[template(path = "site_detail.html")]
struct DetailPage {
    chrome: Chrome,
    title: String,
    live: String,
    site: SiteView,
    site_badge: Badge,
    leaf_badge: Badge,
    leaf: LeafView,
    cert_banner: Option<(&'static str, String)>,
    agent: Option<AgentView>,
    collectors: Vec<CollectorRow>,
    /// The agent's newest commands, newest first.
    commands: Vec<CommandRow>,
    /// The checks configured for the agent (when there is one).
    configured: Option<super::agent::ChecksView>,
    /// The add-a-check form: empty, or as refused with its messages.
    form: super::agent::CheckForm,
    /// The check kinds and commands the forms offer.
    kinds: Vec<(&'static str, &'static str)>,
    command_kinds: Vec<(&'static str, &'static str)>,
    /// A command just refused because the agent is offline, in words.
    command_failed: Option<String>,
    /// The site's first devices; `more_devices` when there are others.
    devices: Vec<DeviceRow>,
    more_devices: bool,
    alerts: Vec<AlertRow>,
    return_to: String,
    refusal: String,
    /// The hub's own view of the leaf link.
    hub: serviceradar_control::sites::HubLink,
    /// The site's enrollment tokens, newest first.
    enrollment: Vec<EnrollmentRow>,
    /// A token just created: its text and the command, shown once.
    shown: Option<(String, String)>,
    /// The site's onboarding packages, newest first.
    onboarding: Vec<OnboardingRow>,
    /// The site's enrollment conflicts, newest first.
    conflicts: Vec<ConflictRow>,
    /// A conflict just resolved: what to do next.
    resolved: Option<String>,
}

/// One onboarding package on the site page.
struct OnboardingRow {
    source: String,
    badge: Badge,
    created: When,
    changed: When,
}

/// One enrollment conflict on the site page.
struct ConflictRow {
    id: String,
    hostname: String,
    remote_addr: String,
    detail: String,
    at: When,
    badge: Badge,
    open: bool,
    resolved: Option<When>,
}

/// One enrollment token on the site page.
struct EnrollmentRow {
    id: String,
    scope: String,
    /// How the agent it enrolls talks to the platform.
    mode: String,
    badge: Badge,
    uses: String,
    expires: When,
    created: When,
    issued: bool,
}

/// The certificate expiry banner: a warning under 30 days, an error under 7
/// days or once expired.
pub fn cert_banner(leaf: &NatsLeafServer, now: i64) -> Option<(&'static str, String)> {
    let expires = leaf.cert_expires_at?;
    let days = (expires - now) / 86_400_000;
    let when = When::at(expires, now);
    if expires <= now {
        Some((
            "bad",
            format!(
                "The leaf's certificate expired on {}: the hub refuses the leaf. Regenerate the config and install the new bundle.",
                when.exact()
            ),
        ))
    } else if days < 7 {
        Some((
            "bad",
            format!(
                "The leaf's certificate expires {} ({}). Regenerate the config and install the new bundle now.",
                when.relative(),
                when.exact()
            ),
        ))
    } else if days < 30 {
        Some((
            "warn",
            format!(
                "The leaf's certificate expires {} ({}); it is renewed automatically, install the new bundle once it is.",
                when.relative(),
                when.exact()
            ),
        ))
    } else {
        None
    }
}

/// `GET /admin/edge-sites/{id}`.
pub async fn detail(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    detail_page(&state, &viewer, site_id(&id)?, Flash::default()).await
}

/// The enrollment token form on the site page.
#[derive(Debug, Deserialize)]
pub struct EnrollmentForm {
    scope: Option<String>,
    expires_in: Option<String>,
    uses: Option<String>,
    /// Gateway-initiated mode: where the gateway reaches the agent.
    agent_endpoint: Option<String>,
    /// Gateway-initiated mode: seconds between polls.
    poll_interval_secs: Option<String>,
}

/// `POST /admin/edge-sites/{id}/enrollment-tokens`: creates a token and
/// shows it once on the site page.
pub async fn create_enrollment_token(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
    posted: Posted<EnrollmentForm>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let form = posted.form;
    let blank = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let uses = match blank(form.uses) {
        None => None,
        Some(raw) => Some(
            raw.parse::<u32>()
                .map_err(|_| WebError::bad_request("uses must be a whole number (1–100)"))?,
        ),
    };
    let poll_interval_secs = match blank(form.poll_interval_secs) {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
            WebError::bad_request("the poll interval must be a whole number of seconds")
        })?),
    };
    // The endpoint and interval are checked by `Control` (the operator's
    // address rule and interval bounds), as for the API.
    let created = state
        .control
        .create_enrollment_token(
            &posted.auth.actor,
            id,
            &serviceradar_control::enrollment::CreateEnrollmentToken {
                scope: blank(form.scope),
                expires_in: blank(form.expires_in),
                uses,
                agent_endpoint: blank(form.agent_endpoint),
                poll_interval_secs,
            },
        )
        .await?;
    let shown = (
        created.secret.expose().to_string(),
        created.command.expose().to_string(),
    );
    detail_page(
        &state,
        &viewer,
        id,
        Flash {
            shown: Some(shown),
            ..Flash::default()
        },
    )
    .await
}

/// `POST /admin/enrollment-tokens/{id}/revoke`: back to its site's page.
pub async fn revoke_enrollment_token(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<crate::session::NoFields>,
) -> Result<Response, WebError> {
    let id = id.parse().map_err(|_| WebError::not_found())?;
    let token = state
        .control
        .revoke_enrollment_token(&posted.auth.actor, id)
        .await?;
    Ok(Redirect::to(&format!("/admin/edge-sites/{}", token.site_id)).into_response())
}

/// `POST /admin/enrollment-conflicts/{id}/resolve`: resolves it and shows
/// its site's page with what to do next.
pub async fn resolve_enrollment_conflict(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
    posted: Posted<crate::session::NoFields>,
) -> Result<Response, WebError> {
    let id = id.parse().map_err(|_| WebError::not_found())?;
    let done = state
        .control
        .resolve_enrollment_conflict(&posted.auth.actor, id)
        .await?;
    let site = site_id(&done.conflict.site_id)?;
    detail_page(
        &state,
        &viewer,
        site,
        Flash {
            resolved: Some(done.next_steps.to_string()),
            ..Flash::default()
        },
    )
    .await
}

/// What the site page shows once, after a write.
#[derive(Default)]
pub(crate) struct Flash {
    /// A token just created: its text and the command.
    pub(crate) shown: Option<(String, String)>,
    /// A conflict just resolved: what to do next.
    pub(crate) resolved: Option<String>,
    /// The add-a-check form as refused, with its messages.
    pub(crate) check_form: Option<super::agent::CheckForm>,
    /// A command that could not be sent, in words.
    pub(crate) command_failed: Option<String>,
}

/// The site page (with what `flash` shows once).
pub(crate) async fn detail_page(
    state: &WebState,
    viewer: &Viewer,
    id: EdgeSiteId,
    flash: Flash,
) -> Result<Response, WebError> {
    let Flash {
        shown,
        resolved,
        check_form,
        command_failed,
    } = flash;
    let actor = &viewer.auth.actor;
    let control = &state.control;
    let (site, leaf) = control.site(actor, id).await?;
    let agent = match control.site_agent(actor, id).await {
        Ok(agent) => Some(agent),
        Err(ControlError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let packages = control
        .list_packages(
            actor,
            &PackageQuery {
                edge_site_id: Some(id.to_string()),
                ..PackageQuery::default()
            },
            &PageParams {
                limit: Some(50),
                cursor: None,
            },
        )
        .await?;
    // Alerts are listed oldest first without a site filter; the newest
    // page's matches for this site.
    let alerts = control
        .list_alerts(
            actor,
            &AlertQuery { status: None },
            &PageParams {
                limit: Some(200),
                cursor: None,
            },
        )
        .await?;
    let now = now_ms();
    let mut alerts: Vec<AlertRow> = alerts
        .items
        .iter()
        .filter(|a| a.edge_site_id == id)
        .map(|a| AlertRow::of(a, String::new(), now))
        .collect();
    alerts.reverse();
    alerts.truncate(10);
    let commands = match &agent {
        Some(_) => control
            .recent_agent_commands(actor, id, 10)
            .await?
            .into_iter()
            .map(|c| CommandRow {
                id: c.id.to_string(),
                kind: c.kind.as_str(),
                badge: Badge::of(c.status.as_str()),
                message: c.message.unwrap_or_default(),
                issued: When::at(c.created_at, now),
                changed: When::at(c.updated_at, now),
            })
            .collect(),
        None => Vec::new(),
    };
    let polled = match &agent {
        Some(_) => control
            .agent_endpoint(actor, id)
            .await?
            .map(|p| PolledView::of(&p, now)),
        None => None,
    };
    let configured = match &agent {
        Some(_) => Some(super::agent::ChecksView::of(
            control.agent_checks(actor, id).await?,
            now,
        )),
        None => None,
    };
    let devices = control
        .list_devices(
            actor,
            id,
            &serviceradar_control::devices::DeviceQuery::default(),
            &PageParams {
                limit: Some(50),
                cursor: None,
            },
        )
        .await?;
    let more_devices = devices.next_cursor.is_some();
    let devices: Vec<DeviceRow> = devices
        .items
        .into_iter()
        .map(|d| DeviceRow {
            badge: Badge::of(d.status.as_str()),
            cert_expires: When::maybe(d.cert_not_after, now),
            registered: When::at(d.created_at, now),
            name: d.name.to_string(),
        })
        .collect();
    let refusal = match control.site_leaf_refusal(actor, id).await? {
        Some(r) if leaf.status != LeafStatus::Connected => crate::live::refusal_text(&r, now),
        _ => String::new(),
    };
    let hub = control.site_hub_link(actor, id).await?;
    let mut enrollment: Vec<EnrollmentRow> = control
        .list_enrollment_tokens(
            actor,
            &serviceradar_control::enrollment::EnrollmentTokenQuery {
                site_id: Some(id.to_string()),
            },
            &PageParams {
                limit: Some(200),
                cursor: None,
            },
        )
        .await?
        .items
        .into_iter()
        .map(|t| EnrollmentRow {
            issued: t.status == "issued",
            badge: Badge::of(t.status),
            uses: format!("{}/{}", t.uses, t.max_uses),
            expires: When::at(t.expires_at, now),
            created: When::at(t.created_at, now),
            mode: match (&t.agent_endpoint, t.poll_interval_secs) {
                (Some(endpoint), Some(secs)) => format!("polled at {endpoint} every {secs} s"),
                (Some(endpoint), None) => format!("polled at {endpoint}"),
                _ => "dials out".to_owned(),
            },
            scope: t.scope,
            id: t.id,
        })
        .collect();
    enrollment.reverse();
    enrollment.truncate(20);
    let mut onboarding: Vec<OnboardingRow> = control
        .list_onboarding_packages(
            actor,
            id,
            &OnboardingPackageQuery::default(),
            &PageParams {
                limit: Some(200),
                cursor: None,
            },
        )
        .await?
        .items
        .into_iter()
        .map(|p| OnboardingRow {
            source: match &p.token_id {
                Some(token) => format!("token {token}"),
                None => "site bundle download".into(),
            },
            badge: Badge::of(p.status),
            created: When::at(p.created_at, now),
            changed: When::at(p.updated_at, now),
        })
        .collect();
    onboarding.reverse();
    onboarding.truncate(20);
    let mut conflicts: Vec<ConflictRow> = control
        .list_enrollment_conflicts(
            actor,
            &ConflictQuery {
                site_id: Some(id.to_string()),
                state: None,
            },
            &PageParams {
                limit: Some(200),
                cursor: None,
            },
        )
        .await?
        .items
        .into_iter()
        .map(|c| ConflictRow {
            open: c.resolved_at.is_none(),
            badge: Badge::of(c.state),
            hostname: c.hostname.unwrap_or_else(|| "unknown".into()),
            remote_addr: c.remote_addr.unwrap_or_default(),
            detail: c.detail.unwrap_or_default(),
            at: When::at(c.at, now),
            resolved: c.resolved_at.map(|at| When::at(at, now)),
            id: c.id,
        })
        .collect();
    conflicts.reverse();
    conflicts.truncate(20);
    let page = DetailPage {
        commands,
        configured,
        form: check_form.unwrap_or_default(),
        kinds: super::agent::CHECK_KINDS.to_vec(),
        command_kinds: super::agent::COMMANDS.to_vec(),
        command_failed,
        devices,
        more_devices,
        refusal,
        hub,
        enrollment,
        shown,
        onboarding,
        conflicts,
        resolved,
        chrome: Chrome::new(viewer, "sites"),
        title: site.name.to_string(),
        live: format!("/admin/events?site={id}"),
        site_badge: Badge::of(site.status.as_str()),
        leaf_badge: Badge::of(leaf.status.as_str()),
        cert_banner: cert_banner(&leaf, now),
        leaf: LeafView {
            link_since: When::maybe(leaf.link_changed_at, now),
            provisioned: When::maybe(leaf.provisioned_at, now),
            issued: leaf.leaf_cert_pem.is_some(),
            upstream_url: leaf.upstream_url.clone(),
            local_listen: leaf.local_listen.to_string(),
            updated: When::at(leaf.updated_at, now),
            cert_expires: When::maybe(leaf.cert_expires_at, now),
            checksum: leaf.config_checksum.clone().unwrap_or_default(),
            last_error: leaf.last_error.clone().unwrap_or_default(),
        },
        agent: agent.map(
            |serviceradar_control::alerts::SiteAgent {
                 agent: a, checks, ..
             }| AgentView {
                checks: checks
                    .into_iter()
                    .map(|c| CheckRow {
                        badge: Badge::of(&c.status),
                        observed: When::at(c.observed_at, now),
                        name: c.name,
                        target: c.target,
                        message: c.message,
                    })
                    .collect(),
                last_seen: When::maybe(a.last_seen_at, now),
                version: a.agent_version.unwrap_or_else(|| "unknown".into()),
                hostname: a.hostname.unwrap_or_else(|| "unknown".into()),
                cert_expires: When::at(a.cert_expires_at, now),
                edge_cert_expires: When::maybe(a.edge_cert_expires_at, now),
                renewed: When::maybe(a.renewed_at, now),
                renewal_refused: a
                    .renewal_refused_at
                    .map(|at| (When::at(at, now), a.renewal_refusal.unwrap_or_default())),
                revoked: a.revoked_at.is_some(),
                polled,
            },
        ),
        collectors: packages
            .items
            .iter()
            .map(|p| CollectorRow {
                name: p.package.name.to_string(),
                kind: p.package.collector_type.to_string(),
                badge: Badge::of(p.package.status.as_str()),
                created: When::at(p.package.created_at, now),
            })
            .collect(),
        alerts,
        return_to: format!("/admin/edge-sites/{id}"),
        site: SiteView::of(&site, now),
    };
    render(&page)
}

/// `GET /admin/edge-sites/{id}/bundle`: the site bundle download.
pub async fn bundle(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let built = state
        .control
        .site_bundle(&viewer.auth.actor, site_id(&id)?)
        .await?;
    Ok(serviceradar_http::gzip_download(
        &built.file_name,
        built.bytes,
        &[],
    ))
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    title: String,
    live: String,
    site_id: String,
    site_name: String,
    heading: String,
    paragraphs: Vec<String>,
    drift: Vec<String>,
    action: String,
    typed: String,
    checkbox: String,
    /// A further checkbox (`name="option"`, value `yes`) and its label;
    /// empty: none.
    option: String,
    button: String,
    button_class: &'static str,
}

/// `GET /admin/edge-sites/{id}/regenerate`: the confirmation, with the drift.
pub async fn regenerate_page(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let actor = &viewer.auth.actor;
    actor
        .authorize(serviceradar_domain::Action::WriteSites)
        .map_err(ControlError::from)?;
    let (site, leaf) = state.control.site(actor, id).await?;
    let drift = state.control.config_drift(actor, id).await?;
    let mut lines = Vec::new();
    if drift.drifted {
        lines.push(format!(
            "The stored config (checksum {}) differs from the config as it renders now ({}): settings changed since it was issued.",
            drift.stored_checksum.as_deref().unwrap_or("none"),
            drift.expected_checksum.as_deref().unwrap_or("not rendered until the new layout's certificates are issued")
        ));
    }
    let page = ConfirmPage {
        chrome: Chrome::new(&viewer, "sites"),
        title: format!("Regenerate {}", site.name),
        live: String::new(),
        site_id: id.to_string(),
        site_name: site.name.to_string(),
        heading: format!("Regenerate the config of {}?", site.name),
        paragraphs: vec![
            "New certificates and credentials are issued and the leaf's config is rendered again. The leaf keeps working with its current bundle until that expires; install the new bundle to use the new config.".into(),
            format!(
                "Current leaf status: {}. {}",
                leaf.status,
                if drift.drifted { "" } else { "The stored config matches what renders now (no drift)." }
            ),
        ],
        drift: lines,
        action: format!("/admin/edge-sites/{id}/regenerate"),
        typed: String::new(),
        checkbox: "I will install the new bundle at the site".into(),
        option: if leaf.cluster.is_some() {
            "Also give the three nodes new keys (if a node's key may have leaked). Then install \
             the new bundle on every node, one at a time: the first updated node and the two \
             still on the old bundle refuse each other's routes until the second is updated."
                .into()
        } else {
            String::new()
        },
        button: "Regenerate config".into(),
        button_class: "primary",
    };
    render(&page)
}

/// A confirmation form.
#[derive(Debug, Deserialize)]
pub struct Confirm {
    confirm: Option<String>,
}

/// The regeneration's confirmation form, with its option.
#[derive(Debug, Deserialize)]
pub struct RegenerateForm {
    confirm: Option<String>,
    /// `yes`: a clustered leaf's nodes get new keys.
    option: Option<String>,
}

/// `POST /admin/edge-sites/{id}/regenerate`.
pub async fn regenerate(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<RegenerateForm>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    if posted.form.confirm.as_deref() != Some("yes") {
        return Err(WebError::bad_request("confirm the regeneration first"));
    }
    let layout = LeafLayout {
        rotate_node_keys: Some(posted.form.option.as_deref() == Some("yes")),
        ..Default::default()
    };
    state
        .control
        .regenerate_config_with(&posted.auth.actor, id, &layout)
        .await?;
    Ok(Redirect::to(&format!("/admin/edge-sites/{id}/setup/download")).into_response())
}

/// The local URL form.
#[derive(Debug, Deserialize)]
pub struct UrlForm {
    nats_leaf_url: String,
}

/// `POST /admin/edge-sites/{id}/local-url`.
pub async fn update_url(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<UrlForm>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    state
        .control
        .update_site(
            &posted.auth.actor,
            id,
            &UpdateSite {
                name: None,
                nats_leaf_url: Some(posted.form.nats_leaf_url.trim().to_string()),
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/admin/edge-sites/{id}")).into_response())
}

/// `GET /admin/edge-sites/{id}/delete`: the typed confirmation.
pub async fn delete_page(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let actor = &viewer.auth.actor;
    actor
        .authorize(serviceradar_domain::Action::DeleteSites)
        .map_err(ControlError::from)?;
    let (site, _) = state.control.site(actor, id).await?;
    let page = ConfirmPage {
        chrome: Chrome::new(&viewer, "sites"),
        title: format!("Delete {}", site.name),
        live: String::new(),
        site_id: id.to_string(),
        site_name: site.name.to_string(),
        heading: format!("Delete {}?", site.name),
        paragraphs: vec![
            "The site and its leaf server are deleted and the leaf's NATS sessions are revoked on the hub: the leaf disconnects and cannot join again. Collector packages bound to the site fall back to the direct SaaS connection. This cannot be undone.".into(),
        ],
        drift: Vec::new(),
        action: format!("/admin/edge-sites/{id}/delete"),
        typed: site.slug.to_string(),
        checkbox: String::new(),
        option: String::new(),
        button: "Delete this site".into(),
        button_class: "danger",
    };
    render(&page)
}

/// `POST /admin/edge-sites/{id}/delete`: only with the slug typed.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<Confirm>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let actor = &posted.auth.actor;
    actor
        .authorize(serviceradar_domain::Action::DeleteSites)
        .map_err(ControlError::from)?;
    let (site, _) = state.control.site(actor, id).await?;
    if posted.form.confirm.as_deref().map(str::trim) != Some(site.slug.as_str()) {
        return Err(WebError::bad_request(
            "type the site's slug to confirm the deletion",
        ));
    }
    state.control.delete_site(actor, id).await?;
    Ok(Redirect::to("/admin/edge-sites").into_response())
}

/// A status word and its tone for live events.
pub fn leaf_tone(status: LeafStatus) -> &'static str {
    Badge::of(status.as_str()).tone
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
