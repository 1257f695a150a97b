//! The generated scripts and service definitions of a site bundle.
//!
//! `setup.sh` is a static template (`templates/setup.sh`) plus one generated
//! block of variable assignments in which every value is passed through
//! [`shell::quote`]; nothing else in a script is interpolated. The systemd unit
//! and the compose file only receive validated slugs, paths (`[A-Za-z0-9._/-]`)
//! and numbers, never the free-text site name.

use std::fmt::Write as _;

use super::{Installed, SiteBundle, names};
use crate::BundleError;
use crate::shell::quote;

/// The installer template; `#@@GENERATED_VARIABLES@@` is replaced by the
/// site's variables.
const SETUP_TEMPLATE: &str = include_str!("../../templates/setup.sh");
const GENERATED_MARKER: &str = "#@@GENERATED_VARIABLES@@\n";

/// Renders `setup.sh`.
pub(super) fn setup_sh(bundle: &SiteBundle, files: &[Installed]) -> Result<String, BundleError> {
    let p = &bundle.paths;
    let mut vars = String::from(
        "# ---- generated for this site: every value is a single-quoted literal ----\n",
    );
    let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
    let scalars: [(&str, String); 17] = [
        ("SR_TENANT_SLUG", bundle.tenant_slug.clone()),
        ("SR_SITE_SLUG", bundle.site_slug.clone()),
        ("SR_SITE_NAME", bundle.site_name.clone()),
        ("SR_SITE_ID", bundle.site_id.to_string()),
        ("SR_CONFIG_DIR", p.config_dir.clone()),
        ("SR_CERTS_DIR", p.certs_dir.clone()),
        ("SR_JETSTREAM_DIR", p.jetstream_dir.clone()),
        ("SR_NATS_LEAF_URL", bundle.nats_leaf_url.clone()),
        ("SR_CLIENT_PORT", bundle.client_port.to_string()),
        ("SR_MONITOR_PORT", bundle.monitoring_port.to_string()),
        ("SR_SERVICE_USER", names::SERVICE_USER.to_owned()),
        ("SR_UNIT_NAME", names::UNIT.to_owned()),
        (
            "SR_HAS_STREAMS",
            flag(bundle.edge_buffer_stream_json.is_some()),
        ),
        ("SR_HAS_AGENT", flag(super::has_agent_config(bundle))),
        ("SR_AGENT_UNIT_NAME", names::AGENT_UNIT.to_owned()),
        ("SR_AGENT_BIN_NAME", names::AGENT_BIN.to_owned()),
        (
            "SR_CLUSTER_NODES",
            bundle
                .cluster
                .as_ref()
                .map_or(1, |c| c.nodes.len())
                .to_string(),
        ),
    ];
    for (name, value) in &scalars {
        if *name == "SR_SITE_NAME" {
            // Free text may look like an expansion; it is a literal on purpose.
            vars.push_str("# shellcheck disable=SC2016\n");
        }
        let _ = writeln!(vars, "{name}={}", quote(value)?);
    }
    vars.push_str("# install paths rewritten by --prefix, longest first\nSR_REWRITE_PATHS=(\n");
    for path in p.rewrite_order() {
        let _ = writeln!(vars, "\t{}", quote(path)?);
    }
    vars.push_str(
        ")\n# bundle file | destination | mode | owner (service user or root)\nSR_FILES=(\n",
    );
    for f in files {
        let entry = format!("{}|{}|{:04o}|{}", f.bundle_path, f.dest, f.mode, f.owner);
        let _ = writeln!(vars, "\t{}", quote(&entry)?);
    }
    vars.push_str(")\nreadonly");
    for (name, _) in &scalars {
        vars.push(' ');
        vars.push_str(name);
    }
    vars.push_str(" SR_REWRITE_PATHS SR_FILES\n# ---- end of generated values ----\n");
    Ok(SETUP_TEMPLATE.replacen(GENERATED_MARKER, &vars, 1))
}

/// Renders `run-foreground.sh`: `exec nats-server -c <conf>` for manual use.
pub(super) fn run_foreground(bundle: &SiteBundle) -> Result<String, BundleError> {
    Ok(format!(
        "#!/usr/bin/env bash\n\
         # run-foreground.sh - run this site's NATS leaf in the foreground (Ctrl-C stops it).\n\
         # Usage: run-foreground.sh [CONFIG [nats-server options...]]\n\
         # CONFIG defaults to the installed config; after `setup.sh --prefix DIR` pass\n\
         # DIR{conf}.\n\
         set -euo pipefail\n\
         conf={quoted}\n\
         if [ \"$#\" -gt 0 ]; then\n\
         \tconf=\"$1\"\n\
         \tshift\n\
         fi\n\
         exec nats-server -c \"$conf\" \"$@\"\n",
        conf = bundle.paths.config_file(),
        quoted = quote(&bundle.paths.config_file())?,
    ))
}

/// Renders the systemd unit `serviceradar-nats-leaf.service`.
pub(super) fn systemd_unit(bundle: &SiteBundle) -> String {
    let p = &bundle.paths;
    format!(
        "# ServiceRadar Edge NATS leaf (tenant {tenant}, site {site}).\n\
         # Installed by setup.sh; it creates the system user {user} when missing.\n\
         [Unit]\n\
         Description=ServiceRadar Edge NATS leaf server (site {site})\n\
         Documentation=https://docs.nats.io/running-a-nats-service/configuration/leafnodes\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={user}\n\
         Group={user}\n\
         ExecStart=nats-server -c {conf}\n\
         ExecReload=/bin/kill -s HUP $MAINPID\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         LimitNOFILE=65536\n\
         NoNewPrivileges=true\n\
         PrivateTmp=true\n\
         ProtectSystem=full\n\
         ProtectHome=read-only\n\
         ReadWritePaths={jetstream}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        tenant = bundle.tenant_slug,
        site = bundle.site_slug,
        user = names::SERVICE_USER,
        conf = p.config_file(),
        jetstream = p.jetstream_dir,
    )
}

