//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (fantoccini + chromedriver) against the real `serviceradar-core serve`
//! with its embedded hub, and a real site leaf (`nats-server`) started from
//! the bundle the browser downloaded.
//!
//! One browser for the whole binary (2-core machines): the scenarios run in
//! order in one test — sign in; the four wizard steps (slug suggested and
//! checked live, commands per method); the bundle download arriving while
//! the page waited live for provisioning; step 4 and the site list turning
//! "connected" live as the leaf joins the hub (after a leaf with another
//! site's certificate was refused and step 4 showed the hub's reason) (and "disconnected" and back
//! when it is stopped and restarted); filter and search; a viewer seeing no
//! admin controls; an ended session sending the open page to sign-in. Every
//! page passes axe-core with no "serious" or "critical" violations; PNG
//! screenshots (list and detail at 1280 and 390 px) land in
//! `$CARGO_TARGET_TMPDIR/web-ui-screenshots`.
//!
//! A second test (`agent_checks_and_commands_in_a_real_browser`, waiting
//! for the first's browser to close) drives the site page's agent sections
//! with the agent from a site's bundle: a command while it does not run
//! fails clearly, a refused check shows its message next to the field, an
//! added check is acknowledged by the agent, and a command sent from the
//! form turns "succeeded" in the history without a reload.
//!
//! Needs `chromium` and `chromium-driver` (Debian) and `npm ci` in
//! `test-tools/` (axe-core); `scripts/test` installs both. Without Chromium
//! the test says so loudly and passes, so a developer machine without a
//! browser can still run the suite; CI always has it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use serviceradar_testkit::{NatsServer, free_port, wait_for_port};

const PASSWORD: &str = "owner password 123";
const WAIT: Duration = Duration::from_secs(60);

