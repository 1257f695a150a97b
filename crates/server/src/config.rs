//! Configuration of `serviceradar-core`.
//!
//! Every option is a command-line flag with a `SERVICERADAR_*` environment
//! variable beside it (clap reads both), so one definition gives `--help`,
//! env support and defaults. Defaults are the embedded, zero-setup mode:
//! SQLite in the data dir, listening on loopback, and a hub `nats-server`
//! run by `serve` itself (unless `--ingest-nats-url` names an external hub).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serviceradar_domain::Secret;
use serviceradar_domain::validate::{BaseUrl, Host, ListenAddr, NatsUrl};

/// Options shared by every subcommand that touches the database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite://<file>` (embedded default) or
    /// `postgres://user:password@host:port/db`. Defaults to
    /// `sqlite://<data-dir>/serviceradar.db`.
    #[arg(long, env = "SERVICERADAR_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for local state (SQLite file, generated dev master key, the
    /// embedded hub). `serve` and `admin` find it the same way: this flag,
    /// else SERVICERADAR_DATA_DIR, else `$XDG_DATA_HOME/serviceradar`, else
    /// `~/.local/share/serviceradar` (never the current directory).
    #[arg(long, env = "SERVICERADAR_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,

    /// Maximum database connections in the pool.
    #[arg(
        long,
        env = "SERVICERADAR_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub database_max_connections: u32,
}

/// The data dir when neither `--data-dir` nor `SERVICERADAR_DATA_DIR` is
/// given: `$XDG_DATA_HOME/serviceradar`, else `$HOME/.local/share/serviceradar`,
/// else `/var/lib/serviceradar` (a service account without a home). Never the
/// current directory, so commands run from anywhere find the same state.
pub fn default_data_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = from_env("XDG_DATA_HOME") {
        return xdg.join("serviceradar");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".local/share/serviceradar");
    }
    PathBuf::from("/var/lib/serviceradar")
}

impl DatabaseConfig {
    /// The SQLite file of the database URL, or `None` for another backend.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let url = self.url();
        let rest = url.strip_prefix("sqlite:")?;
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        Some(PathBuf::from(path)).filter(|p| !p.as_os_str().is_empty() && path != ":memory:")
    }

    /// The effective database URL.
    pub fn url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("serviceradar.db").display()
            )
        })
    }
}

/// Where the master key that seals private keys comes from, and the trust
/// domain of issued certificates.
#[derive(Debug, Clone, Args)]
pub struct PkiConfig {
    /// File of `<key_id>:<base64 or hex 32-byte key>` lines: the first is the
    /// current master key, later lines are previous keys still accepted for
    /// opening (rotation). Without it (and without SERVICERADAR_MASTER_KEY) a
    /// development key is generated in the data dir on first start.
    #[arg(long, env = "SERVICERADAR_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// The master key text itself (environment only).
    #[arg(
        long,
        env = "SERVICERADAR_MASTER_KEY",
        hide = true,
        hide_env_values = true
    )]
    pub master_key: Option<Secret>,

    /// SPIFFE trust domain of issued certificates.
    #[arg(
        long,
        env = "SERVICERADAR_TRUST_DOMAIN",
        default_value = "serviceradar.io"
    )]
    pub trust_domain: String,
}

impl PkiConfig {
    /// The master key source: file, env text, or the dev key in `data_dir`.
    pub fn source(&self, data_dir: &std::path::Path) -> serviceradar_identity::MasterKeySource {
        use serviceradar_identity::MasterKeySource;
        match (&self.master_key_file, &self.master_key) {
            (Some(path), _) => MasterKeySource::File(path.clone()),
            (None, Some(text)) => {
                MasterKeySource::Text(zeroize::Zeroizing::new(text.expose().to_owned()))
            }
            (None, None) => MasterKeySource::DevFile(data_dir.join("master.key")),
        }
    }
}

