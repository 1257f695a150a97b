//! `bench-device-auth`: what the device authorization callout at a site
//! leaf costs a connecting device. Devices connect (mutual TLS, `CONNECT`,
//! first `PING`/`PONG`) to the site's leaf, whose config hands every client
//! to the callout that `serviceradar-agent` serves beside it; compared in
//! the same run with the same leaf config without the callout (static
//! authentication: any certificate of the tenant CA gets in), as a second
//! `nats-server` on another port.
//!
//! Everything is the product's own path: a tenant and site provisioned with
//! `--leaf-device-auth`, the bundle installed with its `setup.sh --prefix`
//! (the agent binary beside it makes the callout keys), the hub from
//! `admin hub-config`'s code, devices registered and certified for their own
//! CSRs, the registry pushed to the hub's `SR_DEVICES` bucket by ingestion's
//! code, and the release `serviceradar-agent` binary run with the bundle's
//! `agent.toml`, which copies the registry to the leaf and answers the
//! callout.
//!
//! Two figures: connect latency (connections one at a time, alternating
//! between the two leaves so both see the same load; the added p99 is the
//! difference of the p99s) and connects per second (`--concurrency`
//! connectors for `--seconds` per leaf, one leaf after the other).
//!
//! The connecting devices (`--client`): by default each device is a
//! minimal NATS client holding its TLS configuration in memory, as a
//! device's long-running process does (TCP, `INFO`, TLS 1.3 with its
//! certificate, `CONNECT` + `PING`, wait for `PONG`). `--client async-nats`
//! connects with `async_nats::connect` instead, which reads and parses the
//! CA, certificate and key files on tokio's blocking pool on every connect:
//! that load generator spends about a quarter of the two cores on each
//! connect, which the leaves under test then do not get.
//!
//! ```text
//! cargo build --release -p serviceradar-agent
//! cargo run --release -p serviceradar-bench --bin bench-device-auth
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serviceradar_domain::TenantScope;
use serviceradar_domain::device::{DeviceLimits, DeviceName};
use serviceradar_identity::write_secret_file;
use serviceradar_server::app::Settings;
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, free_port};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

mod common;

use common::{
    HubPorts, ephemeral_pki, install_site_with_agent, multi_thread_runtime, parse, percentile, say,
    start_bench, start_hub, tenant_with_identity,
};

const WAIT: Duration = Duration::from_secs(60);

/// Device connect benchmark (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "bench-device-auth", about, long_about = None)]
struct Args {
    /// Measured connects per leaf, one at a time (latency).
    #[arg(long, default_value_t = 2000)]
    connects: usize,
    /// Unmeasured connects per leaf first.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Registered devices (connects go round-robin over them).
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Concurrent connectors for the rate figure.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds per leaf for the rate figure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The `serviceradar-agent` binary (default: beside this one).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// How devices connect (see the module docs).
    #[arg(long, value_enum, default_value_t = Client::Minimal)]
    client: Client,
}

/// The connecting device's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Client {
    /// The NATS handshake over TLS, with a TLS configuration built once.
    Minimal,
    /// `async_nats::connect`, which loads its TLS files on every connect.
    AsyncNats,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connects == 0 || args.devices == 0 || args.concurrency == 0 || args.seconds == 0 {
        bail!("--connects, --devices, --concurrency and --seconds must be at least 1");
    }
    start_bench(None);
    let runtime = multi_thread_runtime()?;
    runtime.block_on(run(&args))
}

/// A device's certificate chain and key on disk, and the TLS client
/// configuration made of them (with the tenant CA as the only root).
#[derive(Clone)]
struct DeviceFiles {
    cert: PathBuf,
    key: PathBuf,
    tls: Arc<rustls::ClientConfig>,
}

impl DeviceFiles {
    fn new(ca: &Path, cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for root in CertificateDer::pem_file_iter(ca)? {
            roots.add(root?)?;
        }
        let chain = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&key)?)?;
        Ok(Self {
            cert,
            key,
            tls: Arc::new(tls),
        })
    }
}

