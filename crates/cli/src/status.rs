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

fn cert_expiry(path: &Path) -> Option<(i64, i64)> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let v = cert.validity();
    Some((
        v.not_before.timestamp() * 1000,
        v.not_after.timestamp() * 1000,
    ))
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

/// Runs `status`.
pub async fn show(dir: &StateDir, json_out: bool) -> Outcome {
    let layout = Layout::new(&crate::files::absolute(&dir.state_dir)?);
    let identity = Identity::load(&layout)?;
    let now = now_ms();
    let mut certificates = Vec::new();
    for name in ["leaf-client.pem", "leaf-server.pem", "agent.pem"] {
        if let Some((from, until)) = cert_expiry(&layout.cert(name)) {
            // Renew at two thirds of the lifetime.
            let renew_at = from + (until - from) * 2 / 3;
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
    let status = json!({
        "identity": identity,
        "certificates": certificates,
        "leaf": {"state": leaf_state, "pid": leaf_pid, "hub_link": hub_link,
                 "hub_url": identity.hub_url, "client_listen": identity.client_listen},
        "agent": {"state": if agent_pid.is_some() { "running" } else { "not running" },
                  "pid": agent_pid, "gateway_url": identity.gateway_url},
        "renewal": {
            "automatic": false,
            "note": "re-run `serviceradar-cli site init --force --token …` with a new token before the certificates expire",
        },
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
    println!(
        "Agent     {}{}",
        status["agent"]["state"].as_str().unwrap_or(""),
        identity
            .gateway_url
            .as_deref()
            .map(|g| format!("  (gateway {g})"))
            .unwrap_or_default()
    );
    Ok(())
}