impl PkiConfig {
    /// The generated development master key file this config would use
    /// (no `--master-key-file` and no `SERVICERADAR_MASTER_KEY`).
    pub fn dev_key_file(&self, data_dir: &std::path::Path) -> Option<PathBuf> {
        match self.source(data_dir) {
            serviceradar_identity::MasterKeySource::DevFile(path) => Some(path),
            _ => None,
        }
    }
}

/// Options of `serviceradar-core serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseConfig,

    /// Master key and trust domain.
    #[command(flatten)]
    pub pki: PkiConfig,

    /// Ingestion from the hub's JetStream into the database.
    #[command(flatten)]
    pub ingest: IngestConfig,

    /// Monitoring listener rendered into each leaf's config (empty disables it).
    #[arg(
        long,
        env = "SERVICERADAR_LEAF_MONITORING_LISTEN",
        default_value = "127.0.0.1:8222",
        value_parser = listen_or_empty
    )]
    pub leaf_monitoring_listen: String,

    /// Render each leaf's config with device authorization: every client of
    /// the leaf is decided by the auth callout `serviceradar-agent` serves
    /// beside it (`device-auth.conf`, generated at the edge with
    /// `serviceradar-agent device-auth init`, must exist before the leaf starts).
    #[arg(long, env = "SERVICERADAR_LEAF_DEVICE_AUTH")]
    pub leaf_device_auth: bool,

    /// Address for the HTTP API and UI.
    #[arg(long, env = "SERVICERADAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where Prometheus scrapes `/metrics` (its own listener, not the API
    /// port; keep it private). Empty disables it.
    #[arg(
        long,
        env = "SERVICERADAR_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: OptionalAddr,

    /// Internal address ranges webhooks may call (self-hosted installs), e.g.
    /// `10.0.0.0/8`; repeat or comma-separate. Public addresses are always
    /// allowed; loopback, private, link-local and similar ranges only when
    /// listed here.
    #[arg(
        long = "webhook-allow-cidr",
        env = "SERVICERADAR_WEBHOOK_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub webhook_allow_cidrs: Vec<serviceradar_domain::net::IpRange>,

    /// Public base URL of the control plane (shown to users; used for
    /// cookies; written into enrollment tokens, so edge boxes must reach it).
    #[arg(long, env = "SERVICERADAR_PUBLIC_URL", value_parser = base_url)]
    pub public_url: Option<BaseUrl>,

    /// Lifetime of certificates issued to enrolled boxes (`serviceradar-cli
    /// site init`) and of each renewal: `30m`, `12h`, `7d` (1 minute to 365
    /// days). Their agent renews them at about 2/3 of it.
    #[arg(long, env = "SERVICERADAR_ENROLLMENT_CERT_LIFETIME", default_value = "7d",
        value_parser = parse_cert_lifetime)]
    pub enrollment_cert_lifetime: Duration,

    /// Hub leafnode URL that provisioned leaves dial (`tls://host:7422`):
    /// what every site bundle is built with, so use a name or address the
    /// sites can reach. Default: the embedded hub's leafnode port on
    /// 127.0.0.1 (sites on this machine only), or `tls://127.0.0.1:7422`
    /// with an external hub. For a hub cluster give every node's leafnode
    /// URL (repeat or comma-separate): leaves list them all in their remote
    /// and dial another when one fails.
    #[arg(long, env = "SERVICERADAR_HUB_LEAFNODE_URL", value_delimiter = ',',
          action = clap::ArgAction::Append, value_parser = nats_endpoint_or_empty)]
    pub hub_leafnode_url: Vec<String>,

    /// SaaS NATS URL collectors use when not bound to an edge site. Default:
    /// the hub's client URL (the embedded hub's, or `--ingest-nats-url`).
    #[arg(long, env = "SERVICERADAR_SAAS_NATS_URL", value_parser = nats_endpoint)]
    pub saas_nats_url: Option<String>,

    /// The embedded hub (run when `--ingest-nats-url` is empty).
    #[command(flatten)]
    pub hub: EmbeddedHubConfig,

    /// Session lifetime in hours.
    #[arg(long, env = "SERVICERADAR_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: u32,

    /// Mark session cookies `Secure`. Default: yes, unless the public URL
    /// (or, without one, the listen address) is plain `http://` on loopback.
    /// `--secure-cookies` alone means `true`; `--secure-cookies false` turns it off.
    #[arg(long, env = "SERVICERADAR_SECURE_COOKIES", num_args = 0..=1,
          default_missing_value = "true")]
    pub secure_cookies: Option<bool>,

    /// First-start bootstrap: slug of the tenant to create.
    #[arg(long, env = "SERVICERADAR_BOOTSTRAP_TENANT", default_value = "default")]
    pub bootstrap_tenant: String,

    /// First-start bootstrap: e-mail of the owner to create.
    #[arg(
        long,
        env = "SERVICERADAR_ADMIN_EMAIL",
        default_value = "admin@example.com"
    )]
    pub admin_email: String,

    /// First-start bootstrap: owner password (generated and printed once if unset).
    #[arg(long, env = "SERVICERADAR_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,

    /// Number of concurrent job workers in this process (0 disables them).
    #[arg(long, env = "SERVICERADAR_JOB_WORKERS", default_value_t = 2)]
    pub job_workers: usize,

    /// Seconds stopping may take: requests, agent streams and workers are
    /// drained in parallel for at most this long, then aborted (jobs and
    /// ingested batches are retried, nothing is lost).
    #[arg(long, env = "SERVICERADAR_SHUTDOWN_GRACE_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_secs: u64,

    /// Seconds a tenant's ingestion may fail before `/readyz` answers 503
    /// (0: ingestion never affects readiness, e.g. when several replicas
    /// should stay in rotation through a hub outage).
    #[arg(
        long,
        env = "SERVICERADAR_INGEST_UNREADY_AFTER_SECS",
        default_value_t = 60
    )]
    pub ingest_unready_after_secs: u64,

    /// Agent gateway and site health.
    #[command(flatten)]
    pub gateway: GatewayConfig,

    /// How long data is kept.
    #[command(flatten)]
    pub retention: RetentionConfig,

    /// Log format: `pretty` or `json`. Which lines are written follows
    /// `RUST_LOG` (default `info,sqlx=warn,tower_http=info,async_nats=warn`).
    #[arg(long, env = "SERVICERADAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// How long rows are kept before the retention sweep deletes them.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Retention")]
