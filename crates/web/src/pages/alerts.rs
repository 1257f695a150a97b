//! The alerts list with acknowledge and resolve (also used from a site's
//! detail page, which passes where to return).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serviceradar_control::PageParams;
use serviceradar_control::alerts::AlertQuery;
use serviceradar_domain::state::{AlertEvent, AlertStatus};
use serviceradar_store::now_ms;

use super::sites::AlertRow;
use super::{local_path, render};
use crate::session::{Posted, Viewer};
use crate::view::Chrome;
use crate::{WebError, WebState};

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    title: String,
    live: String,
    alerts: Vec<AlertRow>,
    statuses: Vec<String>,
    status: String,
    next: Option<String>,
    return_to: String,
}

/// Query of the list.
#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    status: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/alerts`.
pub async fn list(
    State(state): State<WebState>,
    viewer: Viewer,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, WebError> {
    let actor = &viewer.auth.actor;
    let status = q.status.clone().unwrap_or_default();
    let alerts = state
        .control
        .list_alerts(
            actor,
            &AlertQuery {
                status: Some(status.clone()),
            },
            &PageParams {
                limit: Some(50),
                cursor: q.cursor.clone(),
            },
        )
        .await?;
    // Site names for the page's alerts (first 200 sites of the tenant).
    let sites = super::first_sites(&state.control, actor).await?;
    let names: HashMap<_, _> = sites.iter().map(|s| (s.id, s.name.to_string())).collect();
    let now = now_ms();
    let rows = alerts
        .items
        .iter()
        .map(|a| {
            let name = names
                .get(&a.edge_site_id)
                .cloned()
                .unwrap_or_else(|| "a site".into());
            AlertRow::of(a, name, now)
        })
        .collect();
    let next = alerts.next_cursor.as_deref().map(|c| {
        let query = serde_urlencoded::to_string([("status", status.as_str()), ("cursor", c)])
            .unwrap_or_default();
        format!("/admin/alerts?{query}")
    });
    render(&AlertsPage {
        chrome: Chrome::new(&viewer, "alerts"),
        title: "Alerts".into(),
        live: "/admin/events".into(),
        alerts: rows,
        statuses: AlertStatus::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        status,
        next,
        return_to: "/admin/alerts".into(),
    })
}

/// Where to go back to after a change.
#[derive(Debug, Deserialize)]
pub struct ReturnTo {
    return_to: Option<String>,
}

async fn transition(
    state: WebState,
    id: String,
    posted: Posted<ReturnTo>,
    event: AlertEvent,
) -> Result<Response, WebError> {
    let id: uuid::Uuid = id.parse().map_err(|_| WebError::not_found())?;
    state
        .control
        .transition_alert(&posted.auth.actor, id, event)
        .await?;
    let to = local_path(posted.form.return_to.as_deref(), "/admin/alerts");
    Ok(Redirect::to(&to).into_response())
}

/// `POST /admin/alerts/{id}/acknowledge`.
pub async fn acknowledge(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<ReturnTo>,
) -> Result<Response, WebError> {
    transition(state, id, posted, AlertEvent::Acknowledge).await
}

/// `POST /admin/alerts/{id}/resolve`.
pub async fn resolve(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<ReturnTo>,
) -> Result<Response, WebError> {
    transition(state, id, posted, AlertEvent::Resolve).await
}