/// Renders the systemd unit `serviceradar-agent.service`. `setup.sh` puts
/// the agent binary's absolute path into `ExecStart`. Exit status 3 is the
/// agent's "the platform no longer accepts me" (site deleted, agent
/// revoked): systemd does not restart it then.
pub(super) fn agent_unit(bundle: &SiteBundle) -> String {
    let p = &bundle.paths;
    format!(
        "# ServiceRadar Edge agent (tenant {tenant}, site {site}).\n\
         # Installed by setup.sh. The agent dials out to the platform's gateway\n\
         # (gRPC over mTLS) and reports the site's health; it listens on no port.\n\
         [Unit]\n\
         Description=ServiceRadar Edge agent (site {site})\n\
         After=network-online.target {leaf_unit}\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={bin} --config {config_dir}/{config}\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         RestartPreventExitStatus=3\n\
         NoNewPrivileges=true\n\
         PrivateTmp=true\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        tenant = bundle.tenant_slug,
        site = bundle.site_slug,
        leaf_unit = names::UNIT,
        bin = names::AGENT_BIN,
        config_dir = p.config_dir,
        config = names::AGENT_CONFIG,
    )
}

/// Renders `docker-compose.yml` (the official image, [`super::NATS_IMAGE`]).
pub(super) fn docker_compose(bundle: &SiteBundle) -> String {
    let p = &bundle.paths;
    format!(
        "# ServiceRadar Edge NATS leaf (tenant {tenant}, site {site}).\n\
         # Start from this directory:  docker compose up -d\n\
         #\n\
         # Host networking: the leaf listens on the host exactly as the systemd variant\n\
         # does - client port {client} for collectors, monitoring on 127.0.0.1:{mon}\n\
         # (/leafz, /healthz). Configuration, certificates and credentials are mounted\n\
         # read-only at the paths nats-leaf.conf expects; JetStream data lives in the\n\
         # named volume.\n\
         services:\n\
         \x20 nats-leaf:\n\
         \x20   image: {nats_image}\n\
         \x20   container_name: serviceradar-nats-leaf-{site}\n\
         \x20   command: [\"-c\", \"{conf}\"]\n\
         \x20   network_mode: host\n\
         \x20   restart: unless-stopped\n\
         \x20   volumes:\n\
         \x20     - \"./{conf_name}:{conf}:ro\"\n\
         \x20     - \"./certs:{certs}:ro\"\n\
         \x20     - \"./creds/{creds_name}:{creds}:ro\"\n\
         \x20     - \"jetstream:{jetstream}\"\n\
         volumes:\n\
         \x20 jetstream:\n\
         \x20   name: serviceradar-nats-leaf-{tenant}-{site}-jetstream\n",
        tenant = bundle.tenant_slug,
        site = bundle.site_slug,
        nats_image = super::NATS_IMAGE,
        client = bundle.client_port,
        mon = bundle.monitoring_port,
        conf = p.config_file(),
        conf_name = names::CONFIG_FILE,
        certs = p.certs_dir,
        creds = p.creds_file(),
        creds_name = names::LEAF_CREDS,
        jetstream = p.jetstream_dir,
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn template_has_exactly_one_marker() {
        assert_eq!(SETUP_TEMPLATE.matches(GENERATED_MARKER).count(), 1);
    }

    #[test]
    fn setup_sh_quotes_the_site_name() {
        let mut b = sample();
        b.site_name = "O'Brien $(x)".into();
        let s = setup_sh(&b, &[]).expect("render");
        assert!(s.contains(r"SR_SITE_NAME='O'\''Brien $(x)'"));
        assert!(!s.contains(GENERATED_MARKER));
        assert!(s.contains("SR_REWRITE_PATHS=(\n\t'/var/lib/serviceradar/nats/jetstream'\n"));
    }

    #[test]
    fn unit_runs_nats_server_with_the_installed_config() {
        let u = systemd_unit(&sample());
        assert!(u.contains("ExecStart=nats-server -c /etc/serviceradar/nats/nats-leaf.conf\n"));
        assert!(u.contains("Restart=on-failure\n"));
        assert!(u.contains("User=serviceradar-nats\n"));
    }

    #[test]
    fn agent_unit_is_not_restarted_after_the_platform_retired_the_agent() {
        let u = agent_unit(&sample());
        assert!(
            u.contains("ExecStart=serviceradar-agent --config /etc/serviceradar/nats/agent.toml\n")
        );
        assert!(u.contains("RestartPreventExitStatus=3\n"));
    }

    #[test]
    fn compose_mounts_read_only_and_keeps_jetstream_in_a_volume() {
        let c = docker_compose(&sample());
        assert!(c.contains(&format!("image: {}\n", super::super::NATS_IMAGE)));
        assert!(c.contains("\"./certs:/etc/serviceradar/nats/certs:ro\""));
        assert!(c.contains("\"jetstream:/var/lib/serviceradar/nats/jetstream\""));
    }
}
