//! Tenant administration: webhooks (with recent deliveries), users and API
//! tokens. A created webhook secret, initial password or token is rendered
//! once, in the response to the form that created it, and never again.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serviceradar_control::PageParams;
use serviceradar_control::alerts::CreateWebhook;
use serviceradar_control::tokens::{CreateToken, TokenQuery};
use serviceradar_control::users::CreateUser;
use serviceradar_domain::Role;
use serviceradar_http::Authenticated;
use serviceradar_store::now_ms;

use super::render;
use crate::session::{NoFields, Posted, Viewer};
use crate::view::{Badge, Chrome, When};
use crate::{WebError, WebState};

fn first(limit: u32) -> PageParams {
    PageParams {
        limit: Some(limit),
        cursor: None,
    }
}

fn uuid_id(raw: &str) -> Result<uuid::Uuid, WebError> {
    raw.parse().map_err(|_| WebError::not_found())
}

pub struct DeliveryRow {
    event: String,
    attempt: i64,
    badge: Badge,
    created: When,
}

pub struct HookRow {
    id: String,
    url: String,
    created: When,
    deliveries: Vec<DeliveryRow>,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    title: String,
    live: String,
    hooks: Vec<HookRow>,
    secret: String,
}

async fn webhooks_page(
    state: &WebState,
    viewer: &Viewer,
    secret: String,
) -> Result<Response, WebError> {
    let actor = &viewer.auth.actor;
    let hooks = state.control.list_webhooks(actor, &first(50)).await?;
    let now = now_ms();
    let mut rows = Vec::new();
    for hook in &hooks.items {
        let deliveries = state
            .control
            .list_deliveries(actor, hook.id, &first(200))
            .await?;
        let mut deliveries: Vec<DeliveryRow> = deliveries
            .items
            .iter()
            .map(|d| DeliveryRow {
                event: d.event.clone(),
                attempt: d.attempt,
                badge: match (d.status_code, &d.error) {
                    (Some(code), _) if (200..300).contains(&code) => Badge {
                        word: format!("{code} delivered"),
                        tone: "good",
                    },
                    (Some(code), _) => Badge {
                        word: format!("{code} failed"),
                        tone: "bad",
                    },
                    (None, Some(e)) => Badge {
                        word: format!("failed: {e}"),
                        tone: "bad",
                    },
                    (None, None) => Badge::of("pending"),
                },
                created: When::at(d.created_at, now),
            })
            .collect();
        deliveries.reverse();
        deliveries.truncate(10);
        rows.push(HookRow {
            id: hook.id.to_string(),
            url: hook.url.clone(),
            created: When::at(hook.created_at, now),
            deliveries,
        });
    }
    render(&WebhooksPage {
        chrome: Chrome::new(viewer, "webhooks"),
        title: "Webhooks".into(),
        live: String::new(),
        hooks: rows,
        secret,
    })
}

/// `GET /admin/webhooks`.
pub async fn webhooks(State(state): State<WebState>, viewer: Viewer) -> Result<Response, WebError> {
    webhooks_page(&state, &viewer, String::new()).await
}

/// The webhook form.
#[derive(Debug, Deserialize)]
pub struct WebhookForm {
    url: String,
}

/// `POST /admin/webhooks`: creates one and shows its secret once.
pub async fn create_webhook(
    State(state): State<WebState>,
    viewer: Viewer,
    posted: Posted<WebhookForm>,
) -> Result<Response, WebError> {
    let created = state
        .control
        .create_webhook(
            &posted.auth.actor,
            &CreateWebhook {
                url: posted.form.url.trim().to_string(),
            },
        )
        .await?;
    webhooks_page(&state, &viewer, created.secret.expose().to_string()).await
}

