//! The control stream end to end: the real `serviceradar-agent` binary
//! dialing a real gateway (mTLS) of a real `serviceradar-core`, driven
//! through the JSON API.
//!
//! * a command reaches the agent and its result comes back (diagnostics with
//!   the agent's clock and the leaf's `/varz` from a real `nats-server`'s
//!   monitoring port; `run_checks`);
//! * a command to an agent without a stream fails fast (`409 agent_offline`,
//!   kept as `offline`);
//! * a check added through the API reaches the agent within 1 s and the
//!   acknowledged config version is visible; bad input is a precise `400`
//!   and writes nothing;
//! * another tenant cannot command, read or configure this tenant's agent;
//! * revoking the agent closes its open stream (the agent exits with 3);
//! * on PostgreSQL, a command issued on replica A reaches the agent
//!   connected to replica B's gateway and its result comes back; revoking on
//!   A closes the stream on B;
//! * one call (`POST /agent-checks/apply`) changes the checks of every agent
//!   of the tenant (agents on both replicas acknowledge), or of listed
//!   sites only; another tenant's agent and sites are untouched; bad input
//!   names each bad element and writes nothing.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, SiteAgent};

const PASSWORD: &str = "control stream test password";

/// Starts the agent binary against `gateway_port`; its log lines go to the
/// test's output.
fn start_agent(agent: &SiteAgent, gateway_port: u16) -> tokio::process::Child {
    let config = agent.files.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "gateway_url = \"https://localhost:{gateway_port}\"\ncert = \"agent.pem\"\n\
             key = \"agent-key.pem\"\nca = \"root-ca.pem\"\n"
        ),
    )
    .expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("agent");
    let stderr = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("agent: {line}");
        }
    });
    child
}

