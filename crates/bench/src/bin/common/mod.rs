//! Pieces the `bench-*` binaries share: a site installed from its bundle, a
//! collector on its leaf, percentiles and small helpers. Each binary includes
//! this module (`mod common;`) and uses what it needs.

#![allow(dead_code)]

/// The allocator `serviceradar-core` runs with (its `main.rs`), so that what
/// these binaries measure in process is what the server does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::{EdgeSite, Tenant};
use serviceradar_domain::validate::{DisplayName, FieldError, ListenAddr, NatsUrl, Slug};
use serviceradar_hub::config::{HubFiles, HubOptions, write_hub_config};
use serviceradar_identity::{Pki, write_secret_file};
use serviceradar_pki::{TenantRef, issue_collector};
use serviceradar_provisioning::{build_site_bundle, provision_leaf};
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::{NewSite, Store};
use serviceradar_testkit::{NatsServer, free_port, wait_for_port};

/// The application serving in the background until [`Served::stop`] (take
/// what you need from it — port, store, PKI — before [`Served::start`]).
pub struct Served {
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    /// Serves `app` on a background task.
    pub fn start(app: Application) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self { stop, server }
    }

    /// Stops the application and waits for it; its outcome.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await.context("the server task")?
    }
}

/// Creates tenant `slug` with its owner `email` / `password`, as
/// `admin create-tenant` does.
pub async fn owner_tenant(
    store: &Store,
    pki: &Pki,
    slug: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<Tenant> {
    serviceradar_provisioning::tenants::create_tenant(
        store,
        pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug,
            name: None,
            owner_email: email,
            owner_password: Some(password),
        },
    )
    .await
    .context("creating the tenant")?;
    Ok(store.tenant_by_slug(slug).await?)
}

/// Loopback ports of the hub `nats-server`.
pub struct HubPorts {
    /// Client port.
    pub hub_client: u16,
    /// Leafnode port.
    pub hub_leaf: u16,
    /// Monitoring port.
    pub hub_monitor: u16,
}

impl HubPorts {
    /// Three free loopback ports.
    pub fn free() -> Self {
        Self {
            hub_client: free_port(),
            hub_leaf: free_port(),
            hub_monitor: free_port(),
        }
    }
}

/// Writes the hub's config from the store (`admin hub-config`'s code) into
/// `dir/hub`, starts the hub on `ports` and waits for its monitoring port.
/// Returns the server, the written files and the hub directory.
pub async fn start_hub(
    store: &Store,
    pki: &Pki,
    dir: &Path,
    ports: &HubPorts,
) -> anyhow::Result<(NatsServer, HubFiles, PathBuf)> {
    let hub_dir = dir.join("hub");
    let files = write_hub_config(
        store,
        pki,
        &HubOptions {
            client_listen: format!("127.0.0.1:{}", ports.hub_client),
            leafnode_listen: format!("127.0.0.1:{}", ports.hub_leaf),
            monitoring_listen: Some(format!("127.0.0.1:{}", ports.hub_monitor)),
            ..HubOptions::default()
        },
        &hub_dir,
    )
    .await?;
    let hub = NatsServer::start_file(&hub_dir, "hub", &files.config_path, ports.hub_client)
        .context("starting the hub nats-server")?;
    wait_for_port(ports.hub_monitor, "hub monitoring", Duration::from_secs(30))?;
    Ok((hub, files, hub_dir))
}

/// A site provisioned with the product's code, its bundle built and
/// installed with `setup.sh --prefix` (no root).
pub struct InstalledSite {
    /// The site.
    pub site: EdgeSite,
    /// The unpacked bundle's root directory.
    pub root: PathBuf,
    /// The installed `nats-leaf.conf`.
    pub config: PathBuf,
}

/// Creates site `slug` of `tenant` (leaf on 127.0.0.1:`leaf_port`, dialing
/// `settings.provisioning.hub_leafnode_url`), provisions it, builds its bundle and
/// installs it below `dir`.
pub async fn install_site(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    settings: &Settings,
    tenant: &Tenant,
    slug: &str,
    leaf_port: u16,
) -> anyhow::Result<InstalledSite> {
    install_site_with_agent(dir, store, pki, settings, tenant, slug, leaf_port, None).await
}