pub struct RetentionConfig {
    /// Days of telemetry (events, metrics, logs, by event time) a tenant
    /// keeps unless it has its own setting (`admin set-retention`).
    #[arg(long, env = "SERVICERADAR_TELEMETRY_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub telemetry_retention_days: u32,
    /// Days finished (done or failed) jobs are kept.
    #[arg(long, env = "SERVICERADAR_JOB_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub job_retention_days: u32,
    /// Days webhook delivery attempts are kept.
    #[arg(long, env = "SERVICERADAR_WEBHOOK_DELIVERY_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub webhook_delivery_retention_days: u32,
    /// Days gateway audit rows and resolved alerts are kept.
    #[arg(long, env = "SERVICERADAR_AUDIT_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub audit_retention_days: u32,
    /// Seconds between retention sweeps (0 disables them).
    #[arg(
        long,
        env = "SERVICERADAR_RETENTION_SWEEP_SECS",
        default_value_t = 3600
    )]
    pub retention_sweep_secs: u64,
}

impl RetentionConfig {
    /// The policy these options describe.
    pub fn policy(&self) -> serviceradar_store::RetentionPolicy {
        let days = |n: u32| std::time::Duration::from_secs(u64::from(n) * 24 * 3600);
        serviceradar_store::RetentionPolicy {
            telemetry_days: self.telemetry_retention_days,
            finished_jobs: days(self.job_retention_days),
            webhook_deliveries: days(self.webhook_delivery_retention_days),
            gateway_audit: days(self.audit_retention_days),
            resolved_alerts: days(self.audit_retention_days),
        }
    }
}

