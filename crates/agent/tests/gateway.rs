//! The agent gateway over real gRPC + mTLS on loopback: registration and
//! pushes with a valid agent certificate, rejection (and audit) of claims that
//! disagree with the certificate, refusal at the TLS handshake without a
//! client certificate, with an expired one or with one from an unknown CA,
//! chunked uploads with resume and size cap, and an independent client
//! (Python `grpcio`, stubs generated from the `.proto`).

mod support;

use std::time::Duration;

use serviceradar_agent::transport::{GrpcTransport, Transport};
use serviceradar_domain::TenantScope;
use serviceradar_domain::state::{LeafStatus, SiteStatus};
use serviceradar_pki::{CertificateAuthority, IssueOptions, SiteRef, TenantRef, issue_agent};
use serviceradar_proto::v1::{
    CheckResult, GetConfigRequest, HelloRequest, IdentityClaim, LeafHealth, PushStatusRequest,
    ResultsChunk,
};
use support::{Core, SiteAgent};
use tonic::Code;

async fn core() -> Core {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = support::settings(&dir);
    support::spawn(dir, settings).await
}

async fn dial(core: &Core, agent: &SiteAgent) -> GrpcTransport {
    GrpcTransport::connect(&core.target(agent))
        .await
        .expect("connect")
}

fn hello(claim: IdentityClaim) -> HelloRequest {
    HelloRequest {
        claim: Some(claim),
        agent_version: "test".into(),
        capabilities: vec!["nats_leaf".into()],
        hostname: "edge-1".into(),
    }
}

