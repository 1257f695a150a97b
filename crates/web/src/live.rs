//! Live updates over Server-Sent Events (`GET /admin/events`, optionally
//! `?site=<id>`), so the list, detail and wizard pages change without a
//! reload, including changes made on another replica (the health service
//! relays those through PostgreSQL NOTIFY).
//!
//! Each stream carries only events of the viewer's own tenant
//! ([`visible_to`]); a site stream only that site's. Event names: `site`
//! and `leaf` (a status changed), `alert` (raised or resolved), `state` (a
//! site stream's snapshot: leaf provisioned, connected, agent seen, last
//! error, the agent's newest commands with their status; sent at once, on
//! every change of the site, and when a periodic re-read finds a change
//! nobody announced, such as provisioning finishing or a command's result),
//! and `expired` (the session ended: the script goes to sign-in).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serviceradar_auth::session_with_csrf;
use serviceradar_control::Control;
use serviceradar_domain::state::LeafStatus;
use serviceradar_domain::{EdgeSiteId, TenantId};
use serviceradar_health::HealthEvent;
use serviceradar_http::{Authenticated, session_cookie};
use tokio::sync::broadcast;

use crate::pages::sites::site_id;
use crate::session::Viewer;
use crate::view::Badge;
use crate::{WebError, WebState};

/// How often a site stream re-reads the site (and every stream re-checks
/// the session).
const SITE_TICK: Duration = Duration::from_secs(2);
const LIST_TICK: Duration = Duration::from_secs(5);

/// The tenant and site an event concerns.
pub fn scope_of(event: &HealthEvent) -> (TenantId, EdgeSiteId) {
    match event {
        HealthEvent::Site {
            tenant_id, site_id, ..
        }
        | HealthEvent::Leaf {
            tenant_id, site_id, ..
        } => (*tenant_id, *site_id),
        HealthEvent::AlertRaised(alert) | HealthEvent::AlertResolved(alert) => {
            (alert.tenant_id, alert.edge_site_id)
        }
    }
}

/// Whether a stream of `tenant` (and of `site`, when given) may carry `event`.
pub fn visible_to(event: &HealthEvent, tenant: TenantId, site: Option<EdgeSiteId>) -> bool {
    let (t, s) = scope_of(event);
    t == tenant && site.is_none_or(|site| site == s)
}

#[derive(Serialize)]
struct StatusChange {
    site_id: String,
    status: String,
    tone: &'static str,
}

#[derive(Serialize)]
struct AlertChange {
    site_id: String,
    kind: String,
    status: String,
    message: String,
}

fn event_of(event: &HealthEvent) -> Option<Event> {
    let (name, data) = match event {
        HealthEvent::Site {
            site_id, status, ..
        } => (
            "site",
            serde_json::to_string(&StatusChange {
                site_id: site_id.to_string(),
                status: status.to_string(),
                tone: Badge::of(status.as_str()).tone,
            }),
        ),
        HealthEvent::Leaf {
            site_id, status, ..
        } => (
            "leaf",
            serde_json::to_string(&StatusChange {
                site_id: site_id.to_string(),
                status: status.to_string(),
                tone: Badge::of(status.as_str()).tone,
            }),
        ),
        HealthEvent::AlertRaised(alert) | HealthEvent::AlertResolved(alert) => (
            "alert",
            serde_json::to_string(&AlertChange {
                site_id: alert.edge_site_id.to_string(),
                kind: alert.kind.clone(),
                status: alert.status.to_string(),
                message: alert.message.clone(),
            }),
        ),
    };
    Some(Event::default().event(name).data(data.ok()?))
}

/// What the wizard and detail pages show live about one site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteState {
    site_status: String,
    site_tone: &'static str,
    leaf_status: String,
    leaf_tone: &'static str,
    /// The leaf is provisioned: its bundle can be downloaded.
    bundle_ready: bool,
    /// The hub sees the leaf connected.
    leaf_connected: bool,
    /// The agent has contacted the gateway at least once.
    agent_seen: bool,
    /// Its last contact (Unix ms).
    agent_last_seen: Option<i64>,
    /// Why provisioning last failed.
    last_error: Option<String>,
    /// The hub's last refusal of the leaf, in words, while not connected.
    pub(crate) refusal: Option<String>,
    /// The agent's newest commands, newest first (the site page's history
    /// follows their status).
    commands: Vec<CommandState>,
}

/// One command of the site page's history, as the script redraws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct CommandState {
    id: String,
    kind: &'static str,
    status: &'static str,
    tone: &'static str,
    message: String,
    /// Issued and last changed (Unix ms).
    issued: i64,
    changed: i64,
}

/// "The hub refused this site's leaf 3 min ago (exact time): reason".
pub fn refusal_text(refusal: &serviceradar_store::LeafRefusal, now_ms: i64) -> String {
    let when = crate::view::When::at(refusal.refused_at, now_ms);
    format!(
        "The hub refused this site's leaf {} ({}): {}",
        when.relative(),
        when.exact(),
        refusal.reason
    )
}