/// Options of the ingestion pipeline (hub JetStream -> database).
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Client URL of an external hub `nats-server` (`nats://host:4322` or
    /// `tls://...`): serviceradar-core ingests from it (as a user of each
    /// tenant's account) and answers its leaf authorization callout. For a
    /// hub cluster give every node's URL (repeat or comma-separate): the
    /// connections move to another node when one dies. Empty (the default):
    /// `serve` runs and supervises an embedded hub itself (see the `--hub-*`
    /// flags) and uses that.
    #[arg(long, env = "SERVICERADAR_INGEST_NATS_URL", value_delimiter = ',',
          action = clap::ArgAction::Append, value_parser = nats_endpoint_or_empty)]
    pub ingest_nats_url: Vec<String>,
    /// Replicas of the tenants' streams on the hub (1 to 5). Default: 3 when
    /// `--ingest-nats-url` names three or more hub servers, else 1.
    #[arg(long, env = "SERVICERADAR_INGEST_STREAM_REPLICAS",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub ingest_stream_replicas: Option<u8>,
    /// CA file to verify a `tls://` hub with.
    #[arg(long, env = "SERVICERADAR_INGEST_NATS_CA")]
    pub ingest_nats_ca: Option<std::path::PathBuf>,
    /// Messages per ingest batch (one database transaction each). Larger
    /// batches amortise each commit; the pipeline holds up to
    /// (writers + 2) x batch size messages unacknowledged.
    #[arg(long, env = "SERVICERADAR_INGEST_BATCH_SIZE",
          default_value_t = serviceradar_ingest::DEFAULT_BATCH_SIZE as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ingest_batch_size: u32,
    /// Ingest batches written at the same time per tenant, each in its own
    /// transaction on its own database connection, so commits overlap. Batches
    /// are acknowledged in order, only once every earlier batch has committed.
    #[arg(long, env = "SERVICERADAR_INGEST_WRITERS",
          default_value_t = serviceradar_ingest::DEFAULT_WRITERS as u32,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub ingest_writers: u32,
    /// Longest wait for a batch to fill, in milliseconds.
    #[arg(long, env = "SERVICERADAR_INGEST_BATCH_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub ingest_batch_timeout_ms: u64,
    /// How long the hub's ingest streams keep messages, in hours (default 7 days).
    #[arg(long, env = "SERVICERADAR_INGEST_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub ingest_retention_hours: u64,
    /// How long each tenant's dead letters (messages ingestion refused, with
    /// why; `GET /api/v1/dead-letters`) are kept on the hub, in days.
    #[arg(long, env = "SERVICERADAR_DEAD_LETTER_RETENTION_DAYS", default_value_t = 14,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub dead_letter_retention_days: u64,
    /// How ingestion reads the tenants' telemetry from the hub: `tenant`
    /// (one hub connection, durable consumer and pipeline per tenant) or
    /// `platform` (one platform account whose stream sources every tenant's
    /// `INGEST` stream: one hub connection, one consumer and one pipeline
    /// with `--ingest-writers` writers for all tenants, plus at most
    /// `--ingest-tenant-connections` short-lived tenant connections).
    #[arg(long, env = "SERVICERADAR_INGEST_MODE", value_enum, default_value_t = serviceradar_ingest::IngestMode::Tenant)]
    pub ingest_mode: serviceradar_ingest::IngestMode,
    /// Platform mode: most tenant connections open at once (stream setup,
    /// site buffers, the device registry, dead letters).
    #[arg(long, env = "SERVICERADAR_INGEST_TENANT_CONNECTIONS",
          default_value_t = serviceradar_ingest::DEFAULT_TENANT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub ingest_tenant_connections: u32,
    /// Platform mode: most messages of one tenant in flight from its stream
    /// into the platform stream, so one tenant's backlog cannot flood the
    /// sourcing.
    #[arg(long, env = "SERVICERADAR_INGEST_TENANT_IN_FLIGHT",
          default_value_t = serviceradar_ingest::DEFAULT_TENANT_IN_FLIGHT as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ingest_tenant_in_flight: u32,
}