/// [`install_site`] with the `serviceradar-agent` binary `agent` put beside
/// `setup.sh` first (as the README says), which installs it below the
/// prefix (`usr/local/bin`); a site with device authorization needs it.
#[allow(clippy::too_many_arguments)]
pub async fn install_site_with_agent(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    settings: &Settings,
    tenant: &Tenant,
    slug: &str,
    leaf_port: u16,
    agent: Option<&Path>,
) -> anyhow::Result<InstalledSite> {
    let (site, leaf) = store
        .scoped(TenantScope::for_system_task(tenant.id))
        .create_site(
            &NewSite {
                name: parse(DisplayName::parse(slug))?,
                slug: parse(Slug::parse(slug))?,
                nats_leaf_url: parse(NatsUrl::parse(&format!("tls://127.0.0.1:{leaf_port}")))?,
                upstream_url: settings.provisioning.hub_leafnode_url.clone(),
                local_listen: parse(ListenAddr::parse(&format!("127.0.0.1:{leaf_port}")))?,
            },
            None,
        )
        .await?;
    provision_leaf(store, pki, &settings.provisioning, tenant, &site, &leaf).await?;
    let bundle = build_site_bundle(
        store,
        pki,
        &settings.provisioning,
        TenantScope::for_system_task(tenant.id),
        site.id,
    )
    .await
    .map_err(|e| anyhow::anyhow!("building the site bundle: {e}"))?;
    let archive = dir.join(&bundle.file_name);
    std::fs::write(&archive, &bundle.bytes)?;
    run_cmd(
        Command::new("tar")
            .arg("xzf")
            .arg(&archive)
            .arg("-C")
            .arg(dir),
    )?;
    let root = dir.join(bundle.file_name.trim_end_matches(".tar.gz"));
    if !root.is_dir() {
        bail!("bundle root {} missing", root.display());
    }
    if let Some(agent) = agent {
        std::fs::copy(agent, root.join("serviceradar-agent"))
            .with_context(|| format!("copying {} beside setup.sh", agent.display()))?;
    }
    let prefix = dir.join(format!("edge-{slug}"));
    run_cmd(
        Command::new("bash")
            .arg("setup.sh")
            .arg("--prefix")
            .arg(&prefix)
            .arg("--no-start")
            .current_dir(&root),
    )?;
    Ok(InstalledSite {
        site,
        root,
        config: prefix.join("etc/serviceradar/nats/nats-leaf.conf"),
    })
}

/// A client on `tenant`'s leaf at 127.0.0.1:`leaf_port`, authenticated by a
/// collector certificate from the tenant CA (as a collector bundle does),
/// trusting the leaf's server certificate through the bundle's CA chain.
pub async fn collector_client(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    tenant: &Tenant,
    bundle_root: &Path,
    leaf_port: u16,
) -> anyhow::Result<async_nats::Client> {
    let ca = pki.tenant_ca(store, tenant).await?;
    let cert = issue_collector(
        &ca,
        TenantRef::of(tenant),
        uuid::Uuid::now_v7(),
        &pki.issue_options(),
    )?;
    let (cert_path, key_path) = (dir.join("collector.pem"), dir.join("collector-key.pem"));
    std::fs::write(&cert_path, cert.full_chain_pem())?;
    write_secret_file(&key_path, cert.key_pem.as_bytes())?;
    Ok(async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(bundle_root.join("certs/ca-chain.pem"))
        .add_client_certificate(cert_path, key_path)
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("tls://127.0.0.1:{leaf_port}"))
        .await?)
}

/// Runs `cmd`; its output becomes the error when it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The value at fraction `q` of sorted `values` (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A domain parse result as an `anyhow` error.
pub fn parse<T>(r: Result<T, FieldError>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// One figure for the summary table of `serviceradar-bench all`: printed on
/// stdout as one line, `@figure ` and a JSON object, which the runner
/// collects from every benchmark it starts (see `src/main.rs`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    /// What was measured, e.g. `list API (token) 100k sites: rps`.
    pub figure: String,
    /// The measured value.
    pub value: f64,
    /// Its unit (`rps`, `ms`, `µs`, `sites/s`, `%`...).
    pub unit: String,
    /// What it is compared with, from the same run (e.g. `pgbench`), if any.
    pub baseline_name: Option<String>,
    /// The baseline's value.
    pub baseline: Option<f64>,
    /// The target, as text (e.g. `>= 50% of pgbench`).
    pub target: String,
    /// Whether the target was met; `None` where there is no target.
    pub pass: Option<bool>,
}

