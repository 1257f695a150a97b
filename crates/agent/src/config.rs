//! Configuration: a TOML file (the site bundle ships `agent.toml`), flags and
//! `SERVICERADAR_AGENT_*` environment variables; flags/env win over the file.
//! Relative paths in the file are relative to the file's directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use serviceradar_proto::v1::{CheckSpec, IdentityClaim};

/// Command line of `serviceradar-agent`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "serviceradar-agent",
    version,
    about = "ServiceRadar edge agent",
    after_help = "Examples:\n  serviceradar-agent --config /etc/serviceradar/nats/agent.toml\n  serviceradar-agent --once --check tcp=127.0.0.1:4222\n\n\
Exit status: 0 stopped by a signal (or --once: every check passed); 1 --once: a check did not pass;\n\
2 bad configuration or runtime failure; 3 the platform refused this agent for good\n\
(its site was deleted or it was revoked) - not retried, and systemd does not restart it."
)]
pub struct Cli {
    /// Config file (TOML), e.g. `/etc/serviceradar/nats/agent.toml`.
    #[arg(long, short, env = "SERVICERADAR_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Agent gateway URL (`https://host:port`).
    #[arg(long, env = "SERVICERADAR_AGENT_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// Agent certificate (PEM, followed by the tenant CA).
    #[arg(long, env = "SERVICERADAR_AGENT_CERT")]
    pub cert: Option<PathBuf>,
    /// Agent private key (PEM).
    #[arg(long, env = "SERVICERADAR_AGENT_KEY")]
    pub key: Option<PathBuf>,
    /// Platform root CA (PEM) the gateway's certificate chains to.
    #[arg(long, env = "SERVICERADAR_AGENT_CA")]
    pub ca: Option<PathBuf>,
    /// Name to verify in the gateway's certificate (default: the URL's host).
    #[arg(long, env = "SERVICERADAR_AGENT_TLS_NAME")]
    pub tls_name: Option<String>,
    /// Extra local check `kind=target` (kinds: nats_leaf, tcp, http, dns, icmp); repeatable.
    #[arg(
        long = "check",
        env = "SERVICERADAR_AGENT_CHECKS",
        value_delimiter = ','
    )]
    pub checks: Vec<String>,
    /// Most results buffered while the gateway is unreachable (oldest dropped first).
    #[arg(long, env = "SERVICERADAR_AGENT_BUFFER")]
    pub buffer: Option<usize>,
    /// Run the local checks (`--check`, `[[checks]]`) once, print them as
    /// JSON lines and exit. Does not contact the gateway, so it changes no
    /// state (the site does not become `active`).
    #[arg(long)]
    pub once: bool,
    /// Renew the enrolled certificates now (new keys, CSRs to the gateway,
    /// files replaced, leaf reloaded), print the new expiry and exit. The
    /// running agent renews by itself at about 2/3 of their lifetime.
    #[arg(long, conflicts_with = "once")]
    pub renew_now: bool,
    /// Gateway-initiated mode: listen here (`host:port`) with mTLS for the
    /// platform gateway's polls instead of dialing out (needs --cert, --key
    /// and --ca; no gateway URL).
    #[arg(
        long,
        env = "SERVICERADAR_AGENT_LISTEN",
        conflicts_with = "gateway_url"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// Log filter (`info`, `debug`, `serviceradar_agent=debug`, ...).
    #[arg(long, env = "SERVICERADAR_AGENT_LOG", default_value = "info")]
    pub log: String,
    /// A one-off task instead of running the agent.
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

/// One-off tasks of `serviceradar-agent`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentCommand {
    /// Device authorization at the site leaf (the auth callout this agent
    /// serves when the installed `nats-leaf.conf` includes `device-auth.conf`).
    #[command(subcommand)]
    DeviceAuth(DeviceAuthCommand),
}