impl IngestConfig {
    /// The hub connection ingestion and the leaf authorization callout share,
    /// or `None` when no hub URL is set.
    pub fn hub(&self) -> Option<serviceradar_hub::client::HubEndpoint> {
        let urls = self.hub_urls();
        if urls.is_empty() {
            return None;
        }
        let mut hub = serviceradar_hub::client::HubEndpoint::new(urls.join(","));
        hub.ca_file = self.ingest_nats_ca.clone();
        Some(hub)
    }

    /// The hub's client URLs given (blanks dropped).
    pub fn hub_urls(&self) -> Vec<String> {
        self.ingest_nats_url
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The pipeline settings, or `None` when no hub URL is set.
    pub fn settings(&self) -> Option<serviceradar_ingest::IngestSettings> {
        let mut settings = serviceradar_ingest::IngestSettings::for_hub(self.hub()?);
        if let Some(replicas) = self.ingest_stream_replicas {
            settings.stream_replicas = usize::from(replicas);
        }
        settings.batch_size = self.ingest_batch_size as usize;
        settings.writers = self.ingest_writers as usize;
        settings.batch_timeout = std::time::Duration::from_millis(self.ingest_batch_timeout_ms);
        settings.retention = std::time::Duration::from_secs(self.ingest_retention_hours * 3600);
        settings.dead_letter_retention =
            std::time::Duration::from_secs(self.dead_letter_retention_days * 24 * 3600);
        settings.mode = self.ingest_mode;
        settings.tenant_connections = self.ingest_tenant_connections as usize;
        settings.tenant_in_flight = self.ingest_tenant_in_flight as usize;
        Some(settings)
    }
}

/// The hub `serve` runs itself when no external hub is given
/// (`--ingest-nats-url` empty): a `nats-server` child process under
/// `<data dir>/hub`, from the same config as `admin hub-config`. Its default
/// ports do not clash with a site leaf's (4222 client, 8222 monitoring).
#[derive(Debug, Clone, Args)]
pub struct EmbeddedHubConfig {
    /// The embedded hub's `nats-server` binary: a path, or a name looked up on PATH.
    #[arg(long, env = "SERVICERADAR_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,

    /// Embedded hub: client listener (the control plane connects here; no
    /// TLS, so keep it on loopback or a private network).
    #[arg(
        long,
        env = "SERVICERADAR_HUB_CLIENT_LISTEN",
        default_value = "127.0.0.1:4322",
        value_parser = listen
    )]
    pub hub_client_listen: String,

    /// Embedded hub: leafnode listener (mutual TLS; sites dial it).
    #[arg(
        long,
        env = "SERVICERADAR_HUB_LEAFNODE_LISTEN",
        default_value = "0.0.0.0:7422",
        value_parser = listen
    )]
    pub hub_leafnode_listen: String,

    /// Embedded hub: monitoring listener (no authentication; empty disables it).
    #[arg(
        long,
        env = "SERVICERADAR_HUB_MONITORING_LISTEN",
        default_value = "127.0.0.1:8322",
        value_parser = listen_or_empty
    )]
    pub hub_monitoring_listen: String,

    /// Embedded hub: further DNS names / IPs sites dial (SANs of its
    /// certificate, beside localhost, 127.0.0.1 and the host of
    /// `--hub-leafnode-url`); repeat or comma-separate.
    #[arg(
        long = "hub-host",
        env = "SERVICERADAR_HUB_HOSTS",
        value_delimiter = ',',
        value_parser = host_or_empty
    )]
    pub hub_hosts: Vec<String>,

    /// Embedded hub: how many `nats-server`s, 1 or 3 (up to 7): 3 run a
    /// hub cluster on this machine to try the HA path (node N on every hub
    /// port above plus N, in `<data dir>/hub/node-N`).
    #[arg(long, env = "SERVICERADAR_EMBEDDED_HUB_NODES", default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=7))]
    pub embedded_hub_nodes: u8,

    /// Embedded hub cluster: node 0's route listener (node N: port plus N;
    /// mutual TLS, pinned to the nodes' certificates).
    #[arg(
        long,
        env = "SERVICERADAR_HUB_CLUSTER_LISTEN",
        default_value = "127.0.0.1:6322",
        value_parser = listen
    )]
    pub hub_cluster_listen: String,
}

