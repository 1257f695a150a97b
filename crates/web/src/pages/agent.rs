//! The site page's half of talking to the site's edge agent: the checks
//! configured for it (add, change, remove; every change is pushed to the
//! agent at once by the use-case) and the commands sent to it (run checks
//! now, reload config, renew certificates, collect diagnostics).
//!
//! Thin handlers over `serviceradar_control::agent_control`, the functions
//! the JSON API and the CLI call, so a form can never do what the API
//! would refuse: the use-case authorizes (a viewer gets 403 whatever the
//! page showed), scopes the site to the caller's tenant (another tenant's
//! site is 404) and validates with the domain's `CheckConfig::parse`. A
//! refused form is shown again with each message next to its field (400,
//! or 409 for a conflict such as a taken name); a command to an agent with
//! no open control stream is recorded `offline` and the page says so (409).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serviceradar_control::ControlError;
use serviceradar_control::agent_control::{AgentChecks, CheckInput, IssueCommand};
use serviceradar_domain::Action;
use serviceradar_domain::EdgeSiteId;
use serviceradar_domain::agent_control::{CheckConfig, CommandKind};
use serviceradar_domain::validate::FieldError;

use super::sites::{Flash, detail_page, site_id};
use crate::session::{Posted, Viewer};
use crate::view::{Chrome, When};
use crate::{WebError, WebState};

/// The check kinds a form offers, with what their target looks like.
pub const CHECK_KINDS: [(&str, &str); 5] = [
    ("tcp", "TCP connect (host:port)"),
    ("http", "HTTP GET (URL)"),
    ("dns", "DNS lookup (name)"),
    ("icmp", "ICMP echo (host)"),
    ("nats_leaf", "NATS leaf monitoring (URL)"),
];

/// The commands the site page offers, in words.
pub const COMMANDS: [(&str, &str); 4] = [
    ("run_checks", "Run checks now"),
    ("reload_config", "Reload config"),
    ("renew_certificates", "Renew certificates"),
    ("collect_diagnostics", "Collect diagnostics"),
];

/// The check form as the person typed it, with the messages of its last
/// refusal (field names as the API names them).
#[derive(Debug, Default)]
pub struct CheckForm {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub interval_secs: String,
    pub timeout_ms: String,
    /// What was refused: a field's message, or (`check`) the whole form's.
    pub errors: Vec<FieldError>,
}

impl CheckForm {
    /// The message for `field`, if the last submission was refused there.
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    /// A stored check, for its change form.
    fn of(check: &CheckConfig) -> Self {
        Self {
            name: check.name.clone(),
            kind: check.kind.as_str().to_string(),
            target: check.target.clone(),
            interval_secs: check.interval_secs.to_string(),
            timeout_ms: check.timeout_ms.to_string(),
            errors: Vec::new(),
        }
    }

    /// The use-case's input; a number field that is not a whole number is
    /// refused here (the JSON API refuses it when decoding), everything
    /// else is the domain's to judge.
    fn input(&self) -> Result<CheckInput, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut number = |field: &str, raw: &str, unit: &str| {
            let raw = raw.trim();
            if raw.is_empty() {
                return None;
            }
            match raw.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.push(FieldError::new(
                        field,
                        format!("must be a whole number of {unit}"),
                    ));
                    None
                }
            }
        };
        let interval_secs = number("interval_secs", &self.interval_secs, "seconds");
        let timeout_ms = number("timeout_ms", &self.timeout_ms, "milliseconds");
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CheckInput {
            name: self.name.trim().to_string(),
            kind: self.kind.trim().to_string(),
            target: self.target.trim().to_string(),
            interval_secs,
            timeout_ms,
        })
    }

    /// The form again with the use-case's refusal; `Err` for refusals that
    /// are not about the input (403, 404, ...).
    fn refused(mut self, err: ControlError) -> Result<(StatusCode, Self), WebError> {
        let status = match err {
            ControlError::Invalid(errors) => {
                self.errors = errors.0;
                StatusCode::BAD_REQUEST
            }
            ControlError::Conflict(message) => {
                self.errors = vec![FieldError::new("check", message)];
                StatusCode::CONFLICT
            }
            other => return Err(other.into()),
        };
        Ok((status, self))
    }
}