/// `serviceradar-agent device-auth ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeviceAuthCommand {
    /// Generate the callout's keys here (once; kept on later runs) into
    /// `device-auth.seeds` (0600) and write `device-auth.conf`, which the
    /// leaf's config includes. `setup.sh` runs it before `nats-server -t`.
    Init {
        /// Directory of `nats-leaf.conf` (default `/etc/serviceradar/nats`).
        #[arg(long, default_value = "/etc/serviceradar/nats")]
        nats_dir: PathBuf,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    gateway_url: Option<String>,
    /// Gateway-initiated mode: where to listen for the gateway's polls.
    listen: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    tls_name: Option<String>,
    tenant_id: Option<String>,
    site_id: Option<String>,
    /// The site's slug (device certificates name it).
    site_slug: Option<String>,
    agent_id: Option<String>,
    buffer: Option<usize>,
    /// The local leaf's client URL, for creating the site's buffer stream.
    leaf_url: Option<String>,
    /// CA of the leaf's server certificate.
    leaf_ca: Option<PathBuf>,
    /// The buffer stream's definition (the bundle's `streams/edge-buffer.json`).
    edge_buffer: Option<PathBuf>,
    /// Renewal of enrolled certificates (written by `serviceradar-cli agent setup`).
    renewal: Option<FileRenewal>,
    /// Where to write the last gateway contact and renewal (JSON).
    status_file: Option<PathBuf>,
    #[serde(default)]
    checks: Vec<FileCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheck {
    name: Option<String>,
    kind: String,
    target: String,
    interval_secs: Option<u32>,
    timeout_ms: Option<u32>,
}

/// `[renewal]`: present when the box was enrolled with a token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRenewal {
    host_fingerprint: String,
    leaf_client_cert: Option<PathBuf>,
    leaf_client_key: Option<PathBuf>,
    leaf_server_cert: Option<PathBuf>,
    leaf_server_key: Option<PathBuf>,
    leaf_pid_file: Option<PathBuf>,
}

/// Where the gateway is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct GatewayTarget {
    /// URL.
    pub url: String,
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Root CA file.
    pub ca: PathBuf,
    /// Name to verify in the server certificate.
    pub tls_name: Option<String>,
}

/// Effective settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The gateway, unless the agent only runs local checks (`--once`).
    pub gateway: Option<GatewayTarget>,
    /// Identity claims sent with every call (checked against the certificate).
    pub claim: IdentityClaim,
    /// Local checks (in addition to what the gateway configures).
    pub local_checks: Vec<CheckSpec>,
    /// Result buffer bound.
    pub buffer: usize,
    /// The site's buffer stream to create on the local leaf (when the
    /// config names the leaf, its CA and the stream definition).
    pub edge_buffer: Option<crate::buffer::BufferSetup>,
    /// Certificate renewal, when the box was enrolled with a token.
    pub renewal: Option<crate::renew::RenewalSetup>,
    /// Where to write the last gateway contact and renewal.
    pub status_file: Option<PathBuf>,
    /// Gateway-initiated mode: listen for the gateway instead of dialing it.
    pub listen: Option<crate::listen::ListenTarget>,
    /// The device authorization service to run beside the leaf: on when
    /// the `nats-leaf.conf` installed beside the config file includes
    /// `device-auth.conf` (see `device_auth_settings`).
    pub device_auth: Option<crate::device_auth::DeviceAuthSettings>,
}

/// Whether the leaf config `conf` hands client connections to the device
/// authorization service (it includes `device-auth.conf`).
pub fn leaf_uses_device_auth(conf: &str) -> bool {
    let include = format!(
        "include \"{}\"",
        serviceradar_natsconf::leaf::DEVICE_AUTH_INCLUDE
    );
    conf.lines().any(|line| line.trim() == include)
}

/// The device authorization settings of an agent whose config file is in
/// `config_dir`: `None` unless `config_dir/nats-leaf.conf` includes
/// `device-auth.conf`; then the leaf URL, its CA (whose first block is the
/// tenant CA), the agent's certificate and the site's ids must be known.
fn device_auth_settings(
    config_dir: &Path,
    leaf_url: Option<&str>,
    leaf_ca: Option<&Path>,
    gateway: Option<&GatewayTarget>,
    ids: (Option<&str>, Option<&str>, Option<&str>),
) -> anyhow::Result<Option<crate::device_auth::DeviceAuthSettings>> {
    let conf_path = config_dir.join(LEAF_CONFIG_FILE);
    let Ok(conf) = std::fs::read_to_string(&conf_path) else {
        return Ok(None);
    };
    if !leaf_uses_device_auth(&conf) {
        return Ok(None);
    }
    let missing = |what: &str| {
        anyhow::anyhow!(
            "{} hands every client to device authorization, but the agent config lacks {what}: \
             reinstall the site bundle",
            conf_path.display()
        )
    };
    let (tenant, site, slug) = ids;
    let parse = |v: Option<&str>, what: &str| {
        v.ok_or_else(|| missing(what))?
            .parse::<uuid::Uuid>()
            .with_context(|| format!("{what} is not a UUID"))
    };
    let gateway = gateway.ok_or_else(|| missing("gateway_url, cert and key"))?;
    let mut settings = crate::device_auth::DeviceAuthSettings::new(
        leaf_url.ok_or_else(|| missing("leaf_url"))?,
        config_dir,
        parse(tenant, "tenant_id")?,
        parse(site, "site_id")?,
        slug.ok_or_else(|| missing("site_slug"))?,
    );
    settings.client_cert = gateway.cert.clone();
    settings.client_key = gateway.key.clone();
    settings.tenant_ca = leaf_ca.ok_or_else(|| missing("leaf_ca"))?.to_path_buf();
    Ok(Some(settings))
}