/// The host of a validated NATS URL, without brackets.
fn url_host(url: &str) -> Option<String> {
    NatsUrl::parse_endpoint(url)
        .ok()
        .map(|url| url.host().to_bare())
}

/// The port of a validated `host:port` listener.
fn listen_port(listen: &str) -> Option<u16> {
    ListenAddr::parse(listen).ok().map(|addr| addr.port())
}

/// The agent gateway (gRPC over mTLS) and site health.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Listen address of the agent gateway (gRPC over mutual TLS; agents
    /// dial it). `0.0.0.0:50051` for agents on other machines; empty
    /// disables it (sites then never become `active`).
    #[arg(
        long,
        env = "SERVICERADAR_GATEWAY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub gateway_listen: OptionalAddr,

    /// Host names / IPs agents use to reach the gateway (its certificate's SANs).
    #[arg(
        long,
        env = "SERVICERADAR_GATEWAY_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1",
        value_parser = host_or_empty
    )]
    pub gateway_hosts: Vec<String>,

    /// Gateway URL written into site bundles' agent config.
    #[arg(
        long,
        env = "SERVICERADAR_GATEWAY_URL",
        default_value = "https://localhost:50051",
        value_parser = gateway_url
    )]
    pub gateway_url: String,

    /// Seconds without agent contact before a site becomes `offline`.
    #[arg(
        long,
        env = "SERVICERADAR_AGENT_OFFLINE_AFTER_SECS",
        default_value_t = 300
    )]
    pub agent_offline_after_secs: u64,

    /// Seconds a site stays offline (or a leaf disconnected) before an alert is raised.
    #[arg(long, env = "SERVICERADAR_ALERT_AFTER_SECS", default_value_t = 600)]
    pub alert_after_secs: u64,

    /// Seconds between health sweeps (offline timeouts, alert rule).
    #[arg(
        long,
        env = "SERVICERADAR_HEALTH_SWEEP_INTERVAL_SECS",
        default_value_t = 15
    )]
    pub health_sweep_interval_secs: u64,

    /// Config poll interval given to agents (seconds).
    #[arg(
        long,
        env = "SERVICERADAR_AGENT_CONFIG_POLL_SECS",
        default_value_t = 30
    )]
    pub agent_config_poll_secs: u32,

    /// Status push interval given to agents (seconds).
    #[arg(
        long,
        env = "SERVICERADAR_AGENT_PUSH_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub agent_push_interval_secs: u32,

    /// Gateway-initiated mode: the endpoint rule, poll interval bounds,
    /// timeouts and backoff.
    #[command(flatten)]
    pub poll: serviceradar_gateway::poller::PollerArgs,
}

impl IngestConfig {
    /// The leaf authorization callout service, on the same hub connection as
    /// ingestion (`--ingest-nats-url`), or `None` when no hub URL is set. Leaves
    /// can only join the hub while some `serviceradar-core` runs it.
    pub fn leaf_auth_settings(&self) -> Option<serviceradar_hub::leaf_auth::LeafAuthSettings> {
        self.hub()
            .map(serviceradar_hub::leaf_auth::LeafAuthSettings::for_hub)
    }
}

/// A listen address, or empty for none.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "" => Ok(Self(None)),
            addr => addr.parse().map(|a| Self(Some(a))),
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (no colour codes when not on a terminal).
    Pretty,
    /// One JSON object per line.
    Json,
}

// The flags' parsers: each value is checked by its domain rule when the
// command line is read, so a typo stops `serve` before it writes anything.
// Repeatable lists accept blanks (an empty environment variable) and drop
// them later.

fn nats_endpoint(text: &str) -> Result<String, String> {
    NatsUrl::parse_endpoint(text.trim())
        .map(|_| text.trim().to_owned())
        .map_err(|e| e.message)
}