/// An open, admitted connection; closed when dropped.
#[allow(dead_code)] // held only to be dropped
enum Connection {
    Minimal(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    AsyncNats(async_nats::Client),
}

/// The agent process; killed when dropped.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let agent_bin = match &args.agent {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary's directory")?
            .join("serviceradar-agent"),
    };
    if !agent_bin.is_file() {
        bail!(
            "{} is missing: cargo build --release -p serviceradar-agent (or pass --agent)",
            agent_bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let ports = HubPorts::free();
    let (leaf_port, static_port) = (free_port(), free_port());

    // Control plane state: tenant, site with device authorization.
    let url = format!("sqlite://{}", dir.join("core.db").display());
    let store = Store::connect(&url, 4).await?;
    store.migrate().await?;
    let pki = ephemeral_pki()?;
    let mut settings = Settings::new(&url);
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", ports.hub_leaf);
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    settings.provisioning.leaf_device_auth = true;
    // No gateway in this run: the agent keeps retrying it, which is fine.
    settings.provisioning.gateway_url = format!("https://127.0.0.1:{}", free_port());
    let tenant = tenant_with_identity(&store, &pki, "acme", "Acme").await?;
    let installed = install_site_with_agent(
        dir,
        &store,
        &pki,
        &settings,
        &tenant,
        "bench",
        leaf_port,
        Some(&agent_bin),
    )
    .await?;
    let conf_dir = installed
        .config
        .parent()
        .context("installed config in a directory")?
        .to_path_buf();
    let prefix = dir.join("edge-bench");
    let ca = installed.root.join("certs/ca-chain.pem");

    // The hub; leaves join it through the leaf authorization callout.
    let (hub, _files, _) = start_hub(&store, &pki, dir, &ports).await?;
    let _leaf_auth = common::start_leaf_auth(&store, &pki, ports.hub_client).await?;

    // Devices, certified for their own CSRs; the registry on the hub.
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let certs = dir.join("devices");
    std::fs::create_dir_all(&certs)?;
    let mut device_files = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let device = scoped
            .create_device(
                installed.site.id,
                &parse(DeviceName::parse(&format!("device-{i}")))?,
                DeviceLimits::DEFAULT,
            )
            .await?;
        let (key, csr) = serviceradar_pki::new_key_and_request("device")?;
        let request = serviceradar_pki::CertificateRequest::from_pem(&csr)?;
        let cert = pki
            .issue_device_certificate(&store, &device, &request, Duration::from_secs(86_400))
            .await?;
        let (cert_file, key_file) = (
            certs.join(format!("{i}.pem")),
            certs.join(format!("{i}-key.pem")),
        );
        std::fs::write(&cert_file, &cert.certificate_pem)?;
        write_secret_file(&key_file, key.as_bytes())?;
        device_files.push((cert_file, key_file));
    }
    let devices = device_files
        .into_iter()
        .map(|(cert, key)| DeviceFiles::new(&ca, cert, key))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("the devices' TLS configurations")?;
    let registry_creds = dir.join("registry.creds");
    let creds = pki
        .user_creds(
            &store,
            &tenant,
            "bench-registry",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await?;
    write_secret_file(&registry_creds, creds.as_str().as_bytes())?;
    let hub_client = async_nats::ConnectOptions::with_credentials_file(registry_creds)
        .await?
        .connect(format!("nats://127.0.0.1:{}", ports.hub_client))
        .await
        .context("a tenant user connects to the hub")?;
    let synced = serviceradar_ingest::sync_device_registry(&store, &hub_client, &tenant, 1).await?;
    say(format!(
        "{synced} devices registered and in the hub's registry"
    ));

    // The leaf with the callout, and its twin without it.
    let leaf = NatsServer::start_file(&prefix, "leaf", &installed.config, leaf_port)
        .context("starting the leaf")?;
    let static_conf = conf_dir.join("nats-leaf-static.conf");
    std::fs::write(
        &static_conf,
        static_twin(
            &std::fs::read_to_string(&installed.config)?,
            leaf_port,
            static_port,
        )?,
    )?;
    let static_leaf = NatsServer::start_file(&prefix, "leaf-static", &static_conf, static_port)
        .context("starting the static-auth twin of the leaf")?;

    // The agent, as its unit starts it.
    let agent_log = dir.join("agent.log");
    let log = std::fs::File::create(&agent_log)?;
    let _agent = Agent(
        std::process::Command::new(prefix.join("usr/local/bin/serviceradar-agent"))
            .arg("--config")
            .arg(conf_dir.join("agent.toml"))
            .env("SERVICERADAR_AGENT_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the agent")?,
    );
    let deadline = Instant::now() + WAIT;
    loop {
        match connect(args.client, leaf_port, &ca, &devices[0]).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => bail!(
                "no device was admitted through the callout ({e}); agent log:\n{}\nleaf log:\n{}\nhub log:\n{}",
                std::fs::read_to_string(&agent_log).unwrap_or_default(),
                leaf.log(),
                hub.log()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    if connect(args.client, static_port, &ca, &devices[0])
        .await
        .is_err()
    {
        bail!("the static twin refused a device:\n{}", static_leaf.log());
    }
    say("the callout admits the site's devices; measuring");

    // Latency: one connect at a time, alternating.
    let sides = [("callout", leaf_port), ("static", static_port)];
    let mut samples = [Vec::new(), Vec::new()];
    for i in 0..args.warmup + args.connects {
        let files = &devices[i % devices.len()];
        for (n, (_, port)) in sides.iter().enumerate() {
            let started = Instant::now();
            let client = connect(args.client, *port, &ca, files)
                .await
                .with_context(|| format!("connect {i} to the {} leaf", sides[n].0))?;
            let elapsed = started.elapsed();
            drop(client);
            if i >= args.warmup {
                samples[n].push(elapsed.as_secs_f64() * 1e3);
            }
        }
    }
    let mut stats = [(0.0, 0.0); 2];
    for (n, s) in samples.iter_mut().enumerate() {
        s.sort_by(f64::total_cmp);
        stats[n] = (percentile(s, 0.5), percentile(s, 0.99));
    }

    // Rate: concurrent connectors, one leaf after the other.
    let mut rates = [0.0; 2];
    for (n, (_, port)) in sides.iter().enumerate() {
        let (count, failed) = rate(
            args.client,
            *port,
            &ca,
            &devices,
            args.concurrency,
            args.seconds,
        )
        .await;
        if failed > 0 {
            say(format!(
                "{failed} connects to the {} leaf failed",
                sides[n].0
            ));
        }
        rates[n] = count as f64 / args.seconds as f64;
    }

    println!(
        "\n| leaf | connects | median | p99 | connects/s ({} at once) |\n|---|---:|---:|---:|---:|",
        args.concurrency
    );
    for (n, (name, _)) in sides.iter().enumerate() {
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.0} |",
            samples[n].len(),
            stats[n].0,
            stats[n].1,
            rates[n]
        );
    }
    let added = stats[0].1 - stats[1].1;
    println!(
        "\nadded by the callout: median {:+.2} ms, p99 {:+.2} ms; rate {:.2}x of static auth",
        stats[0].0 - stats[1].0,
        added,
        rates[0] / rates[1]
    );
    common::Figure::plain(
        "device connects through the callout",
        rates[0],
        "connects/s",
    )
    .against("static auth", rates[1])
    .target(">= 1,000 connects/s", rates[0] >= 1000.0)
    .emit();
    common::Figure::plain("device connect: p99 added by the callout", added, "ms")
        .target("< 5 ms", added < 5.0)
        .emit();
    drop(static_leaf);
    drop(leaf);
    drop(hub);
    Ok(())
}

/// The same leaf config without the callout include, on `static_port`, with
/// its own name, JetStream store and domain, and no monitoring listener.
fn static_twin(conf: &str, port: u16, static_port: u16) -> anyhow::Result<String> {
    let mut out = String::with_capacity(conf.len());
    let mut replaced_port = false;
    for line in conf.lines() {
        let trimmed = line.trim();
        let line = if trimmed == "include \"device-auth.conf\"" || trimmed.starts_with("http:") {
            continue;
        } else if trimmed == format!("port: {port}") {
            replaced_port = true;
            line.replace(&port.to_string(), &static_port.to_string())
        } else if trimmed.starts_with("server_name:")
            || trimmed.starts_with("store_dir:")
            || trimmed.starts_with("domain:")
        {
            // `key: "value"` -> `key: "value-static"`
            match line.rfind('"') {
                Some(end) => format!("{}-static{}", &line[..end], &line[end..]),
                None => line.to_owned(),
            }
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    if !replaced_port {
        bail!("the leaf config has no `port: {port}` line");
    }
    Ok(out)
}

/// Connects as `files`' device to the leaf on `port`; returns once the
/// leaf has admitted it (`PONG` to the first `PING`).
async fn connect(
    client: Client,
    port: u16,
    ca: &Path,
    files: &DeviceFiles,
) -> anyhow::Result<Connection> {
    match client {
        Client::AsyncNats => Ok(Connection::AsyncNats(
            async_nats::ConnectOptions::new()
                .require_tls(true)
                .add_root_certificates(ca.to_path_buf())
                .add_client_certificate(files.cert.clone(), files.key.clone())
                .connection_timeout(Duration::from_secs(5))
                .connect(format!("tls://127.0.0.1:{port}"))
                .await?,
        )),
        Client::Minimal => tokio::time::timeout(Duration::from_secs(5), minimal(port, files))
            .await
            .context("connect timed out")?
            .map(|tls| Connection::Minimal(Box::new(tls))),
    }
}

/// The client side of a NATS connect over TLS, as every client library
/// does it: the server's `INFO` in the clear, the TLS handshake, then
/// `CONNECT` and `PING`; the server answers `PONG` once the connection is
/// authorized (here: once the callout admitted it) or `-ERR`.
async fn minimal(
    port: u16,
    files: &DeviceFiles,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true,\
        \"lang\":\"rust\",\"version\":\"bench\",\"protocol\":1,\"headers\":true,\
        \"no_responders\":true}\r\nPING\r\n";
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let mut plain = tokio::io::BufReader::new(tcp);
    let mut line = String::new();
    plain.read_line(&mut line).await?;
    if !line.starts_with("INFO ") {
        bail!("expected INFO, got {line:?}");
    }
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = tokio_rustls::TlsConnector::from(files.tls.clone())
        .connect(name, plain.into_inner())
        .await?;
    tls.write_all(CONNECT).await?;
    let mut reader = tokio::io::BufReader::new(tls);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("the leaf closed the connection");
        }
        if line.starts_with("PONG") {
            return Ok(reader.into_inner());
        }
        if line.starts_with("-ERR") {
            bail!("refused: {}", line.trim_end());
        }
    }
}

/// Connects (and drops) as fast as `concurrency` connectors can for
/// `seconds`; returns the connects made and failed.
async fn rate(
    client: Client,
    port: u16,
    ca: &Path,
    devices: &[DeviceFiles],
    concurrency: usize,
    seconds: u64,
) -> (u64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let (done, failed) = (done.clone(), failed.clone());
        let ca = ca.to_path_buf();
        let devices = devices.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < deadline {
                match connect(client, port, &ca, &devices[i % devices.len()]).await {
                    Ok(client) => {
                        if Instant::now() <= deadline {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(client);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += concurrency;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    // Let the closed connections go before the next leaf is measured.
    tokio::time::sleep(Duration::from_secs(1)).await;
    (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_twin_drops_the_callout_and_moves_port_name_and_store() {
        let conf = "server_name: \"leaf-a-b\"\ninclude \"device-auth.conf\"\nhost: \"127.0.0.1\"\n\
                    port: 4222\nhttp: \"127.0.0.1:8222\"\njetstream {\n  store_dir: \"/x/js\"\n  \
                    domain: \"sr-a-b\"\n}\n";
        let twin = static_twin(conf, 4222, 5222).unwrap();
        assert!(!twin.contains("device-auth.conf") && !twin.contains("http:"));
        assert!(twin.contains("port: 5222\n"));
        assert!(twin.contains("server_name: \"leaf-a-b-static\""));
        assert!(twin.contains("store_dir: \"/x/js-static\""));
        assert!(twin.contains("domain: \"sr-a-b-static\""));
        assert!(static_twin(conf, 9999, 5222).is_err());
    }

    /// The minimal client counts a connect only when the server admits it:
    /// against a real `nats-server` with mutual TLS it gets `PONG` when the
    /// connection is authorized, and an error (never a success) when the
    /// server refuses it after the handshake, or when the server's
    /// certificate is not one the device trusts.
    #[tokio::test]
    async fn the_minimal_client_succeeds_only_when_the_server_admits_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let issuer = |cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.self_signed(&key).unwrap();
            (rcgen::Issuer::new(params, key), cert)
        };
        let (ca, ca_cert) = issuer("bench test CA");
        let (_, stranger_cert) = issuer("another CA");
        let leaf = |sans: Vec<String>, name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            std::fs::write(path(&format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(path(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        };
        leaf(vec!["127.0.0.1".into()], "server");
        leaf(Vec::new(), "device");
        std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(path("stranger.pem"), stranger_cert.pem()).unwrap();
        let device = |ca: &str| {
            DeviceFiles::new(&path(ca), path("device.pem"), path("device-key.pem")).unwrap()
        };
        let server = |name: &str, extra: &str| {
            let port = free_port();
            let conf = format!(
                "host: \"127.0.0.1\"\nport: {port}\ntls {{\n  cert_file: \"server.pem\"\n  \
                 key_file: \"server-key.pem\"\n  ca_file: \"ca.pem\"\n  verify: true\n}}\n{extra}"
            );
            (
                NatsServer::start(dir.path(), name, &conf, port).unwrap(),
                port,
            )
        };

        let (_open, port) = server("open", "");
        let ok = connect(Client::Minimal, port, &path("ca.pem"), &device("ca.pem")).await;
        assert!(ok.is_ok(), "{:?}", ok.err());
        let untrusted = connect(
            Client::Minimal,
            port,
            &path("ca.pem"),
            &device("stranger.pem"),
        )
        .await;
        assert!(untrusted.is_err(), "a server the device does not trust");

        let (_closed, port) = server("closed", "authorization { token: \"s3cret\" }\n");
        let refused = connect(Client::Minimal, port, &path("ca.pem"), &device("ca.pem")).await;
        let error = refused.err().expect("refused").to_string();
        assert!(error.contains("Authorization Violation"), "{error}");
    }
}
