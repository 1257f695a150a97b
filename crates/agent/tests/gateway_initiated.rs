//! Gateway-initiated mode (seed 004) with real processes: a real
//! `serviceradar-core` (SQLite) whose gateway polls the real
//! `serviceradar-agent` binary listening with mTLS on a loopback port.
//!
//! * the endpoint is set through the JSON API (bad input is a precise `400`
//!   and writes nothing; another tenant gets `404`); the gateway polls the
//!   agent, its check results, host name and config version show in the
//!   API;
//! * stopping the agent makes it `unreachable` after the timeout and raises
//!   `agent_unreachable` (alerts API and a webhook); restarting it makes it
//!   `reachable` and resolves the alert (webhook again);
//! * the listening agent refuses every client certificate but the platform
//!   gateway's: another tenant's agent, another site's agent of the same
//!   tenant, the hub's (root-signed, another name), a "gateway"
//!   certificate from a foreign root, none at all;
//! * the gateway refuses an endpoint that answers with another agent's
//!   certificate (nothing is recorded for the site).

mod support;

use std::sync::Arc;
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
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if ok(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}: {body}");
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
        ..PollerSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_polls_a_listening_agent_and_alerts_while_it_is_unreachable() {
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

    // Bad input: every field named, nothing written.
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &endpoint_path,
            Some(json!({ "endpoint": "0.0.0.0:50061", "poll_interval_secs": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields: Vec<_> = body["error"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(fields, ["endpoint", "poll_interval_secs"], "{body}");
    for bad in [
        json!({ "endpoint": "host" }),
        json!({ "endpoint": "$(reboot):1" }),
        json!({}),
    ] {
        let (status, body) = api
            .call(reqwest::Method::PUT, &endpoint_path, Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(api.get(&endpoint_path).await.1["mode"], "dial_out");

    // Another tenant's operator cannot see or change it.
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
    let (status, _) = outsider
        .call(
            reqwest::Method::PUT,
            &endpoint_path,
            Some(json!({ "endpoint": "127.0.0.1:1" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The agent listens; the operator sets its endpoint; the gateway polls.
    let port = free_port();
    let http_port = core.http_port;
    let checks = format!(
        "[[checks]]\nname = \"api\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{http_port}\"\ninterval_secs = 1\n"
    );
    let mut running = start_listening_agent(&agent, port, &checks).await;
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &endpoint_path,
            Some(json!({ "endpoint": format!("127.0.0.1:{port}"), "poll_interval_secs": 5 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "gateway_initiated");
    assert_eq!(body["reachability"], "unknown");
    let started = Instant::now();
    until(&api, &endpoint_path, "reachable", |b| {
        b["reachability"] == "reachable"
    })
    .await;
    eprintln!("first poll after {:?}", started.elapsed());
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

    // Stopped: unreachable after the timeout, alert raised (webhook).
    running.kill().await.expect("kill");
    let _ = running.wait().await;
    let down = until(&api, &endpoint_path, "unreachable", |b| {
        b["reachability"] == "unreachable"
    })
    .await;
    assert!(down["failures"].as_i64().is_some_and(|f| f >= 1), "{down}");
    assert!(down["last_error"].is_string(), "{down}");
    let alerts = until(&api, "/alerts?status=open", "the unreachable alert", |b| {
        b["items"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["kind"] == "agent_unreachable" && a["edge_site_id"] == site.as_str())
        })
    })
    .await;
    eprintln!("alerts: {alerts}");
    webhook(&mut hooks, "alert.raised", "agent_unreachable").await;

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

    // Back to dial-out: no more polls.
    let (status, _) = api
        .call(reqwest::Method::DELETE, &endpoint_path, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&endpoint_path).await.1["mode"], "dial_out");
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
    // The impostor site's agent listens where the target's endpoint points.
    let port = free_port();
    let _impostor = start_listening_agent(&impostor, port, "").await;
    let site = target.site.id.to_string();
    let endpoint_path = format!("/edge-sites/{site}/agent/endpoint");
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &endpoint_path,
            Some(json!({ "endpoint": format!("127.0.0.1:{port}") })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