fn nats_endpoint_or_empty(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Ok(String::new()),
        url => nats_endpoint(url),
    }
}

fn listen(text: &str) -> Result<String, String> {
    ListenAddr::parse(text.trim())
        .map(|addr| addr.to_string())
        .map_err(|e| e.message)
}

fn listen_or_empty(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Ok(String::new()),
        addr => listen(addr),
    }
}

fn host_or_empty(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Ok(String::new()),
        host => Host::parse(host)
            .map(|h| h.to_bare())
            .map_err(|e| e.message),
    }
}

fn base_url(text: &str) -> Result<BaseUrl, String> {
    BaseUrl::parse(text).map_err(|e| e.message)
}

/// The gateway speaks gRPC over mutual TLS: only `https://` reaches it.
fn gateway_url(text: &str) -> Result<String, String> {
    let url = base_url(text)?;
    if !url.is_https() {
        return Err("must be https:// (agents reach the gateway over mutual TLS)".into());
    }
    Ok(url.to_string())
}

impl ServeConfig {
    /// Whether `serve` runs its own hub (no `--ingest-nats-url`).
    pub fn runs_embedded_hub(&self) -> bool {
        self.ingest.hub_urls().is_empty()
    }

    /// The hub leafnode URL sites dial: `--hub-leafnode-url`, else the
    /// embedded hub's leafnode port on 127.0.0.1, else `tls://127.0.0.1:7422`.
    pub fn effective_hub_leafnode_url(&self) -> String {
        if let Some(url) = self.hub_leafnode_urls().first() {
            return url.clone();
        }
        let port = if self.runs_embedded_hub() {
            listen_port(&self.hub.hub_leafnode_listen)
                .unwrap_or(serviceradar_hub::config::DEFAULT_LEAFNODE_PORT)
        } else {
            serviceradar_hub::config::DEFAULT_LEAFNODE_PORT
        };
        format!("tls://127.0.0.1:{port}")
    }

