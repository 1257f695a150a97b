//! `bench-gateway`: the agent gateway under many agents, and the agent's
//! idle footprint (BENCHMARKS.md).
//!
//! `bench-gateway scale --agents N`:
//!
//! 1. starts a private PostgreSQL and the real [`Application`] with its
//!    gateway in this process; seeds N sites, each with its own agent
//!    certificate issued by the tenant CA (so N distinct mTLS identities);
//! 2. starts a minimal tonic echo server (same TLS settings, handlers that do
//!    nothing) in this process as the ceiling;
//! 3. for each server in turn, runs a **separate load process**
//!    (`bench-gateway load`, the same binary) that connects all N agents
//!    (mTLS handshake + `Hello`), has each push one status every
//!    `--interval-ms` (the 30 s of production, compressed) for
//!    `--duration-secs`, then drops every connection and reconnects all of
//!    them at once (reconnect storm);
//! 4. prints a Markdown table: agents held, pushes/s, p50/p99 push latency,
//!    errors, storm absorb time, and the server process's RSS and CPU.
//!
//! `bench-gateway agent --agent-bin target/release/serviceradar-agent`:
//! starts a real leaf-like `nats-server` with monitoring, the control plane
//! with its gateway, and the real agent binary with its default checks
//! (leaf checker every 30 s, pushes every 30 s); after a warm-up it samples
//! the agent's RSS and CPU over `--measure-secs`.
//!
//! ```text
//! cargo build --release -p serviceradar-server --bin bench-gateway -p serviceradar-agent
//! target/release/bench-gateway scale --agents 10000
//! target/release/bench-gateway agent --agent-bin target/release/serviceradar-agent
//! ```

use std::io::{BufRead, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serviceradar_domain::TenantScope;
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_gateway::GatewayTls;
use serviceradar_pki::{SiteRef, TenantRef, issue_agent};
use serviceradar_proto::v1::agent_gateway_client::AgentGatewayClient;
use serviceradar_proto::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use serviceradar_proto::v1::{
    CheckResult, GetConfigRequest, GetConfigResponse, HelloRequest, HelloResponse,
    PushResultsResponse, PushStatusRequest, PushStatusResponse, ResultsChunk,
};
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::NewSite;
use serviceradar_store::health::AgentCert;
use serviceradar_testkit::PgCluster;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server};

mod common;

use common::multi_thread_runtime;