impl Figure {
    /// A figure without a baseline.
    pub fn plain(figure: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            figure: figure.into(),
            value,
            unit: unit.into(),
            baseline_name: None,
            baseline: None,
            target: String::new(),
            pass: None,
        }
    }

    /// Compared with `baseline` (named `name`) from the same run.
    pub fn against(mut self, name: &str, baseline: f64) -> Self {
        self.baseline_name = Some(name.into());
        self.baseline = Some(baseline);
        self
    }

    /// With a target and whether it was met.
    pub fn target(mut self, target: impl Into<String>, pass: bool) -> Self {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }

    /// `value / baseline`, when there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b != 0.0).map(|b| self.value / b)
    }

    /// Prints the `@figure` line.
    pub fn emit(&self) {
        use std::io::Write as _;
        if let Ok(json) = serde_json::to_string(self) {
            println!("{FIGURE_PREFIX}{json}");
            let _ = std::io::stdout().flush();
        }
    }
}

/// The prefix of a [`Figure`] line.
pub const FIGURE_PREFIX: &str = "@figure ";

/// After a `\copy` of sites and leaves (which bypasses the store): what the
/// store keeps beside them, the leaf status on each site row and each
/// tenant's site count (migration 0021), set as the store would have.
pub const AFTER_SITE_COPY: &str = "UPDATE edge_sites s SET leaf_status = l.status \
     FROM nats_leaf_servers l WHERE l.edge_site_id = s.id; \
     UPDATE tenants t SET site_count = (SELECT COUNT(*) FROM edge_sites s WHERE s.tenant_id = t.id)";

/// `PASS` or `MISS`.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// A key store with an ephemeral master key (nothing outlives the run).
pub fn ephemeral_pki() -> anyhow::Result<Arc<Pki>> {
    Ok(Arc::new(Pki::new(
        serviceradar_identity::MasterKeySource::Ephemeral.load()?,
        serviceradar_pki::DEFAULT_TRUST_DOMAIN,
    )))
}

/// A new tenant `slug` named `name`, with its CA and NATS account.
pub async fn tenant_with_identity(
    store: &Store,
    pki: &Pki,
    slug: &str,
    name: &str,
) -> anyhow::Result<Tenant> {
    let tenant = store
        .create_tenant(
            &parse(Slug::parse(slug))?,
            &parse(DisplayName::parse(name))?,
        )
        .await?;
    pki.ensure_tenant_identity(store, &tenant).await?;
    Ok(tenant)
}