/// Waits until the agent acknowledged a config over its stream; returns
/// the version.
async fn acked_version(
    api: &Api,
    site: &str,
    other_than: Option<&str>,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = api.get(&format!("/edge-sites/{site}/agent")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(v) = body["config_version"].as_str()
            && Some(v) != other_than
        {
            return v.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no config acknowledged within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a command until it is final.
async fn finished(api: &Api, site: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api
            .get(&format!("/edge-sites/{site}/agent/commands/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if matches!(
            body["status"].as_str(),
            Some("succeeded" | "failed" | "expired" | "offline")
        ) {
            return body;
        }
        assert!(Instant::now() < deadline, "command not finished: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> i64 {
    serviceradar_store::now_ms()
}

/// A real `nats-server` with its monitoring port (what a site's leaf has);
/// returns it and the monitoring port.
fn monitored_nats(dir: &std::path::Path) -> (serviceradar_testkit::NatsServer, u16) {
    let client = serviceradar_testkit::free_port();
    let monitor = serviceradar_testkit::free_port();
    let server = serviceradar_testkit::NatsServer::start(
        dir,
        "leaf",
        &format!("listen: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\nserver_name: ctl-test-leaf\n"),
        monitor,
    )
    .expect("nats-server");
    (server, monitor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_check_changes_reach_the_agent() {
    let nats_dir = tempfile::tempdir().expect("tempdir");
    let (_nats, monitor) = monitored_nats(nats_dir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.agent_push_interval_secs = 1;
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{monitor}"));
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&core, "default", "admin@example.com").await;

    // No stream yet: a command fails fast and is kept as offline.
    let started = Instant::now();
    let (status, body) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "run_checks" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "agent_offline", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (_, history) = api.get(&format!("/edge-sites/{site}/agent/commands")).await;
    assert_eq!(history["items"][0]["status"], "offline", "{history}");

    let mut child = start_agent(&agent, core.gateway_port);
    let v0 = acked_version(&api, &site, None, Duration::from_secs(30)).await;

    // Diagnostics: the agent's clock and the leaf's own /varz come back.
    let (status, issued) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "collect_diagnostics", "ttl_secs": 30 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
    assert!(
        matches!(
            issued["status"].as_str(),
            Some("sent" | "acked" | "succeeded")
        ),
        "{issued}"
    );
    let done = finished(&api, &site, issued["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let clock = done["result"]["clock"]["unix_ms"].as_i64().expect("clock");
    assert!((clock - now_ms()).abs() < 60_000, "agent clock {clock}");
    assert_eq!(
        done["result"]["leaf"]["varz"]["server_name"], "ctl-test-leaf",
        "{done}"
    );
    assert!(done["result"]["leaf"]["leafz"].is_object(), "{done}");
    assert!(done["result"]["leaf"]["jsz"].is_object(), "{done}");
    assert!(
        done["result"]["log_tail"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{done}"
    );

    // Run checks now: the results come back in the command's result.
    let (status, issued) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "run_checks" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
    let done = finished(&api, &site, issued["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["results"][0]["name"], "nats-leaf", "{done}");

    // A bundle-installed box has no enrolled certificates to renew.
    let (_, issued) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "renew_certificates" }),
        )
        .await;
    let done = finished(&api, &site, issued["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["message"]
            .as_str()
            .is_some_and(|m| m.contains("not enrolled")),
        "{done}"
    );

    // Bad input: precise 400s, nothing stored, nothing pushed.
    let (status, body) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "reboot", "ttl_secs": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields: Vec<_> = body["error"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(fields, ["kind", "ttl_secs"], "{body}");
    let (status, body) = api
        .post(
            &format!("/edge-sites/{site}/agent/checks"),
            json!({ "name": "web", "kind": "tcp", "target": "no-port", "interval_secs": 2, "timeout_ms": 5000 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields: Vec<_> = body["error"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(fields, ["target", "interval_secs"], "{body}");
    let (_, checks) = api.get(&format!("/edge-sites/{site}/agent/checks")).await;
    assert_eq!(checks["items"], json!([]), "{checks}");
    assert_eq!(checks["config_version"], v0.as_str());

    // A check added through the API reaches the agent within 1 s.
    let started = Instant::now();
    let (status, body) = api
        .post(
            &format!("/edge-sites/{site}/agent/checks"),
            json!({ "name": "core-http", "kind": "tcp", "target": format!("127.0.0.1:{}", core.http_port), "interval_secs": 5, "timeout_ms": 1000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let v1 = acked_version(&api, &site, Some(&v0), Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "config acknowledged after {took:?}"
    );
    eprintln!("config change acknowledged after {took:?}");
    // ... and the agent runs it: its result shows on the agent.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = api.get(&format!("/edge-sites/{site}/agent")).await;
        let ran = body["checks"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["name"] == "core-http" && c["status"] == "ok")
        });
        if ran {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new check never reported: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Change and remove: each pushed and acknowledged too.
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("/edge-sites/{site}/agent/checks/core-http"),
            Some(json!({ "kind": "http", "target": format!("http://127.0.0.1:{}/healthz", core.http_port), "interval_secs": 10 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v2 = acked_version(&api, &site, Some(&v1), Duration::from_secs(1)).await;
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/edge-sites/{site}/agent/checks/core-http"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let v3 = acked_version(&api, &site, Some(&v2), Duration::from_secs(1)).await;
    assert_eq!(v3, v0, "the same checks give the same version");
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/edge-sites/{site}/agent/checks/core-http"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // History: oldest first, with the outcome of each.
    let (_, history) = api.get(&format!("/edge-sites/{site}/agent/commands")).await;
    let statuses: Vec<_> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("run_checks".to_owned(), "offline".to_owned()),
            ("collect_diagnostics".to_owned(), "succeeded".to_owned()),
            ("run_checks".to_owned(), "succeeded".to_owned()),
            ("renew_certificates".to_owned(), "failed".to_owned()),
        ]
    );

    // Revoking the agent closes its open stream: it stops for good (3).
    let started = Instant::now();
    let (status, body) = api
        .post(&format!("/edge-sites/{site}/agent/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the agent stops once revoked")
        .expect("wait");
    assert_eq!(exit.code(), Some(3), "{exit:?}");
    eprintln!("revoked agent stopped after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Nothing more can be issued to it.
    let (status, _) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "run_checks" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_command_or_configure_this_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.provisioning.leaf_monitoring_listen = None;
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let site = agent.site.id.to_string();
    serviceradar_provisioning::tenants::create_tenant(
        &core.store,
        &core.pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug: "other",
            name: None,
            owner_email: "owner@other.example.com",
            owner_password: Some(PASSWORD),
        },
    )
    .await
    .expect("tenant");
    let own = Api::new(&core, "default", "admin@example.com").await;
    let other = Api::new(&core, "other", "owner@other.example.com").await;
    let mut child = start_agent(&agent, core.gateway_port);
    acked_version(&own, &site, None, Duration::from_secs(30)).await;
    let (status, issued) = own
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "run_checks" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
    let cid = issued["id"].as_str().expect("id");

    for (method, path, body) in [
        (
            reqwest::Method::POST,
            format!("/edge-sites/{site}/agent/commands"),
            Some(json!({ "kind": "run_checks" })),
        ),
        (
            reqwest::Method::GET,
            format!("/edge-sites/{site}/agent/commands"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/edge-sites/{site}/agent/commands/{cid}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/edge-sites/{site}/agent/checks"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/edge-sites/{site}/agent/checks"),
            Some(json!({ "name": "x", "kind": "dns", "target": "example.com" })),
        ),
        (
            reqwest::Method::PUT,
            format!("/edge-sites/{site}/agent/checks/x"),
            Some(json!({ "kind": "dns", "target": "example.com" })),
        ),
        (
            reqwest::Method::DELETE,
            format!("/edge-sites/{site}/agent/checks/x"),
            None,
        ),
    ] {
        let (status, body) = other.call(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    // Nothing of theirs reached the agent or the history.
    let (_, history) = own.get(&format!("/edge-sites/{site}/agent/commands")).await;
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    let (_, checks) = own.get(&format!("/edge-sites/{site}/agent/checks")).await;
    assert_eq!(checks["items"], json!([]));
    // A command id of this tenant under another site of the other tenant is 404 too.
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_issued_on_one_replica_reaches_an_agent_on_another() {
    let url = serviceradar_testkit::postgres().create_database();
    // Replicas share the database and the master key.
    let keys = tempfile::tempdir().expect("tempdir");
    let replica = |dir: &tempfile::TempDir| {
        let mut s = support::settings(dir);
        s.database_url = url.clone();
        s.master_key =
            serviceradar_identity::MasterKeySource::DevFile(keys.path().join("master.key"));
        s.bootstrap.admin_password = Some(PASSWORD.into());
        s.provisioning.leaf_monitoring_listen = None;
        s.gateway.agent_push_interval_secs = 1;
        s
    };
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let (settings_a, settings_b) = (replica(&dir_a), replica(&dir_b));
    let a = support::spawn(dir_a, settings_a).await;
    let b = support::spawn(dir_b, settings_b).await;
    for core in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(10), core.agent_links.relay_listening())
            .await
            .expect("the replica's link relay listens");
    }
    let tenant = a.tenant("default").await;
    let agent = a.site(&tenant, "replicated").await;
    let site = agent.site.id.to_string();
    let api_a = Api::new(&a, "default", "admin@example.com").await;

    // The agent dials replica B's gateway; people use replica A.
    let mut child = start_agent(&agent, b.gateway_port);
    let v0 = acked_version(&api_a, &site, None, Duration::from_secs(30)).await;
    assert!(b.agent_links.is_connected_here(agent.agent_id));
    assert!(!a.agent_links.is_connected_here(agent.agent_id));

    let (status, issued) = api_a
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "collect_diagnostics" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
    let done = finished(&api_a, &site, issued["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["result"]["clock"]["unix_ms"].is_i64(), "{done}");

    // A check added on A reaches the agent on B within 1 s.
    let started = Instant::now();
    let (status, body) = api_a
        .post(
            &format!("/edge-sites/{site}/agent/checks"),
            json!({ "name": "resolver", "kind": "dns", "target": "localhost", "interval_secs": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    acked_version(&api_a, &site, Some(&v0), Duration::from_secs(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Revoked on A: B closes the stream, the agent stops for good.
    let started = Instant::now();
    let (status, _) = api_a
        .post(&format!("/edge-sites/{site}/agent/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the agent stops once revoked")
        .expect("wait");
    assert_eq!(exit.code(), Some(3), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // B refuses the agent's other calls at once too, although its identity
    // cache still holds the agent.
    let mut t = serviceradar_agent::transport::GrpcTransport::connect(&b.target(&agent))
        .await
        .expect("connect");
    let err = serviceradar_agent::transport::Transport::hello(
        &mut t,
        serviceradar_proto::v1::HelloRequest::default(),
    )
    .await
    .expect_err("revoked");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

/// `serviceradar-cli` beside the agent binary (`cargo test --workspace`
/// builds it; alone: `cargo build -p serviceradar-cli` first).
fn cli() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .with_file_name("serviceradar-cli");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p serviceradar-cli)",
        path.display()
    );
    path
}

async fn run_cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = tokio::process::Command::new(cli())
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--json")
        .output()
        .await
        .expect("cli");
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_issues_commands_and_changes_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.provisioning.leaf_monitoring_listen = None;
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&core, "default", "admin@example.com").await;
    let config = agent.files.path().join("cli.json");
    let url = format!("http://127.0.0.1:{}", core.http_port);
    let (code, _, err) = run_cli(&config, &["login", "--url", &url, "--token", &api.token]).await;
    assert_eq!(code, Some(0), "{err}");

    // Not connected: refused at once (exit 3) with the API's reason.
    let (code, _, err) = run_cli(&config, &["agent", "command", &site, "run_checks"]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("not connected"), "{err}");

    let _child = start_agent(&agent, core.gateway_port);
    let v0 = acked_version(&api, &site, None, Duration::from_secs(30)).await;
    let (code, done, err) =
        run_cli(&config, &["agent", "command", &site, "collect_diagnostics"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["result"]["clock"]["unix_ms"].is_i64(), "{done}");

    let (code, added, err) = run_cli(
        &config,
        &[
            "agent",
            "checks",
            "add",
            &site,
            "--name",
            "resolver",
            "--kind",
            "dns",
            "--target",
            "localhost",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(added["interval_secs"], 30, "{added}");
    acked_version(&api, &site, Some(&v0), Duration::from_secs(1)).await;
    let (code, _, err) = run_cli(
        &config,
        &[
            "agent", "checks", "add", &site, "--name", "bad", "--kind", "dns", "--target", "a b",
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("target"), "{err}");
    let (code, list, err) = run_cli(&config, &["agent", "checks", "list", &site]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(list["items"][0]["name"], "resolver", "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let (code, _, err) = run_cli(&config, &["agent", "checks", "remove", &site, "resolver"]).await;
    assert_eq!(code, Some(0), "{err}");
}

/// Polls the site's uploaded results until one named `upload_id` is complete.
async fn uploaded(api: &Api, site: &str, upload_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api
            .get(&format!(
                "/edge-sites/{site}/agent/results?from=0&to={}",
                now_ms() + 60_000
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(item) = body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["upload_id"] == upload_id))
            && item["complete"] == true
        {
            return item.clone();
        }
        assert!(
            Instant::now() < deadline,
            "upload {upload_id} not listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_agent_uploads_command_outputs_listed_through_the_api() {
    let nats_dir = tempfile::tempdir().expect("tempdir");
    let (_nats, monitor) = monitored_nats(nats_dir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.agent_push_interval_secs = 1;
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{monitor}"));
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&core, "default", "admin@example.com").await;
    let mut child = start_agent(&agent, core.gateway_port);
    acked_version(&api, &site, None, Duration::from_secs(30)).await;

    // Diagnostics: the command's result names the upload the agent made of
    // the whole bundle; the API lists it and serves its bytes.
    let (status, issued) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "collect_diagnostics", "ttl_secs": 30 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
    let command = issued["id"].as_str().expect("id").to_owned();
    let done = finished(&api, &site, &command).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let upload_id = done["result"]["upload_id"]
        .as_str()
        .expect("the result names its upload")
        .to_owned();
    assert_eq!(upload_id, format!("diagnostics-{command}"));
    let item = uploaded(&api, &site, &upload_id).await;
    assert_eq!(
        item["content_type"], "application/vnd.serviceradar.diagnostics+json",
        "{item}"
    );
    assert_eq!(item["agent_id"], agent.agent_id.to_string(), "{item}");
    let content = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/v1/edge-sites/{site}/agent/results/{}",
            core.http_port,
            item["id"].as_str().expect("id")
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("content");
    assert_eq!(content.status(), StatusCode::OK);
    let bytes = content.bytes().await.expect("bytes");
    assert_eq!(item["bytes"].as_u64(), Some(bytes.len() as u64), "{item}");
    let bundle: Value = serde_json::from_slice(&bytes).expect("the upload is the JSON bundle");
    assert_eq!(bundle["clock"], done["result"]["clock"], "{bundle}");
    assert_eq!(
        bundle["leaf"]["varz"]["server_name"], "ctl-test-leaf",
        "{bundle}"
    );

    // run_checks: its detailed results are uploaded too.
    let (_, issued) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "run_checks" }),
        )
        .await;
    let command = issued["id"].as_str().expect("id").to_owned();
    let done = finished(&api, &site, &command).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let item = uploaded(&api, &site, &format!("checks-{command}")).await;
    assert_eq!(
        item["content_type"], "application/vnd.serviceradar.check-results+json",
        "{item}"
    );
    let _ = child.kill().await;
}

/// The names of the checks configured for the site's agent.
async fn configured(api: &Api, site: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/edge-sites/{site}/agent/checks")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_changes_the_checks_of_every_agent_of_the_tenant_on_every_replica() {
    let url = serviceradar_testkit::postgres().create_database();
    let keys = tempfile::tempdir().expect("tempdir");
    let replica = |dir: &tempfile::TempDir| {
        let mut s = support::settings(dir);
        s.database_url = url.clone();
        s.master_key =
            serviceradar_identity::MasterKeySource::DevFile(keys.path().join("master.key"));
        s.bootstrap.admin_password = Some(PASSWORD.into());
        s.provisioning.leaf_monitoring_listen = None;
        s
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (settings_a, settings_b) = (replica(&dir_a), replica(&dir_b));
    let a = support::spawn(dir_a, settings_a).await;
    let b = support::spawn(dir_b, settings_b).await;
    for core in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(10), core.agent_links.relay_listening())
            .await
            .expect("the replica's link relay listens");
    }
    let tenant = a.tenant("default").await;
    let first = a.site(&tenant, "fleet-one").await;
    let second = a.site(&tenant, "fleet-two").await;
    let other_tenant = a.tenant("other").await;
    let foreign = a.site(&other_tenant, "foreign").await;
    let api = Api::new(&a, "default", "admin@example.com").await;
    let sites = [first.site.id.to_string(), second.site.id.to_string()];
    // One agent on each replica, and another tenant's agent on A.
    let _one = start_agent(&first, a.gateway_port);
    let _two = start_agent(&second, b.gateway_port);
    let _foreign = start_agent(&foreign, a.gateway_port);
    let mut versions = Vec::new();
    for site in &sites {
        versions.push(acked_version(&api, site, None, Duration::from_secs(30)).await);
    }

    // Bad input: every bad element named, nothing written.
    for (bad, want) in [
        (json!({}), vec!["set"]),
        (
            json!({ "set": [{ "name": "x", "kind": "tcp", "target": "no-port" }] }),
            vec!["set[0].target"],
        ),
        (
            json!({ "set": [{ "name": "dup", "kind": "dns", "target": "example.com" },
                            { "name": "dup", "kind": "dns", "target": "example.org" }],
                    "remove": ["dup", "Bad Name"] }),
            vec!["set[1].name", "remove[0]", "remove[1]"],
        ),
        (
            json!({ "set": [{ "name": "x", "kind": "dns", "target": "example.com" }],
                    "site_ids": ["not-an-id"] }),
            vec!["site_ids[0]"],
        ),
        // Another tenant's site is no site of this tenant.
        (
            json!({ "set": [{ "name": "x", "kind": "dns", "target": "example.com" }],
                    "site_ids": [sites[0], foreign.site.id.to_string()] }),
            vec!["site_ids"],
        ),
    ] {
        let (status, body) = api.post("/agent-checks/apply", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let fields: Vec<&str> = body["error"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f["field"].as_str())
            .collect();
        assert_eq!(fields, want, "{bad}: {body}");
    }
    for site in &sites {
        assert!(configured(&api, site).await.is_empty(), "nothing written");
    }

    // One call: a check on every agent of the tenant, acknowledged by
    // each, on either replica.
    let started = Instant::now();
    let (status, body) = api
        .post(
            "/agent-checks/apply",
            json!({ "set": [{ "name": "resolver", "kind": "dns", "target": "localhost",
                              "interval_secs": 5 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agents"], 2, "{body}");
    for (site, before) in sites.iter().zip(&versions) {
        acked_version(&api, site, Some(before), Duration::from_secs(10)).await;
        assert_eq!(configured(&api, site).await, ["resolver"]);
    }
    eprintln!("both agents acknowledged after {:?}", started.elapsed());
    // The other tenant's agent is untouched.
    let outsider = a
        .store
        .scoped(serviceradar_domain::TenantScope::for_system_task(
            other_tenant.id,
        ))
        .agent_check_configs(foreign.agent_id)
        .await
        .expect("foreign checks");
    assert!(outsider.is_empty(), "{outsider:?}");

    // Listed sites only: the check removed from the first agent alone.
    let v1 = acked_version(&api, &sites[0], None, Duration::from_secs(5)).await;
    let (status, body) = api
        .post(
            "/agent-checks/apply",
            json!({ "remove": ["resolver"], "site_ids": [sites[0]] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agents"], 1, "{body}");
    acked_version(&api, &sites[0], Some(&v1), Duration::from_secs(10)).await;
    assert!(configured(&api, &sites[0]).await.is_empty());
    assert_eq!(configured(&api, &sites[1]).await, ["resolver"]);
}
