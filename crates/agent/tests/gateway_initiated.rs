//! Gateway-initiated mode (seed 004) with real processes: a real
//! `serviceradar-core` whose gateway polls the real `serviceradar-agent`
//! binary listening with mTLS on a loopback port.
//!
//! * the endpoint is registered at enrollment only: an enrollment token
//!   created with `agent_endpoint` (bad input is a precise `400` and writes
//!   nothing; another tenant gets `404`; there is no request that sets an
//!   endpoint by itself), redeemed with the agent's CSR, stores it with the
//!   agent; the gateway polls the agent, its check results, host name and
//!   config version show in the API;
//! * the address rule: without the operator's `--agent-endpoint-allow-cidr`
//!   a tenant cannot register 10.x, 169.254.x, 127.x (or `localhost`): each
//!   is a `400` naming the kind of address and the flag; a token made while
//!   the range was allowed is refused at redemption once it no longer is;
//! * commands ride on the polls: issuing one brings the agent's next poll
//!   forward, the result comes with a poll a second later (`run_checks`,
//!   `collect_diagnostics`; a
//!   renewal on an agent without enrollment fails with the reason); one
//!   issued while the agent is down expires unsent;
//! * stopping the agent makes it `unreachable` after the timeout and raises
//!   `agent_unreachable` (alerts API and a webhook); restarting it makes it
//!   `reachable` and resolves the alert (webhook again);
//! * the listening agent refuses every client certificate but the platform
//!   gateway's: another tenant's agent, another site's agent of the same
//!   tenant, the hub's (root-signed, another name), a "gateway"
//!   certificate from a foreign root, none at all;
//! * the gateway refuses an endpoint that answers with another agent's
//!   certificate (nothing is recorded for the site);
//! * renewal through the polls (the agent dials nothing): a clone's
//!   request is refused and replaces nothing; the enrolled host's renews
//!   with keys made on the box, and the gateway keeps polling it past the
//!   first certificate's expiry (the listener serves the new one);
//! * two replicas on one PostgreSQL: one polls the agent at a time (never
//!   two connections at once); when one stops the other polls; a lease held
//!   by a replica that died is taken over once it runs out.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use serviceradar_gateway::poller::PollerSettings;
use serviceradar_testkit::free_port;
use support::{Api, SiteAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

/// Starts the agent binary listening on `port` with `agent`'s certificate;
/// returns once it accepts connections.
async fn start_listening_agent(agent: &SiteAgent, port: u16, extra: &str) -> tokio::process::Child {
    let config = agent.files.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ncert = \"agent.pem\"\nkey = \"agent-key.pem\"\n\
             ca = \"root-ca.pem\"\n{extra}"
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the agent did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Waits until `GET path` satisfies `ok`; returns the body.
async fn until(api: &Api, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    until_within(api, path, what, WAIT, ok).await
}

/// [`until`] with its own deadline.
async fn until_within(
    api: &Api,
    path: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next webhook event of `kind`.
async fn webhook(
    hooks: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    event: &str,
    kind: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, hooks.recv())
            .await
            .unwrap_or_else(|_| panic!("no {event} webhook for {kind}"))
            .expect("receiver open");
        if got == (event.to_owned(), kind.to_owned()) {
            return;
        }
    }
}

fn poller_for_tests() -> PollerSettings {
    PollerSettings {
        tick: Duration::from_millis(200),
        lease: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
        unreachable_after: Duration::from_secs(2),
        retry_base: Duration::from_millis(200),
        retry_cap: Duration::from_secs(1),
        rules: loopback_allowed(),
        ..PollerSettings::default()
    }
}

/// What the tests' operator allows: agents on this machine.
fn loopback_allowed() -> serviceradar_domain::agent_poll::PollRules {
    serviceradar_domain::agent_poll::PollRules {
        allow_internal: vec!["127.0.0.0/8".parse().expect("range")],
        ..Default::default()
    }
}

/// `POST .../enrollment-tokens` for `site` with `body`.
async fn create_token(api: &Api, site: &str, body: Value) -> (StatusCode, Value) {
    api.post(&format!("/edge-sites/{site}/enrollment-tokens"), body)
        .await
}

/// The field names of a `400`.
fn fields(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields: {body}"))
        .iter()
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Redeems `token` as the box of `agent` would (`site init --scope agent`:
/// a key made here, only its CSR sent) through the public `/enroll`, and
/// writes the enrolled certificate over `agent`'s files. Returns the
/// status and answer.
async fn redeem(api: &Api, agent: &SiteAgent, token: &str) -> (StatusCode, Value) {
    let (key, csr) = serviceradar_pki::new_key_and_request("agent").expect("csr");
    let (status, enrolled) = api
        .post(
            "/enroll",
            json!({ "token": token, "scope": "agent", "hostname": "listening-box",
                "host_fingerprint": "ab".repeat(16), "agent_csr": csr }),
        )
        .await;
    if status == StatusCode::OK {
        let files = agent.files.path();
        let cert = enrolled["agent"]["cert_pem"].as_str().expect("cert");
        std::fs::write(files.join("agent.pem"), cert).expect("write");
        std::fs::write(files.join("agent-key.pem"), key.as_bytes()).expect("write");
        let root = enrolled["root_ca_pem"].as_str().expect("root");
        std::fs::write(files.join("root-ca.pem"), root).expect("write");
    }
    (status, enrolled)
}

/// Enrolls `agent` in gateway-initiated mode at `endpoint`: a token made
/// for it, redeemed; returns the token's view.
async fn enroll_listening(api: &Api, agent: &SiteAgent, endpoint: &str, interval: i64) -> Value {
    let site = agent.site.id.to_string();
    let (status, created) = create_token(
        api,
        &site,
        json!({ "scope": "agent", "agent_endpoint": endpoint, "poll_interval_secs": interval }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, enrolled) = redeem(api, agent, created["secret"].as_str().expect("secret")).await;
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    assert_eq!(enrolled["agent"]["endpoint"], endpoint, "{enrolled}");
    created["token"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_polls_an_agent_registered_at_enrollment_and_alerts_while_it_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.poll = poller_for_tests();
    settings.webhooks.allow_internal = vec!["127.0.0.0/8".parse().expect("range")];
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "polled").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&core, "default", "admin@example.com").await;
    let (hook_port, mut hooks) = support::webhook_receiver().await;
    let (status, body) = api
        .post(
            "/webhooks",
            json!({ "url": format!("http://127.0.0.1:{hook_port}/alerts") }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let endpoint_path = format!("/edge-sites/{site}/agent/endpoint");
    let (status, body) = api.get(&endpoint_path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "dial_out", "the default: {body}");

    // No request sets an endpoint by itself: it comes from enrollment.
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &endpoint_path,
            Some(json!({ "endpoint": "127.0.0.1:50061" })),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");

    // Bad input on the token: every field named, nothing written.
    let (status, body) = create_token(
        &api,
        &site,
        json!({ "scope": "agent", "agent_endpoint": "0.0.0.0:50061", "poll_interval_secs": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        fields(&body),
        ["agent_endpoint", "poll_interval_secs"],
        "{body}"
    );
    for (bad, field) in [
        (json!({ "agent_endpoint": "host" }), "agent_endpoint"),
        (json!({ "agent_endpoint": "$(reboot):1" }), "agent_endpoint"),
        (json!({ "poll_interval_secs": 30 }), "poll_interval_secs"),
        (
            json!({ "scope": "collector:syslog", "agent_endpoint": "127.0.0.1:1" }),
            "agent_endpoint",
        ),
        // Loopback is allowed here; a private range is not.
        (
            json!({ "agent_endpoint": "10.0.0.5:50061" }),
            "agent_endpoint",
        ),
    ] {
        let (status, body) = create_token(&api, &site, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(fields(&body), [field], "{bad}: {body}");
    }
    let (_, tokens) = api.get(&format!("/enrollment-tokens?site_id={site}")).await;
    assert_eq!(tokens["items"], json!([]), "nothing written: {tokens}");
    assert_eq!(api.get(&endpoint_path).await.1["mode"], "dial_out");

    // Another tenant's operator cannot see it or enroll into it.
    serviceradar_provisioning::tenants::create_tenant(
        &core.store,
        &core.pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug: "other",
            name: None,
            owner_email: "owner@other.example.com",
            owner_password: Some("gateway-initiated test password"),
        },
    )
    .await
    .expect("tenant");
    let outsider = Api::new(&core, "other", "owner@other.example.com").await;
    let (status, _) = outsider.get(&endpoint_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        create_token(&outsider, &site, json!({ "agent_endpoint": "127.0.0.1:1" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = outsider
        .call(reqwest::Method::DELETE, &endpoint_path, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The box enrolls with a token made for gateway-initiated mode; its
    // agent listens; the gateway polls it.
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let token = enroll_listening(&api, &agent, &endpoint, 5).await;
    assert_eq!(token["agent_mode"], "gateway_initiated", "{token}");
    let registered = api.get(&endpoint_path).await.1;
    assert_eq!(registered["mode"], "gateway_initiated", "{registered}");
    assert_eq!(registered["endpoint"], endpoint.as_str());
    assert_eq!(registered["poll_interval_secs"], 5);
    let http_port = core.http_port;
    let checks = format!(
        "[[checks]]\nname = \"api\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{http_port}\"\ninterval_secs = 1\n"
    );
    let mut running = start_listening_agent(&agent, port, &checks).await;
    let started = Instant::now();
    until(&api, &endpoint_path, "reachable", |b| {
        b["reachability"] == "reachable"
    })
    .await;
    eprintln!("first successful poll after {:?}", started.elapsed());
    let polled = until(
        &api,
        &format!("/edge-sites/{site}/agent"),
        "the agent's checks",
        |b| {
            b["checks"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "api" && c["status"] == "ok"))
        },
    )
    .await;
    assert!(
        polled["hostname"].as_str().is_some_and(|h| !h.is_empty()),
        "{polled}"
    );
    assert_eq!(polled["agent_version"], env!("CARGO_PKG_VERSION"));
    let (_, configured) = api.get(&format!("/edge-sites/{site}/agent/checks")).await;
    assert!(configured["config_version"].is_string(), "{configured}");
    let (_, site_body) = api.get(&format!("/edge-sites/{site}")).await;
    assert_eq!(
        site_body["status"], "active",
        "polls count as agent contact: {site_body}"
    );

    // A configured check reaches the agent with the next poll.
    let (status, body) = api
        .post(
            &format!("/edge-sites/{site}/agent/checks"),
            json!({ "name": "loopback", "kind": "tcp", "target": format!("127.0.0.1:{http_port}"), "interval_secs": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    until(
        &api,
        &format!("/edge-sites/{site}/agent"),
        "the configured check's result",
        |b| {
            b["checks"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["name"] == "loopback" && c["status"] == "ok")
            })
        },
    )
    .await;

    // Commands ride on the polls: the next poll hands them over (the agent
    // has no stream, yet nothing is "offline"), a later one brings the
    // result back.
    let commands = format!("/edge-sites/{site}/agent/commands");
    let issue = |kind: &'static str, ttl: u32| {
        let api = &api;
        let commands = commands.clone();
        async move {
            let (status, issued) = api
                .post(&commands, json!({ "kind": kind, "ttl_secs": ttl }))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{issued}");
            assert_eq!(issued["status"], "pending", "{issued}");
            assert!(
                issued["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("next poll")),
                "{issued}"
            );
            issued["id"].as_str().expect("id").to_owned()
        }
    };
    let started = Instant::now();
    let run = issue("run_checks", 60).await;
    let diagnostics = issue("collect_diagnostics", 60).await;
    let done = until_within(
        &api,
        &format!("{commands}/{run}"),
        "run_checks' result",
        WAIT,
        |b| b["status"] == "succeeded",
    )
    .await;
    assert!(
        done["result"]["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "api" && r["status"] == "ok")),
        "{done}"
    );
    let done = until_within(
        &api,
        &format!("{commands}/{diagnostics}"),
        "the diagnostics",
        WAIT,
        |b| b["status"] == "succeeded",
    )
    .await;
    let clock = done["result"]["clock"]["unix_ms"].as_i64().expect("clock");
    assert!(
        (clock - serviceradar_store::now_ms()).abs() < 60_000,
        "{done}"
    );
    let took = started.elapsed();
    eprintln!("two commands through the polls in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "issuing brings the poll forward and the result is fetched a second later, \
         not a whole 5-s interval later: {took:?}"
    );
    // Without `[renewal]` in its config the agent has nothing to renew.
    let renew = issue("renew_certificates", 60).await;
    let done = until_within(
        &api,
        &format!("{commands}/{renew}"),
        "renewal's answer",
        WAIT,
        |b| b["status"] == "failed",
    )
    .await;
    assert!(
        done["message"]
            .as_str()
            .is_some_and(|m| m.contains("not enrolled with a token")),
        "{done}"
    );

    // Stopped: unreachable after the timeout, alert raised (webhook).
    running.kill().await.expect("kill");
    let _ = running.wait().await;
    let down = until(&api, &endpoint_path, "unreachable", |b| {
        b["reachability"] == "unreachable"
    })
    .await;
    assert!(down["failures"].as_i64().is_some_and(|f| f >= 1), "{down}");
    assert!(down["last_error"].is_string(), "{down}");
    // The site page shows the same (the agent card's gateway-initiated block).
    let page = format!("/admin/edge-sites/{site}");
    let (status, html) = support::web_page(&core, "default", "admin@example.com", &page).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"agent-polled\""), "{html}");
    assert!(
        html.contains(&format!("<code>127.0.0.1:{port}</code>")),
        "{html}"
    );
    assert!(html.contains(">unreachable</span>"), "{html}");
    assert!(html.contains("Last failure"), "{html}");
    let alerts = until(&api, "/alerts?status=open", "the unreachable alert", |b| {
        b["items"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["kind"] == "agent_unreachable" && a["edge_site_id"] == site.as_str())
        })
    })
    .await;
    eprintln!("alerts: {alerts}");
    webhook(&mut hooks, "alert.raised", "agent_unreachable").await;

    // A command for the stopped agent waits, then expires: never sent.
    let lost = issue("run_checks", 1).await;
    let done = until(&api, &format!("{commands}/{lost}"), "expiry", |b| {
        b["status"] == "expired"
    })
    .await;
    assert!(done["result"].is_null(), "{done}");

    // Restarted: reachable again, alert resolved (webhook).
    let _running = start_listening_agent(&agent, port, &checks).await;
    until(&api, &endpoint_path, "reachable again", |b| {
        b["reachability"] == "reachable"
    })
    .await;
    until(&api, "/alerts?status=resolved", "the alert resolved", |b| {
        b["items"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["kind"] == "agent_unreachable" && a["edge_site_id"] == site.as_str())
        })
    })
    .await;
    webhook(&mut hooks, "alert.resolved", "agent_unreachable").await;

    let (_, html) = support::web_page(&core, "default", "admin@example.com", &page).await;
    assert!(html.contains(">reachable</span>"), "{html}");

    // Back to dial-out: no more polls.
    let (status, _) = api
        .call(reqwest::Method::DELETE, &endpoint_path, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&endpoint_path).await.1["mode"], "dial_out");
    let (_, html) = support::web_page(&core, "default", "admin@example.com", &page).await;
    assert!(!html.contains("agent-polled"), "a dial-out agent: {html}");
}

/// The refusal message of the token's `agent_endpoint`.
async fn refusal(api: &Api, site: &str, endpoint: &str) -> String {
    let (status, body) = create_token(api, site, json!({ "agent_endpoint": endpoint })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{endpoint}: {body}");
    assert_eq!(fields(&body), ["agent_endpoint"], "{endpoint}: {body}");
    body["error"]["fields"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_operators_flag_a_tenant_cannot_register_an_internal_endpoint() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = serviceradar_identity::MasterKeySource::DevFile(keys.path().join("master.key"));
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // The operator first allows loopback (a token is made for 127.0.0.1) ...
    let mut allowing = support::settings(&dir);
    allowing.database_url = url.clone();
    allowing.master_key = key.clone();
    allowing.gateway.poll = poller_for_tests();
    let allowing_dir = tempfile::tempdir().expect("tempdir");
    let before = support::spawn(allowing_dir, allowing).await;
    let tenant = before.tenant("default").await;
    let agent = before.site(&tenant, "strict").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&before, "default", "admin@example.com").await;
    let (status, made) = create_token(
        &api,
        &site,
        json!({ "scope": "agent", "agent_endpoint": "127.0.0.1:50061" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    drop(before);

    // ... then runs without the flag (the default).
    let mut strict = support::settings(&dir);
    strict.database_url = url;
    strict.master_key = key;
    strict.gateway.poll = PollerSettings {
        rules: Default::default(),
        ..poller_for_tests()
    };
    let core = support::spawn(dir, strict).await;
    let api = Api::new(&core, "default", "admin@example.com").await;
    for (endpoint, kind) in [
        ("10.0.0.5:50061", "private (RFC 1918)"),
        ("10.255.1.1:443", "private (RFC 1918)"),
        ("172.16.0.10:50061", "private (RFC 1918)"),
        ("192.168.1.20:50061", "private (RFC 1918)"),
        ("169.254.169.254:80", "link-local"),
        ("127.0.0.1:50061", "loopback"),
        ("127.8.9.10:22", "loopback"),
        ("localhost:50061", "loopback"),
        ("[::1]:50061", "loopback"),
        ("[::ffff:127.0.0.1]:50061", "loopback"),
        ("[fd00::5]:50061", "unique local"),
        ("100.64.0.1:50061", "carrier-grade NAT"),
    ] {
        let message = refusal(&api, &site, endpoint).await;
        assert!(
            message.contains(kind) && message.contains("--agent-endpoint-allow-cidr"),
            "{endpoint}: {message}"
        );
    }
    let (_, tokens) = api.get(&format!("/enrollment-tokens?site_id={site}")).await;
    assert_eq!(
        tokens["items"].as_array().map(Vec::len),
        Some(1),
        "only the token made while loopback was allowed: {tokens}"
    );
    // A public endpoint is fine.
    let (status, body) = create_token(
        &api,
        &site,
        json!({ "scope": "agent", "agent_endpoint": "agent.example.com:50061" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The token made for 127.0.0.1 while it was allowed is refused at
    // redemption now: no use counted, the agent still dials out.
    let (status, refused) = redeem(&api, &agent, made["secret"].as_str().expect("secret")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(fields(&refused), ["agent_endpoint"], "{refused}");
    let (_, token) = api
        .get(&format!(
            "/enrollment-tokens/{}",
            made["token"]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(token["token"]["uses"], 0, "{token}");
    let (_, mode) = api.get(&format!("/edge-sites/{site}/agent/endpoint")).await;
    assert_eq!(mode["mode"], "dial_out", "{mode}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_an_endpoint_answering_with_another_agents_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.poll = poller_for_tests();
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let target = core.site(&tenant, "target").await;
    let impostor = core.site(&tenant, "impostor").await;
    let api = Api::new(&core, "default", "admin@example.com").await;
    // The impostor site's agent listens where the target's registered
    // endpoint points.
    let port = free_port();
    let _impostor = start_listening_agent(&impostor, port, "").await;
    let site = target.site.id.to_string();
    let endpoint_path = format!("/edge-sites/{site}/agent/endpoint");
    enroll_listening(&api, &target, &format!("127.0.0.1:{port}"), 5).await;
    let refused = until(&api, &endpoint_path, "the impostor refused", |b| {
        b["failures"].as_i64().is_some_and(|f| f >= 2)
    })
    .await;
    assert!(
        refused["last_error"]
            .as_str()
            .is_some_and(|e| e == serviceradar_gateway::poller::UNANSWERED),
        "{refused}"
    );
    assert_ne!(refused["reachability"], "reachable");
    let (_, agent) = api.get(&format!("/edge-sites/{site}/agent")).await;
    assert!(agent["hostname"].is_null(), "nothing recorded: {agent}");
    assert_eq!(agent["checks"].as_array().map(Vec::len), Some(0), "{agent}");
}

/// A TCP relay in front of the listening agent that counts connections:
/// every poll is one connection, so two at once would be two polls at once.
struct Relay {
    port: u16,
    total: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

impl Relay {
    /// Relays to `127.0.0.1:target`, holding each connection's first bytes
    /// back `delay` (so polls last long enough to overlap if they could).
    async fn start(target: u16, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (total, open, most_open) = (Arc::default(), Arc::default(), Arc::default());
        let counters = (
            Arc::clone(&total),
            Arc::clone(&open),
            Arc::clone(&most_open),
        );
        tokio::spawn(async move {
            let (total, open, most_open): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
                counters;
            while let Ok((mut inbound, _)) = listener.accept().await {
                total.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most_open.fetch_max(now, Ordering::SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            total,
            open,
            most_open,
        }
    }
}

/// The agent's last successful poll (Unix ms) as the API shows it.
async fn last_polled(api: &Api, site: &str) -> i64 {
    let (_, body) = api.get(&format!("/edge-sites/{site}/agent/endpoint")).await;
    body["last_polled_at"].as_i64().unwrap_or(0)
}

/// Waits until the agent was polled successfully `n` more times.
async fn polled_again(api: &Api, site: &str, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = last_polled(api, site).await;
    let mut seen = 0;
    while seen < n {
        assert!(
            Instant::now() < deadline,
            "polled {seen} of {n} times within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = last_polled(api, site).await;
        if now > last {
            seen += 1;
            last = now;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_poll_an_agent_one_at_a_time_and_the_survivor_takes_over() {
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("database");
    // Replicas share the database and the master key.
    let keys = tempfile::tempdir().expect("tempdir");
    let replica = |dir: &tempfile::TempDir| {
        let mut s = support::settings(dir);
        s.database_url = url.clone();
        s.master_key =
            serviceradar_identity::MasterKeySource::DevFile(keys.path().join("master.key"));
        s.provisioning.leaf_monitoring_listen = None;
        s.gateway.poll = PollerSettings {
            tick: Duration::from_millis(100),
            lease: Duration::from_secs(5),
            rules: serviceradar_domain::agent_poll::PollRules {
                min_interval_secs: 1,
                ..loopback_allowed()
            },
            ..poller_for_tests()
        };
        s
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (settings_a, settings_b) = (replica(&dir_a), replica(&dir_b));
    let a = support::spawn(dir_a, settings_a).await;
    let b = support::spawn(dir_b, settings_b).await;
    let owner = |core: &support::Core| format!("gateway-{}", core.agent_links.replica());
    let (owner_a, owner_b) = (owner(&a), owner(&b));
    assert_ne!(owner_a, owner_b);
    let store = b.store.clone();
    let tenant = a.tenant("default").await;
    let agent = a.site(&tenant, "replicated").await;
    let site = agent.site.id.to_string();
    let api_a = Api::new(&a, "default", "admin@example.com").await;
    let api_b = Api::new(&b, "default", "admin@example.com").await;

    // The agent listens behind a relay that counts its connections.
    let agent_port = free_port();
    let _running = start_listening_agent(&agent, agent_port, "").await;
    let relay = Relay::start(agent_port, Duration::from_millis(300)).await;
    enroll_listening(&api_a, &agent, &format!("127.0.0.1:{}", relay.port), 1).await;

    // Both replicas poll; who holds the lease is sampled meanwhile.
    let mut owners = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some((who, _)) = store.agent_poll_lease(agent.agent_id).await.expect("lease") {
            owners.insert(who);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "leases held by {owners:?}; {} polls, at most {} at once",
        relay.total.load(Ordering::SeqCst),
        relay.most_open.load(Ordering::SeqCst)
    );
    assert!(
        owners.iter().all(|o| *o == owner_a || *o == owner_b),
        "{owners:?}"
    );
    assert!(relay.total.load(Ordering::SeqCst) >= 3, "polled repeatedly");
    assert_eq!(
        relay.most_open.load(Ordering::SeqCst),
        1,
        "never two polls of the agent at once"
    );
    let (_, state) = api_b
        .get(&format!("/edge-sites/{site}/agent/endpoint"))
        .await;
    assert_eq!(state["reachability"], "reachable", "{state}");

    // Replica A stops: B polls the agent from then on.
    drop(api_a);
    drop(a);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polls_before = relay.total.load(Ordering::SeqCst);
    polled_again(&api_b, &site, 3, Duration::from_secs(15)).await;
    assert!(relay.total.load(Ordering::SeqCst) >= polls_before + 3);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some((who, _)) = store.agent_poll_lease(agent.agent_id).await.expect("lease") {
            assert_eq!(who, owner_b, "only the surviving replica polls");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A replica that claimed the agent and died holds its lease until it
    // runs out; then the survivor takes the agent over.
    let held_until = loop {
        let now = serviceradar_store::now_ms();
        let claimed = store
            .claim_agent_polls("gateway-dead", now, now + 3_000, 100)
            .await
            .expect("claim");
        if claimed.iter().any(|p| p.agent_id == agent.agent_id) {
            break now + 3_000;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let open_at_claim = relay.total.load(Ordering::SeqCst);
    let last_at_claim = last_polled(&api_b, &site).await;
    // (a poll B had in flight may still finish; none starts meanwhile)
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        relay.total.load(Ordering::SeqCst) <= open_at_claim,
        "no poll while the dead replica's lease holds"
    );
    polled_again(&api_b, &site, 1, Duration::from_secs(10)).await;
    let taken_over = last_polled(&api_b, &site).await;
    assert!(
        taken_over >= held_until && taken_over > last_at_claim,
        "polled again after the lease ran out ({taken_over} vs {held_until})"
    );
    assert!(relay.open.load(Ordering::SeqCst) <= 1);
}

/// Accepts any server certificate (the test looks only at whether the
/// listening agent accepts the client certificate).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects to the listening agent with `client` (chain PEM, key PEM) or
/// no certificate, and sends an HTTP/2 preface: `Ok` if the agent answers
/// (its SETTINGS frame), `Err` if it refused the certificate.
async fn agent_accepts(port: u16, client: Option<(&str, &str)>) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match client {
        Some((chain, key)) => {
            let chain = serviceradar_pki::inspect::pem_chain_to_der(chain)
                .expect("chain")
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from)
                .collect();
            let key =
                rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err("closed".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no answer".into()),
    }
}

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(path).expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_agent_accepts_only_the_platform_gateways_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.poll.enabled = false;
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "listening").await;
    let neighbour = core.site(&tenant, "neighbour").await;
    let other_tenant = core.tenant("other").await;
    let foreign = core.site(&other_tenant, "foreign").await;
    let port = free_port();
    let _agent = start_listening_agent(&agent, port, "").await;

    // The platform gateway's own certificate (what the poller presents).
    let gateway = serviceradar_gateway::GatewayTls::issue(
        &core.store,
        &core.pki,
        &core.settings.gateway.hosts,
    )
    .await
    .expect("gateway certificate");
    agent_accepts(
        port,
        Some((gateway.cert_chain_pem.as_str(), gateway.key_pem.as_str())),
    )
    .await
    .expect("the gateway's certificate is accepted");

    // Another tenant's agent, and another site's agent of this tenant.
    for (who, other) in [
        ("another tenant's agent", &foreign),
        ("another site's agent", &neighbour),
    ] {
        let refused = agent_accepts(port, Some((&read(other.cert()), &read(other.key())))).await;
        assert!(refused.is_err(), "{who} was accepted");
        eprintln!("{who}: {refused:?}");
    }
    // Its own certificate is not the gateway's either.
    assert!(
        agent_accepts(port, Some((&read(agent.cert()), &read(agent.key()))))
            .await
            .is_err()
    );
    // Signed by the platform root, but the hub's.
    let root = core.pki.root_ca(&core.store).await.expect("root");
    let hub = serviceradar_pki::issue_platform_server(
        &root,
        "hub",
        ["localhost"],
        &core.pki.issue_options(),
    )
    .expect("hub certificate");
    assert!(
        agent_accepts(port, Some((&hub.full_chain_pem(), hub.key_pem.as_str())))
            .await
            .is_err(),
        "the hub's certificate was accepted"
    );
    // A "gateway" certificate from a foreign root (self-signed chain).
    let foreign_root = serviceradar_pki::CertificateAuthority::generate_root(
        "Foreign Root",
        ::time::Duration::days(1),
    )
    .expect("foreign root");
    let fake = serviceradar_pki::issue_platform_server(
        &foreign_root,
        "gateway",
        ["localhost"],
        &core.pki.issue_options(),
    )
    .expect("fake gateway");
    assert!(
        agent_accepts(port, Some((&fake.full_chain_pem(), fake.key_pem.as_str())))
            .await
            .is_err(),
        "a foreign root's gateway certificate was accepted"
    );
    // No certificate at all.
    assert!(agent_accepts(port, None).await.is_err());
    // Still serving the gateway afterwards.
    agent_accepts(
        port,
        Some((gateway.cert_chain_pem.as_str(), gateway.key_pem.as_str())),
    )
    .await
    .expect("the gateway's certificate is still accepted");
}

/// Renewal in gateway-initiated mode, where the agent dials nothing: with
/// 45-second certificates a listening agent enrolled with a token puts CSRs
/// for new keys in its poll answers once due, and the gateway answers in the
/// same poll after the checks of `RenewCertificates`. A clone (another host
/// fingerprint) is refused: nothing is replaced, the site's agent view says
/// why, and polls go on. The enrolled host's agent writes the new files
/// (its own new key), records it in its status file, and serves the new
/// certificate without a restart: the gateway, which checks the validity of
/// the certificate it is served, keeps polling it past the first one's
/// expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_agent_renews_through_the_polls_and_is_polled_past_its_first_certificates_expiry()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.poll = poller_for_tests();
    // The time budget: the clone is due at 2/3 of the validity (30 s),
    // refused at its next poll, polled once more, then replaced by the
    // enrolled host, which must be polled (and renewed) before the first
    // certificate expires (45 s) -- after that the gateway refuses the
    // expired certificate and only a new enrollment helps. Polls every
    // second keep that path to about 33 s, with 12 s to spare on a loaded
    // CI machine (at 5 s polls and 40 s certificates the worst case
    // overran the expiry, and CI once did).
    settings.gateway.poll.rules.min_interval_secs = 1;
    settings.enrollment_cert_validity = Duration::from_secs(45);
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "renewing").await;
    let site = agent.site.id.to_string();
    let api = Api::new(&core, "default", "admin@example.com").await;
    let port = free_port();
    enroll_listening(&api, &agent, &format!("127.0.0.1:{port}"), 1).await;
    let files = agent.files.path();
    let first_cert = read(files.join("agent.pem"));
    let first_key = read(files.join("agent-key.pem"));
    let first_expiry = serviceradar_pki::chain_not_after(&first_cert)
        .expect("expiry")
        .unix_timestamp()
        * 1000;
    let agent_path = format!("/edge-sites/{site}/agent");
    let renewal = |fingerprint: &str| {
        format!("status_file = \"status.json\"\n[renewal]\nhost_fingerprint = \"{fingerprint}\"\n")
    };

    // A clone: due after about 2/3 of 45 s, asked, refused; nothing replaced.
    let mut clone = start_listening_agent(&agent, port, &renewal(&"cd".repeat(16))).await;
    let within = Duration::from_secs(60);
    let refused = until_within(
        &api,
        &agent_path,
        "the clone's renewal refused",
        within,
        |b| {
            b["renewal_refusal"]
                .as_str()
                .is_some_and(|r| r.contains("cloned machine"))
        },
    )
    .await;
    assert!(refused["renewed_at"].is_null(), "{refused}");
    assert_eq!(
        read(files.join("agent.pem")),
        first_cert,
        "nothing replaced"
    );
    assert_eq!(read(files.join("agent-key.pem")), first_key);
    polled_again(&api, &site, 1, WAIT).await;
    clone.kill().await.expect("kill");
    let _ = clone.wait().await;

    // The enrolled host: renewed at its next poll (it is past due).
    let started = Instant::now();
    let _running = start_listening_agent(&agent, port, &renewal(&"ab".repeat(16))).await;
    let renewed = until(&api, &agent_path, "the renewal", |b| {
        b["renewed_at"].is_i64()
    })
    .await;
    eprintln!("renewed {:?} after the restart", started.elapsed());
    assert!(renewed["renewal_refusal"].is_null(), "{renewed}");
    let deadline = Instant::now() + WAIT;
    let key = loop {
        let (cert, key) = (
            read(files.join("agent.pem")),
            read(files.join("agent-key.pem")),
        );
        if cert != first_cert && serviceradar_pki::check_key_matches(&cert, &key).is_ok() {
            break key;
        }
        assert!(Instant::now() < deadline, "the new files written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(key, first_key, "a new key, made on the box");
    let status: Value = serde_json::from_str(&read(files.join("status.json"))).expect("status");
    assert!(status["last_renewal_ms"].is_i64(), "{status}");
    assert!(status["renewal_error"].is_null(), "{status}");

    // Past the first certificate's expiry, polls still succeed: the
    // listener serves the renewed certificate.
    let wait = Duration::from_millis(
        u64::try_from(first_expiry - serviceradar_store::now_ms()).unwrap_or(0) + 500,
    );
    tokio::time::sleep(wait).await;
    polled_again(&api, &site, 1, WAIT).await;
    assert!(last_polled(&api, &site).await > first_expiry);
    let (_, endpoint) = api.get(&format!("/edge-sites/{site}/agent/endpoint")).await;
    assert_eq!(endpoint["reachability"], "reachable", "{endpoint}");
}
