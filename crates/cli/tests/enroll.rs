//! Issue 14 end to end, on loopback with the real `serviceradar-core serve`
//! (embedded hub, leaf authorization callout, agent gateway), a real
//! `nats-server` leaf and the real `serviceradar-agent`, no root: an operator
//! creates a site and an enrollment token with the CLI; `site init` joins
//! with keys generated in the state dir; `nats setup --foreground` links the
//! leaf to the hub; `agent setup --foreground` makes the site active;
//! `status --json` says so. Then every way a token is refused, each with its
//! own error and no state change, and `nats setup`'s diagnosis per layer.
//! And renewal: with 2-minute certificates the agent renews twice while a
//! collector publishes at 100 msg/s through the leaf, which stays connected
//! and loses nothing; a cloned machine and a revoked agent are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serviceradar_testkit::{free_port, wait_for_port};

const PASSWORD: &str = "owner password 123";
const WAIT: Duration = Duration::from_secs(60);

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-cli"))
}

/// A workspace binary beside this one (`cargo test --workspace` builds them).
fn sibling(name: &str) -> PathBuf {
    let path = cli().with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p serviceradar-server -p serviceradar-agent)",
        path.display()
    );
    path
}

struct Serve {
    child: std::process::Child,
    base: String,
    data_dir: PathBuf,
    database_url: String,
    dir: PathBuf,
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`.
fn terminate(child: &mut std::process::Child, grace: Duration) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
}

impl Drop for Serve {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(30));
    }
}

impl Serve {
    fn start(dir: &Path, leaf_monitoring: u16) -> Self {
        Self::start_with(dir, leaf_monitoring, &[])
    }

    fn start_with(dir: &Path, leaf_monitoring: u16, extra: &[&str]) -> Self {
        let api = free_port();
        let gateway = free_port();
        let data_dir = dir.join("data");
        let database_url = format!("sqlite://{}", data_dir.join("serviceradar.db").display());
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let child = Command::new(sibling("serviceradar-core"))
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
            .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
            .args(["--gateway-url", &format!("https://localhost:{gateway}")])
            .args(extra)
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
            data_dir,
            database_url,
            dir: dir.to_path_buf(),
        }
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(sibling("serviceradar-core"))
            .arg("admin")
            .args(args)
            .args(["--data-dir", &self.data_dir.display().to_string()])
            .args(["--database-url", &self.database_url])
            .env("HOME", &self.dir)
            .output()
            .expect("admin runs");
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An API token of `email` in `tenant`.
    fn token(&self, tenant: &str, email: &str) -> String {
        self.admin(&[
            "create-token",
            "--tenant",
            tenant,
            "--email",
            email,
            "--scope",
            "read,write,admin",
        ])
    }
}

/// Runs the CLI to completion: (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(cli())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let (code, stdout, stderr) = run(args, env);
    assert_eq!(code, 0, "{args:?} failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// A long-running CLI command (`--foreground`), killed on drop.
struct Running {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(15));
    }
}

impl Running {
    fn start(args: &[&str], log: PathBuf) -> Self {
        let child = Command::new(cli())
            .args(args)
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
            .spawn()
            .expect("cli starts");
        Self { child, log }
    }

    /// Waits for `needle` in its stdout.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = std::fs::read_to_string(&self.log).unwrap_or_default();
            if out.contains(needle) {
                return;
            }
            let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited ({status}) before {needle:?}:\n{out}\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in time:\n{out}\n{err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

async fn get(base: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn wait_status(base: &str, token: &str, path: &str, field: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = get(base, token, path).await;
        if body[field] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {field} is {} not {want}",
            body[field]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn nats_server() -> PathBuf {
    serviceradar_testkit::nats_server_binary().expect("nats-server (scripts/test installs it)")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_joins_a_site_with_keys_that_never_leave_the_box() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let leaf_monitoring = free_port();
    let serve = Serve::start(dir, leaf_monitoring);
    let config = dir.join("cli.json").display().to_string();
    let api_token = serve.token("default", "admin@example.com");
    let env = [("SERVICERADAR_CLI_CONFIG", config.as_str())];

    // The operator: login, a site, a token.
    let me = ok_json(
        &[
            "login",
            "--url",
            &serve.base,
            "--token",
            &api_token,
            "--json",
        ],
        &env,
    );
    assert_eq!(me["tenant_slug"], "default");
    assert_eq!(
        mode(Path::new(&config)),
        0o600,
        "the saved API token is private"
    );
    let leaf_port = free_port();
    let site = ok_json(
        &[
            "sites",
            "create",
            "--name",
            "Edge Lab",
            "--slug",
            "edge-lab",
            "--nats-leaf-url",
            &format!("nats://127.0.0.1:{leaf_port}"),
            "--json",
        ],
        &env,
    );
    let site_id = site["id"].as_str().expect("site id").to_string();
    let created = ok_json(
        &[
            "tokens",
            "create",
            "--site",
            &site_id,
            "--expires-in",
            "2h",
            "--json",
        ],
        &env,
    );
    let token = created["secret"].as_str().expect("token").to_string();
    assert!(token.starts_with("sr1."));
    assert!(
        created["command"]
            .as_str()
            .unwrap()
            .contains("site init --token")
    );
    let listed = ok_json(&["tokens", "list", "--site", &site_id, "--json"], &env);
    assert_eq!(listed["items"][0]["status"], "issued");
    assert!(
        !listed.to_string().contains(&token),
        "a list never shows the token"
    );

    // The edge box: one command with the token, nothing else.
    let state = dir.join("edge");
    let state_s = state.display().to_string();
    let started = Instant::now();
    let init = ok_json(
        &[
            "site",
            "init",
            "--token",
            &token,
            "--state-dir",
            &state_s,
            "--host-id",
            "host-a",
            "--json",
        ],
        &[],
    );
    assert_eq!(init["site_id"], site_id.as_str());
    assert_eq!(init["resumed"], false);
    for key in [
        "leaf-client-key.pem",
        "leaf-server-key.pem",
        "agent-key.pem",
    ] {
        let path = state.join("nats/certs").join(key);
        assert_eq!(mode(&path), 0o600, "{key}");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("PRIVATE KEY")
        );
    }
    assert_eq!(mode(&state.join("nats/leaf.creds")), 0o600);
    // Again without --force: refused, nothing replaced.
    let (code, _, stderr) = run(
        &[
            "site",
            "init",
            "--token",
            &token,
            "--state-dir",
            &state_s,
            "--host-id",
            "host-a",
        ],
        &[],
    );
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");

    // The leaf links to the hub; the hub's view (through the API) says so.
    let mut leaf = Running::start(
        &[
            "nats",
            "setup",
            "--foreground",
            "--state-dir",
            &state_s,
            "--nats-server",
            nats_server().to_str().unwrap(),
        ],
        dir.join("nats-setup.out"),
    );
    leaf.wait_for("Leaf connected to the hub");
    let connected_after = started.elapsed();
    wait_status(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}/leaf-server"),
        "status",
        "connected",
    )
    .await;
    assert!(
        std::fs::read_to_string(state.join("nats/nats-leaf.conf"))
            .unwrap()
            .contains(&state_s)
    );
    let leaf_view = get(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}/leaf-server"),
    )
    .await;
    assert!(
        leaf_view["link_changed_at"].is_i64(),
        "connected since: {leaf_view}"
    );
    // The hub's own view of the link (LEAFZ through the system account).
    let hub_link = get(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}/leaf-server/hub-link"),
    )
    .await;
    assert_eq!(hub_link["available"], true, "{hub_link}");
    let connection = &hub_link["connections"][0];
    assert!(
        connection["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{hub_link}"
    );
    assert!(
        connection["hub_server"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(connection["in_msgs"].is_u64() && connection["out_bytes"].is_u64());

    // The agent: first contact makes the site active.
    let mut agent = Running::start(
        &[
            "agent",
            "setup",
            "--foreground",
            "--state-dir",
            &state_s,
            "--agent",
            sibling("serviceradar-agent").to_str().unwrap(),
        ],
        dir.join("agent-setup.out"),
    );
    agent.wait_for("registered with the gateway");
    wait_status(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}"),
        "status",
        "active",
    )
    .await;
    // The agent's Hello installed the token's onboarding package.
    let onboarding = get(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}/onboarding-packages"),
    )
    .await;
    let installed: Vec<_> = onboarding["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "token")
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(installed, ["installed"], "{onboarding}");

    let status = ok_json(&["status", "--state-dir", &state_s, "--json"], &[]);
    assert_eq!(status["leaf"]["state"], "connected", "{status}");
    assert_eq!(status["leaf"]["hub_link"], true);
    assert_eq!(status["agent"]["state"], "running", "{status}");
    assert!(
        status["agent"]["last_contact"]
            .as_i64()
            .is_some_and(|at| (now_ms() - at).abs() < 120_000),
        "the agent's last contact with the gateway: {status}"
    );
    assert_eq!(status["identity"]["site_slug"], "edge-lab");
    let certs = status["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3);
    assert!(certs.iter().all(|c| c["expired"] == false));
    // Enrolled certificates live 7 days by default.
    let week = 7 * 24 * 3600 * 1000;
    let until = certs[0]["not_after"].as_i64().unwrap();
    assert!(
        (until - init["enrolled_at"].as_i64().unwrap() - week).abs() < 120_000,
        "{until}"
    );

    // A collector at the site: its own token, its key generated here; what
    // it publishes to the site's leaf with the written config lands in the
    // database.
    let collector_token = ok_json(
        &[
            "tokens",
            "create",
            "--site",
            &site_id,
            "--scope",
            "collector:syslog",
            "--json",
        ],
        &env,
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, stderr) = run(
        &[
            "collector",
            "add",
            "trapd",
            "--token",
            &collector_token,
            "--state-dir",
            &state_s,
        ],
        &[],
    );
    assert_eq!(code, 2, "a token for another collector type: {stderr}");
    let config = ok_json(
        &[
            "collector",
            "add",
            "syslog",
            "--token",
            &collector_token,
            "--state-dir",
            &state_s,
            "--host-id",
            "host-a",
            "--json",
        ],
        &[],
    );
    assert_eq!(
        config["nats"]["url"],
        format!("nats://127.0.0.1:{leaf_port}")
    );
    let prefix = config["subject_prefix"].as_str().unwrap().to_string();
    assert_eq!(prefix, "edge.default.edge-lab.logs");
    let tls = &config["nats"]["tls"];
    assert_eq!(mode(Path::new(tls["key_file"].as_str().unwrap())), 0o600);
    let collector = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(PathBuf::from(tls["ca_file"].as_str().unwrap()))
        .add_client_certificate(
            PathBuf::from(tls["cert_file"].as_str().unwrap()),
            PathBuf::from(tls["key_file"].as_str().unwrap()),
        )
        .connect(config["nats"]["url"].as_str().unwrap())
        .await
        .expect("the collector connects to the site's leaf");
    let js = async_nats::jetstream::new(collector);
    js.publish(
        format!("{prefix}.syslog"),
        r#"{"message":"hello from an enrolled collector"}"#.into(),
    )
    .await
    .expect("publish")
    .await
    .expect("the site's buffer acknowledges");
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = get(&serve.base, &api_token, "/logs?limit=200").await;
        if logs
            .to_string()
            .contains("hello from an enrolled collector")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message never reached the database: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let package = get(
        &serve.base,
        &api_token,
        &format!(
            "/collector-packages/{}",
            config["package_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(package["status"], "installed", "{package}");

    // The token is spent and its history says by whom.
    let shown = ok_json(
        &[
            "tokens",
            "show",
            created["token"]["id"].as_str().unwrap(),
            "--json",
        ],
        &env,
    );
    assert_eq!(shown["token"]["status"], "redeemed");
    let kinds: Vec<_> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, vec![json!("created"), json!("redeemed")]);
    assert!(shown["events"][1]["remote_addr"].as_str().is_some());

    // A reinstall on the same host resumes the same identity.
    let again = ok_json(
        &[
            "site",
            "init",
            "--token",
            &token,
            "--state-dir",
            &state_s,
            "--host-id",
            "host-a",
            "--force",
            "--json",
        ],
        &[],
    );
    assert_eq!(again["resumed"], true);
    assert_eq!(again["agent_id"], init["agent_id"]);
    serviceradar_testkit::report(&format!(
        "enrollment: site init to leaf connected in {:.1} s (loopback, debug build, includes waiting for provisioning)",
        connected_after.as_secs_f64()
    ));
    drop(agent);
    drop(leaf);
}

/// A redemption request made by hand (what the CLI sends).
fn request(token: &str, host: &str, scope: &str) -> Value {
    let csr = |cn: &str| serviceradar_pki::new_key_and_request(cn).unwrap().1;
    json!({
        "token": token,
        "scope": scope,
        "host_fingerprint": format!("{:0>64}", host.bytes().map(|b| format!("{b:02x}")).collect::<String>()),
        "hostname": host,
        "leaf_client_csr": csr("leaf"),
        "leaf_server_csr": csr("leaf-server"),
        "agent_csr": csr("agent"),
        "nats_user_public_key": serviceradar_natsconf::jwt::NKey::generate(
            serviceradar_natsconf::jwt::KeyKind::User).public_key(),
    })
}

async fn redeem(base: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/enroll"))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("\"SU"),
        "a secret in {text}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_each_get_their_own_error_and_change_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let serve = Serve::start(dir, free_port());
    let config = dir.join("cli.json").display().to_string();
    let env = [("SERVICERADAR_CLI_CONFIG", config.as_str())];
    let api_token = serve.token("default", "admin@example.com");
    ok_json(
        &[
            "login",
            "--url",
            &serve.base,
            "--token",
            &api_token,
            "--json",
        ],
        &env,
    );
    let site = ok_json(&["sites", "create", "--name", "Plant", "--json"], &env);
    let site_id = site["id"].as_str().unwrap().to_string();
    let create = |args: &[&str]| {
        let mut all = vec!["tokens", "create", "--site", site_id.as_str(), "--json"];
        all.extend_from_slice(args);
        ok_json(&all, &env)
    };
    let token_of = |created: &Value| created["secret"].as_str().unwrap().to_string();
    // Wait until the site is provisioned (the first redemption needs its agent id).
    let single = create(&[]);
    let single_token = token_of(&single);
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let (status, body) = redeem(&serve.base, &request(&single_token, "a1", "site")).await;
        if status != 503 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["resumed"], false);
    let code = |(status, body): &(u16, Value)| {
        (
            *status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };

    // Same host again: resumes. Another host: a conflict, nothing counted.
    let resumed = redeem(&serve.base, &request(&single_token, "a1", "site")).await;
    assert_eq!(resumed.0, 200);
    assert_eq!(resumed.1["resumed"], true);
    assert_eq!(
        code(&redeem(&serve.base, &request(&single_token, "b2", "site")).await),
        (409, "token_host_conflict".into())
    );

    // A two-use token: a third host finds it used up.
    let double = token_of(&create(&["--uses", "2"]));
    for host in ["c3", "d4"] {
        assert_eq!(
            redeem(&serve.base, &request(&double, host, "site")).await.0,
            200
        );
    }
    assert_eq!(
        code(&redeem(&serve.base, &request(&double, "e5", "site")).await),
        (409, "token_used_up".into())
    );

    // Revoked.
    let revoked = create(&[]);
    ok_json(
        &[
            "tokens",
            "revoke",
            revoked["token"]["id"].as_str().unwrap(),
            "--json",
        ],
        &env,
    );
    assert_eq!(
        code(&redeem(&serve.base, &request(&token_of(&revoked), "f6", "site")).await),
        (401, "token_revoked".into())
    );

    // Expired (its row aged in the database).
    let expired = create(&[]);
    let expired_id = expired["token"]["id"].as_str().unwrap().to_string();
    let pool = sqlx::SqlitePool::connect(&serve.database_url)
        .await
        .expect("db");
    sqlx::query("UPDATE enrollment_tokens SET expires_at = 1 WHERE id = ?")
        .bind(&expired_id)
        .execute(&pool)
        .await
        .expect("age the token");
    assert_eq!(
        code(&redeem(&serve.base, &request(&token_of(&expired), "g7", "site")).await),
        (401, "token_expired".into())
    );

    // Tampered: another site's id in the claims, the signature kept.
    let mut parts: Vec<String> = token_of(&create(&[]))
        .split('.')
        .map(str::to_string)
        .collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("collector:syslog");
    parts[1] = engine.encode(serde_json::to_vec(&claims).unwrap());
    assert_eq!(
        code(&redeem(&serve.base, &request(&parts.join("."), "h8", "site")).await),
        (401, "token_bad_signature".into())
    );
    assert_eq!(
        code(&redeem(&serve.base, &request("sr1.bm9wZQ.AA", "h8", "site")).await),
        (401, "token_malformed".into())
    );

    // Wrong scope: an agent token cannot enroll a leaf.
    let agent_only = token_of(&create(&["--scope", "agent"]));
    assert_eq!(
        code(&redeem(&serve.base, &request(&agent_only, "i9", "site")).await),
        (403, "token_wrong_scope".into())
    );
    assert_eq!(
        redeem(&serve.base, &request(&agent_only, "i9", "agent"))
            .await
            .0,
        200
    );

    // A private key in the request is refused before anything happens.
    let careless = create(&[]);
    let mut body = request(&token_of(&careless), "j1", "site");
    body["agent_csr"] = json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert_eq!(code(&redeem(&serve.base, &body).await).0, 400);
    let unchanged = ok_json(
        &[
            "tokens",
            "show",
            careless["token"]["id"].as_str().unwrap(),
            "--json",
        ],
        &env,
    );
    assert_eq!(
        unchanged["token"]["uses"], 0,
        "a refused request spends nothing"
    );

    // Refusals are in the token's history; nothing was counted.
    let history = ok_json(
        &[
            "tokens",
            "show",
            single["token"]["id"].as_str().unwrap(),
            "--json",
        ],
        &env,
    );
    assert_eq!(history["token"]["uses"], 1);
    let kinds: Vec<_> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["created", "redeemed", "resumed", "conflict"]);
    let revoked_history = ok_json(
        &[
            "tokens",
            "show",
            revoked["token"]["id"].as_str().unwrap(),
            "--json",
        ],
        &env,
    );
    let kinds: Vec<_> = revoked_history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["created", "revoked", "refused"]);

    // Conflicts to resolve (as docs/enrollment.md shows them): the second
    // host on the single-use token and the third on the two-use one above,
    // and a second box running `site init` with a spent token.
    let agent_token = token_of(&create(&["--scope", "agent"]));
    for (host, want) in [("box-a", 0), ("box-b", 3)] {
        let state = dir.join(host).display().to_string();
        let (code, _, stderr) = run(
            &[
                "site",
                "init",
                "--token",
                &agent_token,
                "--scope",
                "agent",
                "--state-dir",
                &state,
                "--host-id",
                host,
            ],
            &[],
        );
        assert_eq!(code, want, "{host}: {stderr}");
    }
    let open = get(
        &serve.base,
        &api_token,
        &format!("/enrollment-conflicts?site_id={site_id}&state=open"),
    )
    .await;
    let conflicts = open["items"].as_array().unwrap();
    assert_eq!(conflicts.len(), 3, "{open}");
    assert!(conflicts.iter().all(|c| c["state"] == "open"));
    let id = conflicts[2]["id"].as_str().unwrap();
    let resolved: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/enrollment-conflicts/{id}/resolve",
            serve.base
        ))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resolved["conflict"]["state"], "resolved", "{resolved}");
    assert!(
        resolved["next_steps"]
            .as_str()
            .unwrap()
            .contains("site init")
    );

    // Another tenant's operator cannot make a token for this site.
    serve.admin(&[
        "create-tenant",
        "--slug",
        "other",
        "--owner-email",
        "b@example.com",
        "--owner-password",
        PASSWORD,
    ]);
    let other = serve.token("other", "b@example.com");
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/edge-sites/{site_id}/enrollment-tokens",
            serve.base
        ))
        .bearer_auth(&other)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        get(&serve.base, &other, "/enrollment-tokens").await["items"],
        json!([])
    );

    // The CLI maps refusals to exit code 3 with the server's words.
    let (code_, _, stderr) = run(
        &[
            "site",
            "init",
            "--token",
            &single_token,
            "--state-dir",
            dir.join("x").to_str().unwrap(),
            "--host-id",
            "zz",
        ],
        &[],
    );
    assert_eq!(code_, 3, "{stderr}");
    assert!(
        stderr.contains("already redeemed by another host"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_setup_names_the_layer_that_failed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let serve = Serve::start(dir, free_port());
    let config = dir.join("cli.json").display().to_string();
    let env = [("SERVICERADAR_CLI_CONFIG", config.as_str())];
    let api_token = serve.token("default", "admin@example.com");
    ok_json(
        &[
            "login",
            "--url",
            &serve.base,
            "--token",
            &api_token,
            "--json",
        ],
        &env,
    );
    let site = ok_json(
        &[
            "sites",
            "create",
            "--name",
            "Depot",
            "--nats-leaf-url",
            &format!("nats://127.0.0.1:{}", free_port()),
            "--json",
        ],
        &env,
    );
    let token = ok_json(
        &[
            "tokens",
            "create",
            "--site",
            site["id"].as_str().unwrap(),
            "--uses",
            "4",
            "--json",
        ],
        &env,
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let nats = nats_server();
    let setup = |state: &Path| {
        run(
            &[
                "nats",
                "setup",
                "--foreground",
                "--timeout",
                "4",
                "--state-dir",
                state.to_str().unwrap(),
                "--nats-server",
                nats.to_str().unwrap(),
            ],
            &[],
        )
    };
    let init = |name: &str| {
        let state = dir.join(name);
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, _, stderr) = run(
                &[
                    "site",
                    "init",
                    "--token",
                    &token,
                    "--state-dir",
                    state.to_str().unwrap(),
                    "--host-id",
                    name,
                ],
                &[],
            );
            if code == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "site init: {stderr}");
            std::thread::sleep(Duration::from_millis(500));
        }
        state
    };

    // TCP: the hub's leafnode port is closed.
    let closed = init("closed");
    let identity_path = closed.join("identity.json");
    let mut identity: Value =
        serde_json::from_str(&std::fs::read_to_string(&identity_path).unwrap()).unwrap();
    identity["hub_url"] = json!(format!("tls://127.0.0.1:{}", free_port()));
    std::fs::write(&identity_path, identity.to_string()).unwrap();
    let (code, _, stderr) = setup(&closed);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("tcp: cannot connect"), "{stderr}");

    // TLS: root-ca.pem is another platform's root (a wrong CA pin).
    let foreign = init("foreign");
    let other_root = serviceradar_pki::CertificateAuthority::generate_root(
        "Another platform",
        time::Duration::days(30),
    )
    .unwrap();
    std::fs::write(
        foreign.join("nats/certs/root-ca.pem"),
        other_root.cert_pem(),
    )
    .unwrap();
    let (code, _, stderr) = setup(&foreign);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("tls: the hub's certificate does not chain to the platform root"),
        "{stderr}"
    );

    // The leaf's own certificate expired.
    let expired = init("expired");
    let mut params = rcgen::CertificateParams::new(vec!["leaf".to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(expired.join("nats/certs/leaf-client.pem"), cert.pem()).unwrap();
    std::fs::write(
        expired.join("nats/certs/leaf-client-key.pem"),
        key.serialize_pem(),
    )
    .unwrap();
    let (code, _, stderr) = setup(&expired);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("certificate: the leaf's certificate expired"),
        "{stderr}"
    );

    // Authorization: the leaf presents another site's certificate with this
    // site's credentials. The hub's callout refuses it and records why; the
    // diagnosis asks the control plane (over the agent's mTLS identity) and
    // gives the callout's reason, not just the leaf's log line.
    let annex = ok_json(
        &[
            "sites",
            "create",
            "--name",
            "Annex",
            "--nats-leaf-url",
            &format!("nats://127.0.0.1:{}", free_port()),
            "--json",
        ],
        &env,
    );
    let annex_token = ok_json(
        &[
            "tokens",
            "create",
            "--site",
            annex["id"].as_str().unwrap(),
            "--json",
        ],
        &env,
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let annex_state = dir.join("annex");
    let deadline = Instant::now() + WAIT;
    while run(
        &[
            "site",
            "init",
            "--token",
            &annex_token,
            "--state-dir",
            annex_state.to_str().unwrap(),
            "--host-id",
            "annex",
        ],
        &[],
    )
    .0 != 0
    {
        assert!(Instant::now() < deadline, "site init of the annex");
        std::thread::sleep(Duration::from_millis(500));
    }
    let crossed = init("crossed");
    for file in ["leaf-client.pem", "leaf-client-key.pem"] {
        std::fs::copy(
            annex_state.join("nats/certs").join(file),
            crossed.join("nats/certs").join(file),
        )
        .unwrap();
    }
    let (code, _, stderr) = setup(&crossed);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("authorization: the hub refused this leaf")
            && stderr.contains("does not match the credentials")
            && stderr.contains("belongs to another site"),
        "{stderr}"
    );
}

/// Renewal (issue 14): certificates that live 2 minutes are renewed by the
/// agent at about 2/3 of their lifetime — twice here — with new keys made on
/// the box; the leaf reloads them and stays linked to the hub throughout, and
/// a collector publishing at 100 msg/s through it loses nothing. A cloned
/// machine's renewal is refused and shown as a conflict; after the agent is
/// revoked, renewal is refused and the site says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolled_certificates_renew_twice_without_losing_a_message() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let leaf_monitoring = free_port();
    let serve = Serve::start_with(dir, leaf_monitoring, &["--enrollment-cert-lifetime", "2m"]);
    let config = dir.join("cli.json").display().to_string();
    let api_token = serve.token("default", "admin@example.com");
    let env = [("SERVICERADAR_CLI_CONFIG", config.as_str())];
    ok_json(
        &[
            "login",
            "--url",
            &serve.base,
            "--token",
            &api_token,
            "--json",
        ],
        &env,
    );
    let leaf_port = free_port();
    let site = ok_json(
        &[
            "sites",
            "create",
            "--name",
            "Renewal Lab",
            "--slug",
            "renewal-lab",
            "--nats-leaf-url",
            &format!("nats://127.0.0.1:{leaf_port}"),
            "--json",
        ],
        &env,
    );
    let site_id = site["id"].as_str().expect("site id").to_string();
    let token_for = |scope: &str| {
        ok_json(
            &[
                "tokens", "create", "--site", &site_id, "--scope", scope, "--json",
            ],
            &env,
        )
    };
    let site_token = token_for("site");
    let state = dir.join("edge");
    let state_s = state.display().to_string();
    let init = ok_json(
        &[
            "site",
            "init",
            "--token",
            site_token["secret"].as_str().unwrap(),
            "--state-dir",
            &state_s,
            "--host-id",
            "host-a",
            "--json",
        ],
        &[],
    );
    let lifetime = init["expires_at"].as_i64().unwrap() - init["enrolled_at"].as_i64().unwrap();
    assert!(
        (100_000..=125_000).contains(&lifetime),
        "2-minute certificates: {lifetime} ms"
    );
    let mut leaf = Running::start(
        &[
            "nats",
            "setup",
            "--foreground",
            "--state-dir",
            &state_s,
            "--nats-server",
            nats_server().to_str().unwrap(),
        ],
        dir.join("nats-setup.out"),
    );
    leaf.wait_for("Leaf connected to the hub");
    let mut agent = Running::start(
        &[
            "agent",
            "setup",
            "--foreground",
            "--state-dir",
            &state_s,
            "--agent",
            sibling("serviceradar-agent").to_str().unwrap(),
        ],
        dir.join("agent-setup.out"),
    );
    agent.wait_for("registered with the gateway");
    let agent_toml = std::fs::read_to_string(state.join("agent.toml")).unwrap();
    assert!(agent_toml.contains("[renewal]"), "{agent_toml}");
    let status = ok_json(&["status", "--state-dir", &state_s, "--json"], &[]);
    assert_eq!(status["renewal"]["automatic"], true, "{status}");
    let first_agent_cert = std::fs::read_to_string(state.join("nats/certs/agent.pem")).unwrap();
    let first_leaf_cert =
        std::fs::read_to_string(state.join("nats/certs/leaf-client.pem")).unwrap();

    // A collector publishing at 100 msg/s with acknowledgements, retrying
    // what was not acknowledged (the telemetry contract).
    let collector_token = token_for("collector:syslog");
    let collector = ok_json(
        &[
            "collector",
            "add",
            "syslog",
            "--token",
            collector_token["secret"].as_str().unwrap(),
            "--state-dir",
            &state_s,
            "--host-id",
            "host-a",
            "--json",
        ],
        &[],
    );
    let prefix = collector["subject_prefix"].as_str().unwrap().to_string();
    let tls = collector["nats"]["tls"].clone();
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(PathBuf::from(tls["ca_file"].as_str().unwrap()))
        .add_client_certificate(
            PathBuf::from(tls["cert_file"].as_str().unwrap()),
            PathBuf::from(tls["key_file"].as_str().unwrap()),
        )
        .connect(collector["nats"]["url"].as_str().unwrap())
        .await
        .expect("the collector connects to the site's leaf");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let js = async_nats::jetstream::new(client);
        tokio::spawn(async move {
            let mut acked = 0u64;
            let mut retries = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let body = format!(r#"{{"message":"renewal-test {acked}"}}"#);
                loop {
                    let sent = js
                        .publish(format!("{prefix}.syslog"), body.clone().into())
                        .await;
                    if let Ok(ack) = sent
                        && ack.await.is_ok()
                    {
                        break;
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                acked += 1;
            }
            (acked, retries)
        })
    };

    // The hub's view of the leaf, sampled until two renewals are recorded.
    let started = Instant::now();
    let mut samples = 0;
    let mut not_connected = Vec::new();
    let renewed_events = loop {
        let leaf_view = get(
            &serve.base,
            &api_token,
            &format!("/edge-sites/{site_id}/leaf-server"),
        )
        .await;
        samples += 1;
        if leaf_view["status"] != "connected" {
            not_connected.push((now_ms(), leaf_view["status"].clone()));
        }
        let history = get(
            &serve.base,
            &api_token,
            &format!(
                "/enrollment-tokens/{}",
                site_token["token"]["id"].as_str().unwrap()
            ),
        )
        .await;
        let renewed = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "renewed")
            .count();
        if renewed >= 2 {
            break renewed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "two renewals within 4 minutes; history: {history}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let renewals_took = started.elapsed();
    // Past the first certificates' expiry, the leaf still runs on renewed ones.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, retries) = publisher.await.expect("publisher");
    assert!(
        acked > 10_000,
        "published for over 100 s at 100 msg/s: {acked}"
    );
    // The hub ends a leaf's session when the certificate it was admitted
    // with expires; the leaf then reconnects at once with the renewed one
    // (which shows the reload worked). That one reconnect is the only
    // moment the hub may see the leaf away; the leaf's buffer covers it.
    let first_expiry = init["expires_at"].as_i64().unwrap();
    let away: Vec<_> = not_connected
        .iter()
        .filter(|(at, _)| !(first_expiry - 1_000..=first_expiry + 5_000).contains(at))
        .collect();
    assert!(
        away.is_empty() && not_connected.len() <= 6,
        "the leaf stayed connected ({samples} samples) but for one reconnect at the first \
         certificates' expiry ({first_expiry}): {not_connected:?}"
    );
    let leaf_log = std::fs::read_to_string(state.join("log/nats-leaf.log")).unwrap();
    assert!(
        leaf_log.matches("Reloaded server configuration").count() >= 2,
        "the leaf reloaded its certificates twice:\n{leaf_log}"
    );
    let agent_cert = std::fs::read_to_string(state.join("nats/certs/agent.pem")).unwrap();
    let leaf_cert = std::fs::read_to_string(state.join("nats/certs/leaf-client.pem")).unwrap();
    assert_ne!(
        agent_cert, first_agent_cert,
        "the agent certificate was replaced"
    );
    assert_ne!(
        leaf_cert, first_leaf_cert,
        "the leaf certificate was replaced"
    );
    assert_eq!(mode(&state.join("nats/certs/agent-key.pem")), 0o600);
    assert_eq!(mode(&state.join("nats/certs/leaf-client-key.pem")), 0o600);
    let agent_view = get(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}/agent"),
    )
    .await;
    assert!(agent_view["renewed_at"].is_i64(), "{agent_view}");
    let status = ok_json(&["status", "--state-dir", &state_s, "--json"], &[]);
    assert!(status["agent"]["last_renewal"].is_i64(), "{status}");
    assert!(status["agent"]["renewal_error"].is_null(), "{status}");
    assert!(
        agent_view["edge_cert_expires_at"].as_i64().unwrap() > init["expires_at"].as_i64().unwrap(),
        "{agent_view}"
    );

    // Every acknowledged message is stored, once.
    let pool = sqlx::SqlitePool::connect(&serve.database_url)
        .await
        .expect("database");
    let deadline = Instant::now() + WAIT;
    let (rows, distinct) = loop {
        let (rows, distinct): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT message) FROM logs WHERE message LIKE 'renewal-test %'",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        if distinct >= i64::try_from(acked).unwrap() || Instant::now() > deadline {
            break (rows, distinct);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        distinct,
        i64::try_from(acked).unwrap(),
        "acknowledged = stored"
    );
    assert_eq!(rows, distinct, "no duplicates");

    // A cloned machine (same files, another machine id) is refused and
    // shown as a conflict; nothing is replaced.
    let clone_toml = dir.join("clone-agent.toml");
    let fingerprint = status["identity"]["host_fingerprint"].as_str().unwrap();
    std::fs::write(
        &clone_toml,
        agent_toml.replace(fingerprint, &"ab".repeat(32)),
    )
    .unwrap();
    let before = std::fs::read_to_string(state.join("nats/certs/agent.pem")).unwrap();
    let out = Command::new(sibling("serviceradar-agent"))
        .args(["--config", clone_toml.to_str().unwrap(), "--renew-now"])
        .output()
        .expect("agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a clone's renewal is refused");
    assert!(stderr.contains("cloned machine"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(state.join("nats/certs/agent.pem")).unwrap(),
        before,
        "a refused renewal replaces nothing"
    );
    let history = get(
        &serve.base,
        &api_token,
        &format!(
            "/enrollment-tokens/{}",
            site_token["token"]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "conflict"
                && e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("cloned machine")),
        "{history}"
    );

    // Revoked: renewal stops, and the site says why.
    let revoked = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/edge-sites/{site_id}/agent/revoke",
            serve.base
        ))
        .bearer_auth(&api_token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let out = Command::new(sibling("serviceradar-agent"))
        .args([
            "--config",
            state.join("agent.toml").to_str().unwrap(),
            "--renew-now",
        ])
        .output()
        .expect("agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a revoked agent's renewal is refused"
    );
    assert!(stderr.contains("revoked"), "{stderr}");
    let agent_view = get(
        &serve.base,
        &api_token,
        &format!("/edge-sites/{site_id}/agent"),
    )
    .await;
    assert!(
        agent_view["renewal_refusal"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{agent_view}"
    );
    serviceradar_testkit::report(&format!(
        "renewal: {renewed_events} renewals of 2-minute certificates in {:.0} s; {acked} messages \
         published at 100 msg/s through the leaf, {retries} retried publishes, all stored once; \
         leaf connected in {} of {samples} samples (the rest: its reconnect when the session of \
         the first certificate ended)",
        renewals_took.as_secs_f64(),
        samples - not_connected.len()
    ));
    drop(agent);
    drop(leaf);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