/// The check form's fields (the CSRF token is read by [`Posted`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckFields {
    name: String,
    kind: String,
    target: String,
    interval_secs: String,
    timeout_ms: String,
}

impl From<CheckFields> for CheckForm {
    fn from(f: CheckFields) -> Self {
        Self {
            name: f.name,
            kind: f.kind,
            target: f.target,
            interval_secs: f.interval_secs,
            timeout_ms: f.timeout_ms,
            errors: Vec::new(),
        }
    }
}

/// One configured check on the site page.
pub struct ConfiguredRow {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    pub interval_secs: u32,
    pub timeout_ms: u32,
}

/// The agent's configured checks as the site page shows them.
pub struct ChecksView {
    pub rows: Vec<ConfiguredRow>,
    /// The config version the agent acknowledged last, and when.
    pub acked: Option<(String, When)>,
    /// When the checks last changed.
    pub changed: When,
    /// Whether the acknowledgement is of the current checks.
    pub current: bool,
}

impl ChecksView {
    pub fn of(checks: AgentChecks, now: i64) -> Self {
        Self {
            current: checks
                .acked
                .as_ref()
                .is_some_and(|(_, at)| *at >= checks.changed_at),
            acked: checks
                .acked
                .map(|(version, at)| (version, When::at(at, now))),
            changed: When::at(checks.changed_at, now),
            rows: checks
                .checks
                .into_iter()
                .map(|c| ConfiguredRow {
                    kind: c.kind.as_str(),
                    name: c.name,
                    target: c.target,
                    interval_secs: c.interval_secs,
                    timeout_ms: c.timeout_ms,
                })
                .collect(),
        }
    }
}

