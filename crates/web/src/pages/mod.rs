//! The pages, one module per area. Handlers are thin: extract the viewer
//! (or a CSRF-checked form), call one use-case, render a template or
//! redirect.

pub mod admin;
pub mod agent;
pub mod alerts;
pub mod auth;
pub mod collectors;
pub mod sites;
pub mod wizard;

use askama::Template;
use axum::response::{Html, IntoResponse, Response};

use crate::WebError;

/// Renders `page` as an HTML response.
pub fn render(page: &impl Template) -> Result<Response, WebError> {
    Ok(Html(page.render()?).into_response())
}

/// The tenant's first 200 sites: what the pages that name sites (alerts) or
/// offer them in a selector (collectors) list.
pub async fn first_sites(
    control: &serviceradar_control::Control,
    actor: &serviceradar_domain::Actor,
) -> Result<Vec<serviceradar_domain::resources::EdgeSite>, WebError> {
    let page = control
        .list_sites(
            actor,
            &serviceradar_control::sites::SiteQuery::default(),
            &serviceradar_control::PageParams {
                limit: Some(200),
                cursor: None,
            },
        )
        .await?;
    Ok(page.items)
}

/// `return_to` if it is a path of the UI, else `fallback` (never an
/// address elsewhere: no open redirects).
pub fn local_path(return_to: Option<&str>, fallback: &str) -> String {
    match return_to {
        Some(p) if p.starts_with("/admin/") && !p.starts_with("//") && !p.contains('\\') => {
            p.to_string()
        }
        _ => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(
            super::local_path(Some("/admin/alerts"), "/x"),
            "/admin/alerts"
        );
        assert_eq!(super::local_path(Some("https://evil.example"), "/x"), "/x");
        assert_eq!(super::local_path(Some("//evil.example"), "/x"), "/x");
        assert_eq!(super::local_path(None, "/x"), "/x");
    }
}
