//! The JSON API under `/api/v1`, assembled from one module per resource,
//! with its OpenAPI document collected from the handlers' annotations.
//!
//! Handlers are thin: extract, call one `serviceradar_control` use-case (which
//! parses and authorizes), map the result to a response type.

pub mod agent_control;
pub mod agent_poll;
pub mod alerts;
pub mod bundles;
pub mod devices;
pub mod enrollment;
pub mod onboarding;
pub mod packages;
pub mod session;
pub mod sites;
pub mod telemetry;
pub mod tokens;
pub mod users;

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use serviceradar_control::Control;

#[derive(OpenApi)]
#[openapi(
    info(title = "ServiceRadar Edge API", version = "1",
         description = "Control plane API: edge sites, NATS leaf servers, collector packages, users and tokens. \
                        Authenticate with `Authorization: Bearer srt_...` or a session cookie plus `X-CSRF-Token`."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api/v1` router and its OpenAPI document.
pub fn router() -> (Router<Control>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(sites::router())
        .merge(alerts::router())
        .merge(agent_control::router())
        .merge(agent_poll::router())
        .merge(packages::router())
        .merge(devices::router())
        .merge(bundles::router())
        .merge(enrollment::router())
        .merge(onboarding::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(session::router())
        .merge(telemetry::router())
        .split_for_parts();
    openapi.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    let document = openapi.clone();
    let router = router.route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { Json(document) }
        }),
    );
    (router, openapi)
}
