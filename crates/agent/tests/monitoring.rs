//! ServiceRadar agent compatibility: a client generated from
//! `crates/proto/proto/monitoring.proto` by Python `grpcio-tools` (an
//! independent implementation of the protocol) speaks
//! `monitoring.AgentGatewayService` to the real gateway over mTLS with a
//! real agent certificate:
//!
//! * a `Hello` claiming another agent's id is refused (`PERMISSION_DENIED`)
//!   and audited, and changes nothing of that agent;
//! * `Hello`, `GetConfig` (full, then `not_modified` with the config's
//!   timestamp), `PushStatus` and `StreamStatus` complete, and the statuses
//!   are kept as the agent's check results;
//! * over `ControlStream` the config arrives and its acknowledgement is
//!   visible through the API; a command issued through the JSON API reaches
//!   the client and its ack / progress / result come back.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use serviceradar_domain::TenantScope;
use support::Api;
use tokio::io::AsyncBufReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serviceradar_protocol_client_reports_and_is_managed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = support::settings(&dir);
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let other = core.site(&tenant, "sfo").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&core, "default", "admin@example.com").await;

    let out = support::python_stubs("monitoring.proto");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/serviceradar_agent.py"
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(core.gateway_port.to_string())
        .arg(agent.cert())
        .arg(agent.key())
        .arg(agent.ca())
        .arg(agent.agent_id.to_string())
        .arg(other.agent_id.to_string())
        .env("PYTHONPATH", out.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || -> Vec<String> {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the python client answers in time")
            .expect("read")
            .expect("the python client ended early");
        eprintln!("python: {line}");
        line.split_whitespace().map(str::to_owned).collect()
    };

    // The impostor Hello is refused and audited; the other agent is untouched.
    assert_eq!(next().await, ["impostor", "PERMISSION_DENIED"]);
    let audit = core
        .store
        .gateway_audit_reasons(tenant.id)
        .await
        .expect("audit");
    assert!(audit.iter().any(|r| r.contains("agent_id")), "{audit:?}");
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let untouched = scoped.agent(other.agent_id).await.expect("agent");
    assert_eq!(untouched.agent_version, None);

    let hello = next().await;
    assert_eq!(
        hello[..3],
        ["hello", "True", agent.agent_id.to_string().as_str()]
    );
    assert_eq!(
        hello[4], "True",
        "an agent without a config version is outdated"
    );
    let stored = scoped.agent(agent.agent_id).await.expect("agent");
    assert_eq!(stored.agent_version.as_deref(), Some("1.2.3"));
    assert_eq!(stored.hostname.as_deref(), Some("sr-go-agent"));

    let config = next().await;
    assert_eq!(config[..2], ["config", "False"]);
    let version = config[2].clone();
    assert!(config[4].contains("nats_leaf"), "{config:?}");
    let same = next().await;
    assert_eq!(same[..3], ["not_modified", "True", version.as_str()]);
    let timestamp: i64 = same[3].parse().expect("timestamp");
    let now = serviceradar_store::now_ms() / 1000;
    assert!(timestamp > now - 3600 && timestamp <= now, "{same:?}");
    assert_eq!(same[4], "0", "a not_modified answer carries no checks");

    assert_eq!(next().await, ["push", "True"]);
    assert_eq!(next().await, ["stream", "True"]);
    let checks = scoped.agent_checks(agent.agent_id).await.expect("checks");
    let seen: Vec<(&str, &str)> = checks
        .iter()
        .map(|c| (c.name.as_str(), c.status.as_str()))
        .collect();
    for expected in [("web", "ok"), ("db", "fail"), ("dns", "ok"), ("ping", "ok")] {
        assert!(seen.contains(&expected), "{seen:?}");
    }
    let web = checks.iter().find(|c| c.name == "web").expect("web");
    assert_eq!(web.response_time_us, 3_000);

    // The control stream: config acknowledged, then a command round trip.
    let ready = next().await;
    assert_eq!(ready, ["ready", version.as_str()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = api.get(&format!("/edge-sites/{site}/agent")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["config_version"] == version.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "config ack not visible: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, issued) = api
        .post(
            &format!("/edge-sites/{site}/agent/commands"),
            json!({ "kind": "run_checks", "ttl_secs": 120 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
    let id = issued["id"].as_str().expect("id").to_owned();
    assert_eq!(
        next().await,
        ["command", id.as_str(), "run_checks", "120", "True"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let finished = loop {
        let (status, body) = api
            .get(&format!("/edge-sites/{site}/agent/commands/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] == "succeeded" {
            break body;
        }
        assert!(Instant::now() < deadline, "command not finished: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished["result"], json!({ "ran": "run_checks" }));
    assert_eq!(finished["message"], "done");
    assert_eq!(next().await, ["bye"]);
    let status = child.wait().await.expect("wait");
    assert!(status.success());
}