fn leaf_result(up: bool) -> CheckResult {
    CheckResult {
        name: "nats-leaf".into(),
        kind: "nats_leaf".into(),
        target: "http://127.0.0.1:8222".into(),
        status: if up { "ok" } else { "fail" }.into(),
        observed_at_ms: serviceradar_store::now_ms(),
        leaf: Some(LeafHealth {
            up: true,
            remote_connected: up,
            remotes: u32::from(up),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn valid_agent_registers_pushes_and_polls_config() {
    let core = core().await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc-office").await;
    let mut t = dial(&core, &agent).await;

    let reply = t
        .hello(hello(IdentityClaim {
            tenant_id: tenant.id.to_string(),
            site_id: agent.site.id.to_string(),
            agent_id: agent.agent_id.to_string(),
        }))
        .await
        .expect("hello");
    assert_eq!(reply.site_id, agent.site.id.to_string());
    assert_eq!(reply.tenant_id, tenant.id.to_string());
    assert_eq!(reply.agent_id, agent.agent_id.to_string());
    let config = reply.config.expect("config");
    assert_eq!(config.config_poll_interval_secs, 30);
    assert!(config.checks.iter().any(|c| c.kind == "nats_leaf"));

    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let site = scoped.site(agent.site.id).await.expect("site");
    assert_eq!(site.status, SiteStatus::Active, "hello counts as contact");
    assert!(site.last_seen_at.is_some());
    let stored = scoped.agent(agent.agent_id).await.expect("agent");
    assert_eq!(stored.agent_version.as_deref(), Some("test"));
    assert_eq!(stored.hostname.as_deref(), Some("edge-1"));

    // Unchanged config: only the version comes back.
    let polled = t
        .get_config(GetConfigRequest {
            claim: None,
            current_version: config.version.clone(),
        })
        .await
        .expect("get config");
    assert!(!polled.changed && polled.config.is_none());
    assert_eq!(polled.version, config.version);
    let full = t
        .get_config(GetConfigRequest::default())
        .await
        .expect("get config");
    assert!(full.changed && full.config.is_some());

    // Leaf up -> connected; down -> disconnected; up again -> connected.
    for (up, expected) in [
        (true, LeafStatus::Connected),
        (false, LeafStatus::Disconnected),
        (true, LeafStatus::Connected),
    ] {
        let pushed = t
            .push_status(PushStatusRequest {
                claim: None,
                results: vec![leaf_result(up)],
                dropped: 0,
            })
            .await
            .expect("push");
        assert_eq!(pushed.accepted, 1);
        let leaf = scoped.leaf_for_site(agent.site.id).await.expect("leaf");
        assert_eq!(leaf.status, expected);
    }
    // The latest result of each check is kept for the site page.
    let checks = scoped.agent_checks(agent.agent_id).await.expect("checks");
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(
        (checks[0].name.as_str(), checks[0].status.as_str()),
        ("nats-leaf", "ok")
    );
}

#[tokio::test]
async fn claims_that_disagree_with_the_certificate_are_rejected_and_audited() {
    let core = core().await;
    let tenant_a = core.tenant("default").await;
    let tenant_b = core.tenant("other").await;
    let agent_a = core.site(&tenant_a, "site-a").await;
    let agent_b = core.site(&tenant_b, "site-b").await;
    let mut t = dial(&core, &agent_a).await;

    // Tenant A's certificate claiming tenant B's site / tenant / agent.
    let claims = [
        IdentityClaim {
            site_id: agent_b.site.id.to_string(),
            ..Default::default()
        },
        IdentityClaim {
            tenant_id: tenant_b.id.to_string(),
            site_id: agent_b.site.id.to_string(),
            ..Default::default()
        },
        IdentityClaim {
            agent_id: agent_b.agent_id.to_string(),
            ..Default::default()
        },
    ];
    for claim in claims {
        let err = t.hello(hello(claim.clone())).await.expect_err("rejected");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        let err = t
            .push_status(PushStatusRequest {
                claim: Some(claim),
                results: vec![leaf_result(true)],
                dropped: 0,
            })
            .await
            .expect_err("rejected");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    // Nothing of tenant B moved.
    let scoped_b = core.store.scoped(TenantScope::for_system_task(tenant_b.id));
    let site_b = scoped_b.site(agent_b.site.id).await.expect("site");
    assert_eq!(site_b.status, SiteStatus::Pending);
    assert!(site_b.last_seen_at.is_none());
    assert_eq!(
        scoped_b
            .leaf_for_site(agent_b.site.id)
            .await
            .expect("leaf")
            .status,
        LeafStatus::Provisioned
    );
    // Audited under the caller's (A's) tenant.
    let audit = core
        .store
        .gateway_audit_reasons(tenant_a.id)
        .await
        .expect("audit");
    assert_eq!(audit.len(), 6, "{audit:?}");
    assert!(audit[0].contains("site_id"), "{audit:?}");
    assert!(audit[2].contains("tenant_id"), "{audit:?}");
    assert!(audit[4].contains("agent_id"), "{audit:?}");
}

/// The call fails and no handler ran (the agent's contact was never recorded).
async fn assert_refused(
    core: &Core,
    agent: &SiteAgent,
    target: serviceradar_agent::config::GatewayTarget,
    alert: &str,
) {
    let outcome = match GrpcTransport::connect(&target).await {
        Err(e) => Err(format!("{e:#}")),
        Ok(mut t) => t
            .hello(hello(IdentityClaim::default()))
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    let err = outcome.expect_err("refused");
    assert!(
        err.contains(&format!("received fatal alert: {alert}")),
        "refused by the TLS handshake with {alert}: {err}"
    );
    let scoped = core
        .store
        .scoped(TenantScope::for_system_task(agent.tenant.id));
    let stored = scoped.agent(agent.agent_id).await.expect("agent");
    assert!(stored.last_seen_at.is_none(), "no handler ran: {err}");
}

#[tokio::test]
async fn no_expired_or_foreign_client_certificates_are_refused_at_the_handshake() {
    let core = core().await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc-office").await;
    let files = agent.files.path();

    // 1. No client certificate: a TLS client with only the root CA.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", core.gateway_port))
            .expect("url")
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
                tonic::transport::Certificate::from_pem(std::fs::read(agent.ca()).expect("ca")),
            ))
            .expect("tls");
    let outcome = match endpoint.connect().await {
        Err(e) => Err(format!("{e:?}")),
        Ok(channel) => GrpcTransport::from_channel(channel)
            .hello(hello(IdentityClaim::default()))
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    let err = outcome.expect_err("no client cert is refused");
    assert!(
        err.contains("received fatal alert: CertificateRequired"),
        "{err}"
    );

    // 2. Expired: same identity, issued by the real tenant CA, validity 1 s.
    let tenant_ca = core.pki.tenant_ca(&core.store, &tenant).await.expect("ca");
    let refs = (
        TenantRef {
            id: tenant.id.as_uuid(),
            slug: tenant.slug.as_str(),
        },
        SiteRef {
            id: agent.site.id.as_uuid(),
            slug: agent.site.slug.as_str(),
        },
    );
    let short = IssueOptions {
        validity: ::time::Duration::seconds(1),
        ..core.pki.issue_options()
    };
    let expired = issue_agent(&tenant_ca, refs.0, refs.1, agent.agent_id, &short).expect("issue");
    std::fs::write(
        files.join("expired.pem"),
        format!("{}{}", expired.cert_pem, tenant_ca.cert_pem()),
    )
    .expect("write");
    std::fs::write(files.join("expired-key.pem"), expired.key_pem.as_bytes()).expect("write");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let mut target = core.target(&agent);
    target.cert = files.join("expired.pem");
    target.key = files.join("expired-key.pem");
    assert_refused(&core, &agent, target, "CertificateExpired").await;

    // 3. Unknown CA: a foreign root and tenant intermediate with the *same*
    //    tenant id, CN and agent id.
    let foreign_root =
        CertificateAuthority::generate_root("Evil Root", ::time::Duration::days(30)).expect("root");
    let foreign_ca = CertificateAuthority::generate_tenant_intermediate(
        &foreign_root,
        tenant.id.as_uuid(),
        tenant.slug.as_str(),
        core.pki.trust_domain(),
        ::time::Duration::days(30),
    )
    .expect("intermediate");
    let forged = issue_agent(
        &foreign_ca,
        refs.0,
        refs.1,
        agent.agent_id,
        &core.pki.issue_options(),
    )
    .expect("issue");
    std::fs::write(
        files.join("forged.pem"),
        format!("{}{}", forged.cert_pem, foreign_ca.cert_pem()),
    )
    .expect("write");
    std::fs::write(files.join("forged-key.pem"), forged.key_pem.as_bytes()).expect("write");
    let mut target = core.target(&agent);
    target.cert = files.join("forged.pem");
    target.key = files.join("forged-key.pem");
    assert_refused(&core, &agent, target, "UnknownCA").await;

    // The genuine certificate still works on the same gateway.
    dial(&core, &agent)
        .await
        .hello(hello(IdentityClaim::default()))
        .await
        .expect("genuine agent accepted");
}

fn chunk(upload: &str, index: u64, data: &[u8], last: bool) -> ResultsChunk {
    ResultsChunk {
        claim: None,
        upload_id: upload.into(),
        chunk_index: index,
        data: data.to_vec(),
        last,
        content_type: "application/json".into(),
    }
}

#[tokio::test]
async fn chunked_uploads_resume_and_are_capped() {
    let core = core().await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc-office").await;
    let mut t = dial(&core, &agent).await;

    // First attempt sends chunks 0 and 1, then the connection "drops".
    let part = t
        .push_results(vec![
            chunk("up-1", 0, b"aaaa", false),
            chunk("up-1", 1, b"bbbb", false),
        ])
        .await
        .expect("partial");
    assert_eq!(
        (part.next_chunk_index, part.total_bytes, part.complete),
        (2, 8, false)
    );
    // Resume: re-sending chunk 1 is acknowledged and skipped.
    let done = t
        .push_results(vec![
            chunk("up-1", 1, b"bbbb", false),
            chunk("up-1", 2, b"cc", true),
        ])
        .await
        .expect("resumed");
    assert_eq!(
        (done.next_chunk_index, done.total_bytes, done.complete),
        (3, 10, true)
    );
    // A gap is refused.
    let err = t
        .push_results(vec![chunk("up-2", 5, b"x", true)])
        .await
        .expect_err("gap");
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Bad upload ids and oversized chunks are refused.
    let err = t
        .push_results(vec![chunk("../etc", 0, b"x", true)])
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let big = vec![0u8; serviceradar_proto::MAX_CHUNK_BYTES + 1];
    let err = t
        .push_results(vec![chunk("up-3", 0, &big, true)])
        .await
        .expect_err("too big");
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{err:?}"
    );
    // The total is capped.
    let piece = vec![7u8; serviceradar_proto::MAX_CHUNK_BYTES];
    let n = serviceradar_proto::MAX_UPLOAD_BYTES / serviceradar_proto::MAX_CHUNK_BYTES as u64 + 1;
    let chunks = (0..n)
        .map(|i| chunk("up-4", i, &piece, i + 1 == n))
        .collect();
    let err = t.push_results(chunks).await.expect_err("cap");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn python_grpcio_client_calls_hello_with_an_agent_certificate() {
    let core = core().await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc-office").await;
    let out = support::python_stubs("serviceradar/agent/v1/gateway.proto");
    let script = r#"
import sys, grpc
from serviceradar.agent.v1 import gateway_pb2 as pb, gateway_pb2_grpc as rpc
port, cert, key, ca, site = sys.argv[1:6]
creds = grpc.ssl_channel_credentials(
    root_certificates=open(ca, 'rb').read(),
    private_key=open(key, 'rb').read(),
    certificate_chain=open(cert, 'rb').read())
with grpc.secure_channel(f'localhost:{port}', creds) as ch:
    reply = rpc.AgentGatewayStub(ch).Hello(
        pb.HelloRequest(claim=pb.IdentityClaim(site_id=site), agent_version='py', hostname='py'),
        timeout=20)
    print(reply.site_id, reply.config.version, len(reply.config.checks))
"#;
    let output = tokio::process::Command::new("python3")
        .current_dir(out.path())
        .args(["-c", script])
        .arg(core.gateway_port.to_string())
        .arg(agent.cert())
        .arg(agent.key())
        .arg(agent.ca())
        .arg(agent.site.id.to_string())
        .output()
        .await
        .expect("python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with(&agent.site.id.to_string()),
        "python got {stdout}"
    );
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    assert_eq!(
        scoped
            .agent(agent.agent_id)
            .await
            .expect("agent")
            .agent_version
            .as_deref(),
        Some("py")
    );
}

#[tokio::test]
async fn agent_status_api_and_revocation() {
    use serviceradar_domain::policy::Scope;
    let core = core().await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc-office").await;
    let other_tenant = core.tenant("other").await;
    let other_agent = core.site(&other_tenant, "elsewhere").await;
    dial(&core, &agent)
        .await
        .hello(hello(IdentityClaim::default()))
        .await
        .expect("hello");

    let token = serviceradar_control::tokens::create_token_for(
        &core.store,
        "default",
        "admin@example.com",
        "t",
        &Scope::ALL,
        1,
    )
    .await
    .expect("token");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/api/v1", core.http_port);
    let get = |path: String| http.get(format!("{base}{path}")).bearer_auth(&token).send();
    let reply = get(format!("/edge-sites/{}/agent", agent.site.id))
        .await
        .expect("get");
    assert_eq!(reply.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = reply.json().await.expect("json");
    assert_eq!(body["id"], agent.agent_id.to_string());
    assert_eq!(body["hostname"], "edge-1");
    assert!(body["last_seen_at"].is_i64());
    let text = body.to_string();
    assert!(!text.contains("PRIVATE KEY") && !text.contains("BEGIN CERTIFICATE"));
    // Another tenant's site is 404.
    let reply = get(format!("/edge-sites/{}/agent", other_agent.site.id))
        .await
        .expect("get");
    assert_eq!(reply.status(), reqwest::StatusCode::NOT_FOUND);

    // Revoke the other tenant's agent from this tenant: 404, nothing changes.
    let reply = http
        .post(format!(
            "{base}/edge-sites/{}/agent/revoke",
            other_agent.site.id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), reqwest::StatusCode::NOT_FOUND);
    dial(&core, &other_agent)
        .await
        .hello(hello(IdentityClaim::default()))
        .await
        .expect("other tenant's agent unaffected");

    // Revoke our own agent; a gateway that has not cached it refuses it.
    let reply = http
        .post(format!("{base}/edge-sites/{}/agent/revoke", agent.site.id))
        .bearer_auth(&token)
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = reply.json().await.expect("json");
    assert!(body["revoked_at"].is_i64());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.database_url = core.settings.database_url.clone();
    settings.master_key = core.settings.master_key.clone();
    let second = serviceradar_gateway::Gateway::bind(
        "127.0.0.1:0".parse().expect("addr"),
        core.store.clone(),
        core.pki.clone(),
        std::sync::Arc::new(settings.gateway),
        core.health.clone(),
    )
    .await
    .expect("second gateway");
    let port = second.local_addr().expect("addr").port();
    tokio::spawn(second.serve(std::future::pending()));
    let mut target = core.target(&agent);
    target.url = format!("https://localhost:{port}");
    let err = GrpcTransport::connect(&target)
        .await
        .expect("TLS still completes")
        .hello(hello(IdentityClaim::default()))
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");
}

/// `RenewCertificates` is for boxes enrolled with a token: an agent
/// installed from a site bundle is refused (its certificates come with the
/// next bundle), the refusal is written on the agent row for the site page,
/// and a request that is not a CSR is refused as bad input.
#[tokio::test]
async fn a_bundle_installed_agent_cannot_renew_and_the_site_says_why() {
    use serviceradar_proto::v1::RenewRequest;
    let core = core().await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "bundle-site").await;
    let mut t = dial(&core, &agent).await;
    let (_, csr) = serviceradar_pki::new_key_and_request("agent").expect("csr");
    let refused = t
        .renew(RenewRequest {
            claim: None,
            host_fingerprint: "ab".repeat(32),
            agent_csr: csr.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a bundle agent does not renew through the gateway");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("site bundle"), "{refused:?}");
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let stored = scoped.agent(agent.agent_id).await.expect("agent");
    assert!(
        stored
            .renewal_refusal
            .as_deref()
            .is_some_and(|r| r.contains("site bundle")),
        "{stored:?}"
    );
    assert!(stored.renewal_refused_at.is_some());
    assert!(stored.renewed_at.is_none() && stored.edge_cert_expires_at.is_none());
    let bad = t
        .renew(RenewRequest {
            agent_csr:
                "-----BEGIN CERTIFICATE REQUEST-----\nnot one\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
            ..Default::default()
        })
        .await
        .expect_err("not a CSR");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
}
