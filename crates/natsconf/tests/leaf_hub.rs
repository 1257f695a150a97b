//! End to end: a real hub and real leaves, run from configs, certificates and
//! credentials this crate (and rcgen) generated, checked with an independent client
//! (async-nats) and the hub's monitoring endpoint.

mod common;

use std::path::Path;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use common::{Ca, Identities, leafz, poll, subdir, user_creds, write, write_pair};
use futures::StreamExt;
use serviceradar_natsconf::jwt::{AccountClaims, KeyKind, NKey};
use serviceradar_natsconf::leaf::buffer_subject_prefix;
use serviceradar_natsconf::{
    BufferStreamInput, HubConfigInput, LeafConfigInput, TlsFiles, buffer_stream_config,
    buffer_stream_source, render_hub_config, render_leaf_config,
};
use serviceradar_testkit::{NatsServer, free_port};

const WAIT: Duration = Duration::from_secs(20);

/// Root CA, the tenant's intermediate and the files every test needs.
struct Pki {
    root: Ca,
    acme: Ca,
    root_pem: String,
    acme_pem: String,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let root = Ca::root("ServiceRadar test root");
        let acme = root.intermediate("tenant acme CA");
        let root_pem = write(dir, "root-ca.pem", &root.cert_pem);
        let acme_pem = write(dir, "tenant-acme-ca.pem", &acme.cert_pem);
        Self {
            root,
            acme,
            root_pem,
            acme_pem,
        }
    }
}

struct Hub {
    server: NatsServer,
    client_port: u16,
    leaf_port: u16,
    monitor_port: u16,
}

fn start_hub(dir: &Path, pki: &Pki, ids: &Identities, extra_accounts: Vec<String>) -> Hub {
    let (cert, key) = write_pair(
        dir,
        "hub-server",
        &pki.root
            .issue("hub.serviceradar.test", &["127.0.0.1", "localhost"]),
    );
    let mut accounts = vec![ids.sys_jwt(), ids.tenant_jwt()];
    accounts.extend(extra_accounts);
    let mut input = HubConfigInput::new(
        &ids.operator.operator_jwt().unwrap(),
        &ids.sys.public_key(),
        accounts,
        TlsFiles::new(&cert, &key, &pki.root_pem),
    );
    let (client_port, leaf_port, monitor_port) = (free_port(), free_port(), free_port());
    input.client_listen = format!("127.0.0.1:{client_port}");
    input.leafnode_listen = format!("127.0.0.1:{leaf_port}");
    input.monitoring_listen = Some(format!("127.0.0.1:{monitor_port}"));
    input.jetstream_store_dir = subdir(dir, "hub-js");
    input.resolver_dir = subdir(dir, "hub-accounts");
    let config = render_hub_config(&input).unwrap();
    let server = NatsServer::start(dir, "hub", &config, client_port).expect("start hub");
    common::wait_port(monitor_port);
    Hub {
        server,
        client_port,
        leaf_port,
        monitor_port,
    }
}

struct Leaf {
    server: NatsServer,
    client_port: u16,
    name: String,
}

/// A leaf input for `site` of tenant acme with certificates from `remote_ca` (the
/// tenant CA normally) and credentials of a new acme user.
fn leaf_input(
    dir: &Path,
    pki: &Pki,
    ids: &Identities,
    site: &str,
    hub: &Hub,
    remote_ca: &Ca,
) -> LeafConfigInput {
    let site_dir = Path::new(&subdir(dir, site)).to_path_buf();
    let (server_cert, server_key) = write_pair(
        &site_dir,
        "leaf-server",
        &pki.acme.issue(
            &format!("leaf.{site}.acme.serviceradar"),
            &["127.0.0.1", "localhost"],
        ),
    );
    let (client_cert, client_key) = write_pair(
        &site_dir,
        "leaf-client",
        &remote_ca.issue(&format!("leaf.{site}.acme.serviceradar"), &[]),
    );
    let (_, creds) = user_creds(&site_dir, &ids.tenant, &format!("leaf-{site}"));
    let mut input =
        LeafConfigInput::new("acme", site, &format!("tls://127.0.0.1:{}", hub.leaf_port));
    input.client_listen = format!("127.0.0.1:{}", free_port());
    input.monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    input.client_tls = TlsFiles::new(&server_cert, &server_key, &pki.acme_pem);
    input.remote_tls = TlsFiles::new(&client_cert, &client_key, &pki.root_pem);
    input.credentials_file = creds;
    input.jetstream_store_dir = subdir(&site_dir, "js");
    input
}

fn start_leaf(dir: &Path, input: &LeafConfigInput, config: &str) -> Leaf {
    let client_port = input
        .client_listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("client port");
    let name = input.effective_server_name();
    let server = NatsServer::start(dir, &name, config, client_port).expect("start leaf");
    Leaf {
        server,
        client_port,
        name,
    }
}