/// `POST /admin/webhooks/{id}/delete`.
pub async fn delete_webhook(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, WebError> {
    state
        .control
        .delete_webhook(&posted.auth.actor, uuid_id(&id)?)
        .await?;
    Ok(Redirect::to("/admin/webhooks").into_response())
}

pub struct UserRow {
    id: String,
    email: String,
    role: String,
    created: When,
    me: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    title: String,
    live: String,
    rows: Vec<UserRow>,
    roles: Vec<&'static str>,
    secret: String,
}

async fn users_page(
    state: &WebState,
    viewer: &Viewer,
    secret: String,
) -> Result<Response, WebError> {
    let actor = &viewer.auth.actor;
    let users = state.control.list_users(actor, &first(200)).await?;
    let now = now_ms();
    render(&UsersPage {
        chrome: Chrome::new(viewer, "users"),
        title: "Users".into(),
        live: String::new(),
        rows: users
            .items
            .iter()
            .map(|u| UserRow {
                id: u.id.to_string(),
                email: u.email.to_string(),
                role: u.role.to_string(),
                created: When::at(u.created_at, now),
                me: u.id == actor.user_id,
            })
            .collect(),
        roles: Role::ALL
            .iter()
            .filter(|r| actor.authorize_role_management(**r).is_ok())
            .map(|r| r.as_str())
            .collect(),
        secret,
    })
}

/// `GET /admin/users`.
pub async fn users(State(state): State<WebState>, viewer: Viewer) -> Result<Response, WebError> {
    users_page(&state, &viewer, String::new()).await
}

/// The user form.
#[derive(Debug, Deserialize)]
pub struct UserForm {
    email: String,
    role: String,
}

/// `POST /admin/users`: creates a user and shows the generated password once.
pub async fn create_user(
    State(state): State<WebState>,
    viewer: Viewer,
    posted: Posted<UserForm>,
) -> Result<Response, WebError> {
    let created = state
        .control
        .create_user(
            &posted.auth.actor,
            &CreateUser {
                email: posted.form.email.trim().to_string(),
                role: posted.form.role,
                password: None,
            },
        )
        .await?;
    let secret = created
        .initial_password
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    users_page(&state, &viewer, secret).await
}

/// `POST /admin/users/{id}/delete`.
pub async fn delete_user(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, WebError> {
    let id = id.parse().map_err(|_| WebError::not_found())?;
    state.control.delete_user(&posted.auth.actor, id).await?;
    Ok(Redirect::to("/admin/users").into_response())
}

pub struct TokenRow {
    id: String,
    name: String,
    scopes: String,
    expires: When,
    last_used: Option<When>,
    badge: Badge,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    title: String,
    live: String,
    rows: Vec<TokenRow>,
    secret: String,
}

async fn tokens_page(
    state: &WebState,
    viewer: &Viewer,
    auth: &Authenticated,
    secret: String,
) -> Result<Response, WebError> {
    let tokens = state
        .control
        .list_tokens(&auth.actor, &TokenQuery::default(), &first(200))
        .await?;
    let now = now_ms();
    render(&TokensPage {
        chrome: Chrome::new(viewer, "tokens"),
        title: "API tokens".into(),
        live: String::new(),
        rows: tokens
            .items
            .iter()
            .map(|t| {
                let revoked = t.revoked_at.is_some();
                let status = if revoked {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else {
                    "active"
                };
                TokenRow {
                    id: t.id.to_string(),
                    name: t.name.clone(),
                    scopes: t
                        .scopes
                        .to_vec()
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    expires: When::at(t.expires_at, now),
                    last_used: When::maybe(t.last_used_at, now),
                    badge: Badge::of(status),
                    revoked,
                }
            })
            .collect(),
        secret,
    })
}

/// `GET /admin/tokens`: the caller's tokens (admins: everyone's).
pub async fn tokens(State(state): State<WebState>, viewer: Viewer) -> Result<Response, WebError> {
    let auth = viewer.auth.clone();
    tokens_page(&state, &viewer, &auth, String::new()).await
}

/// The token form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    name: String,
    scopes: Option<String>,
    expires_in_days: Option<String>,
}

/// `POST /admin/tokens`: creates a token for the caller and shows it once.
pub async fn create_token(
    State(state): State<WebState>,
    viewer: Viewer,
    posted: Posted<TokenForm>,
) -> Result<Response, WebError> {
    let form = posted.form;
    let days =
        match form.expires_in_days.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<u32>().map_err(|_| {
                WebError::bad_request("the lifetime must be a number of days (1–365)")
            })?),
        };
    let created = state
        .control
        .create_token(
            &posted.auth,
            &CreateToken {
                name: form.name.trim().to_string(),
                scopes: form
                    .scopes
                    .map(|s| s.split(',').map(|p| p.trim().to_string()).collect()),
                expires_in_days: days,
            },
        )
        .await?;
    tokens_page(
        &state,
        &viewer,
        &posted.auth,
        created.secret.expose().to_string(),
    )
    .await
}

/// `POST /admin/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, WebError> {
    let id = id.parse().map_err(|_| WebError::not_found())?;
    state.control.revoke_token(&posted.auth.actor, id).await?;
    Ok(Redirect::to("/admin/tokens").into_response())
}
