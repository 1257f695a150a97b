//! The web UI: server-rendered pages for a tenant's people, beside the JSON
//! API and over the same use-cases (`serviceradar_control::Control`), so a
//! page can never do what the API would refuse.
//!
//! * Pages are askama templates (compiled, auto-escaping) rendered by thin
//!   handlers: extract, call one use-case, render. Forms work without
//!   JavaScript; the project's own small script (`assets/app.js`, compiled
//!   into the binary like the stylesheet) adds live updates over
//!   Server-Sent Events, slug suggestions and inline checks.
//! * Security: browser sessions only (the API's session cookie), the
//!   session's CSRF token in a hidden field or `X-CSRF-Token` on every
//!   write, cross-origin writes refused, strict security headers on every
//!   response ([`security`]); an expired session sends the browser back to
//!   sign-in with a message.
//! * Roles: controls a role may not use are not rendered (decided by the one
//!   policy, `Actor::authorize`), and the use-case refuses them anyway.
//! * Live updates ([`live`]) carry only the viewer's tenant's events.

pub mod assets;
pub mod error;
pub mod live;
pub mod pages;
pub mod security;
pub mod session;
pub mod view;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};
use serviceradar_control::Control;
use serviceradar_health::Health;

pub use error::WebError;

/// What the UI's handlers need: the use-cases, and the live status changes.
#[derive(Clone)]
pub struct WebState {
    /// The use-cases (the same the JSON API calls).
    pub control: Control,
    /// Site and leaf status changes and alerts, this replica's and (on
    /// PostgreSQL) every other replica's.
    pub health: Health,
    /// Flips to true when the server stops: live streams end then, so they
    /// do not hold up the graceful shutdown.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Where the UI starts (`/` redirects here).
pub const HOME: &str = "/admin/edge-sites";

/// The UI's routes, with the security headers on every response.
pub fn router(state: WebState) -> Router {
    use pages::{admin, agent, alerts, auth, collectors, sites, wizard};
    Router::new()
        .route("/", get(|| async { Redirect::to(HOME) }))
        .route("/admin", get(|| async { Redirect::to(HOME) }))
        .route("/assets/{file}", get(assets::serve))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/admin/events", get(live::events))
        .route("/admin/edge-sites", get(sites::list))
        .route(
            "/admin/edge-sites/new",
            get(wizard::name_step).post(wizard::create),
        )
        .route("/admin/edge-sites/slug-check", get(wizard::slug_check))
        .route("/admin/edge-sites/{id}", get(sites::detail))
        .route("/admin/edge-sites/{id}/state", get(live::site_state_json))
        .route(
            "/admin/edge-sites/{id}/setup/method",
            get(wizard::method_step),
        )
        .route(
            "/admin/edge-sites/{id}/setup/download",
            get(wizard::download_step),
        )
        .route(
            "/admin/edge-sites/{id}/setup/verify",
            get(wizard::verify_step),
        )
        .route("/admin/edge-sites/{id}/bundle", get(sites::bundle))
        .route(
            "/admin/edge-sites/{id}/regenerate",
            get(sites::regenerate_page).post(sites::regenerate),
        )
        .route("/admin/edge-sites/{id}/local-url", post(sites::update_url))
        .route("/admin/edge-sites/{id}/checks", post(agent::add_check))
        .route(
            "/admin/edge-sites/{id}/checks/{name}",
            get(agent::edit_check).post(agent::change_check),
        )
        .route(
            "/admin/edge-sites/{id}/checks/{name}/delete",
            post(agent::remove_check),
        )
        .route("/admin/edge-sites/{id}/commands", post(agent::send_command))
        .route(
            "/admin/edge-sites/{id}/enrollment-tokens",
            post(sites::create_enrollment_token),
        )
        .route(
            "/admin/enrollment-tokens/{id}/revoke",
            post(sites::revoke_enrollment_token),
        )
        .route(
            "/admin/enrollment-conflicts/{id}/resolve",
            post(sites::resolve_enrollment_conflict),
        )
        .route(
            "/admin/edge-sites/{id}/delete",
            get(sites::delete_page).post(sites::delete),
        )
        .route("/admin/alerts", get(alerts::list))
        .route("/admin/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route("/admin/alerts/{id}/resolve", post(alerts::resolve))
        .route(
            "/admin/collectors",
            get(collectors::list).post(collectors::create),
        )
        .route("/admin/collectors/{id}/bundle", post(collectors::bundle))
        .route("/admin/collectors/{id}/revoke", post(collectors::revoke))
        .route(
            "/admin/webhooks",
            get(admin::webhooks).post(admin::create_webhook),
        )
        .route("/admin/webhooks/{id}/delete", post(admin::delete_webhook))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{id}/delete", post(admin::delete_user))
        .route(
            "/admin/tokens",
            get(admin::tokens).post(admin::create_token),
        )
        .route("/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}
