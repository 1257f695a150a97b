//! What survives a gateway restart, on one database (SQLite file, a master
//! key file):
//!
//! * results uploaded with `PushResults` by the agent's own transport are
//!   stored per tenant and site and listed through the JSON API with time
//!   ranges; an upload interrupted before a restart resumes after it and
//!   each chunk is stored once (bytes and content exact); another tenant
//!   gets 404; a bad range is a precise 400;
//! * the gateway presents the same certificate after a restart, and issues
//!   a new one only when the stored one nears its expiry or its host names
//!   change.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serviceradar_agent::transport::{GrpcTransport, Transport};
use serviceradar_identity::MasterKeySource;
use serviceradar_proto::v1::ResultsChunk;
use serviceradar_server::app::Settings;
use support::{Api, Core};

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

/// Settings over `data` (database and master key survive restarts).
fn durable(data: &tempfile::TempDir) -> Settings {
    let mut s = support::settings(data);
    s.master_key = MasterKeySource::DevFile(data.path().join("master.key"));
    s
}

async fn start(settings: &Settings) -> Core {
    support::spawn(tempfile::tempdir().expect("tempdir"), settings.clone()).await
}

async fn stop(core: Core) {
    drop(core);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_kept_listed_and_resume_across_a_gateway_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let settings = durable(&data);
    let core = start(&settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let site = agent.site.id.to_string();
    let before = serviceradar_store::now_ms();

    let mut t = GrpcTransport::connect(&core.target(&agent))
        .await
        .expect("connect");
    let part = t
        .push_results(vec![
            chunk("run-1", 0, b"{\"a\":", false),
            chunk("run-1", 1, b"[1,2,", false),
        ])
        .await
        .expect("partial");
    assert_eq!((part.next_chunk_index, part.complete), (2, false));
    drop(t);
    stop(core).await;

    // A new gateway on the same database: the upload resumes where it
    // stopped; chunk 1 re-sent is acknowledged, not stored again.
    let core = start(&settings).await;
    let mut t = GrpcTransport::connect(&core.target(&agent))
        .await
        .expect("connect");
    let done = t
        .push_results(vec![
            chunk("run-1", 1, b"[1,2,", false),
            chunk("run-1", 2, b"3]}", true),
        ])
        .await
        .expect("resumed");
    assert_eq!(
        (done.next_chunk_index, done.total_bytes, done.complete),
        (3, 13, true)
    );
    // Re-sending the finished upload changes nothing.
    let again = t
        .push_results(vec![chunk("run-1", 2, b"3]}", true)])
        .await
        .expect("re-sent");
    assert_eq!((again.next_chunk_index, again.total_bytes), (3, 13));
    t.push_results(vec![chunk("run-2", 0, b"second", true)])
        .await
        .expect("second upload");

    let api = Api::new(&core, "default", "admin@example.com").await;
    let (status, list) = api
        .get(&format!(
            "/edge-sites/{site}/agent/results?from={before}&to={}",
            serviceradar_store::now_ms() + 1
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["upload_id"], "run-1");
    assert_eq!(items[0]["chunks"], 3);
    assert_eq!(items[0]["bytes"], 13);
    assert_eq!(items[0]["complete"], true);
    assert_eq!(items[0]["agent_id"], agent.agent_id.to_string());
    // The content is the chunks once each, in order.
    let reply = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/v1/edge-sites/{site}/agent/results/{}",
            core.http_port,
            items[0]["id"].as_str().expect("id")
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("get");
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        reply.bytes().await.expect("body").as_ref(),
        b"{\"a\":[1,2,3]}"
    );
    // A range before the uploads lists nothing; a reversed one is a 400.
    let (status, empty) = api
        .get(&format!("/edge-sites/{site}/agent/results?to={before}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(0));
    let (status, bad) = api
        .get(&format!("/edge-sites/{site}/agent/results?from=10&to=5"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(bad.to_string().contains("\"to\""), "{bad}");
    // Another tenant sees nothing of it.
    serviceradar_provisioning::tenants::create_tenant(
        &core.store,
        &core.pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug: "other",
            name: None,
            owner_email: "owner@other.example.com",
            owner_password: Some("results test password"),
        },
    )
    .await
    .expect("tenant");
    let stranger = Api::new(&core, "other", "owner@other.example.com").await;
    let (status, _) = stranger
        .get(&format!("/edge-sites/{site}/agent/results"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The gateway's certificate as it presents it (PEM), read with openssl.
fn presented(core: &Core, agent: &support::SiteAgent) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", core.gateway_port))
        .arg("-cert")
        .arg(agent.cert())
        .arg("-key")
        .arg(agent.key())
        .arg("-CAfile")
        .arg(agent.ca())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate");
    let end = text.find("-----END CERTIFICATE-----").expect("end") + 25;
    text[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_its_certificate_until_it_nears_expiry() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut settings = durable(&data);
    let core = start(&settings).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let first = core
        .store
        .server_certificate("gateway")
        .await
        .expect("read")
        .expect("stored");
    let shown = presented(&core, &agent);
    assert!(
        first.cert_pem.starts_with(&shown),
        "the stored one is presented"
    );
    stop(core).await;

    // Restarted: the same certificate.
    let core = start(&settings).await;
    assert_eq!(presented(&core, &agent), shown);
    let kept = core
        .store
        .server_certificate("gateway")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(kept.created_at, first.created_at);

    // Near its expiry (less than a third of its life left): re-issued once.
    let now = serviceradar_store::now_ms();
    let aged = serviceradar_store::ServerCertRecord {
        created_at: now - 30 * 86_400_000,
        not_after: now + 86_400_000,
        ..kept.clone()
    };
    core.store
        .put_server_certificate("gateway", &aged, Some(kept.created_at))
        .await
        .expect("age it");
    stop(core).await;
    let core = start(&settings).await;
    let renewed = presented(&core, &agent);
    assert_ne!(renewed, shown, "a certificate near expiry is replaced");
    let stored = core
        .store
        .server_certificate("gateway")
        .await
        .expect("read")
        .expect("stored");
    assert!(stored.created_at >= now && stored.cert_pem.starts_with(&renewed));
    stop(core).await;

    // Other host names: re-issued.
    settings.gateway.hosts.push("gateway.example.net".into());
    let core = start(&settings).await;
    assert_ne!(presented(&core, &agent), renewed);
    // The agent still connects (trusts it through the root).
    GrpcTransport::connect(&core.target(&agent))
        .await
        .expect("connect")
        .push_results(vec![chunk("x", 0, b"y", true)])
        .await
        .expect("call");
}
