//! End to end, on SQLite: an edge site created through the HTTP API is
//! provisioned by the `provision_leaf` job; its bundle, installed with its own
//! `setup.sh --prefix`, runs a real leaf `nats-server` that joins a real hub
//! rendered by the same code as `serviceradar-core admin hub-config`, and data
//! published at the site reaches the hub in the tenant's account.
//!
//! Independent witnesses: `openssl verify` for the chains, `nats-server -t`
//! for every config, the hub's `/leafz` monitoring endpoint, and async-nats.
//!
//! Refusal of a leaf without a client certificate or with a certificate from a
//! foreign CA is proven by `serviceradar-natsconf`'s `tests/leaf_hub.rs`
//! (`leaf_without_client_cert_is_refused`,
//! `leaf_with_client_cert_from_another_ca_is_refused`); the leaf's refusal of
//! collectors with another tenant's certificate by
//! `leaf_joins_hub_in_tenant_account_and_data_flows` there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::{Role, Scope};
use serviceradar_hub::config::{HubOptions, write_hub_config};
use serviceradar_identity::{MasterKeySource, Pki};
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::{NewUser, Store};
use serviceradar_testkit::{NatsServer, check_nats_config, free_port, http_get, leafz};

mod support;

const PASSWORD: &str = "owner password 123";
const WAIT: Duration = Duration::from_secs(30);

struct App {
    base: String,
    store: Store,
    pki: Arc<Pki>,
    http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn spawn(settings: Settings) -> App {
    support::init();
    let app = Application::build(settings).await.expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.store().clone();
    let pki = app.pki().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    App {
        base,
        store,
        pki,
        http: reqwest::Client::new(),
        shutdown: Some(tx),
    }
}

/// Bearer token or session cookie + CSRF token.
#[derive(Clone)]
enum Caller {
    Bearer(String),
    Session { cookie: String, csrf: String },
}

impl App {
    fn request(
        &self,
        who: &Caller,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match who {
            Caller::Bearer(token) => req.header("authorization", format!("Bearer {token}")),
            Caller::Session { cookie, csrf } => req
                .header("cookie", format!("sr_session={cookie}"))
                .header("x-csrf-token", csrf),
        }
    }