#[derive(Parser, Debug)]
#[command(name = "bench-gateway", about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Gateway scale vs a tonic echo server.
    Scale {
        /// Simulated agents.
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Push interval of each agent (production: 30000).
        #[arg(long, default_value_t = 5_000)]
        interval_ms: u64,
        /// Length of the steady phase.
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
    },
    /// Load process (started by `scale`).
    Load {
        /// Identities file (JSON lines).
        #[arg(long)]
        identities: PathBuf,
        /// Root CA file.
        #[arg(long)]
        ca: PathBuf,
        /// Server port.
        #[arg(long)]
        port: u16,
        /// Push interval.
        #[arg(long)]
        interval_ms: u64,
        /// Steady phase length.
        #[arg(long)]
        duration_secs: u64,
    },
    /// A config change to every agent of a tenant, each holding a control
    /// stream: how long until 99% acknowledged it, and the gateway's memory
    /// per connected agent.
    ConfigAck {
        /// Simulated agents.
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Run the gateway as before issue 18's batching (each stream reads
        /// its config and writes its acknowledgement on its own), to compare
        /// with in the same sitting.
        #[arg(long)]
        one_by_one: bool,
    },
    /// Hold process (started by `config-ack`): every agent holds a control
    /// stream and acknowledges each config; runs until stdin closes.
    Hold {
        /// Identities file (JSON lines).
        #[arg(long)]
        identities: PathBuf,
        /// Root CA file.
        #[arg(long)]
        ca: PathBuf,
        /// Server port.
        #[arg(long)]
        port: u16,
    },
    /// The agent's idle footprint.
    Agent {
        /// The release `serviceradar-agent` binary.
        #[arg(long)]
        agent_bin: PathBuf,
        /// Warm-up before measuring.
        #[arg(long, default_value_t = 10)]
        warmup_secs: u64,
        /// Measuring window.
        #[arg(long, default_value_t = 60)]
        measure_secs: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct IdentityLine {
    cert: String,
    key: String,
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct LoadReport {
    agents: usize,
    held: usize,
    connect_secs: f64,
    pushes: u64,
    pushes_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    storm_secs: f64,
    storm_retries: u64,
    load_rss_mib: f64,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = multi_thread_runtime()?;
    runtime.block_on(async {
        match args.command {
            Cmd::Scale {
                agents,
                interval_ms,
                duration_secs,
            } => scale(agents, interval_ms, duration_secs).await,
            Cmd::Load {
                identities,
                ca,
                port,
                interval_ms,
                duration_secs,
            } => {
                let report = load(&identities, &ca, port, interval_ms, duration_secs).await?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
            Cmd::ConfigAck { agents, one_by_one } => config_ack(agents, one_by_one).await,
            Cmd::Hold {
                identities,
                ca,
                port,
            } => hold(&identities, &ca, port).await,
            Cmd::Agent {
                agent_bin,
                warmup_secs,
                measure_secs,
            } => agent_footprint(&agent_bin, warmup_secs, measure_secs).await,
        }
    })
}

fn proc_status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A server that answers every call immediately: the ceiling.
struct Echo;

#[tonic::async_trait]
impl AgentGateway for Echo {
    type ControlStreamStream = std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = Result<serviceradar_proto::v1::ControlMessage, tonic::Status>,
                > + Send,
        >,
    >;
    async fn control_stream(
        &self,
        _: tonic::Request<tonic::Streaming<serviceradar_proto::v1::AgentMessage>>,
    ) -> Result<tonic::Response<Self::ControlStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not measured"))
    }
    async fn renew_certificates(
        &self,
        _: tonic::Request<serviceradar_proto::v1::RenewRequest>,
    ) -> Result<tonic::Response<serviceradar_proto::v1::RenewResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not measured"))
    }
    async fn leaf_refusal(
        &self,
        _: tonic::Request<serviceradar_proto::v1::LeafRefusalRequest>,
    ) -> Result<tonic::Response<serviceradar_proto::v1::LeafRefusalResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not measured"))
    }
    async fn hello(
        &self,
        _: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloResponse>, tonic::Status> {
        Ok(tonic::Response::new(HelloResponse::default()))
    }
    async fn get_config(
        &self,
        _: tonic::Request<GetConfigRequest>,
    ) -> Result<tonic::Response<GetConfigResponse>, tonic::Status> {
        Ok(tonic::Response::new(GetConfigResponse::default()))
    }
    async fn push_status(
        &self,
        r: tonic::Request<PushStatusRequest>,
    ) -> Result<tonic::Response<PushStatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(PushStatusResponse {
            accepted: u32::try_from(r.get_ref().results.len()).unwrap_or(0),
        }))
    }
    async fn push_results(
        &self,
        _: tonic::Request<tonic::Streaming<ResultsChunk>>,
    ) -> Result<tonic::Response<PushResultsResponse>, tonic::Status> {
        Ok(tonic::Response::new(PushResultsResponse::default()))
    }
}

/// A served application with N seeded sites, each with its own agent
/// certificate (written to `ids_path` for the load process).
struct Seeded {
    cluster: PgCluster,
    database: String,
    store: serviceradar_store::Store,
    pki: Arc<serviceradar_identity::Pki>,
    settings: Settings,
    gateway_port: u16,
    http_port: u16,
    server: common::Served,
    ids_path: PathBuf,
    ca_path: PathBuf,
}

