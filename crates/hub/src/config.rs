//! The hub side: `nats-hub.conf` for the operator's hub `nats-server`, with the
//! hub's server certificate (issued by the platform root), the root CA, and the
//! operator, system, leaf authorization and tenant account JWTs preloaded
//! (`serviceradar-core admin hub-config --out DIR`).

use std::path::{Path, PathBuf};

use serviceradar_natsconf::{HubConfigInput, TlsFiles, config_checksum, render_hub_config};
use serviceradar_pki::issue_platform_server;
use serviceradar_store::Store;

use serviceradar_identity::{Pki, write_secret_file};

use crate::HubError;
use crate::error::{identity, store as store_error};

/// File names written by [`write_hub_config`].
pub mod names {
    /// The hub config.
    pub const CONFIG: &str = "nats-hub.conf";
    /// Hub server certificate followed by the root.
    pub const SERVER_CERT: &str = "hub-server.pem";
    /// Hub server key (0600).
    pub const SERVER_KEY: &str = "hub-server-key.pem";
    /// Platform root CA (what leaf client certificates must chain to).
    pub const ROOT_CA: &str = "root-ca.pem";
}

/// Default client port of the hub. Not 4222: that is a site leaf's default
/// client port, and a hub and a leaf may share a machine.
pub const DEFAULT_CLIENT_PORT: u16 = 4322;
/// Default leafnode port of the hub (what sites dial).
pub const DEFAULT_LEAFNODE_PORT: u16 = 7422;
/// Default monitoring port of the hub. Not 8222: that is a site leaf's.
pub const DEFAULT_MONITORING_PORT: u16 = 8322;

/// Listeners, hosts and directories of the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// `server_name`.
    pub server_name: String,
    /// DNS names / IPs leaves dial (SANs of the hub server certificate).
    pub hosts: Vec<String>,
    /// Client listener `host:port`.
    pub client_listen: String,
    /// Leafnode listener `host:port`.
    pub leafnode_listen: String,
    /// Monitoring listener `host:port` (`None` disables it).
    pub monitoring_listen: Option<String>,
    /// JetStream store directory (default `<out>/jetstream`).
    pub jetstream_store_dir: Option<String>,
    /// Account resolver directory (default `<out>/accounts`).
    pub resolver_dir: Option<String>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            server_name: "sr-hub".into(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            client_listen: format!("0.0.0.0:{DEFAULT_CLIENT_PORT}"),
            leafnode_listen: format!("0.0.0.0:{DEFAULT_LEAFNODE_PORT}"),
            monitoring_listen: Some(format!("127.0.0.1:{DEFAULT_MONITORING_PORT}")),
            jetstream_store_dir: None,
            resolver_dir: None,
        }
    }
}

/// What [`write_hub_config`] wrote.
#[derive(Debug, Clone)]
pub struct HubFiles {
    /// Path of `nats-hub.conf`.
    pub config_path: PathBuf,
    /// Checksum of the config.
    pub config_checksum: String,
    /// Number of tenant accounts preloaded.
    pub tenant_accounts: usize,
}

/// Renders the hub config into `out` (created if missing). Every tenant gets
/// its NATS account (created now if it had none) preloaded.
pub async fn write_hub_config(
    store: &Store,
    pki: &Pki,
    opts: &HubOptions,
    out: &Path,
) -> Result<HubFiles, HubError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| HubError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    let out = out.canonicalize().map_err(io("resolving", out))?;
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| HubError::NonUtf8Path { path: p.to_owned() })
    };
    let dir = utf8(&out)?;
    let root = pki
        .root_ca(store)
        .await
        .map_err(identity("loading the platform root CA"))?;
    let server = issue_platform_server(&root, "hub", &opts.hosts, &pki.issue_options())
        .map_err(HubError::IssueCertificate)?;
    let (operator, sys) = pki
        .operator(store)
        .await
        .map_err(identity("loading the NATS operator"))?;
    for tenant in store
        .list_tenants()
        .await
        .map_err(store_error("listing tenants"))?
    {
        pki.tenant_account(store, &tenant)
            .await
            .map_err(identity("loading a tenant's NATS account"))?;
    }
    let tenant_jwts = store
        .all_tenant_account_jwts()
        .await
        .map_err(store_error("reading the tenant account JWTs"))?;
    let mut accounts = vec![
        pki.system_account_jwt(store)
            .await
            .map_err(identity("signing the system account JWT"))?,
        pki.leaf_auth_account_jwt(store)
            .await
            .map_err(identity("signing the leaf authorization account JWT"))?,
    ];
    let tenant_accounts = tenant_jwts.len();
    accounts.extend(tenant_jwts);

    let cert_path = out.join(names::SERVER_CERT);
    let key_path = out.join(names::SERVER_KEY);
    let root_path = out.join(names::ROOT_CA);
    std::fs::write(&cert_path, server.full_chain_pem()).map_err(io("writing", &cert_path))?;
    write_secret_file(&key_path, server.key_pem.as_bytes())
        .map_err(identity("writing the hub server key"))?;
    std::fs::write(&root_path, root.cert_pem()).map_err(io("writing", &root_path))?;

    let operator_jwt = operator.operator_jwt().map_err(|source| HubError::Jwt {
        what: "signing the operator JWT",
        source,
    })?;
    let mut input = HubConfigInput::new(
        &operator_jwt,
        &sys.public_key(),
        accounts,
        TlsFiles::new(&utf8(&cert_path)?, &utf8(&key_path)?, &utf8(&root_path)?),
    );
    input.server_name = opts.server_name.clone();
    input.client_listen = opts.client_listen.clone();
    input.leafnode_listen = opts.leafnode_listen.clone();
    input.monitoring_listen = opts.monitoring_listen.clone();
    input.jetstream_store_dir = opts
        .jetstream_store_dir
        .clone()
        .unwrap_or_else(|| format!("{dir}/jetstream"));
    input.resolver_dir = opts
        .resolver_dir
        .clone()
        .unwrap_or_else(|| format!("{dir}/accounts"));
    for dir in [&input.jetstream_store_dir, &input.resolver_dir] {
        std::fs::create_dir_all(dir).map_err(io("creating", Path::new(dir)))?;
    }
    let config = render_hub_config(&input).map_err(HubError::RenderConfig)?;
    let config_path = out.join(names::CONFIG);
    std::fs::write(&config_path, &config).map_err(io("writing", &config_path))?;
    Ok(HubFiles {
        config_path,
        config_checksum: config_checksum(&config),
        tenant_accounts,
    })
}
