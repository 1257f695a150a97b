//! The edge agent's `agent.toml`: one renderer for the site bundle (paths
//! relative to the bundle, rewritten by `setup.sh`) and for
//! `serviceradar-cli agent setup` (absolute paths under its state dir).

/// What goes into `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfigInput<'a> {
    /// The site's slug (comment only).
    pub site_slug: &'a str,
    /// The tenant's slug (comment only).
    pub tenant_slug: &'a str,
    /// The agent gateway URL (dial-out mode).
    pub gateway_url: &'a str,
    /// Gateway-initiated mode: the agent listens here (`ip:port`) for the
    /// platform gateway's polls instead of dialling `gateway_url`.
    pub listen: Option<&'a str>,
    /// Agent certificate (followed by the tenant CA).
    pub cert: &'a str,
    /// Agent key.
    pub key: &'a str,
    /// The platform root CA (what the gateway's certificate chains to).
    pub ca: &'a str,
    /// The local leaf's client URL.
    pub leaf_url: &'a str,
    /// CA of the leaf's server certificate.
    pub leaf_ca: &'a str,
    /// The site's buffer stream definition.
    pub edge_buffer: &'a str,
    /// Tenant id (a claim the gateway checks against the certificate).
    pub tenant_id: &'a str,
    /// Site id.
    pub site_id: &'a str,
    /// Agent id.
    pub agent_id: &'a str,
    /// Certificate renewal (a box enrolled with a token); `None` for a
    /// bundle, whose certificates come with the next bundle.
    pub renewal: Option<AgentRenewal<'a>>,
}

/// The `[renewal]` table: who this host is and which leaf files to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRenewal<'a> {
    /// SHA-256 (hex) of the host's machine id, as sent at enrollment.
    pub host_fingerprint: &'a str,
    /// Where the agent writes its last gateway contact and renewal (read by
    /// `serviceradar-cli status`).
    pub status_file: &'a str,
    /// The leaf's certificate files and pid file, when the box runs the leaf.
    pub leaf: Option<LeafRenewalFiles<'a>>,
}

/// The leaf files renewal replaces, and the pid to signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRenewalFiles<'a> {
    /// Client certificate (hub link).
    pub client_cert: &'a str,
    /// Its key.
    pub client_key: &'a str,
    /// Server certificate (local collectors).
    pub server_cert: &'a str,
    /// Its key.
    pub server_key: &'a str,
    /// nats-server's pid file.
    pub pid_file: &'a str,
}

/// Renders `agent.toml`. Every value is a TOML basic string (JSON string
/// escaping), so no input can add a key.
pub fn agent_config_toml(input: &AgentConfigInput<'_>) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let comment = |s: &str| s.replace(['\n', '\r'], " ");
    let mut text = format!(
        "# serviceradar-agent configuration for edge site {site}\n\
         # (tenant {tenant}). Identity comes from the certificate; the ids\n\
         # below are claims the gateway checks against it.\n\
         {mode}\n\
         cert = {cert}\n\
         key = {key}\n\
         ca = {ca}\n\
         # The site's buffer stream, created on the local leaf as soon as it runs.\n\
         leaf_url = {leaf_url}\n\
         leaf_ca = {leaf_ca}\n\
         edge_buffer = {edge_buffer}\n\
         tenant_id = {tenant_id}\n\
         site_id = {site_id}\n\
         site_slug = {site_slug}\n\
         agent_id = {agent_id}\n",
        site = comment(input.site_slug),
        tenant = comment(input.tenant_slug),
        mode = match input.listen {
            Some(listen) => format!(
                "# Gateway-initiated mode: the platform's gateway polls this agent here;\n\
                 # the agent dials nothing.\nlisten = {}",
                q(listen)
            ),
            None => format!("gateway_url = {}", q(input.gateway_url)),
        },
        cert = q(input.cert),
        key = q(input.key),
        ca = q(input.ca),
        leaf_url = q(input.leaf_url),
        leaf_ca = q(input.leaf_ca),
        edge_buffer = q(input.edge_buffer),
        tenant_id = q(input.tenant_id),
        site_id = q(input.site_id),
        site_slug = q(input.site_slug),
        agent_id = q(input.agent_id),
    );
    if let Some(renewal) = &input.renewal {
        // A top-level key: before the table below.
        text.push_str(&format!(
            "# Last gateway contact and renewal, for `serviceradar-cli status`.\n\
             status_file = {}\n",
            q(renewal.status_file)
        ));
        text.push_str(&format!(
            "\n# Certificate renewal: the agent renews this box's certificates at about\n\
             # 2/3 of their lifetime (new keys made here, only CSRs sent).\n\
             [renewal]\n\
             host_fingerprint = {}\n",
            q(renewal.host_fingerprint)
        ));
        if let Some(leaf) = &renewal.leaf {
            text.push_str(&format!(
                "leaf_client_cert = {}\nleaf_client_key = {}\nleaf_server_cert = {}\n\
                 leaf_server_key = {}\nleaf_pid_file = {}\n",
                q(leaf.client_cert),
                q(leaf.client_key),
                q(leaf.server_cert),
                q(leaf.server_key),
                q(leaf.pid_file),
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(renewal: Option<AgentRenewal<'a>>) -> AgentConfigInput<'a> {
        AgentConfigInput {
            site_slug: "lab",
            tenant_slug: "acme",
            gateway_url: "https://gw:50051",
            listen: None,
            cert: "/s/agent.pem",
            key: "/s/agent-key.pem",
            ca: "/s/root-ca.pem",
            leaf_url: "tls://127.0.0.1:4222",
            leaf_ca: "/s/ca-chain.pem",
            edge_buffer: "/s/edge-buffer.json",
            tenant_id: "t",
            site_id: "s",
            agent_id: "a",
            renewal,
        }
    }

    #[test]
    fn a_bundle_has_no_renewal_table_and_an_enrolled_box_has_one_no_input_can_escape() {
        assert!(!agent_config_toml(&input(None)).contains("[renewal]"));
        let hostile = "x\"\nevil = \"1";
        let text = agent_config_toml(&input(Some(AgentRenewal {
            host_fingerprint: hostile,
            status_file: "/s/agent-status.json",
            leaf: Some(LeafRenewalFiles {
                client_cert: "/s/leaf-client.pem",
                client_key: "/s/leaf-client-key.pem",
                server_cert: "/s/leaf-server.pem",
                server_key: "/s/leaf-server-key.pem",
                pid_file: "/s/nats-leaf.pid",
            }),
        })));
        let parsed: toml::Table = text.parse().expect("valid TOML");
        let renewal = parsed["renewal"].as_table().expect("[renewal]");
        assert_eq!(renewal["host_fingerprint"].as_str(), Some(hostile));
        assert_eq!(renewal["leaf_pid_file"].as_str(), Some("/s/nats-leaf.pid"));
        assert!(!renewal.contains_key("evil") && !parsed.contains_key("evil"));
        assert_eq!(parsed["status_file"].as_str(), Some("/s/agent-status.json"));
    }

    #[test]
    fn a_listening_agent_has_a_listen_address_and_no_gateway_url() {
        let text = agent_config_toml(&AgentConfigInput {
            listen: Some("0.0.0.0:50061"),
            ..input(None)
        });
        let parsed: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(parsed["listen"].as_str(), Some("0.0.0.0:50061"));
        assert!(!parsed.contains_key("gateway_url"), "{text}");
    }
}