async fn seed(
    dir: &Path,
    agents: usize,
    gateway: impl FnOnce(&mut serviceradar_gateway::GatewaySettings),
) -> anyhow::Result<Seeded> {
    eprintln!("starting PostgreSQL");
    let cluster = PgCluster::start(false).context("starting PostgreSQL")?;
    let url = cluster.create_database();
    let database = url.rsplit('/').next().unwrap_or_default().to_owned();
    let mut settings = Settings::new(url);
    gateway(&mut settings.gateway);
    settings.gateway_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings.job_workers = 0;
    settings.database_max_connections = 32;
    settings.health.sweep_interval = Duration::from_secs(3600);
    let app = Application::build(settings.clone()).await?;
    let store = app.store().clone();
    let pki = app.pki().clone();
    let gateway_port = app.gateway_port().context("gateway")?;
    let http_port = app.port();
    let server = common::Served::start(app);

    // N sites, each with its own agent certificate.
    eprintln!("seeding {agents} sites and agent certificates");
    let seeded = Instant::now();
    let tenant = store.tenant_by_slug("default").await?;
    let ca = pki.tenant_ca(&store, &tenant).await?;
    let root = pki.root_ca(&store).await?;
    let ids_path = dir.join("identities.jsonl");
    let ca_path = dir.join("root-ca.pem");
    std::fs::write(&ca_path, root.cert_pem())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ids_path)?);
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    for i in 0..agents {
        let slug = format!("site-{i}");
        let (site, _) = scoped
            .create_site(
                &NewSite {
                    name: DisplayName::parse(&slug)?,
                    slug: Slug::parse(&slug)?,
                    nats_leaf_url: NatsUrl::parse("nats://127.0.0.1:4222")?,
                    upstream_url: settings.provisioning.hub_leafnode_url.clone(),
                    local_listen: ListenAddr::parse("127.0.0.1:4222")?,
                },
                None,
            )
            .await?;
        let agent_id = uuid::Uuid::now_v7();
        let cert = issue_agent(
            &ca,
            TenantRef::of(&tenant),
            SiteRef::of(&site),
            agent_id,
            &pki.issue_options(),
        )?;
        scoped
            .store_agent_cert(
                site.id,
                &AgentCert {
                    agent_id,
                    cert_pem: cert.cert_pem.clone(),
                    key_sealed: Vec::from(&b"bench: key not stored"[..]),
                    cert_serial: cert.serial_hex.clone(),
                    cert_expires_at: i64::MAX,
                },
            )
            .await?;
        serde_json::to_writer(
            &mut out,
            &IdentityLine {
                cert: format!("{}{}", cert.cert_pem, ca.cert_pem()),
                key: cert.key_pem.to_string(),
            },
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    eprintln!("seeded in {:.1}s", seeded.elapsed().as_secs_f64());
    Ok(Seeded {
        cluster,
        database,
        store,
        pki,
        settings,
        gateway_port,
        http_port,
        server,
        ids_path,
        ca_path,
    })
}

async fn scale(agents: usize, interval_ms: u64, duration_secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Seeded {
        cluster,
        store,
        pki,
        settings,
        gateway_port,
        server,
        ids_path,
        ca_path,
        ..
    } = seed(dir.path(), agents, |_| {}).await?;
    // The same gateway writing every push in its call (the code before
    // write-behind), on its own port over the same store.
    let through = serviceradar_gateway::Gateway::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        store.clone(),
        pki.clone(),
        Arc::new(serviceradar_gateway::GatewaySettings {
            status_flush_every: None,
            ..settings.gateway.clone()
        }),
        serviceradar_health::Health::new(store.clone(), Arc::new(settings.health.clone())),
    )
    .await?;
    let through_port = through.local_addr()?.port();
    let (through_stop_tx, through_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let through = tokio::spawn(through.serve(async move {
        let _ = through_stop_rx.await;
    }));

    // The echo ceiling, same TLS.
    let tls = GatewayTls::issue(&store, &pki, &["localhost".into(), "127.0.0.1".into()]).await?;
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_port = echo_listener.local_addr()?.port();
    let echo_tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &tls.cert_chain_pem,
            tls.key_pem.as_bytes(),
        ))
        .client_ca_root(Certificate::from_pem(&tls.client_root_pem));
    let (echo_stop_tx, echo_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let echo = tokio::spawn(
        Server::builder()
            .tls_config(echo_tls)?
            .add_service(AgentGatewayServer::new(Echo))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(echo_listener),
                async move {
                    let _ = echo_stop_rx.await;
                },
            ),
    );

    let me = std::process::id();
    let mut rows = Vec::new();
    for (name, port) in [
        ("tonic echo (ceiling)", echo_port),
        ("agent gateway, one write per push (before)", through_port),
        ("agent gateway, write-behind (after)", gateway_port),
    ] {
        eprintln!("load against {name}");
        let rss_before = proc_status_kib(me, "VmRSS:") / 1024.0;
        let cpu_before = cpu_secs(me);
        let started = Instant::now();
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .args(["load", "--port", &port.to_string()])
            .arg("--identities")
            .arg(&ids_path)
            .arg("--ca")
            .arg(&ca_path)
            .args(["--interval-ms", &interval_ms.to_string()])
            .args(["--duration-secs", &duration_secs.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // Sample our RSS while the load runs.
        let mut peak_rss: f64 = 0.0;
        let stdout = child.stdout.take().context("stdout")?;
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut s = String::new();
            let mut stdout = stdout;
            let _ = stdout.read_to_string(&mut s).await;
            s
        });
        loop {
            peak_rss = peak_rss.max(proc_status_kib(me, "VmRSS:") / 1024.0);
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "load process failed: {status}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let text = reader.await?;
        let report: LoadReport =
            serde_json::from_str(text.trim()).with_context(|| format!("load output: {text}"))?;
        let cpu = (cpu_secs(me) - cpu_before) / started.elapsed().as_secs_f64();
        rows.push((name, report, rss_before, peak_rss, cpu));
    }
    let _ = echo_stop_tx.send(());
    let _ = echo.await;
    let _ = through_stop_tx.send(());
    let _ = through.await;
    let _ = server.stop().await;

    println!(
        "\n{agents} agents, push every {interval_ms} ms for {duration_secs} s, 2 cores shared by server, load process and PostgreSQL\n"
    );
    println!(
        "| server | agents held | connect all (s) | pushes/s | p50 push (ms) | p99 push (ms) | max (ms) | errors | storm absorb (s) | storm retries | server RSS peak (MiB) | server CPU (cores) | load RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r, _before, peak, cpu) in &rows {
        println!(
            "| {name} | {}/{} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.1} | {} | {:.0} | {:.2} | {:.0} |",
            r.held,
            r.agents,
            r.connect_secs,
            r.pushes_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.storm_secs,
            r.storm_retries,
            peak,
            cpu,
            r.load_rss_mib
        );
    }
    if let [(_, echo, ..), (_, before, ..), (_, gw, _, peak, _)] = &rows[..] {
        common::Figure::plain(
            format!("gateway, {agents} agents: p99 push"),
            gw.p99_ms,
            "ms",
        )
        .against("tonic echo p99", echo.p99_ms)
        .target("< 50 ms", gw.p99_ms < 50.0)
        .emit();
        common::Figure::plain(
            format!("gateway, {agents} agents: p99 push, write-behind"),
            gw.p99_ms,
            "ms",
        )
        .against("one write per push p99", before.p99_ms)
        .target("< 50 ms", gw.p99_ms < 50.0)
        .emit();
        common::Figure::plain(
            format!("gateway, {agents} agents: held"),
            gw.held as f64,
            "agents",
        )
        .target(format!("= {agents}"), gw.held == gw.agents)
        .emit();
        common::Figure::plain("gateway server RSS peak", *peak, "MiB")
            .target("< 1024 MiB", *peak < 1024.0)
            .emit();
        println!(
            "\ngateway/echo: pushes/s {:.0}%, p99 {:.1}x, storm {:.1}x",
            100.0 * gw.pushes_per_sec / echo.pushes_per_sec.max(1e-9),
            gw.p99_ms / echo.p99_ms.max(1e-9),
            gw.storm_secs / echo.storm_secs.max(1e-9)
        );
    }
    drop(cluster);
    Ok(())
}

