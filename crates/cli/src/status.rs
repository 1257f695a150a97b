//! `status`: who this box is, when its certificates expire, whether the
//! leaf runs and is linked to the hub, whether the agent runs — one screen,
//! or one JSON document with `--json`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::StateDir;
use crate::edge::now_ms;
use crate::exit::Outcome;
use crate::files::{Identity, Layout};

/// A Unix-ms time as `2026-11-29 03:04 UTC`.
pub fn when(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return "?".into();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// When the certificate file was written and when it expires (Unix ms).
fn cert_expiry(path: &Path) -> Option<(i64, i64)> {
    let pem = std::fs::read_to_string(path).ok()?;
    let until = serviceradar_pki::chain_not_after(&pem)
        .ok()?
        .unix_timestamp()
        * 1000;
    let written = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(until, |d| i64::try_from(d.as_millis()).unwrap_or(until));
    Some((written.min(until), until))
}

/// The pid of a running process whose command line mentions `needle`.
fn running(needle: &Path) -> Option<u32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(&needle) && !cmdline.contains("serviceradar-cli")).then_some(pid)
        })
}

/// Whether the agent renews the certificates (its config has `[renewal]`)
/// and when the next one is due.
fn renewal(layout: &Layout, certificates: &[Value]) -> Value {
    let toml = std::fs::read_to_string(layout.agent_toml()).unwrap_or_default();
    let automatic = toml.lines().any(|l| l.trim() == "[renewal]");
    let listens = toml.lines().any(|l| l.trim_start().starts_with("listen ="));
    let next = certificates
        .iter()
        .filter_map(|c| c["renew_at"].as_i64())
        .min();
    if automatic && listens {
        json!({"automatic": true, "by": "serviceradar-agent", "next_at": next,
               "note": "the agent renews at about 2/3 of the lifetime, at a poll of the platform's gateway (gateway-initiated mode)"})
    } else if automatic {
        json!({"automatic": true, "by": "serviceradar-agent", "next_at": next,
               "note": "the agent renews at about 2/3 of the lifetime; `serviceradar-agent --config agent.toml --renew-now` renews at once"})
    } else {
        json!({"automatic": false, "next_at": next,
               "note": "run `serviceradar-cli agent setup`: the agent renews the certificates"})
    }
}

/// Runs `status`.
pub async fn show(dir: &StateDir, json_out: bool) -> Outcome {
    let layout = Layout::new(&crate::files::absolute(&dir.state_dir)?);
    let identity = Identity::load(&layout)?;
    let now = now_ms();
    let mut certificates = Vec::new();
    for name in ["leaf-client.pem", "leaf-server.pem", "agent.pem"] {
        if let Some((written, until)) = cert_expiry(&layout.cert(name)) {
            // The agent renews at about two thirds of the lifetime, counted
            // from when the certificate was written.
            let renew_at = serviceradar_pki::renewal_point(written, until);
            certificates.push(json!({
                "name": name, "not_after": until, "expired": until <= now,
                "renew_due": now >= renew_at, "renew_at": renew_at,
            }));
        }
    }
    let leaf_pid = running(&layout.leaf_conf());
    let mut hub_link = Value::Null;
    if let Some(monitoring) = &identity.monitoring_listen {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok();
        if let Some(client) = client
            && let Ok(response) = client
                .get(format!("http://{monitoring}/leafz"))
                .send()
                .await
            && let Ok(body) = response.json::<Value>().await
        {
            hub_link = json!(body["leafs"].as_array().is_some_and(|l| !l.is_empty()));
        }
    }
    let leaf_state = match (leaf_pid, &hub_link) {
        (_, Value::Bool(true)) => "connected",
        (Some(_), _) => "running, not linked to the hub",
        (None, _) if identity.hub_url.is_some() => "not running",
        (None, _) => "none (agent-only enrollment)",
    };
    let agent_pid = running(&layout.agent_toml());
    // What the agent wrote about itself (last gateway contact, renewal).
    let agent_status: Value = std::fs::read_to_string(layout.agent_status())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let status = json!({
        "identity": identity,
        "certificates": certificates,
        "leaf": {"state": leaf_state, "pid": leaf_pid, "hub_link": hub_link,
                 "hub_url": identity.hub_url, "client_listen": identity.client_listen},
        "agent": {"state": if agent_pid.is_some() { "running" } else { "not running" },
                  "pid": agent_pid, "gateway_url": identity.gateway_url,
                  "last_contact": agent_status["last_contact_ms"],
                  "last_renewal": agent_status["last_renewal_ms"],
                  "renewal_error": agent_status["renewal_error"]},
        "renewal": renewal(&layout, &certificates),
    });
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "Site      {} ({}) of tenant {}",
        identity.site_name, identity.site_slug, identity.tenant_slug
    );
    println!(
        "          site {}  enrolled {} with {}",
        identity.site_id,
        when(identity.enrolled_at),
        identity.control_url
    );
    for cert in status["certificates"].as_array().into_iter().flatten() {
        println!(
            "Cert      {:<16} valid until {}{}",
            cert["name"].as_str().unwrap_or(""),
            when(cert["not_after"].as_i64().unwrap_or(0)),
            if cert["expired"] == json!(true) {
                "  EXPIRED"
            } else if cert["renew_due"] == json!(true) {
                "  renewal due"
            } else {
                ""
            }
        );
    }
    println!(
        "Leaf      {leaf_state}{}",
        identity
            .hub_url
            .as_deref()
            .map(|h| format!("  (hub {h})"))
            .unwrap_or_default()
    );
    if let Some(next) = status["renewal"]["next_at"].as_i64() {
        println!(
            "Renewal   {} around {}",
            if status["renewal"]["automatic"] == json!(true) {
                "automatic (serviceradar-agent),"
            } else {
                "NOT automatic (run `agent setup`); due"
            },
            when(next)
        );
    }
    println!(
        "Agent     {}{}{}",
        status["agent"]["state"].as_str().unwrap_or(""),
        status["agent"]["last_contact"]
            .as_i64()
            .map(|at| format!(
                ", last contact with the gateway {} ago",
                serviceradar_domain::duration::human(now - at)
            ))
            .unwrap_or_default(),
        identity
            .gateway_url
            .as_deref()
            .map(|g| format!("  (gateway {g})"))
            .unwrap_or_default()
    );
    if let Some(error) = status["agent"]["renewal_error"].as_str() {
        println!("          last renewal FAILED: {error}");
    }
    Ok(())
}