fn which(name: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real server with its embedded hub on free ports, stopped on drop.
struct Serve {
    child: std::process::Child,
    base: String,
    database_url: String,

    dir: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

impl Serve {
    fn start(dir: &Path) -> Self {
        let api = free_port();
        let leaf_monitoring = free_port();
        let gateway = free_port();
        let data_dir = dir.join("data");
        let database_url = format!("sqlite://{}", data_dir.join("serviceradar.db").display());
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let child = Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .args(["--metrics-listen", ""])
            .args(["--data-dir", &data_dir.display().to_string()])
            .args(["--database-url", &database_url])
            .args(["--hub-client-listen", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--hub-leafnode-listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args([
                "--hub-monitoring-listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args([
                "--leaf-monitoring-listen",
                &format!("127.0.0.1:{leaf_monitoring}"),
            ])
            // Its own gateway port: the default (50051) would clash with
            // any other serve on this machine, another test run's included.
            .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
            .args(["--gateway-url", &format!("https://localhost:{gateway}")])
            .env("SERVICERADAR_ADMIN_PASSWORD", PASSWORD)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("serve.out")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.join("serve.err")).expect("stderr file"))
            .spawn()
            .expect("serve starts");
        wait_for_port(api, "serve", WAIT).unwrap_or_else(|e| {
            panic!(
                "serve did not come up: {e}\n{}",
                std::fs::read_to_string(dir.join("serve.err")).unwrap_or_default()
            )
        });
        Self {
            child,
            base: format!("http://127.0.0.1:{api}"),
            database_url,

            dir: dir.to_path_buf(),
        }
    }
}

/// Where screenshots go.
/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

struct Ui {
    client: Client,
    base: String,
    axe: String,
    shots: PathBuf,
}

impl Ui {
    async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!("no {css} on {}: {e}", self.url().await),
        }
    }

    async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Waits until the browser's address contains `part`: after a click
    /// that navigates, an element present on both pages says nothing about
    /// which page is showing.
    async fn wait_for_url(&self, part: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for an address with {part}; at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Evaluates `script` (a function body returning a value) in the page.
    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Waits (without touching the page) until `script` returns true.
    async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// A screenshot at 1280 px and at 390 px wide.
    async fn shots_at_both_widths(&self, name: &str) {
        for (width, height) in [(390u32, 844u32), (1280, 900)] {
            self.client
                .set_window_size(width, height)
                .await
                .expect("window size");
            tokio::time::sleep(Duration::from_millis(150)).await;
            self.shot(&format!("{name}-{width}px")).await;
        }
    }

    /// axe-core on the current page: no serious or critical violations.
    async fn accessible(&self, page: &str) {
        let present = self.eval("return typeof window.axe !== 'undefined';").await;
        if present != Value::Bool(true) {
            self.client
                .execute(&format!("{};return true;", self.axe), vec![])
                .await
                .expect("inject axe-core");
        }
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(r => done(
                   r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' at ' +
                          v.nodes.map(n => n.target.join(' ')).join(', '))
                 ), e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .expect("axe.run");
        let found: Vec<String> = serde_json::from_value(found).expect("violations");
        assert!(
            found.is_empty(),
            "accessibility violations on {page}:\n{}",
            found.join("\n")
        );
    }
}

async fn sign_in(ui: &Ui, tenant: &str, email: &str, password: &str) {
    ui.go("/sign-in").await;
    ui.fill("#tenant", tenant).await;
    ui.fill("#email", email).await;
    ui.fill("#password", password).await;
    ui.click("button[type=submit]").await;
    ui.wait_for_url("/admin/edge-sites").await;
    ui.find("#content h1").await;
}

async fn sign_out(ui: &Ui) {
    ui.click("header form button[type=submit]").await;
    ui.find("#tenant").await;
}

/// One browser at a time in this binary (2-core machines): each test holds
/// this while its Chromium runs.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver and a headless Chromium session downloading into
/// `downloads`; `None` (after saying so loudly) when Chromium is missing.
async fn open_browser(dir: &Path, downloads: &Path, base: &str) -> Option<(Driver, Ui)> {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! web_browser SKIPPED: chromium and chromium-driver are not installed.\n\
             !! Install them (apt-get install -y chromium chromium-driver) or run\n\
             !! scripts/test, which does; CI always runs this test.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return None;
    };
    let axe_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../test-tools/node_modules/axe-core/axe.min.js");
    let axe = std::fs::read_to_string(&axe_path).unwrap_or_else(|e| {
        panic!(
            "axe-core is missing ({}: {e}): run `npm ci` in test-tools/ (scripts/test does)",
            axe_path.display()
        )
    });
    let driver_port = free_port();
    let driver = Driver {
        child: Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
        port: driver_port,
    };
    wait_for_port(driver.port, "chromedriver", WAIT).expect("chromedriver listens");
    let profile = dir.join("chromium-profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
                "safebrowsing.enabled": false,
            },
        }
    });
    let caps = match caps {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session");
    let ui = Ui {
        client,
        base: base.to_string(),
        axe,
        shots: shots_dir(),
    };
    Some((driver, ui))
}

