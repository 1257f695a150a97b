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
    /// The agent gateway URL.
    pub gateway_url: &'a str,
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
}

/// Renders `agent.toml`. Every value is a TOML basic string (JSON string
/// escaping), so no input can add a key.
pub fn agent_config_toml(input: &AgentConfigInput<'_>) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let comment = |s: &str| s.replace(['\n', '\r'], " ");
    format!(
        "# serviceradar-agent configuration for edge site {site}\n\
         # (tenant {tenant}). Identity comes from the certificate; the ids\n\
         # below are claims the gateway checks against it.\n\
         gateway_url = {gateway}\n\
         cert = {cert}\n\
         key = {key}\n\
         ca = {ca}\n\
         # The site's buffer stream, created on the local leaf as soon as it runs.\n\
         leaf_url = {leaf_url}\n\
         leaf_ca = {leaf_ca}\n\
         edge_buffer = {edge_buffer}\n\
         tenant_id = {tenant_id}\n\
         site_id = {site_id}\n\
         agent_id = {agent_id}\n",
        site = comment(input.site_slug),
        tenant = comment(input.tenant_slug),
        gateway = q(input.gateway_url),
        cert = q(input.cert),
        key = q(input.key),
        ca = q(input.ca),
        leaf_url = q(input.leaf_url),
        leaf_ca = q(input.leaf_ca),
        edge_buffer = q(input.edge_buffer),
        tenant_id = q(input.tenant_id),
        site_id = q(input.site_id),
        agent_id = q(input.agent_id),
    )
}