/// The leaf's config file name, beside `agent.toml`.
const LEAF_CONFIG_FILE: &str = "nats-leaf.conf";

/// Default check interval (seconds).
pub const DEFAULT_INTERVAL_SECS: u32 = 30;
/// Default check timeout (milliseconds).
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;
/// Default buffer bound.
pub const DEFAULT_BUFFER: usize = 1_000;

/// The kinds of checks the agent knows.
pub const CHECK_KINDS: [&str; 5] = ["nats_leaf", "tcp", "http", "dns", "icmp"];

fn parse_check_flag(raw: &str) -> anyhow::Result<CheckSpec> {
    let (kind, target) = raw
        .split_once('=')
        .with_context(|| format!("check {raw:?} must be kind=target"))?;
    check_spec(None, kind, target, None, None)
}

fn check_spec(
    name: Option<String>,
    kind: &str,
    target: &str,
    interval: Option<u32>,
    timeout: Option<u32>,
) -> anyhow::Result<CheckSpec> {
    anyhow::ensure!(
        CHECK_KINDS.contains(&kind),
        "unknown check kind {kind:?} (known: {})",
        CHECK_KINDS.join(", ")
    );
    anyhow::ensure!(!target.is_empty(), "check {kind} needs a target");
    Ok(CheckSpec {
        name: name.unwrap_or_else(|| format!("{kind}:{target}")),
        kind: kind.to_owned(),
        target: target.to_owned(),
        interval_secs: interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1),
        timeout_ms: timeout.unwrap_or(DEFAULT_TIMEOUT_MS).clamp(100, 60_000),
    })
}

fn resolve(base: Option<&Path>, path: PathBuf) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