fn site_page(id: EdgeSiteId, anchor: &str) -> Response {
    Redirect::to(&format!("/admin/edge-sites/{id}#{anchor}")).into_response()
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// `POST /admin/edge-sites/{id}/checks`: adds a check; a refused form is
/// shown again on the site page with the messages next to its fields.
pub async fn add_check(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
    posted: Posted<CheckFields>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let actor = &posted.auth.actor;
    let form = CheckForm::from(posted.form);
    let outcome = match form.input() {
        Ok(input) => state.control.add_agent_check(actor, id, &input).await,
        Err(errors) => {
            // The right and the site first, as the use-case does for any
            // other input: a viewer is 403, another tenant's site 404.
            actor
                .authorize(Action::WriteSites)
                .map_err(ControlError::from)?;
            state.control.agent_checks(actor, id).await?;
            Err(ControlError::Invalid(
                serviceradar_domain::validate::FieldErrors(errors),
            ))
        }
    };
    match outcome {
        Ok(check) => {
            tracing::info!(site_id = %id, check = %check.name, "check added from the web UI");
            Ok(site_page(id, "checks-h"))
        }
        Err(err) => {
            let (status, form) = form.refused(err)?;
            let flash = Flash {
                check_form: Some(form),
                ..Flash::default()
            };
            Ok(with_status(
                detail_page(&state, &viewer, id, flash).await?,
                status,
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "agent_check.html")]
struct CheckPage {
    chrome: Chrome,
    title: String,
    live: String,
    site_id: String,
    site_name: String,
    form: CheckForm,
    kinds: Vec<(&'static str, &'static str)>,
}

async fn check_page(
    state: &WebState,
    viewer: &Viewer,
    id: EdgeSiteId,
    form: CheckForm,
    status: StatusCode,
) -> Result<Response, WebError> {
    let (site, _) = state.control.site(&viewer.auth.actor, id).await?;
    let page = CheckPage {
        chrome: Chrome::new(viewer, "sites"),
        title: format!("Change check {} of {}", form.name, site.name),
        live: String::new(),
        site_id: id.to_string(),
        site_name: site.name.to_string(),
        form,
        kinds: CHECK_KINDS.to_vec(),
    };
    Ok((status, Html(page.render()?)).into_response())
}

/// `GET /admin/edge-sites/{id}/checks/{name}`: the change form.
pub async fn edit_check(
    State(state): State<WebState>,
    viewer: Viewer,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let actor = &viewer.auth.actor;
    actor
        .authorize(Action::WriteSites)
        .map_err(ControlError::from)?;
    let checks = state.control.agent_checks(actor, id).await?;
    let check = checks
        .checks
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(WebError::not_found)?;
    check_page(&state, &viewer, id, CheckForm::of(check), StatusCode::OK).await
}

/// `POST /admin/edge-sites/{id}/checks/{name}`: changes the check (the
/// path names it; a `name` field is ignored).
pub async fn change_check(
    State(state): State<WebState>,
    viewer: Viewer,
    Path((id, name)): Path<(String, String)>,
    posted: Posted<CheckFields>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let actor = &posted.auth.actor;
    let mut form = CheckForm::from(posted.form);
    form.name = name.clone();
    let outcome = match form.input() {
        Ok(input) => {
            state
                .control
                .change_agent_check(actor, id, &name, &input)
                .await
        }
        Err(errors) => {
            actor
                .authorize(Action::WriteSites)
                .map_err(ControlError::from)?;
            let checks = state.control.agent_checks(actor, id).await?;
            if !checks.checks.iter().any(|c| c.name == name) {
                return Err(WebError::not_found());
            }
            Err(ControlError::Invalid(
                serviceradar_domain::validate::FieldErrors(errors),
            ))
        }
    };
    match outcome {
        Ok(check) => {
            tracing::info!(site_id = %id, check = %check.name, "check changed from the web UI");
            Ok(site_page(id, "checks-h"))
        }
        Err(err) => {
            let (status, form) = form.refused(err)?;
            check_page(&state, &viewer, id, form, status).await
        }
    }
}

/// `POST /admin/edge-sites/{id}/checks/{name}/delete`: removes the check.
pub async fn remove_check(
    State(state): State<WebState>,
    Path((id, name)): Path<(String, String)>,
    posted: Posted<crate::session::NoFields>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    state
        .control
        .remove_agent_check(&posted.auth.actor, id, &name)
        .await?;
    tracing::info!(site_id = %id, check = %name, "check removed from the web UI");
    Ok(site_page(id, "checks-h"))
}

/// The command form.
#[derive(Debug, Deserialize)]
pub struct CommandForm {
    #[serde(default)]
    kind: String,
}

/// `POST /admin/edge-sites/{id}/commands`: sends a command and shows the
/// history (where its status then changes live). An agent with no open
/// control stream: the command is recorded `offline` and the page says so
/// (409); an unknown kind is a 400 naming the field.
pub async fn send_command(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
    posted: Posted<CommandForm>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let input = IssueCommand {
        kind: posted.form.kind.trim().to_string(),
        ttl_secs: None,
    };
    match state
        .control
        .issue_agent_command(&posted.auth.actor, id, &input)
        .await
    {
        Ok(command) => {
            tracing::info!(site_id = %id, command_id = %command.id, kind = command.kind.as_str(),
                "command sent from the web UI");
            Ok(site_page(id, "commands-h"))
        }
        Err(ControlError::AgentOffline(command)) => {
            let words = CommandKind::parse(&input.kind)
                .ok()
                .and_then(|k| COMMANDS.iter().find(|(c, _)| *c == k.as_str()))
                .map_or("The command", |(_, words)| words);
            let flash = Flash {
                command_failed: Some(format!(
                    "{words} failed: the site's agent is not connected to the platform (no open control stream), so the command was not sent. It is recorded as offline (command {command}). Check that serviceradar-agent runs at the site and reaches the gateway, then send it again."
                )),
                ..Flash::default()
            };
            Ok(with_status(
                detail_page(&state, &viewer, id, flash).await?,
                StatusCode::CONFLICT,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