/// The multi-threaded runtime a benchmark runs on.
pub fn multi_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Runs the benchmark `run` on a multi-threaded runtime; exits with status
/// 1 when it missed its target and `fail_on_miss` is set.
pub fn run_to_verdict(
    fail_on_miss: bool,
    run: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<()> {
    let passed = multi_thread_runtime()?.block_on(run)?;
    if fail_on_miss && !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// What a benchmark does first: logs to stderr when the environment
/// variable `log_var` names is set (else nowhere: a benchmark's output is
/// its figures), the ring crypto provider, and the machine summary line.
pub fn start_bench(log_var: Option<&str>) {
    use serviceradar_server::telemetry::init_tracing;
    if log_var.is_some_and(|var| std::env::var_os(var).is_some()) {
        init_tracing(false, std::io::stderr);
    } else {
        init_tracing(false, std::io::sink);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    say(serviceradar_testkit::machine_summary());
}

/// The databases a benchmark runs on (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backends {
    Both,
    Sqlite,
    Postgres,
}

/// Runs `run` (a backend's name and database URL) on SQLite (a file in
/// `dir`), then on PostgreSQL (`database_url`, else a fresh database on a
/// durable private cluster, stopped when this returns), as `backend` says;
/// their results in that order.
pub fn on_backends<T>(
    backend: Backends,
    database_url: Option<&str>,
    dir: &Path,
    mut run: impl FnMut(&'static str, &str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut results = Vec::new();
    if backend != Backends::Postgres {
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        results.push(run("SQLite", &url)?);
    }
    if backend != Backends::Sqlite {
        let (_cluster, url) = match database_url {
            Some(url) => (None, url.to_owned()),
            None => {
                let cluster =
                    serviceradar_testkit::PgCluster::start(true).context("starting PostgreSQL")?;
                say(format!(
                    "started a durable PostgreSQL cluster on 127.0.0.1:{}",
                    cluster.port()
                ));
                let url = cluster.create_database();
                (Some(cluster), url)
            }
        };
        results.push(run("PostgreSQL", &url)?);
    }
    Ok(results)
}

/// `--database-url`, else a fresh database on the test kit's private
/// PostgreSQL cluster.
pub fn database_url_or_fresh(database_url: Option<&str>) -> String {
    match database_url {
        Some(url) => url.to_owned(),
        None => serviceradar_testkit::postgres().create_database(),
    }
}

/// A new browser session of `user` (an hour long); its cookie value.
pub async fn session_cookie(
    store: &Store,
    user: &serviceradar_domain::resources::User,
) -> anyhow::Result<String> {
    let cookie = serviceradar_auth::random_token(32);
    store
        .create_session(
            &serviceradar_auth::sha256_hex(&cookie),
            user,
            &serviceradar_auth::random_token(24),
            serviceradar_store::now_ms() + 3_600_000,
        )
        .await
        .context("a session")?;
    Ok(cookie)
}

/// The leaf authorization callout on the hub at 127.0.0.1:`hub_client`:
/// leaves join the hub through it.
pub async fn start_leaf_auth(
    store: &Store,
    pki: &Arc<Pki>,
    hub_client: u16,
) -> anyhow::Result<serviceradar_hub::leaf_auth::LeafAuthService> {
    Ok(serviceradar_hub::leaf_auth::start(
        store.clone(),
        pki.clone(),
        serviceradar_hub::leaf_auth::LeafAuthSettings::new(format!(
            "nats://127.0.0.1:{hub_client}"
        )),
    )
    .await?)
}

/// Prints `line` prefixed with the binary's name (`[bench-ingest] ...`) and
/// flushes, so progress shows at once when stdout is a pipe.
pub fn say(line: impl AsRef<str>) {
    use std::io::Write as _;
    println!("[{}] {}", env!("CARGO_BIN_NAME"), line.as_ref());
    let _ = std::io::stdout().flush();
}

/// An event of 200 bytes of JSON with sequence number `i`.
pub fn event(i: usize) -> String {
    let head =
        format!(r#"{{"message":"interface eth0 down","severity":"warning","seq":{i},"pad":""#);
    let pad = 200usize.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Publishes `n` events ([`event`]) on `subject`, JetStream-acknowledged (up
/// to 1,000 in flight); returns the stream sequence of the last one.
pub async fn publish_events(
    js: &async_nats::jetstream::Context,
    subject: &str,
    n: usize,
) -> anyhow::Result<u64> {
    let mut acks = Vec::with_capacity(1000);
    let mut last = 0;
    for i in 0..n {
        acks.push(js.publish(subject.to_owned(), event(i).into()).await?);
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                last = ack.await?.sequence;
            }
        }
    }
    for ack in acks {
        last = ack.await?.sequence;
    }
    Ok(last)
}

/// A client of `tenant`'s account on the hub at 127.0.0.1:`port`, as a
/// service user `bench`.
pub async fn tenant_client(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    tenant: &Tenant,
    port: u16,
) -> anyhow::Result<async_nats::Client> {
    let creds = pki
        .user_creds(
            store,
            tenant,
            "bench",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await?;
    connect_with_creds(
        &dir.join(format!("bench-{}.creds", tenant.slug)),
        creds.as_str(),
        port,
    )
    .await
}

/// Writes `creds` to `path` (owner-only) and connects with them to the hub
/// at 127.0.0.1:`port`.
pub async fn connect_with_creds(
    path: &Path,
    creds: &str,
    port: u16,
) -> anyhow::Result<async_nats::Client> {
    write_secret_file(path, creds.as_bytes())?;
    Ok(async_nats::ConnectOptions::with_credentials_file(path)
        .await?
        .connect(format!("nats://127.0.0.1:{port}"))
        .await?)
}

/// Runs `sql` on the database at `url` with `psql`, stopping at the first
/// error (which becomes the error).
pub fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .context("running psql (Debian's postgresql-client)")?;
    if !out.status.success() {
        bail!(
            "psql failed on {sql:.100}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_200_bytes_of_json() {
        for i in [0, 7, 99_999] {
            let e = event(i);
            assert_eq!(e.len(), 200);
            let v: serde_json::Value = serde_json::from_str(&e).unwrap();
            assert_eq!(v["seq"], i);
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