impl Settings {
    /// Merges file, flags and env.
    pub fn load(cli: &Cli) -> anyhow::Result<Self> {
        let (file, base) = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let file: FileConfig =
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                (file, path.parent().map(Path::to_path_buf))
            }
            None => (FileConfig::default(), None),
        };
        let base = base.as_deref();
        let mut local_checks = file
            .checks
            .into_iter()
            .map(|c| check_spec(c.name, &c.kind, &c.target, c.interval_secs, c.timeout_ms))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for raw in &cli.checks {
            local_checks.push(parse_check_flag(raw)?);
        }
        let path = |flag: &Option<PathBuf>, file: Option<PathBuf>| {
            flag.clone().or_else(|| file.map(|p| resolve(base, p)))
        };
        let (cert, key, ca) = (
            path(&cli.cert, file.cert),
            path(&cli.key, file.key),
            path(&cli.ca, file.ca),
        );
        let listen = match (cli.listen, file.listen) {
            (Some(addr), _) => Some(addr),
            (None, Some(raw)) => Some(
                raw.parse::<std::net::SocketAddr>()
                    .with_context(|| format!("listen = {raw:?} must be ip:port"))?,
            ),
            (None, None) => None,
        };
        let url = cli.gateway_url.clone().or(file.gateway_url);
        let need = |p: &Option<PathBuf>, what: &str, with: &str| {
            p.clone()
                .with_context(|| format!("--{what} is required with {with}"))
        };
        let listen = match (listen, &url) {
            (Some(_), Some(_)) => anyhow::bail!(
                "listen (gateway-initiated mode) and gateway_url (dial-out) exclude each other"
            ),
            (Some(addr), None) => Some(crate::listen::ListenTarget {
                addr,
                cert: need(&cert, "cert", "listen")?,
                key: need(&key, "key", "listen")?,
                ca: need(&ca, "ca", "listen")?,
            }),
            (None, _) => None,
        };
        let gateway = match url {
            None => None,
            Some(url) => Some(GatewayTarget {
                url,
                cert: need(&cert, "cert", "a gateway URL")?,
                key: need(&key, "key", "a gateway URL")?,
                ca: need(&ca, "ca", "a gateway URL")?,
                tls_name: cli.tls_name.clone().or(file.tls_name),
            }),
        };
        let device_auth = match base {
            Some(dir) => device_auth_settings(
                dir,
                file.leaf_url.as_deref(),
                file.leaf_ca
                    .clone()
                    .map(|p| resolve(Some(dir), p))
                    .as_deref(),
                gateway.as_ref(),
                (
                    file.tenant_id.as_deref(),
                    file.site_id.as_deref(),
                    file.site_slug.as_deref(),
                ),
            )?,
            None => None,
        };
        // The agent's identity files, in either mode (the buffer stream is
        // created on the local leaf with them).
        let identity_files = gateway
            .as_ref()
            .map(|gw| (gw.cert.clone(), gw.key.clone()))
            .or_else(|| listen.as_ref().map(|l| (l.cert.clone(), l.key.clone())));
        let edge_buffer = match (
            file.leaf_url,
            file.leaf_ca,
            file.edge_buffer,
            identity_files.clone(),
        ) {
            (Some(leaf_url), Some(ca), Some(stream), Some((cert, key))) => {
                Some(crate::buffer::BufferSetup {
                    leaf_url,
                    ca: resolve(base, ca),
                    cert,
                    key,
                    stream_json: resolve(base, stream),
                })
            }
            _ => None,
        };
        let renewal = match (file.renewal, identity_files) {
            (Some(r), Some((cert, key))) => {
                let given = [
                    &r.leaf_client_cert,
                    &r.leaf_client_key,
                    &r.leaf_server_cert,
                    &r.leaf_server_key,
                ]
                .iter()
                .filter(|f| f.is_some())
                .count();
                anyhow::ensure!(
                    given == 0 || given == 4,
                    "[renewal] needs all four leaf files (leaf_client_cert, leaf_client_key, \
                     leaf_server_cert, leaf_server_key) or none"
                );
                let pair = |cert: Option<PathBuf>, key: Option<PathBuf>| match (cert, key) {
                    (Some(cert), Some(key)) => Some(crate::renew::KeyPairFiles {
                        cert: resolve(base, cert),
                        key: resolve(base, key),
                    }),
                    _ => None,
                };
                let client = pair(r.leaf_client_cert, r.leaf_client_key);
                let server = pair(r.leaf_server_cert, r.leaf_server_key);
                let leaf = match (client, server) {
                    (Some(client), Some(server)) => Some(crate::renew::LeafFiles {
                        client,
                        server,
                        pid_file: r.leaf_pid_file.map(|p| resolve(base, p)),
                    }),
                    _ => None,
                };
                Some(crate::renew::RenewalSetup {
                    host_fingerprint: r.host_fingerprint,
                    agent: crate::renew::KeyPairFiles { cert, key },
                    leaf,
                })
            }
            (Some(_), None) => {
                anyhow::bail!(
                    "[renewal] needs a gateway URL (dial-out) or listen (gateway-initiated)"
                )
            }
            (None, _) => None,
        };
        Ok(Self {
            listen,
            device_auth,
            status_file: file.status_file.map(|p| resolve(base, p)),
            renewal,
            edge_buffer,
            gateway,
            claim: IdentityClaim {
                tenant_id: file.tenant_id.unwrap_or_default(),
                site_id: file.site_id.unwrap_or_default(),
                agent_id: file.agent_id.unwrap_or_default(),
            },
            local_checks,
            buffer: cli.buffer.or(file.buffer).unwrap_or(DEFAULT_BUFFER).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_flags_parse_and_reject_unknown_kinds() {
        let c = parse_check_flag("tcp=127.0.0.1:22").expect("valid");
        assert_eq!(
            (c.kind.as_str(), c.target.as_str()),
            ("tcp", "127.0.0.1:22")
        );
        assert!(parse_check_flag("smtp=host").is_err());
        assert!(parse_check_flag("tcp").is_err());
        assert!(parse_check_flag("tcp=").is_err());
    }

    #[test]
    fn file_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "gateway_url = \"https://gw:50051\"\ncert = \"certs/agent.pem\"\nkey = \"/abs/key.pem\"\n\
             ca = \"certs/root-ca.pem\"\nsite_id = \"s\"\n[[checks]]\nkind = \"dns\"\ntarget = \"localhost\"\n",
        )
        .expect("write");
        let cli = Cli::parse_from([
            "serviceradar-agent",
            "--config",
            path.to_str().expect("utf8"),
        ]);
        let s = Settings::load(&cli).expect("loads");
        let gw = s.gateway.expect("gateway");
        assert_eq!(gw.cert, dir.path().join("certs/agent.pem"));
        assert_eq!(gw.key, PathBuf::from("/abs/key.pem"));
        assert_eq!(s.claim.site_id, "s");
        assert_eq!(s.local_checks.len(), 1);
        std::fs::write(&path, "unknown = 1\n").expect("write");
        assert!(Settings::load(&cli).is_err(), "unknown keys are rejected");
    }

    #[test]
    fn listen_mode_needs_the_certificates_and_no_gateway_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        let cli = Cli::parse_from([
            "serviceradar-agent",
            "--config",
            path.to_str().expect("utf8"),
        ]);
        let files = "cert = \"agent.pem\"\nkey = \"agent-key.pem\"\nca = \"root-ca.pem\"\n";
        std::fs::write(&path, format!("listen = \"0.0.0.0:50061\"\n{files}")).expect("write");
        let s = Settings::load(&cli).expect("loads");
        let listen = s.listen.expect("listen mode");
        assert_eq!(listen.addr.port(), 50061);
        assert_eq!(listen.ca, dir.path().join("root-ca.pem"));
        assert!(s.gateway.is_none(), "no dial-out");
        std::fs::write(&path, "listen = \"0.0.0.0:50061\"\n").expect("write");
        assert!(Settings::load(&cli).is_err(), "certificates are required");
        std::fs::write(
            &path,
            format!("listen = \"0.0.0.0:50061\"\ngateway_url = \"https://gw:1\"\n{files}"),
        )
        .expect("write");
        assert!(Settings::load(&cli).is_err(), "one mode at a time");
        std::fs::write(&path, format!("listen = \"host:50061x\"\n{files}")).expect("write");
        assert!(Settings::load(&cli).is_err(), "not an address");
    }

    #[test]
    fn renewal_is_configured_by_its_table_with_all_leaf_files_or_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        let cli = Cli::parse_from([
            "serviceradar-agent",
            "--config",
            path.to_str().expect("utf8"),
        ]);
        let base = "gateway_url = \"https://gw:50051\"\ncert = \"certs/agent.pem\"\n\
                    key = \"certs/agent-key.pem\"\nca = \"certs/root-ca.pem\"\n";
        std::fs::write(&path, base).expect("write");
        assert!(
            Settings::load(&cli).expect("loads").renewal.is_none(),
            "a bundle's config"
        );
        std::fs::write(
            &path,
            format!(
                "{base}[renewal]\nhost_fingerprint = \"ab\"\nleaf_client_cert = \"certs/c.pem\"\n\
                 leaf_client_key = \"certs/c-key.pem\"\nleaf_server_cert = \"certs/s.pem\"\n\
                 leaf_server_key = \"certs/s-key.pem\"\nleaf_pid_file = \"/run/leaf.pid\"\n"
            ),
        )
        .expect("write");
        let renewal = Settings::load(&cli)
            .expect("loads")
            .renewal
            .expect("renewal");
        assert_eq!(renewal.agent.cert, dir.path().join("certs/agent.pem"));
        let leaf = renewal.leaf.expect("leaf files");
        assert_eq!(leaf.client.key, dir.path().join("certs/c-key.pem"));
        assert_eq!(leaf.pid_file, Some(PathBuf::from("/run/leaf.pid")));
        std::fs::write(
            &path,
            format!("{base}[renewal]\nhost_fingerprint = \"ab\"\nleaf_client_cert = \"c.pem\"\n"),
        )
        .expect("write");
        assert!(
            Settings::load(&cli).is_err(),
            "half of the leaf files is refused"
        );
        // Gateway-initiated mode renews too (through the polls), the
        // listener's certificate.
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:50061\"\ncert = \"certs/agent.pem\"\n\
             key = \"certs/agent-key.pem\"\nca = \"certs/root-ca.pem\"\n\
             [renewal]\nhost_fingerprint = \"ab\"\n",
        )
        .expect("write");
        let renewal = Settings::load(&cli)
            .expect("loads")
            .renewal
            .expect("renewal in listen mode");
        assert_eq!(renewal.agent.key, dir.path().join("certs/agent-key.pem"));
        std::fs::write(&path, "[renewal]\nhost_fingerprint = \"ab\"\n").expect("write");
        let refused = Settings::load(&cli).expect_err("no identity to renew");
        assert!(refused.to_string().contains("[renewal] needs"), "{refused}");
    }
}