pub(crate) async fn site_state(
    control: &Control,
    auth: &Authenticated,
    id: EdgeSiteId,
) -> Result<SiteState, WebError> {
    let (site, leaf) = control.site(&auth.actor, id).await?;
    let refusal = if leaf.status == LeafStatus::Connected {
        None
    } else {
        control
            .site_leaf_refusal(&auth.actor, id)
            .await?
            .map(|r| refusal_text(&r, serviceradar_store::now_ms()))
    };
    let commands = control
        .recent_agent_commands(&auth.actor, id, 10)
        .await?
        .into_iter()
        .map(|c| CommandState {
            id: c.id.to_string(),
            kind: c.kind.as_str(),
            status: c.status.as_str(),
            tone: Badge::of(c.status.as_str()).tone,
            message: c.message.unwrap_or_default(),
            issued: c.created_at,
            changed: c.updated_at,
        })
        .collect();
    Ok(SiteState {
        refusal,
        commands,
        site_status: site.status.to_string(),
        site_tone: Badge::of(site.status.as_str()).tone,
        leaf_status: leaf.status.to_string(),
        leaf_tone: Badge::of(leaf.status.as_str()).tone,
        bundle_ready: leaf.status != LeafStatus::Pending,
        leaf_connected: leaf.status == LeafStatus::Connected,
        agent_seen: site.last_seen_at.is_some(),
        agent_last_seen: site.last_seen_at,
        last_error: leaf.last_error,
    })
}

/// `GET /admin/edge-sites/{id}/state`: the same snapshot as JSON.
pub async fn site_state_json(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Json<SiteState>, WebError> {
    Ok(Json(
        site_state(&state.control, &viewer.auth, site_id(&id)?).await?,
    ))
}

/// Query of the stream.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    site: Option<String>,
}

/// What woke a stream up.
enum Woke {
    Stop,
    Event(Result<HealthEvent, broadcast::error::RecvError>),
    Tick,
}

struct Follow {
    control: Control,
    auth: Authenticated,
    cookie: String,
    site: Option<EdgeSiteId>,
    events: broadcast::Receiver<HealthEvent>,
    tick: tokio::time::Interval,
    last: Option<SiteState>,
    done: bool,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Follow {
    /// The snapshot as an event, if it changed since the last one sent.
    async fn snapshot(&mut self) -> Option<Event> {
        let site = self.site?;
        let now = site_state(&self.control, &self.auth, site).await.ok()?;
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        let event = Event::default()
            .event("state")
            .data(serde_json::to_string(&now).ok()?);
        self.last = Some(now);
        Some(event)
    }

    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            let woke = tokio::select! {
                _ = self.stop.wait_for(|stopping| *stopping) => Woke::Stop,
                received = self.events.recv() => Woke::Event(received),
                _ = self.tick.tick() => Woke::Tick,
            };
            match woke {
                Woke::Stop => return None,
                Woke::Event(Ok(event))
                    if visible_to(&event, self.auth.actor.tenant_id, self.site) =>
                {
                    if self.site.is_some()
                        && let Some(snapshot) = self.snapshot().await
                    {
                        return Some(snapshot);
                    }
                    if let Some(event) = event_of(&event) {
                        return Some(event);
                    }
                }
                Woke::Event(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Woke::Event(Err(broadcast::error::RecvError::Closed)) => return None,
                Woke::Tick => {
                    if session_with_csrf(self.control.store(), &self.cookie)
                        .await
                        .is_err()
                    {
                        self.done = true;
                        return Some(Event::default().event("expired").data("{}"));
                    }
                    if let Some(snapshot) = self.snapshot().await {
                        return Some(snapshot);
                    }
                }
            }
        }
    }
}

/// `GET /admin/events[?site=<id>]`: the viewer's tenant's live changes.
pub async fn events(
    State(state): State<WebState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let site = match q.site.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => {
            let id = site_id(raw)?;
            // 404 for another tenant's site, before anything streams.
            state.control.site(&viewer.auth.actor, id).await?;
            Some(id)
        }
        None => None,
    };
    let cookie = session_cookie(&headers).ok_or(WebError::SignIn { expired: false })?;
    let mut tick = tokio::time::interval(if site.is_some() { SITE_TICK } else { LIST_TICK });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = Follow {
        events: state.health.subscribe(),
        control: state.control.clone(),
        auth: viewer.auth,
        cookie,
        site,
        tick,
        last: None,
        done: false,
        stop: state.stop.clone(),
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serviceradar_domain::state::SiteStatus;

    #[test]
    fn events_of_another_tenant_or_site_are_not_visible() {
        let a = TenantId(uuid::Uuid::now_v7());
        let b = TenantId(uuid::Uuid::now_v7());
        let site = EdgeSiteId(uuid::Uuid::now_v7());
        let other_site = EdgeSiteId(uuid::Uuid::now_v7());
        let event = HealthEvent::Site {
            tenant_id: a,
            site_id: site,
            status: SiteStatus::Active,
        };
        assert!(visible_to(&event, a, None));
        assert!(visible_to(&event, a, Some(site)));
        assert!(!visible_to(&event, a, Some(other_site)));
        assert!(!visible_to(&event, b, None));
        assert!(!visible_to(&event, b, Some(site)));
    }
}