fn wait_for_leaf(hub: &Hub, name: &str, account: &str) -> bool {
    poll(WAIT, || {
        leafz(hub.monitor_port)
            .iter()
            .any(|(n, a)| n == name && a == account)
            .then_some(())
    })
    .is_some()
}

async fn hub_client(hub: &Hub, creds: &str) -> Result<Client, async_nats::ConnectError> {
    ConnectOptions::with_credentials_file(creds)
        .await
        .expect("read creds")
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("nats://127.0.0.1:{}", hub.client_port))
        .await
}

/// A collector at the site: TLS to the leaf with a client certificate.
async fn leaf_client(
    leaf: &Leaf,
    root_pem: &str,
    cert: Option<(String, String)>,
) -> Result<Client, async_nats::ConnectError> {
    let mut options = ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(root_pem.into())
        .connection_timeout(Duration::from_secs(5));
    if let Some((cert, key)) = cert {
        options = options.add_client_certificate(cert.into(), key.into());
    }
    options
        .connect(format!("tls://127.0.0.1:{}", leaf.client_port))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_joins_hub_in_tenant_account_and_data_flows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let ids = Identities::new();
    let beta = NKey::generate(KeyKind::Account);
    let beta_jwt = ids
        .operator
        .sign_account(&AccountClaims::tenant(&beta.public_key(), "beta"))
        .unwrap();
    let hub = start_hub(dir, &pki, &ids, vec![beta_jwt]);

    let input = leaf_input(dir, &pki, &ids, "nyc", &hub, &pki.acme);
    let config = render_leaf_config(&input).unwrap();
    let leaf = start_leaf(dir, &input, &config);
    assert!(
        wait_for_leaf(&hub, &leaf.name, &ids.tenant.public_key()),
        "leaf never showed up in /leafz with the tenant account\n/leafz: {:?}\nhub log:\n{}\nleaf log:\n{}",
        common::http_get(hub.monitor_port, "/leafz"),
        hub.server.log(),
        leaf.server.log()
    );

    // A subscriber on the hub in the tenant's account, and one in another tenant's.
    let (_, acme_creds) = user_creds(dir, &ids.tenant, "acme-ingest");
    let (_, beta_creds) = user_creds(dir, &beta, "beta-ingest");
    let acme_hub = hub_client(&hub, &acme_creds)
        .await
        .expect("acme user on hub");
    let beta_hub = hub_client(&hub, &beta_creds)
        .await
        .expect("beta user on hub");
    let prefix = buffer_subject_prefix("acme", "nyc").unwrap();
    let mut acme_sub = acme_hub.subscribe(format!("{prefix}.>")).await.unwrap();
    let mut beta_sub = beta_hub.subscribe(">").await.unwrap();
    acme_hub.flush().await.unwrap();
    beta_hub.flush().await.unwrap();

    // A collector at the site publishes on the leaf.
    let collector_cert = write_pair(
        dir,
        "collector",
        &pki.acme.issue("collector.nyc.acme.serviceradar", &[]),
    );
    let collector = leaf_client(&leaf, &pki.root_pem, Some(collector_cert))
        .await
        .expect("collector with a tenant certificate connects to the leaf");
    let subject = format!("{prefix}.events.syslog");
    // Interest crosses the leafnode link asynchronously: publish until it arrives.
    let mut received = None;
    for _ in 0..100 {
        collector
            .publish(subject.clone(), "hello from nyc".into())
            .await
            .unwrap();
        collector.flush().await.unwrap();
        if let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(200), acme_sub.next()).await
        {
            received = Some(msg);
            break;
        }
    }
    let msg = received.expect("message published on the leaf reached the hub");
    assert_eq!(msg.subject.as_str(), subject);
    assert_eq!(&msg.payload[..], b"hello from nyc");
    // Another tenant's account sees nothing of it.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), beta_sub.next())
            .await
            .is_err(),
        "tenant beta received tenant acme's data"
    );

    // The leaf's client port takes only tenant-CA certificates.
    assert!(
        leaf_client(&leaf, &pki.root_pem, None).await.is_err(),
        "client without a certificate was accepted by the leaf"
    );
    let beta_ca = pki.root.intermediate("tenant beta CA");
    let beta_cert = write_pair(
        dir,
        "beta-collector",
        &beta_ca.issue("collector.x.beta", &[]),
    );
    assert!(
        leaf_client(&leaf, &pki.root_pem, Some(beta_cert))
            .await
            .is_err(),
        "client with another tenant's certificate was accepted by the leaf"
    );
}