    async fn json(
        &self,
        who: &Caller,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(who, method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get_bytes(
        &self,
        who: &Caller,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        // A collector bundle mints credentials: sessions download it with
        // POST (and their CSRF token), never with a safe method.
        let method = match who {
            Caller::Session { .. } if path.starts_with("/api/v1/collector-packages/") => {
                reqwest::Method::POST
            }
            _ => reqwest::Method::GET,
        };
        let resp = self
            .request(who, method, path)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.expect("body").to_vec())
    }

    async fn login(&self, tenant: &str, email: &str) -> Caller {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"tenant": tenant, "email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), StatusCode::OK, "login failed");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("sr_session="))
            .map(|v| v.split(';').next().unwrap_or("").to_string())
            .expect("session cookie");
        let body: Value = resp.json().await.expect("login body");
        Caller::Session {
            cookie,
            csrf: body["csrf_token"].as_str().unwrap_or("").to_string(),
        }
    }

    /// A new tenant with an owner; an all-scope token for the owner.
    async fn tenant(&self, slug: &str) -> Caller {
        let email = format!("owner@{slug}.example.com");
        serviceradar_provisioning::tenants::create_tenant(
            &self.store,
            &self.pki,
            serviceradar_provisioning::tenants::NewTenant {
                slug,
                name: None,
                owner_email: &email,
                owner_password: Some(PASSWORD),
            },
        )
        .await
        .expect("create tenant");
        self.token(slug, &email).await
    }

    async fn token(&self, tenant: &str, email: &str) -> Caller {
        Caller::Bearer(
            serviceradar_control::tokens::create_token_for(
                &self.store,
                tenant,
                email,
                "t",
                &Scope::ALL,
                30,
            )
            .await
            .expect("token"),
        )
    }

    async fn user_with_role(&self, tenant: &str, role: Role) -> Caller {
        let t = self.store.tenant_by_slug(tenant).await.expect("tenant");
        let email = format!(
            "{role}-{}@{tenant}.example.com",
            uuid::Uuid::new_v4().simple()
        );
        self.store
            .scoped(TenantScope::for_system_task(t.id))
            .create_user(&NewUser {
                email: serviceradar_domain::validate::Email::parse(&email).expect("email"),
                role,
                password_hash: "$argon2id$not-a-real-hash".into(),
            })
            .await
            .expect("user");
        self.token(tenant, &email).await
    }

    async fn create_site(&self, who: &Caller, slug: &str, leaf_port: u16) -> String {
        let (status, site) = self
            .json(
                who,
                reqwest::Method::POST,
                "/api/v1/edge-sites",
                Some(json!({
                    "name": format!("Site {slug}"),
                    "slug": slug,
                    "nats_leaf_url": format!("nats://127.0.0.1:{leaf_port}"),
                    "local_listen": format!("127.0.0.1:{leaf_port}"),
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{site}");
        assert_eq!(site["leaf_server"]["status"], "pending");
        site["id"].as_str().expect("site id").to_string()
    }

    /// Polls the site until its leaf is provisioned; returns the leaf JSON.
    async fn wait_provisioned(&self, who: &Caller, site_id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, site) = self
                .json(
                    who,
                    reqwest::Method::GET,
                    &format!("/api/v1/edge-sites/{site_id}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{site}");
            let leaf = site["leaf_server"].clone();
            if leaf["status"] == "provisioned" {
                return leaf;
            }
            assert!(Instant::now() < deadline, "leaf never provisioned: {leaf}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Downloads and unpacks a bundle into `dir`; returns its root directory.
    async fn unpack(&self, who: &Caller, path: &str, dir: &Path) -> PathBuf {
        let (status, headers, bytes) = self.get_bytes(who, path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(headers["content-type"], "application/gzip");
        let disposition = headers["content-disposition"].to_str().unwrap().to_string();
        assert!(
            disposition.starts_with("attachment; filename=\""),
            "{disposition}"
        );
        std::fs::create_dir_all(dir).unwrap();
        let archive = dir.join("bundle.tar.gz");
        std::fs::write(&archive, &bytes).unwrap();
        run(Command::new("tar")
            .arg("xzf")
            .arg(&archive)
            .arg("-C")
            .arg(dir));
        let name = disposition
            .trim_start_matches("attachment; filename=\"")
            .trim_end_matches('"')
            .trim_end_matches(".tar.gz")
            .to_string();
        let root = dir.join(name);
        assert!(root.is_dir(), "bundle root {} missing", root.display());
        root
    }
}

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

fn openssl_verify(root: &Path, tenant_ca: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(tenant_ca)
        .arg(cert)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn settings(dir: &Path, hub_leaf_port: u16, leaf_monitor_port: u16) -> Settings {
    let mut settings = Settings::new(format!("sqlite://{}", dir.join("core.db").display()));
    settings.bootstrap.admin_password = Some(PASSWORD.into());
    settings.bootstrap.tenant = "acme".into();
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leaf_port}");
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{leaf_monitor_port}"));
    settings.master_key = MasterKeySource::DevFile(dir.join("master.key"));
    settings.provision_leaves = true;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_bundle_runs_a_leaf_that_joins_the_hub() {
    site_bundle_end_to_end(false).await;
}

/// The same data path with PostgreSQL as the control plane's database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_bundle_runs_a_leaf_that_joins_the_hub_on_postgres() {
    site_bundle_end_to_end(true).await;
}

/// API -> provisioning job -> bundle -> setup.sh --prefix -> real hub and
/// leaf `nats-server` -> mTLS leafnode link -> a message from the site
/// reaches the hub; then access checks and cross-tenant verification.
async fn site_bundle_end_to_end(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = support::HubPorts::free();
    let (hub_client, hub_monitor) = (ports.client, ports.monitor);
    let (leaf_port, leaf_monitor) = (free_port(), free_port());
    let mut settings = settings(dir, ports.leaf, leaf_monitor);
    if postgres {
        settings.database_url = serviceradar_testkit::postgres().create_database();
    }
    let app = spawn(settings).await;
    assert!(
        dir.join("master.key").is_file(),
        "dev master key not generated"
    );

    // The bootstrap owner creates a site; the job provisions it.
    let owner = app.login("acme", "admin@example.com").await;
    let site_id = app.create_site(&owner, "nyc", leaf_port).await;
    let leaf = app.wait_provisioned(&owner, &site_id).await;
    assert!(leaf["cert_expires_at"].as_i64().unwrap() > 0, "{leaf}");
    assert!(leaf["provisioned_at"].as_i64().unwrap() > 0, "{leaf}");
    assert!(
        leaf["config_checksum"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{leaf}"
    );
    assert!(leaf["last_error"].is_null(), "{leaf}");
    let listing = serde_json::to_string(&leaf).unwrap();
    assert!(
        !listing.contains("PRIVATE KEY") && !listing.contains("NKEY SEED"),
        "secret in API: {listing}"
    );

    // Download, unpack, verify chains with openssl.
    let root = app
        .unpack(
            &owner,
            &format!("/api/v1/edge-sites/{site_id}/bundle"),
            &dir.join("acme-bundle"),
        )
        .await;
    let certs = root.join("certs");
    for cert in ["leaf-client.pem", "leaf-server.pem"] {
        let (ok, text) = openssl_verify(
            &certs.join("root-ca.pem"),
            &certs.join("tenant-ca.pem"),
            &certs.join(cert),
        );
        assert!(ok, "openssl verify {cert}: {text}");
    }
    let subject = run(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(certs.join("leaf-client.pem")));
    assert!(subject.contains("leaf.nyc.acme.serviceradar"), "{subject}");
    assert!(
        subject.contains("spiffe://serviceradar.io/tenant/"),
        "{subject}"
    );

    // Install it unprivileged below a prefix, as an admin would with --prefix.
    let prefix = dir.join("edge-root");
    run(Command::new("bash")
        .arg("setup.sh")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-start")
        .current_dir(&root));
    let installed = prefix.join("etc/serviceradar/nats/nats-leaf.conf");
    check_nats_config(&installed).expect("installed nats-leaf.conf passes nats-server -t");

    // The hub, rendered by the admin command's code, with free ports.
    let (hub, files) = support::start_hub(dir, &app.store, &app.pki, ports).await;
    check_nats_config(&files.config_path).expect("nats-hub.conf passes nats-server -t");
    let _leaf_auth = support::start_leaf_auth(&app.store, &app.pki, hub_client).await;

    // The leaf, from the installed config.
    let leaf_server =
        NatsServer::start_file(&prefix, "leaf", &installed, leaf_port).expect("leaf starts");
    let acme = app.store.tenant_by_slug("acme").await.unwrap();
    let account = app
        .store
        .scoped(TenantScope::for_system_task(acme.id))
        .nats_account()
        .await
        .unwrap()
        .expect("acme has a NATS account")
        .account_public_key;
    let deadline = Instant::now() + WAIT;
    while !leafz(hub_monitor)
        .iter()
        .any(|(n, a)| n == "leaf-acme-nyc" && *a == account)
    {
        assert!(
            Instant::now() < deadline,
            "leaf never joined the hub in acme's account\n/leafz: {:?}\nhub log:\n{}\nleaf log:\n{}",
            http_get(hub_monitor, "/leafz"),
            hub.log(),
            leaf_server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A collector bundle for this site: its certificate and CA reach the leaf.
    let (status, package) = app
        .json(
            &owner,
            reqwest::Method::POST,
            "/api/v1/collector-packages",
            Some(json!({"collector_type": "syslog", "edge_site_id": site_id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{package}");
    let package_id = package["id"].as_str().unwrap().to_string();
    let collector = app
        .unpack(
            &owner,
            &format!("/api/v1/collector-packages/{package_id}/bundle"),
            &dir.join("collector"),
        )
        .await;
    let collector_json = std::fs::read_to_string(collector.join("collector.json")).unwrap();
    assert!(
        collector_json.contains(&format!("nats://127.0.0.1:{leaf_port}")),
        "{collector_json}"
    );
    let (_, package) = app
        .json(
            &owner,
            reqwest::Method::GET,
            &format!("/api/v1/collector-packages/{package_id}"),
            None,
        )
        .await;
    assert_eq!(package["status"], "downloaded");
    let (ok, text) = openssl_verify(
        &certs.join("root-ca.pem"),
        &certs.join("tenant-ca.pem"),
        &collector.join("certs/collector.pem"),
    );
    assert!(ok, "collector cert: {text}");

    // A subscriber on the hub in acme's account, minted by the control plane.
    let ingest_creds = app
        .pki
        .user_creds(
            &app.store,
            &acme,
            "test-ingest",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap();
    let creds_path = dir.join("ingest.creds");
    std::fs::write(&creds_path, ingest_creds.as_str()).unwrap();
    let hub_nc = async_nats::ConnectOptions::with_credentials_file(&creds_path)
        .await
        .unwrap()
        .connect(format!("nats://127.0.0.1:{hub_client}"))
        .await
        .expect("acme user connects to the hub");
    let mut sub = hub_nc.subscribe("logs.acme.>").await.unwrap();
    hub_nc.flush().await.unwrap();

    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let site_nc = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(collector.join("certs/ca.pem"))
        .add_client_certificate(
            collector.join("certs/collector.pem"),
            collector.join("certs/collector-key.pem"),
        )
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("tls://127.0.0.1:{leaf_port}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "collector connects to the leaf: {e}\nleaf log:\n{}",
                leaf_server.log()
            )
        });
    let _ = read(collector.join("creds/collector.creds"));
    let mut received = None;
    for _ in 0..100 {
        site_nc
            .publish("logs.acme.syslog", "hello from nyc".into())
            .await
            .unwrap();
        site_nc.flush().await.unwrap();
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            received = Some(msg);
            break;
        }
    }
    let msg = received.expect("a message published at the site reached the hub");
    assert_eq!(&msg.payload[..], b"hello from nyc");

    // Regeneration queues the job again; nothing drifted.
    let (status, regen) = app
        .json(
            &owner,
            reqwest::Method::POST,
            &format!("/api/v1/edge-sites/{site_id}/regenerate-config"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{regen}");
    assert_eq!(regen["drift"]["drifted"], false, "{regen}");
    let (status, drift) = app
        .json(
            &owner,
            reqwest::Method::GET,
            &format!("/api/v1/edge-sites/{site_id}/config-drift"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        drift["stored_checksum"], drift["expected_checksum"],
        "{drift}"
    );

    // Access: a viewer gets 403, another tenant 404.
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    let (status, _, _) = app
        .get_bytes(&viewer, &format!("/api/v1/edge-sites/{site_id}/bundle"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let beta = app.tenant("beta").await;
    let (status, _, _) = app
        .get_bytes(&beta, &format!("/api/v1/edge-sites/{site_id}/bundle"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app
        .get_bytes(
            &beta,
            &format!("/api/v1/collector-packages/{package_id}/bundle"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Tenant beta's leaf certificate does not verify under acme's intermediate.
    let beta_site = app.create_site(&beta, "lab", free_port()).await;
    app.wait_provisioned(&beta, &beta_site).await;
    let beta_root = app
        .unpack(
            &beta,
            &format!("/api/v1/edge-sites/{beta_site}/bundle"),
            &dir.join("beta-bundle"),
        )
        .await;
    let beta_cert = beta_root.join("certs/leaf-client.pem");
    let (ok, text) = openssl_verify(
        &certs.join("root-ca.pem"),
        &beta_root.join("certs/tenant-ca.pem"),
        &beta_cert,
    );
    assert!(ok, "beta's cert under beta's CA: {text}");
    // Only the first certificate of the file is checked; strip beta's chain so
    // acme's intermediate is the only one offered.
    let beta_leaf_only = dir.join("beta-leaf-only.pem");
    let beta_pem = std::fs::read_to_string(&beta_cert).unwrap();
    let end =
        beta_pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    std::fs::write(&beta_leaf_only, format!("{}\n", &beta_pem[..end])).unwrap();
    let (ok, text) = openssl_verify(
        &certs.join("root-ca.pem"),
        &certs.join("tenant-ca.pem"),
        &beta_leaf_only,
    );
    assert!(
        !ok,
        "beta's cert verified under acme's intermediate: {text}"
    );

    // No private key, NATS seed or creds from the bundles reached a log line.
    let logs = support::captured_logs();
    assert!(
        logs.contains("leaf server provisioned"),
        "logs were captured"
    );
    let key_body = |path: PathBuf| -> String {
        let pem = std::fs::read_to_string(&path).unwrap();
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    for secret in [
        key_body(certs.join("leaf-client-key.pem")),
        key_body(certs.join("leaf-server-key.pem")),
        key_body(collector.join("certs/collector-key.pem")),
    ] {
        assert!(secret.len() > 40);
        assert!(
            !logs.contains(&secret[..40]),
            "a private key reached the log"
        );
    }
    for creds in [
        root.join("creds/leaf.creds"),
        collector.join("creds/collector.creds"),
    ] {
        let text = std::fs::read_to_string(&creds).unwrap();
        let seed = text
            .lines()
            .find(|l| l.starts_with("SU"))
            .expect("creds hold a user seed");
        assert!(!logs.contains(seed), "a NATS seed reached the log");
    }
    assert!(!logs.contains("PRIVATE KEY") && !logs.contains("NKEY SEED"));
    drop(leaf_server);
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_is_refused_while_the_leaf_is_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path(), free_port(), free_port());
    settings.provision_leaves = false;
    let app = spawn(settings).await;
    let owner = app.login("acme", "admin@example.com").await;
    let site_id = app.create_site(&owner, "pending", free_port()).await;
    let (status, _, body) = app
        .get_bytes(&owner, &format!("/api/v1/edge-sites/{site_id}/bundle"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still being provisioned"),
        "{body}"
    );
}

/// On PostgreSQL: provisioning, the bundle's chain, regeneration (a new
/// certificate, same checksum), the lazily created tenant CA under concurrent
/// first use, and the hub config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_on_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut settings = settings(dir, free_port(), free_port());
    settings.database_url = serviceradar_testkit::postgres().create_database();
    let app = spawn(settings).await;
    let owner = app.login("acme", "admin@example.com").await;
    let site_id = app.create_site(&owner, "pg-site", free_port()).await;
    let first = app.wait_provisioned(&owner, &site_id).await;
    let root = app
        .unpack(
            &owner,
            &format!("/api/v1/edge-sites/{site_id}/bundle"),
            &dir.join("bundle"),
        )
        .await;
    let certs = root.join("certs");
    let (ok, text) = openssl_verify(
        &certs.join("root-ca.pem"),
        &certs.join("tenant-ca.pem"),
        &certs.join("leaf-client.pem"),
    );
    assert!(ok, "{text}");

    // Regeneration re-runs the job: a new certificate, the same config.
    let (status, _) = app
        .json(
            &owner,
            reqwest::Method::POST,
            &format!("/api/v1/edge-sites/{site_id}/regenerate-config"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, leaf) = app
            .json(
                &owner,
                reqwest::Method::GET,
                &format!("/api/v1/edge-sites/{site_id}/leaf-server"),
                None,
            )
            .await;
        if leaf["leaf_cert_pem"] != first["leaf_cert_pem"] {
            assert_eq!(leaf["status"], "provisioned");
            assert_eq!(leaf["config_checksum"], first["config_checksum"]);
            break;
        }
        assert!(Instant::now() < deadline, "regeneration never re-issued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The leaf keeps its NATS user key across re-provisioning (a re-signed
    // JWT, the same key), so revoking that key on deletion covers every
    // generation of its creds.
    let again = app
        .unpack(
            &owner,
            &format!("/api/v1/edge-sites/{site_id}/bundle"),
            &dir.join("bundle-again"),
        )
        .await;
    let creds_of = |root: &Path| std::fs::read_to_string(root.join("creds/leaf.creds")).unwrap();
    let (before, after) = (creds_of(&root), creds_of(&again));
    assert_eq!(
        serviceradar_identity::creds_user_key(&before),
        serviceradar_identity::creds_user_key(&after),
        "the same user key"
    );
    assert!(serviceradar_identity::creds_user_key(&before).is_some());

    // Creating a tenant creates its CA and NATS account with it.
    app.tenant("delta").await;
    let delta = app.store.tenant_by_slug("delta").await.unwrap();
    let delta_scope = app.store.scoped(TenantScope::for_system_task(delta.id));
    assert!(delta_scope.tenant_ca().await.unwrap().is_some(), "no CA");
    assert!(
        delta_scope.nats_account().await.unwrap().is_some(),
        "no NATS account"
    );

    // A tenant whose creation stopped before its PKI (a crash between the two
    // writes): the CA is created lazily, once, by several racing callers.
    let gamma = app
        .store
        .create_tenant(
            &serviceradar_domain::validate::Slug::parse("gamma").unwrap(),
            &serviceradar_domain::validate::DisplayName::parse("Gamma").unwrap(),
        )
        .await
        .unwrap();
    let cas = futures::future::join_all((0..6).map(|_| {
        let (store, pki, gamma) = (app.store.clone(), app.pki.clone(), gamma.clone());
        async move {
            pki.tenant_ca(&store, &gamma)
                .await
                .unwrap()
                .cert_pem()
                .to_owned()
        }
    }))
    .await;
    assert!(
        cas.windows(2).all(|w| w[0] == w[1]),
        "racing callers got different tenant CAs"
    );

    let files = write_hub_config(
        &app.store,
        &app.pki,
        &HubOptions {
            client_listen: format!("127.0.0.1:{}", free_port()),
            leafnode_listen: format!("127.0.0.1:{}", free_port()),
            monitoring_listen: Some(format!("127.0.0.1:{}", free_port())),
            ..HubOptions::default()
        },
        &dir.join("hub"),
    )
    .await
    .unwrap();
    assert_eq!(files.tenant_accounts, 3, "acme, delta and gamma preloaded");
    check_nats_config(&files.config_path).expect("nats-hub.conf passes nats-server -t");
}

/// Leaves whose certificates expire soon are re-provisioned by the renewal
/// sweep: new certificates with the same identity, same site and leaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_leaf_certificates_are_renewed() {
    use serviceradar_provisioning::{RenewalPolicy, enqueue_renewals};
    let tmp = tempfile::tempdir().unwrap();
    let app = spawn(settings(tmp.path(), free_port(), free_port())).await;
    let owner = app.login("acme", "admin@example.com").await;
    let site_id = app.create_site(&owner, "renew", free_port()).await;
    let first = app.wait_provisioned(&owner, &site_id).await;

    // Valid for a year: nothing to renew 30 days ahead.
    let default = RenewalPolicy::default();
    assert_eq!(enqueue_renewals(&app.store, default).await.unwrap(), 0);
    // 400 days ahead, everything is due.
    let soon = RenewalPolicy {
        renew_before: Duration::from_secs(400 * 24 * 3600),
        quiet: Duration::ZERO,
    };
    assert_eq!(enqueue_renewals(&app.store, soon).await.unwrap(), 1);

    let deadline = Instant::now() + WAIT;
    let renewed = loop {
        let (_, leaf) = app
            .json(
                &owner,
                reqwest::Method::GET,
                &format!("/api/v1/edge-sites/{site_id}/leaf-server"),
                None,
            )
            .await;
        if leaf["leaf_cert_pem"] != first["leaf_cert_pem"] {
            break leaf;
        }
        assert!(Instant::now() < deadline, "the renewal never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(renewed["id"], first["id"], "same leaf");
    assert_eq!(renewed["edge_site_id"], first["edge_site_id"], "same site");
    assert_eq!(renewed["status"], "provisioned");
    assert_eq!(renewed["config_checksum"], first["config_checksum"]);
    assert!(renewed["cert_expires_at"].as_i64() >= first["cert_expires_at"].as_i64());
    assert!(
        renewed["provisioned_at"].as_i64() > first["provisioned_at"].as_i64(),
        "a renewal is a provisioning run: {renewed}"
    );
    // Same identity: CN and SPIFFE id unchanged, a new serial.
    let text = |leaf: &Value| {
        let path = tmp.path().join("cert.pem");
        std::fs::write(&path, leaf["leaf_cert_pem"].as_str().unwrap()).unwrap();
        run(Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-subject",
                "-serial",
                "-ext",
                "subjectAltName",
                "-in",
            ])
            .arg(&path))
    };
    let (before, after) = (text(&first), text(&renewed));
    let identity = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("serial="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(identity(&before), identity(&after));
    assert!(after.contains("leaf.renew.acme.serviceradar"), "{after}");
    assert_ne!(before, after, "a new serial");
    // Just renewed: the next sweep leaves it alone.
    let again = RenewalPolicy {
        quiet: Duration::from_secs(3600),
        ..soon
    };
    assert_eq!(enqueue_renewals(&app.store, again).await.unwrap(), 0);
}