/// Panics with `outcome`'s message and the tail of serve's log.
fn report(outcome: Result<(), String>, serve: &Serve) {
    if let Err(message) = outcome {
        panic!(
            "{message}\nserve stderr (tail):\n{}",
            std::fs::read_to_string(serve.dir.join("serve.err"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_a_real_browser() {
    let _one = ONE_BROWSER.lock().await;
    support::init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads dir");

    let serve = Serve::start(dir);
    let Some((driver, ui)) = open_browser(dir, &downloads, &serve.base).await else {
        return;
    };
    let outcome = scenarios(&ui, &serve, dir, &downloads).await;
    let _ = ui.client.clone().close().await;
    drop(driver);
    report(outcome, &serve);
}

async fn scenarios(ui: &Ui, serve: &Serve, dir: &Path, downloads: &Path) -> Result<(), String> {
    let run = async {
        // --- sign in ---------------------------------------------------------
        ui.go("/").await;
        ui.find("#tenant").await;
        ui.accessible("sign-in").await;
        sign_in(ui, "default", "admin@example.com", PASSWORD).await;
        ui.find(".empty").await;
        ui.shot("01-empty-list").await;
        ui.accessible("empty site list").await;

        // --- wizard step 1: the slug is suggested and checked as one types ----
        ui.click("#create-site").await;
        ui.find("#name").await;
        let leaf_port = free_port();
        ui.fill("#name", "Edge Lab").await;
        ui.wait_until(
            "the slug suggestion and its check",
            "return document.getElementById('slug').value === 'edge-lab' && \
             document.getElementById('slug-status').textContent.includes('available');",
        )
        .await;
        ui.fill("#nats_leaf_url", &format!("nats://127.0.0.1:{leaf_port}"))
            .await;
        ui.accessible("wizard step 1").await;
        ui.shot("02-wizard-name").await;
        ui.click("#create").await;

        // --- step 2: commands per method ----------------------------------
        ui.wait_for_url("/setup/method").await;
        ui.find("ol.steps li[aria-current=step]").await;
        assert!(ui.text("section.card").await.contains("sudo ./setup.sh"));
        ui.click("ul.tabs li:nth-child(2) a").await;
        ui.wait_until(
            "the Docker commands",
            "return document.body.textContent.includes('docker compose up -d');",
        )
        .await;
        ui.accessible("wizard step 2").await;
        ui.shot("03-wizard-method").await;
        ui.click("#to-download").await;

        // --- step 3: the download turns on by itself once provisioned -------
        ui.find("#download").await;
        ui.wait_until(
            "the download to be enabled live",
            "return document.getElementById('download').getAttribute('aria-disabled') === null;",
        )
        .await;
        ui.accessible("wizard step 3").await;
        ui.shot("04-wizard-download").await;
        ui.click("#download").await;
        let bundle = wait_for_download(downloads).await?;
        let site_id = ui
            .url()
            .await
            .split("/admin/edge-sites/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(str::to_string)
            .ok_or("no site id in the URL")?;

        // --- step 4: watch the leaf join the hub without a reload -----------
        ui.click("#to-verify").await;
        ui.find("#verify-leaf").await;
        ui.accessible("wizard step 4").await;
        ui.shot("05-wizard-verify-waiting").await;
        let installed = install_bundle(&bundle, dir)?;
        // A refused leaf first: this site's credentials with another site's
        // certificate. The callout refuses it and step 4 says why, live.
        let decoy = decoy_site_certs(&serve.base, dir).await?;
        let certs = installed
            .parent()
            .ok_or("no config directory")?
            .join("certs");
        let mut originals = Vec::new();
        for file in ["leaf-client.pem", "leaf-client-key.pem"] {
            originals.push((
                file,
                std::fs::read(certs.join(file)).map_err(|e| e.to_string())?,
            ));
            std::fs::copy(decoy.join(file), certs.join(file)).map_err(|e| e.to_string())?;
        }
        let mut refused = start_leaf(&installed, leaf_port)?;
        ui.wait_until(
            "step 4 to show the hub's refusal",
            "const r = document.getElementById('refusal'); \
             return !!r && !r.hidden && r.textContent.includes('The hub refused this site');",
        )
        .await;
        ui.shot("05b-wizard-verify-refused").await;
        refused.kill();
        for (file, bytes) in originals {
            std::fs::write(certs.join(file), bytes).map_err(|e| e.to_string())?;
        }
        let mut leaf = start_leaf(&installed, leaf_port)?;
        ui.wait_until(
            "step 4 to show the leaf connected",
            "return document.getElementById('verify-leaf').textContent.trim() === 'connected' && \
             !document.getElementById('leaf-connected').hidden && \
             document.getElementById('refusal').hidden;",
        )
        .await;
        ui.shot("06-wizard-verify-connected").await;
        // The agent's half of step 4: the bundle's agent (its agent.toml's
        // paths are relative to the unpacked bundle) reports to the gateway,
        // and the page turns to success by itself.
        let agent_binary = PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-core"))
            .with_file_name("serviceradar-agent");
        if !agent_binary.is_file() {
            return Err(format!(
                "{} is missing: build it (cargo build -p serviceradar-agent)",
                agent_binary.display()
            ));
        }
        let unpacked = std::fs::read_dir(dir.join("bundle"))
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.join("agent.toml").is_file())
            .ok_or("no agent.toml in the bundle")?;
        let _agent = Killed(
            Command::new(&agent_binary)
                .arg("--config")
                .arg(unpacked.join("agent.toml"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("agent.err")).map_err(|e| e.to_string())?)
                .spawn()
                .map_err(|e| format!("starting the agent: {e}"))?,
        );
        ui.wait_until(
            "step 4's success once the agent reported",
            "return !document.getElementById('verify-success').hidden && \
             document.querySelector('[data-state=agent]').textContent.includes('reported');",
        )
        .await;
        ui.accessible("wizard step 4, success").await;
        ui.shot("06b-wizard-verify-success").await;

        // --- the list badge follows the hub live ----------------------------
        ui.go("/admin/edge-sites").await;
        let badge = format!("[data-leaf-status=\"{site_id}\"]");
        let badge_is = |word: &str| {
            format!(
                "const b = document.querySelector('{badge}'); return !!b && b.textContent.trim() === '{word}';"
            )
        };
        ui.wait_until("the list badge 'connected'", &badge_is("connected"))
            .await;
        ui.accessible("site list").await;
        ui.shots_at_both_widths("07-list").await;
        leaf.kill();
        ui.wait_until(
            "the list badge 'disconnected' live",
            &badge_is("disconnected"),
        )
        .await;
        leaf = start_leaf(&installed, leaf_port)?;
        ui.wait_until(
            "the list badge 'connected' again live",
            &badge_is("connected"),
        )
        .await;

        // --- detail page ------------------------------------------------------
        ui.go(&format!("/admin/edge-sites/{site_id}")).await;
        ui.find("#leaf-h").await;
        assert!(ui.has("#regenerate").await && ui.has("#delete-site").await);
        ui.accessible("site detail").await;
        ui.shots_at_both_widths("08-detail").await;
        ui.click("#regenerate").await;
        ui.find("#confirm-button").await;
        ui.accessible("regenerate confirmation").await;
        ui.go(&format!("/admin/edge-sites/{site_id}/delete")).await;
        ui.find("#confirm").await;
        ui.accessible("delete confirmation").await;
        for (path, name) in [
            ("/admin/alerts", "alerts"),
            ("/admin/collectors", "collectors"),
            ("/admin/webhooks", "webhooks"),
            ("/admin/users", "users"),
            ("/admin/tokens", "tokens"),
        ] {
            ui.go(path).await;
            ui.find("#content h1").await;
            ui.accessible(name).await;
            ui.shot(&format!("09-{name}")).await;
        }

        // --- filter and search --------------------------------------------
        ui.go("/admin/edge-sites").await;
        ui.fill("#q", "lab").await;
        ui.click("form[role=search] button[type=submit]").await;
        ui.wait_until(
            "the search result",
            "return location.search.includes('name=lab') && \
             document.querySelectorAll('#sites tbody tr').length === 1;",
        )
        .await;
        ui.go("/admin/edge-sites").await;
        ui.fill("#q", "nowhere").await;
        ui.click("form[role=search] button[type=submit]").await;
        ui.wait_until(
            "the empty search result",
            "return document.body.textContent.includes('No site matches this filter');",
        )
        .await;
        ui.go("/admin/edge-sites").await;
        ui.eval("document.getElementById('status').value = 'offline'; return true;")
            .await;
        ui.click("form[role=search] button[type=submit]").await;
        ui.wait_until(
            "the status filter",
            "return location.search.includes('status=offline') && !document.getElementById('sites');",
        )
        .await;
        ui.shot("10-filtered").await;

        // --- keyboard only: Tab reaches the wizard's fields in order, each
        // with a visible focus ring, and Enter submits the step ----------------
        ui.go("/admin/edge-sites/new").await;
        ui.find("#name").await;
        let tab = fantoccini::key::Key::Tab.to_string();
        let mut reached = Vec::new();
        for _ in 0..40 {
            ui.client
                .active_element()
                .await
                .map_err(|e| format!("active element: {e}"))?
                .send_keys(&tab)
                .await
                .map_err(|e| format!("Tab: {e}"))?;
            let focus = ui
                .eval(
                    "const e = document.activeElement; const s = getComputedStyle(e); \
                     return [e.id || e.tagName, s.outlineStyle !== 'none' && s.outlineWidth !== '0px'];",
                )
                .await;
            let id = focus[0].as_str().unwrap_or_default().to_string();
            if ["name", "slug", "nats_leaf_url"].contains(&id.as_str()) {
                if focus[1] != Value::Bool(true) {
                    return Err(format!("no visible focus on #{id}"));
                }
                reached.push(id.clone());
            }
            if id == "nats_leaf_url" {
                break;
            }
        }
        if reached != ["name", "slug", "nats_leaf_url"] {
            return Err(format!(
                "Tab order through the wizard's fields: {reached:?}"
            ));
        }
        // Type and submit with the keyboard alone: back to the name field.
        ui.eval("document.getElementById('name').focus(); return true;")
            .await;
        let active = ui
            .client
            .active_element()
            .await
            .map_err(|e| format!("active element: {e}"))?;
        active
            .send_keys("Keyboard Lab")
            .await
            .map_err(|e| format!("typing: {e}"))?;
        ui.wait_until(
            "the slug suggestion for the typed name",
            "return document.getElementById('slug').value === 'keyboard-lab' && \
             document.getElementById('slug-status').textContent.includes('available');",
        )
        .await;
        ui.fill(
            "#nats_leaf_url",
            &format!("nats://127.0.0.1:{}", free_port()),
        )
        .await;
        ui.find("#nats_leaf_url")
            .await
            .send_keys(&fantoccini::key::Key::Enter.to_string())
            .await
            .map_err(|e| format!("Enter: {e}"))?;
        ui.wait_for_url("/setup/method").await;

        // --- more sites than a page: 50 per page, the next page has the rest --
        let (http, cookie, csrf) = api_session(&serve.base).await?;
        for i in 0..52 {
            let created = http
                .post(format!("{}/api/v1/edge-sites", serve.base))
                .header("cookie", &cookie)
                .header("x-csrf-token", &csrf)
                .json(&json!({"name": format!("Branch {i:02}"), "nats_leaf_url": "nats://10.9.0.1:4222"}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !created.status().is_success() {
                return Err(format!("creating site {i}: {}", created.status()));
            }
        }
        ui.go("/admin/edge-sites").await;
        ui.find("#sites").await;
        let first_page = ui
            .eval("return document.querySelectorAll('#sites tbody tr').length;")
            .await;
        if first_page != json!(50) {
            return Err(format!("first page rows: {first_page}"));
        }
        let seen_first: Value = ui
            .eval(
                "return [...document.querySelectorAll('#sites tbody tr')].map(r => r.textContent);",
            )
            .await;
        ui.click("#next-page").await;
        ui.wait_for_url("cursor=").await;
        ui.find("#sites").await;
        let rest: Vec<String> = serde_json::from_value(
            ui.eval(
                "return [...document.querySelectorAll('#sites tbody tr')].map(r => r.textContent);",
            )
            .await,
        )
        .map_err(|e| e.to_string())?;
        let seen_first: Vec<String> =
            serde_json::from_value(seen_first).map_err(|e| e.to_string())?;
        // 52 + Edge Lab + Decoy + Keyboard Lab = 55 sites: 5 on the second page.
        if rest.len() != 5 || rest.iter().any(|r| seen_first.contains(r)) {
            return Err(format!(
                "second page: {} rows, overlapping the first: {rest:?}",
                rest.len()
            ));
        }
        if ui.has("#next-page").await {
            return Err("a next page after the last".into());
        }
        ui.accessible("second page of sites").await;
        ui.shot("10b-second-page").await;

        // --- a viewer sees no admin controls ----------------------------------
        let viewer = create_viewer(&serve.base).await?;
        sign_out(ui).await;
        sign_in(ui, "default", &viewer, PASSWORD).await;
        ui.find("#sites").await;
        assert!(
            !ui.has("#create-site").await,
            "viewer sees Create edge site"
        );
        ui.go(&format!("/admin/edge-sites/{site_id}")).await;
        ui.find("#leaf-h").await;
        for control in [
            "#detail-download",
            "#regenerate",
            "#delete-site",
            "form[action$='/local-url']",
        ] {
            assert!(!ui.has(control).await, "viewer sees {control}");
        }
        ui.shot("11-viewer-detail").await;
        sign_out(ui).await;

        // --- an ended session sends the open page to sign-in ------------------
        sign_in(ui, "default", "admin@example.com", PASSWORD).await;
        ui.find("#sites").await;
        let cookie = ui
            .client
            .get_named_cookie("sr_session")
            .await
            .map_err(|e| format!("session cookie: {e}"))?;
        assert!(
            cookie.http_only().unwrap_or(false),
            "the session cookie is HttpOnly"
        );
        let store = serviceradar_store::Store::connect(&serve.database_url, 1)
            .await
            .map_err(|e| format!("store: {e}"))?;
        store
            .delete_session(&serviceradar_auth::sha256_hex(cookie.value()))
            .await
            .map_err(|e| format!("ending the session: {e}"))?;
        // No click: the page's live stream notices and goes to sign-in.
        ui.wait_until(
            "the expired session to reach sign-in",
            "return location.pathname === '/sign-in' && !!document.getElementById('expired-message');",
        )
        .await;
        ui.shot("12-session-expired").await;
        drop(leaf);
        Ok::<(), String>(())
    };
    run.await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_checks_and_commands_in_a_real_browser() {
    let _one = ONE_BROWSER.lock().await;
    support::init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads dir");
    let serve = Serve::start(dir);
    let Some((driver, ui)) = open_browser(dir, &downloads, &serve.base).await else {
        return;
    };
    let outcome = agent_scenarios(&ui, &serve, dir).await;
    let _ = ui.client.clone().close().await;
    drop(driver);
    report(outcome, &serve);
}

/// The site page's agent sections with a real agent: a command to the
/// agent before it runs fails clearly (offline); a check is refused with
/// its message next to the field, then added; the agent started from the
/// site's bundle acknowledges the config with that check; a command sent
/// from the form shows in the history and turns "succeeded" without a
/// reload. axe on each state, screenshots at 1280 and 390 px.
async fn agent_scenarios(ui: &Ui, serve: &Serve, dir: &Path) -> Result<(), String> {
    let (http, cookie, csrf) = api_session(&serve.base).await?;
    let site: Value = http
        .post(format!("{}/api/v1/edge-sites", serve.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "Checks Lab", "slug": "checks-lab",
                      "nats_leaf_url": format!("nats://127.0.0.1:{}", free_port())}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let site_id = site["id"].as_str().ok_or("no site id")?.to_string();
    // The bundle (and with it the agent's certificate) once provisioned.
    let deadline = Instant::now() + WAIT;
    let bytes = loop {
        let reply = http
            .get(format!("{}/api/v1/edge-sites/{site_id}/bundle", serve.base))
            .header("cookie", &cookie)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if reply.status().is_success() {
            break reply.bytes().await.map_err(|e| e.to_string())?;
        }
        if Instant::now() > deadline {
            return Err(format!("the bundle never came: {}", reply.status()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let archive = dir.join("checks-lab.tar.gz");
    std::fs::write(&archive, &bytes).map_err(|e| e.to_string())?;
    let unpack = dir.join("checks-lab");
    std::fs::create_dir_all(&unpack).map_err(|e| e.to_string())?;
    let ok = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpack)
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok {
        return Err("tar failed on the bundle".into());
    }
    let bundle = std::fs::read_dir(&unpack)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("agent.toml").is_file())
        .ok_or("no agent.toml in the bundle")?;

    sign_in(ui, "default", "admin@example.com", PASSWORD).await;
    let page = format!("/admin/edge-sites/{site_id}");
    ui.go(&page).await;
    ui.find("#checks-h").await;
    ui.find("#no-checks").await;

    // --- a command while the agent does not run: a clear failure ----------
    ui.eval("document.getElementById('command-kind').value = 'run_checks'; return true;")
        .await;
    ui.click("#send-command-button").await;
    ui.find("#command-failed").await;
    let failed = ui.text("#command-failed").await;
    if !failed.contains("Run checks now failed: the site's agent is not connected") {
        return Err(format!("the offline failure says: {failed}"));
    }
    ui.wait_until(
        "the offline command in the history",
        "const b = document.querySelector('#agent-commands tbody tr .badge'); \
         return !!b && b.textContent.trim() === 'offline';",
    )
    .await;
    ui.accessible("site page, command refused (agent offline)")
        .await;
    ui.shot("20-command-offline").await;

    // --- a refused check: the message next to the field, values kept -------
    ui.go(&page).await;
    ui.fill("#check-name", "hub-dns").await;
    ui.eval("document.getElementById('check-kind').value = 'tcp'; return true;")
        .await;
    ui.fill("#check-target", "localhost").await;
    ui.fill("#check-interval_secs", "10").await;
    ui.fill("#check-timeout_ms", "2000").await;
    ui.click("#add-check-button").await;
    ui.find("#check-target-error").await;
    let message = ui.text("#check-target-error").await;
    if !message.contains("must be host:port") {
        return Err(format!("the target's message: {message}"));
    }
    let described = ui
        .eval(
            "const t = document.getElementById('check-target'); \
             return t.getAttribute('aria-invalid') === 'true' && \
                    t.getAttribute('aria-describedby').includes('check-target-error') && \
                    document.getElementById('check-name').value === 'hub-dns';",
        )
        .await;
    if described != Value::Bool(true) {
        return Err("the refused field is not marked and described, or a value was lost".into());
    }
    ui.accessible("site page, check refused").await;
    ui.shot("21-check-refused").await;

    // --- the same check as DNS: added and listed ---------------------------
    ui.eval("document.getElementById('check-kind').value = 'dns'; return true;")
        .await;
    ui.fill("#check-target", "localhost").await;
    ui.click("#add-check-button").await;
    ui.wait_for_url("#checks-h").await;
    ui.find("tr[data-check='hub-dns']").await;
    let row = ui.text("tr[data-check='hub-dns']").await;
    if !(row.contains("dns") && row.contains("localhost") && row.contains("10 s")) {
        return Err(format!("the listed check: {row}"));
    }

    // --- the agent from the bundle acknowledges the config ----------------
    let agent_binary =
        PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-core")).with_file_name("serviceradar-agent");
    if !agent_binary.is_file() {
        return Err(format!(
            "{} is missing: build it (cargo build -p serviceradar-agent)",
            agent_binary.display()
        ));
    }
    let _agent = Killed(
        Command::new(&agent_binary)
            .arg("--config")
            .arg(bundle.join("agent.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.err")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting the agent: {e}"))?,
    );
    let deadline = Instant::now() + WAIT;
    loop {
        ui.go(&page).await;
        let said = ui.text("#config-version").await;
        if said.contains("runs config version") && said.contains("the current checks") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent never acknowledged the config: {said}\nagent stderr:\n{}",
                std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // --- a command from the form: in the history, succeeded live -----------
    ui.eval("document.getElementById('command-kind').value = 'run_checks'; return true;")
        .await;
    ui.click("#send-command-button").await;
    ui.wait_for_url("#commands-h").await;
    if ui.has("#command-failed").await {
        return Err(format!(
            "the command to the running agent failed: {}",
            ui.text("#command-failed").await
        ));
    }
    ui.wait_until(
        "the newest command to turn succeeded without a reload",
        "const r = document.querySelector('#agent-commands tbody tr'); \
         return !!r && r.textContent.includes('run_checks') && \
                r.querySelector('.badge').textContent.trim() === 'succeeded';",
    )
    .await;
    let rows = ui
        .eval("return document.querySelectorAll('#agent-commands tbody tr').length;")
        .await;
    if rows != json!(2) {
        return Err(format!("history rows: {rows}"));
    }
    ui.accessible("site page with checks and commands").await;
    ui.shots_at_both_widths("22-agent-checks-and-commands")
        .await;

    // --- the change form --------------------------------------------------
    ui.go(&format!("{page}/checks/hub-dns")).await;
    ui.find("#change-check").await;
    ui.accessible("change a check").await;
    ui.fill("#check-interval_secs", "20").await;
    ui.click("#change-check-button").await;
    ui.wait_for_url("#checks-h").await;
    let row = ui.text("tr[data-check='hub-dns']").await;
    if !row.contains("20 s") {
        return Err(format!("the changed check: {row}"));
    }
    Ok(())
}

/// Waits for the browser's download of a site bundle to finish.
async fn wait_for_download(downloads: &Path) -> Result<PathBuf, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let done = std::fs::read_dir(downloads)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".tar.gz"));
        if let Some(path) = done
            && std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            return Ok(path);
        }
        if Instant::now() > deadline {
            return Err(format!("no bundle arrived in {}", downloads.display()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Unpacks the bundle and installs it with `setup.sh --prefix --no-start`;
/// returns the installed `nats-leaf.conf`.
fn install_bundle(bundle: &Path, dir: &Path) -> Result<PathBuf, String> {
    let unpack = dir.join("bundle");
    std::fs::create_dir_all(&unpack).map_err(|e| e.to_string())?;
    let tar = Command::new("tar")
        .arg("xzf")
        .arg(bundle)
        .arg("-C")
        .arg(&unpack)
        .status()
        .map_err(|e| e.to_string())?;
    if !tar.success() {
        return Err("tar failed on the downloaded bundle".into());
    }
    let root = std::fs::read_dir(&unpack)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or("an empty bundle")?;
    let prefix = dir.join("edge");
    let setup = Command::new("bash")
        .arg("setup.sh")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-start")
        .current_dir(&root)
        .output()
        .map_err(|e| e.to_string())?;
    if !setup.status.success() {
        return Err(format!(
            "setup.sh failed: {}",
            String::from_utf8_lossy(&setup.stderr)
        ));
    }
    Ok(prefix.join("etc/serviceradar/nats/nats-leaf.conf"))
}

fn start_leaf(config: &Path, port: u16) -> Result<NatsServer, String> {
    let dir = config
        .parent()
        .ok_or("the config has no directory")?
        .to_path_buf();
    NatsServer::start_file(&dir, "leaf", config, port).map_err(|e| format!("the leaf: {e}"))
}

/// An owner session of the API: client, cookie header, CSRF token.
async fn api_session(base: &str) -> Result<(reqwest::Client, String, String), String> {
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"tenant": "default", "email": "admin@example.com", "password": PASSWORD}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sr_session="))
        .and_then(|v| v.split(';').next())
        .ok_or("no session cookie")?
        .to_string();
    let body: Value = login.json().await.map_err(|e| e.to_string())?;
    let csrf = body["csrf_token"]
        .as_str()
        .ok_or("no csrf token")?
        .to_string();
    Ok((http, cookie, csrf))
}

/// Creates a second site through the API, waits for its bundle and returns
/// the directory of its unpacked certificates.
async fn decoy_site_certs(base: &str, dir: &Path) -> Result<PathBuf, String> {
    let (http, cookie, csrf) = api_session(base).await?;
    let site: Value = http
        .post(format!("{base}/api/v1/edge-sites"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "Decoy", "slug": "decoy", "nats_leaf_url": "nats://127.0.0.1:4999"}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let id = site["id"].as_str().ok_or("no decoy id")?;
    let deadline = Instant::now() + WAIT;
    let bytes = loop {
        let reply = http
            .get(format!("{base}/api/v1/edge-sites/{id}/bundle"))
            .header("cookie", &cookie)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if reply.status().is_success() {
            break reply.bytes().await.map_err(|e| e.to_string())?;
        }
        if Instant::now() > deadline {
            return Err(format!("the decoy bundle never came: {}", reply.status()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let archive = dir.join("decoy.tar.gz");
    std::fs::write(&archive, &bytes).map_err(|e| e.to_string())?;
    let unpack = dir.join("decoy");
    std::fs::create_dir_all(&unpack).map_err(|e| e.to_string())?;
    let ok = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpack)
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok {
        return Err("tar failed on the decoy bundle".into());
    }
    let root = std::fs::read_dir(&unpack)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or("an empty decoy bundle")?;
    Ok(root.join("certs"))
}

/// A viewer with the owner's password, created through the API with an
/// owner session.
async fn create_viewer(base: &str) -> Result<String, String> {
    let (http, cookie, csrf) = api_session(base).await?;
    let csrf = csrf.as_str();
    let email = "viewer@example.com".to_string();
    let created = http
        .post(format!("{base}/api/v1/users"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({"email": email, "role": "viewer", "password": PASSWORD}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !created.status().is_success() {
        return Err(format!("creating the viewer: {}", created.status()));
    }
    Ok(email)
}