fn assert_leaf_refused(hub: &Hub, leaf: &Leaf, tenant: &str, log_needles: &[&str]) {
    // The leaf retries every second; give it several attempts.
    let joined = poll(Duration::from_secs(4), || {
        leafz(hub.monitor_port)
            .iter()
            .any(|(n, a)| n == &leaf.name || a == tenant)
            .then_some(())
    });
    assert!(joined.is_none(), "a refused leaf appeared in /leafz");
    let logged = poll(WAIT, || {
        let log = hub.server.log();
        log_needles
            .iter()
            .any(|needle| log.contains(needle))
            .then_some(())
    });
    assert!(
        logged.is_some(),
        "hub log does not show the TLS refusal ({log_needles:?}):\n{}\nleaf log:\n{}",
        hub.server.log(),
        leaf.server.log()
    );
}

#[test]
fn leaf_with_client_cert_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let ids = Identities::new();
    let hub = start_hub(dir, &pki, &ids, vec![]);
    // The rogue root copies the real root's name, so the leaf's TLS stack (which
    // only offers a certificate whose issuer is among the CA names the hub asks
    // for) does present the rogue chain, and the hub's chain verification is what
    // refuses it.
    let rogue_root = Ca::root("ServiceRadar test root");
    let rogue_tenant = rogue_root.intermediate("tenant acme CA");
    let input = leaf_input(dir, &pki, &ids, "rogue", &hub, &rogue_tenant);
    let leaf = start_leaf(dir, &input, &render_leaf_config(&input).unwrap());
    assert_leaf_refused(
        &hub,
        &leaf,
        &ids.tenant.public_key(),
        &["certificate signed by unknown authority"],
    );
}

#[test]
fn leaf_with_expired_client_cert_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let ids = Identities::new();
    let hub = start_hub(dir, &pki, &ids, vec![]);
    let input = leaf_input(dir, &pki, &ids, "stale", &hub, &pki.acme);
    // The right tenant CA and identity, but a validity that ended in 2021.
    let (cert, key) = pki.acme.issue_expired("leaf.stale.acme.serviceradar", &[]);
    std::fs::write(&input.remote_tls.cert_file, cert).unwrap();
    std::fs::write(&input.remote_tls.key_file, key).unwrap();
    let leaf = start_leaf(dir, &input, &render_leaf_config(&input).unwrap());
    assert_leaf_refused(
        &hub,
        &leaf,
        &ids.tenant.public_key(),
        &["certificate has expired"],
    );
}

#[test]
fn leaf_without_client_cert_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let ids = Identities::new();
    let hub = start_hub(dir, &pki, &ids, vec![]);
    let input = leaf_input(dir, &pki, &ids, "nocert", &hub, &pki.acme);
    // Simulate a hand-crafted leaf: drop the client certificate from the remote's
    // TLS block (the renderer itself always writes one).
    let config = render_leaf_config(&input).unwrap();
    let remote_cert = format!("cert_file: \"{}\"", input.remote_tls.cert_file);
    let remote_key = format!("key_file: \"{}\"", input.remote_tls.key_file);
    let stripped: String = config
        .lines()
        .filter(|line| !line.contains(&remote_cert) && !line.contains(&remote_key))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(stripped, config);
    let leaf = start_leaf(dir, &input, &stripped);
    assert_leaf_refused(
        &hub,
        &leaf,
        &ids.tenant.public_key(),
        &["client didn't provide a certificate"],
    );
}