/// Every agent holds a control stream; one config change through the API
/// to all of them (`POST /api/v1/agent-checks/apply`); 99% acknowledged
/// within N s.
async fn config_ack(agents: usize, one_by_one: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let seeded = seed(dir.path(), agents, |gateway| {
        if one_by_one {
            gateway.status_flush_every = None;
            gateway.batch_config_reads = false;
        }
    })
    .await?;
    let me = std::process::id();
    // Let the seeding's garbage settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = proc_status_kib(me, "VmRSS:");
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["hold", "--port", &seeded.gateway_port.to_string()])
        .arg("--identities")
        .arg(&seeded.ids_path)
        .arg("--ca")
        .arg(&seeded.ca_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let held: HoldReport = serde_json::from_str(
        &lines
            .next_line()
            .await?
            .context("the hold process ended early")?,
    )?;
    eprintln!(
        "{}/{agents} agents hold a control stream ({:.1} s)",
        held.held, held.connect_secs
    );
    // Every stream acknowledged its first config.
    let acks = |extra: &str| {
        seeded
            .cluster
            .psql(
                &seeded.database,
                &format!("COPY (SELECT agent_id, version, acked_at FROM agent_config_acks {extra}) TO STDOUT"),
            )
            .map_err(|e| anyhow::anyhow!("psql: {e}"))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let first_version = loop {
        let text = acks("")?;
        let rows: Vec<&str> = text.lines().collect();
        if rows.len() >= held.held {
            break rows
                .first()
                .and_then(|r| r.split('\t').nth(1))
                .unwrap_or_default()
                .to_owned();
        }
        anyhow::ensure!(Instant::now() < deadline, "only {} first acks", rows.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = proc_status_kib(me, "VmRSS:");
    let per_agent_kib = (rss_held - rss_before) / held.held.max(1) as f64;

    // The change: one check added to every agent of the tenant, in one
    // call (`POST /api/v1/agent-checks/apply`, which pushes each agent its
    // config on its stream).
    let token = serviceradar_control::tokens::create_token_for(
        &seeded.store,
        "default",
        "admin@example.com",
        "bench",
        &[serviceradar_domain::policy::Scope::Write],
        1,
    )
    .await
    .context("minting the API token")?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let started_ms = serviceradar_store::now_ms();
    let reply = client
        .post(format!(
            "http://127.0.0.1:{}/api/v1/agent-checks/apply",
            seeded.http_port
        ))
        .bearer_auth(token)
        .json(
            &serde_json::json!({ "set": [{ "name": "bench", "kind": "tcp",
            "target": "127.0.0.1:9", "interval_secs": 30, "timeout_ms": 1000 }] }),
        )
        .send()
        .await?;
    let api_status = reply.status();
    let applied: serde_json::Value = reply.json().await.unwrap_or_default();
    let api_errors = usize::from(api_status != 200);
    eprintln!("apply: {api_status} {applied}");
    let issue_secs = started.elapsed().as_secs_f64();
    let want = (held.held as f64 * 0.99).ceil() as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (all_secs, rows) = loop {
        let text = acks(&format!(
            "WHERE version <> '{first_version}' AND acked_at >= {started_ms}"
        ))?;
        let n = text.lines().count();
        if n >= want || Instant::now() > deadline {
            break (started.elapsed().as_secs_f64(), text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(child.stdin.take());
    let _ = child.kill().await;
    let mut latency: Vec<f64> = rows
        .lines()
        .filter_map(|r| {
            let acked: i64 = r.split('\t').nth(2)?.parse().ok()?;
            Some((acked - started_ms) as f64 / 1000.0)
        })
        .collect();
    latency.sort_by(f64::total_cmp);
    let acked = latency.len();
    let p = |q: f64| common::percentile(&latency, q);
    println!(
        "\n{agents} agents holding a control stream; one check added to every agent of the tenant with one API call (POST /api/v1/agent-checks/apply); gateway {}; 2 cores shared by server, hold process and PostgreSQL\n",
        if one_by_one {
            "one by one (each stream reads its config and writes its ack: before)"
        } else {
            "batched (config reads batched, acks written behind: after)"
        }
    );
    println!(
        "| agents held | API call (s) | API errors | acked | 99% acked after (s) | per agent: p50 / p99 / max call→ack (s) | gateway RSS per agent (KiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {}/{agents} | {issue_secs:.1} | {api_errors} | {acked} | {all_secs:.1} | {:.2} / {:.2} / {:.2} | {per_agent_kib:.1} |",
        held.held,
        p(0.5),
        p(0.99),
        latency.last().copied().unwrap_or(0.0)
    );
    common::Figure::plain(
        format!("config change to {agents} agents: 99% acked"),
        all_secs,
        "s",
    )
    .target("< 5 s", all_secs < 5.0 && acked >= want)
    .emit();
    common::Figure::plain("config change: per-agent change→ack p99", p(0.99), "s")
        .target("< 5 s", p(0.99) < 5.0)
        .emit();
    common::Figure::plain("gateway memory per connected agent", per_agent_kib, "KiB")
        .target("< 64 KiB", per_agent_kib < 64.0)
        .emit();
    let _ = seeded.server.stop().await;
    drop(seeded.cluster);
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct HoldReport {
    held: usize,
    connect_secs: f64,
}

/// Connects every agent, opens its control stream and acknowledges every
/// config it is sent; reports once all are held; ends when stdin closes.
async fn hold(identities: &Path, ca: &Path, port: u16) -> anyhow::Result<()> {
    use serviceradar_proto::v1::agent_message::Body;
    use serviceradar_proto::v1::control_message::Body as ControlBody;
    use serviceradar_proto::v1::{AgentMessage, ConfigAck};
    let endpoints = endpoints(identities, ca, port)?;
    let agents = endpoints.len();
    let started = Instant::now();
    let (clients, _) = connect_all(&endpoints, 256).await;
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut opened = Vec::new();
    for mut client in clients {
        let sem = sem.clone();
        opened.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.ok()?;
            let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(4);
            tx.try_send(AgentMessage {
                claim: Some(Default::default()),
                body: None,
            })
            .ok()?;
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            request.set_timeout(Duration::from_secs(86_400));
            let mut inbound = client.control_stream(request).await.ok()?.into_inner();
            drop(permit);
            tokio::spawn(async move {
                while let Ok(Some(m)) = inbound.message().await {
                    if let Some(ControlBody::Config(c)) = m.body {
                        let ack = AgentMessage {
                            claim: None,
                            body: Some(Body::ConfigAck(ConfigAck { version: c.version })),
                        };
                        if tx.send(ack).await.is_err() {
                            return;
                        }
                    }
                }
                drop(client);
            });
            Some(())
        }));
    }
    let mut held = 0;
    for t in opened {
        if matches!(t.await, Ok(Some(()))) {
            held += 1;
        }
    }
    let report = HoldReport {
        held,
        connect_secs: started.elapsed().as_secs_f64(),
    };
    eprintln!("hold: {held}/{agents} control streams open");
    println!("{}", serde_json::to_string(&report)?);
    // Until the parent closes stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    Ok(())
}

fn endpoints(identities: &Path, ca: &Path, port: u16) -> anyhow::Result<Vec<Endpoint>> {
    let ca = Certificate::from_pem(std::fs::read(ca)?);
    let file = std::io::BufReader::new(std::fs::File::open(identities)?);
    let mut endpoints = Vec::new();
    for line in file.lines() {
        let id: IdentityLine = serde_json::from_str(&line?)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(Identity::from_pem(id.cert, id.key))
            .domain_name("localhost");
        endpoints.push(
            Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
                .tls_config(tls)?
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(30)),
        );
    }
    Ok(endpoints)
}

async fn connect_one(
    endpoint: &Endpoint,
) -> Result<AgentGatewayClient<tonic::transport::Channel>, tonic::Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = AgentGatewayClient::new(channel);
    client
        .hello(HelloRequest {
            agent_version: "bench".into(),
            ..Default::default()
        })
        .await?;
    Ok(client)
}

async fn connect_all(
    endpoints: &[Endpoint],
    parallel: usize,
) -> (Vec<AgentGatewayClient<tonic::transport::Channel>>, u64) {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let tasks: Vec<_> = endpoints
        .iter()
        .cloned()
        .map(|ep| {
            let sem = sem.clone();
            tokio::spawn(async move {
                let mut retries = 0u64;
                loop {
                    let permit = sem.acquire().await.expect("semaphore");
                    let r = connect_one(&ep).await;
                    drop(permit);
                    match r {
                        Ok(c) => return (c, retries),
                        Err(_) => {
                            retries += 1;
                            let jitter = rand::random::<u64>() % 500;
                            tokio::time::sleep(Duration::from_millis(200 + jitter)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut retries = 0;
    for t in tasks {
        if let Ok((c, r)) = t.await {
            clients.push(c);
            retries += r;
        }
    }
    (clients, retries)
}

async fn load(
    identities: &Path,
    ca: &Path,
    port: u16,
    interval_ms: u64,
    duration_secs: u64,
) -> anyhow::Result<LoadReport> {
    let endpoints = endpoints(identities, ca, port)?;
    let agents = endpoints.len();
    let started = Instant::now();
    let (clients, _) = connect_all(&endpoints, 256).await;
    let connect_secs = started.elapsed().as_secs_f64();
    let held = clients.len();
    eprintln!("load: {held}/{agents} connected in {connect_secs:.1}s");

    // Steady phase.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(duration_secs);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let offset = rand::random::<u64>() % interval_ms.max(1);
                let mut next = tokio::time::Instant::now() + Duration::from_millis(offset);
                loop {
                    tokio::time::sleep_until(next).await;
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    next += Duration::from_millis(interval_ms);
                    let t = Instant::now();
                    let r = client
                        .push_status(PushStatusRequest {
                            claim: None,
                            results: vec![CheckResult {
                                name: "nats-leaf".into(),
                                kind: "tcp".into(),
                                status: "ok".into(),
                                ..Default::default()
                            }],
                            dropped: 0,
                        })
                        .await;
                    match r {
                        Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let load_rss_mib = proc_status_kib(std::process::id(), "VmRSS:") / 1024.0;

    // Reconnect storm: every agent at once (no client-side pacing beyond
    // a retry delay when refused).
    let storm_start = Instant::now();
    let (clients, storm_retries) = connect_all(&endpoints, agents.max(1)).await;
    let storm_secs = storm_start.elapsed().as_secs_f64();
    eprintln!("load: storm {}/{agents} in {storm_secs:.1}s", clients.len());
    Ok(LoadReport {
        agents,
        held,
        connect_secs,
        pushes: lat.len() as u64,
        pushes_per_sec: lat.len() as f64 / duration_secs as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
        errors,
        storm_secs,
        storm_retries,
        load_rss_mib,
    })
}

async fn agent_footprint(agent_bin: &Path, warmup: u64, measure: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A leaf-like nats-server with monitoring for the leaf checker.
    let (client_port, monitor_port) = (
        serviceradar_testkit::free_port(),
        serviceradar_testkit::free_port(),
    );
    let _nats = serviceradar_testkit::NatsServer::start(
        dir.path(),
        "leaf",
        &format!(
            "listen: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\njetstream {{ store_dir: \"{}\" }}\n",
            dir.path().join("js").display()
        ),
        client_port,
    )?;
    let mut settings = Settings::new(format!("sqlite://{}", dir.path().join("core.db").display()));
    settings.gateway_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{monitor_port}"));
    settings.job_workers = 0;
    let app = Application::build(settings.clone()).await?;
    let store = app.store().clone();
    let pki = app.pki().clone();
    let port = app.gateway_port().context("gateway")?;
    let server = common::Served::start(app);
    let tenant = store.tenant_by_slug("default").await?;
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let (site, leaf) = scoped
        .create_site(
            &NewSite {
                name: DisplayName::parse("bench")?,
                slug: Slug::parse("bench")?,
                nats_leaf_url: NatsUrl::parse("nats://127.0.0.1:4222")?,
                upstream_url: settings.provisioning.hub_leafnode_url.clone(),
                local_listen: ListenAddr::parse("127.0.0.1:4222")?,
            },
            None,
        )
        .await?;
    serviceradar_provisioning::provision_leaf(
        &store,
        &pki,
        &settings.provisioning,
        &tenant,
        &site,
        &leaf,
    )
    .await?;
    let bundle = serviceradar_provisioning::build_site_bundle(
        &store,
        &pki,
        &settings.provisioning,
        TenantScope::for_system_task(tenant.id),
        site.id,
    )
    .await?;
    let unpack = dir.path().join("bundle");
    std::fs::create_dir_all(&unpack)?;
    std::fs::write(unpack.join("b.tar.gz"), &bundle.bytes)?;
    let ok = std::process::Command::new("tar")
        .args(["xzf", "b.tar.gz"])
        .current_dir(&unpack)
        .status()?;
    anyhow::ensure!(ok.success(), "tar failed");
    let root = unpack.join(bundle.file_name.trim_end_matches(".tar.gz"));
    // Bundle layout: agent.toml at the root, certs/ beside it.
    let conf = root.join("agent.toml");
    let text = std::fs::read_to_string(&conf)?.replace(
        "https://localhost:50051",
        &format!("https://localhost:{port}"),
    );
    std::fs::write(&conf, text)?;
    let mut agent = tokio::process::Command::new(agent_bin)
        .arg("--config")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = agent.id().context("agent pid")?;
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut peak: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(measure) {
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = (cpu_secs(pid) - cpu0) / t0.elapsed().as_secs_f64();
    let rss_now = proc_status_kib(pid, "VmRSS:");
    let seen = scoped.site(site.id).await?.status;
    let _ = agent.kill().await;
    let _ = server.stop().await;
    println!(
        "\n| agent (release) | RSS now (MiB) | RSS peak (MiB) | CPU (% of one core) | site status |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| default checks (leaf checker + push every 30 s, config poll 30 s) | {:.1} | {:.1} | {:.3} | {seen} |",
        rss_now / 1024.0,
        peak / 1024.0,
        cpu * 100.0
    );
    Ok(())
}