    /// `--hub-leafnode-url`'s URLs (blanks dropped).
    fn hub_leafnode_urls(&self) -> Vec<String> {
        self.hub_leafnode_url
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The embedded hub's settings, or `None` with an external hub.
    pub fn embedded_hub(&self) -> Option<serviceradar_hub::embedded::EmbeddedHubSettings> {
        if !self.runs_embedded_hub() {
            return None;
        }
        let mut hub =
            serviceradar_hub::embedded::EmbeddedHubSettings::new(self.db.data_dir.join("hub"));
        hub.nats_server = self.hub.nats_server.clone();
        hub.options.client_listen = self.hub.hub_client_listen.clone();
        hub.options.leafnode_listen = self.hub.hub_leafnode_listen.clone();
        hub.options.monitoring_listen =
            Some(self.hub.hub_monitoring_listen.clone()).filter(|m| !m.is_empty());
        hub.nodes = usize::from(self.hub.embedded_hub_nodes);
        hub.cluster_listen = self.hub.hub_cluster_listen.clone();
        let hosts = &mut hub.options.hosts;
        for host in url_host(&self.effective_hub_leafnode_url())
            .into_iter()
            .chain(self.hub.hub_hosts.iter().map(|h| h.trim().to_owned()))
        {
            if !host.is_empty() && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        Some(hub)
    }

    /// The hub's client URL the control plane uses: `--ingest-nats-url`, or
    /// the embedded hub's.
    pub fn hub_client_url(&self) -> String {
        match self.embedded_hub() {
            Some(hub) => hub.client_url(),
            None => self.ingest.hub_urls().join(","),
        }
    }

    /// The server's settings: every service's settings from these flags.
    pub fn settings(&self) -> crate::app::Settings {
        let data_dir = &self.db.data_dir;
        let mut settings = crate::app::Settings::new(self.db.url());
        settings.database_max_connections = self.db.database_max_connections;
        settings.listen = self.listen;
        settings.metrics_listen = self.metrics_listen.0;
        settings.public_url = self.public_url.as_ref().map(BaseUrl::to_string);
        settings.enrollment_cert_validity = self.enrollment_cert_lifetime;
        settings.webhooks = serviceradar_health::webhooks::WebhookSettings {
            allow_internal: self.webhook_allow_cidrs.clone(),
        };
        settings.job_workers = self.job_workers;
        settings.master_key = self.pki.source(data_dir);
        settings.trust_domain = self.pki.trust_domain.clone();
        settings.bootstrap = serviceradar_provisioning::bootstrap::BootstrapSettings {
            tenant: self.bootstrap_tenant.clone(),
            admin_email: self.admin_email.clone(),
            admin_password: self.admin_password.clone(),
        };
        settings.provisioning = serviceradar_provisioning::ProvisioningSettings {
            hub_leafnode_url: self.effective_hub_leafnode_url(),
            saas_nats_url: self.saas_nats_url.clone().unwrap_or_else(|| {
                // One URL: collectors take a single SaaS URL.
                let url = self.hub_client_url();
                url.split(',').next().unwrap_or_default().to_owned()
            }),
            gateway_url: self.gateway.gateway_url.clone(),
            leaf_monitoring_listen: Some(self.leaf_monitoring_listen.clone())
                .filter(|l| !l.is_empty()),
            extra_hub_leafnode_urls: match self.embedded_hub() {
                // An embedded cluster's other nodes: the same host, next ports.
                Some(hub) if self.hub_leafnode_urls().len() <= 1 => {
                    hub.extra_leafnode_urls(&self.effective_hub_leafnode_url())
                }
                _ => self.hub_leafnode_urls().into_iter().skip(1).collect(),
            },
            leaf_device_auth: self.leaf_device_auth,
        };
        settings.sessions = serviceradar_auth::SessionSettings {
            session_hours: self.session_hours,
            secure_cookies: self
                .secure_cookies
                .unwrap_or_else(|| match &self.public_url {
                    Some(url) => !url.is_plain_http_to_loopback(),
                    None => !self.listen.ip().is_loopback(),
                }),
        };
        settings.health = serviceradar_health::HealthSettings {
            agent_offline_after: Duration::from_secs(self.gateway.agent_offline_after_secs),
            alert_after: Duration::from_secs(self.gateway.alert_after_secs),
            sweep_interval: Duration::from_secs(self.gateway.health_sweep_interval_secs.max(1)),
        };
        settings.provision_leaves = true;
        // With the embedded hub, ingestion and the callout use its client URL.
        let mut ingest = self.ingest.clone();
        ingest.ingest_nats_url = vec![self.hub_client_url()];
        settings.ingest = ingest.settings();
        settings.leaf_auth = ingest.leaf_auth_settings();
        settings.embedded_hub = self.embedded_hub();
        settings.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        settings.ingest_stall_unready = Duration::from_secs(self.ingest_unready_after_secs);
        settings.retention = self.retention.policy();
        settings.retention_sweep = (self.retention.retention_sweep_secs > 0)
            .then(|| Duration::from_secs(self.retention.retention_sweep_secs));
        settings.gateway_listen = self.gateway.gateway_listen.0;
        // Its leaf monitoring listener and certificate lifetime are taken
        // from `provisioning` and `enrollment_cert_validity` when it starts.
        settings.gateway = serviceradar_gateway::GatewaySettings {
            hosts: self.gateway.gateway_hosts.clone(),
            agent_config_poll_secs: self.gateway.agent_config_poll_secs,
            agent_push_interval_secs: self.gateway.agent_push_interval_secs,
            poll: self.gateway.poll.settings(),
            ..Default::default()
        };
        settings
    }
}

/// `--enrollment-cert-lifetime`: a lifetime from 1 minute to 365 days.
fn parse_cert_lifetime(text: &str) -> Result<Duration, String> {
    let lifetime = serviceradar_domain::duration::parse(text)?;
    if !(60..=365 * 86_400).contains(&lifetime.as_secs()) {
        return Err("must be from 1m to 365d".into());
    }
    Ok(lifetime)
}