async fn push_account(sys: &Client, jwt: String) -> serde_json::Value {
    let reply = sys
        .request("$SYS.REQ.CLAIMS.UPDATE", jwt.into())
        .await
        .expect("claims update reply");
    serde_json::from_slice(&reply.payload).expect("JSON reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_pushed_and_users_revoked_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let ids = Identities::new();
    let hub = start_hub(dir, &pki, &ids, vec![]);
    let hub_pid = hub.server.pid();
    let (_, sys_creds) = user_creds(dir, &ids.sys, "sys-admin");
    let sys = hub_client(&hub, &sys_creds)
        .await
        .expect("system user connects");

    // A tenant created after the hub started: unknown until pushed.
    let gamma = NKey::generate(KeyKind::Account);
    let (_, gamma_creds) = user_creds(dir, &gamma, "gamma-user");
    assert!(hub_client(&hub, &gamma_creds).await.is_err());
    let gamma_jwt = ids
        .operator
        .sign_account(&AccountClaims::tenant(&gamma.public_key(), "gamma"))
        .unwrap();
    let reply = push_account(&sys, gamma_jwt).await;
    assert_eq!(reply["data"]["code"], 200, "{reply}");
    let gamma_client = hub_client(&hub, &gamma_creds)
        .await
        .expect("user of a pushed tenant connects");
    drop(gamma_client);

    // A user of tenant acme, connected, then revoked.
    let (user, user_creds_path) = user_creds(dir, &ids.tenant, "acme-collector");
    let victim = hub_client(&hub, &user_creds_path)
        .await
        .expect("user connects before revocation");
    let mut claims = ids.tenant_claims();
    claims.revoke_user_now(&user.public_key()).unwrap();
    let reply = push_account(&sys, ids.operator.sign_account(&claims).unwrap()).await;
    assert_eq!(reply["data"]["code"], 200, "{reply}");

    assert!(
        hub_client(&hub, &user_creds_path).await.is_err(),
        "a revoked user could connect"
    );
    let cut_off = poll(Duration::from_secs(10), || {
        (victim.connection_state() != async_nats::connection::State::Connected).then_some(())
    });
    assert!(
        cut_off.is_some(),
        "the revoked user's live connection stayed up"
    );
    // Other users of the account are unaffected, and it all happened in one process.
    let (_, other_creds) = user_creds(dir, &ids.tenant, "acme-other");
    hub_client(&hub, &other_creds)
        .await
        .expect("a user that was not revoked still connects");
    assert_eq!(hub.server.pid(), hub_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sources_each_sites_buffer_through_its_own_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let ids = Identities::new();
    let hub = start_hub(dir, &pki, &ids, vec![]);
    let collector_cert = write_pair(dir, "collector", &pki.acme.issue("collector.acme", &[]));

    let sites = ["nyc", "factory-3"];
    let mut leaves = Vec::new();
    for site in sites {
        let input = leaf_input(dir, &pki, &ids, site, &hub, &pki.acme);
        let leaf = start_leaf(dir, &input, &render_leaf_config(&input).unwrap());
        assert!(
            wait_for_leaf(&hub, &leaf.name, &ids.tenant.public_key()),
            "leaf {site} never joined\n{}",
            leaf.server.log()
        );
        // Create the buffer on the leaf (local JetStream API) and buffer messages.
        let client = leaf_client(&leaf, &pki.root_pem, Some(collector_cert.clone()))
            .await
            .expect("collector connects");
        let stream = buffer_stream_config(&BufferStreamInput::new("acme", site)).unwrap();
        let created = client
            .request(
                "$JS.API.STREAM.CREATE.EDGE_BUFFER",
                serde_json::to_vec(&stream).unwrap().into(),
            )
            .await
            .expect("stream create reply");
        let created: serde_json::Value = serde_json::from_slice(&created.payload).unwrap();
        assert!(
            created.get("error").is_none(),
            "leaf refused the buffer: {created}"
        );
        let prefix = buffer_subject_prefix("acme", site).unwrap();
        for i in 0..3 {
            let ack = client
                .request(format!("{prefix}.events.x"), format!("{site}-{i}").into())
                .await
                .expect("JetStream publish ack");
            let ack: serde_json::Value = serde_json::from_slice(&ack.payload).unwrap();
            assert_eq!(ack["stream"], "EDGE_BUFFER", "{ack}");
        }
        leaves.push((leaf, client));
    }

    // The hub, in the tenant's account, addresses each leaf's JetStream by domain.
    let (_, ingest_creds) = user_creds(dir, &ids.tenant, "acme-ingest");
    let hub_client = hub_client(&hub, &ingest_creds).await.expect("ingest user");
    for site in sites {
        let info = hub_client
            .request(
                format!("$JS.sr-acme-{site}.API.STREAM.INFO.EDGE_BUFFER"),
                "".into(),
            )
            .await
            .expect("stream info through the leaf's domain");
        let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
        assert_eq!(
            info["config"]["subjects"][0],
            format!("edge.acme.{site}.>"),
            "{info}"
        );
        assert_eq!(info["state"]["messages"], 3, "{info}");
    }

    // A hub stream sources both buffers: 6 messages, none lost, none doubled.
    let ingest = serde_json::json!({
        "name": "ACME_EDGE",
        "storage": "file",
        "sources": sites
            .iter()
            .map(|site| buffer_stream_source("acme", site).unwrap())
            .collect::<Vec<_>>(),
    });
    let created = hub_client
        .request(
            "$JS.API.STREAM.CREATE.ACME_EDGE",
            serde_json::to_vec(&ingest).unwrap().into(),
        )
        .await
        .expect("hub stream create reply");
    let created: serde_json::Value = serde_json::from_slice(&created.payload).unwrap();
    assert!(
        created.get("error").is_none(),
        "hub refused the stream: {created}"
    );
    let mut last = serde_json::Value::Null;
    let mut count = 0;
    for _ in 0..100 {
        let info = hub_client
            .request("$JS.API.STREAM.INFO.ACME_EDGE", "".into())
            .await
            .expect("hub stream info");
        last = serde_json::from_slice(&info.payload).unwrap();
        count = last["state"]["messages"].as_u64().unwrap_or(0);
        if count >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count, 6, "hub stream did not catch up: {last}");
    drop(leaves);
}
