//! Shared harness: a real `serviceradar-core` (SQLite in a temp dir) with
//! its agent gateway on a loopback port, and sites provisioned through the
//! real provisioning code (which issues the agent certificates).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use serviceradar_agent::config::GatewayTarget;
use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::{EdgeSite, Tenant};
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_health::Health;
use serviceradar_identity::{Pki, aad};
use serviceradar_provisioning::provision_leaf;
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::{NewSite, Store};

/// A running control plane with its gateway.
pub struct Core {
    pub store: Store,
    pub pki: Arc<Pki>,
    pub settings: Settings,
    pub http_port: u16,
    pub metrics_port: u16,
    pub gateway_port: u16,
    pub health: Health,
    pub agent_links: serviceradar_gateway::links::AgentLinks,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Settings on a fresh SQLite file with the gateway on a free port.
pub fn settings(dir: &tempfile::TempDir) -> Settings {
    let mut s = Settings::new(format!("sqlite://{}", dir.path().join("core.db").display()));
    s.gateway_listen = Some("127.0.0.1:0".parse().expect("addr"));
    s
}

pub async fn spawn(dir: tempfile::TempDir, settings: Settings) -> Core {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = Application::build(settings.clone())
        .await
        .expect("build app");
    let store = app.store().clone();
    let pki = app.pki().clone();
    let http_port = app.port();
    let metrics_port = app.metrics_port().expect("metrics listener");
    let gateway_port = app.gateway_port().expect("gateway enabled");
    let health = app.health().clone();
    let agent_links = app.agent_links().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Core {
        store,
        pki,
        settings,
        http_port,
        metrics_port,
        gateway_port,
        health,
        agent_links,
        dir,
        shutdown: Some(tx),
    }
}

/// A provisioned site with its agent's files on disk.
pub struct SiteAgent {
    pub tenant: Tenant,
    pub site: EdgeSite,
    pub agent_id: uuid::Uuid,
    pub files: tempfile::TempDir,
}

impl SiteAgent {
    pub fn cert(&self) -> PathBuf {
        self.files.path().join("agent.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.files.path().join("agent-key.pem")
    }
    pub fn ca(&self) -> PathBuf {
        self.files.path().join("root-ca.pem")
    }
}

impl Core {
    pub async fn tenant(&self, slug: &str) -> Tenant {
        match self.store.tenant_by_slug(slug).await {
            Ok(t) => t,
            Err(_) => self
                .store
                .create_tenant(
                    &Slug::parse(slug).expect("slug"),
                    &DisplayName::parse(slug).expect("name"),
                )
                .await
                .expect("tenant"),
        }
    }

    /// Creates a site whose leaf listens on `127.0.0.1:<leaf_port>` and
    /// provisions it (leaf and agent certificates) with the real code.
    pub async fn provisioned_site(
        &self,
        tenant: &Tenant,
        name: &str,
        slug: &str,
        leaf_port: u16,
    ) -> EdgeSite {
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant.id));
        let (site, leaf) = scoped
            .create_site(
                &NewSite {
                    name: DisplayName::parse(name).expect("name"),
                    slug: Slug::parse(slug).expect("slug"),
                    nats_leaf_url: NatsUrl::parse(&format!("nats://127.0.0.1:{leaf_port}"))
                        .expect("url"),
                    upstream_url: self.settings.provisioning.hub_leafnode_url.clone(),
                    local_listen: ListenAddr::parse(&format!("127.0.0.1:{leaf_port}"))
                        .expect("listen"),
                },
                None,
            )
            .await
            .expect("site");
        provision_leaf(
            &self.store,
            &self.pki,
            &self.settings.provisioning,
            tenant,
            &site,
            &leaf,
        )
        .await
        .expect("provision");
        site
    }

    /// Creates and provisions a site; writes the agent's cert chain, key and
    /// the root CA to a temp dir.
    pub async fn site(&self, tenant: &Tenant, slug: &str) -> SiteAgent {
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant.id));
        let site = self.provisioned_site(tenant, slug, slug, 4222).await;
        let agent = scoped
            .agent_for_site(site.id)
            .await
            .expect("agent lookup")
            .expect("provisioning issued an agent certificate");
        let key = self
            .pki
            .open(
                &scoped.agent_key_sealed(agent.id).await.expect("key"),
                &aad::agent_key(tenant.id, agent.id),
            )
            .expect("open key");
        let tenant_ca = self.pki.tenant_ca(&self.store, tenant).await.expect("ca");
        let root = self.pki.root_ca(&self.store).await.expect("root");
        let files = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            files.path().join("agent.pem"),
            format!("{}{}", agent.cert_pem, tenant_ca.cert_pem()),
        )
        .expect("write");
        std::fs::write(files.path().join("agent-key.pem"), key.as_bytes()).expect("write");
        std::fs::write(files.path().join("root-ca.pem"), root.cert_pem()).expect("write");
        SiteAgent {
            tenant: tenant.clone(),
            site,
            agent_id: agent.id,
            files,
        }
    }

    pub fn target(&self, agent: &SiteAgent) -> GatewayTarget {
        GatewayTarget {
            url: format!("https://localhost:{}", self.gateway_port),
            cert: agent.cert(),
            key: agent.key(),
            ca: agent.ca(),
            tls_name: None,
        }
    }
}

/// The site's bundle, built by the real code and installed with its own
/// `setup.sh --prefix <dir>/edge --no-start`; returns the installed config
/// directory (`nats-leaf.conf`, `agent.toml`, `certs/`).
pub async fn install_bundle(
    core: &Core,
    tenant: &Tenant,
    site: &EdgeSite,
    dir: &std::path::Path,
) -> PathBuf {
    let bundle = serviceradar_provisioning::build_site_bundle(
        &core.store,
        &core.pki,
        &core.settings.provisioning,
        TenantScope::for_system_task(tenant.id),
        site.id,
    )
    .await
    .expect("bundle");
    let unpack = dir.join("bundle");
    std::fs::create_dir_all(&unpack).expect("mkdir");
    std::fs::write(unpack.join("b.tar.gz"), &bundle.bytes).expect("write");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("tar")
        .arg("xzf")
        .arg("b.tar.gz")
        .current_dir(&unpack));
    let root = unpack.join(bundle.file_name.trim_end_matches(".tar.gz"));
    if core.settings.provisioning.leaf_device_auth {
        // setup.sh makes the device authorization keys with the agent.
        std::fs::copy(
            env!("CARGO_BIN_EXE_serviceradar-agent"),
            root.join("serviceradar-agent"),
        )
        .expect("agent beside setup.sh");
    }
    let prefix = dir.join("edge");
    run(std::process::Command::new("bash")
        .arg("setup.sh")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-start")
        .current_dir(&root));
    prefix.join("etc/serviceradar/nats")
}

/// The JSON API with a token of `email` (all scopes) in `tenant`.
/// A web UI page as `email` of `tenant` sees it, signed in (a session made
/// in the store the way signing in makes one): its status and HTML.
pub async fn web_page(
    core: &Core,
    tenant: &str,
    email: &str,
    path: &str,
) -> (reqwest::StatusCode, String) {
    let login = core.store.login_record(tenant, email).await.expect("user");
    let cookie = serviceradar_auth::random_token(32);
    core.store
        .create_session(
            &serviceradar_auth::sha256_hex(&cookie),
            &login.user,
            &serviceradar_auth::random_token(24),
            serviceradar_store::now_ms() + 3_600_000,
        )
        .await
        .expect("session");
    let reply = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}{path}", core.http_port))
        .header("cookie", format!("sr_session={cookie}"))
        .send()
        .await
        .expect("page");
    let status = reply.status();
    (status, reply.text().await.expect("body"))
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    pub token: String,
}

impl Api {
    pub async fn new(core: &Core, tenant: &str, email: &str) -> Self {
        let token = serviceradar_control::tokens::create_token_for(
            &core.store,
            tenant,
            email,
            "t",
            &serviceradar_domain::Scope::ALL,
            1,
        )
        .await
        .expect("token");
        Self {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{}/api/v1", core.http_port),
            token,
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let reply = req.send().await.expect("request");
        let status = reply.status();
        let text = reply.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Python gRPC stubs of `proto` (a path under `crates/proto/proto`),
/// generated with grpcio-tools into a new temporary directory; fails with
/// how to install grpcio when Python lacks it.
pub fn python_stubs(proto: &str) -> tempfile::TempDir {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .expect("python3");
    assert!(
        probe.success(),
        "python grpcio missing: pip install grpcio grpcio-tools (scripts/test does)"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto");
    let generated = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", proto_root])
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg(proto)
        .status()
        .expect("protoc");
    assert!(generated.success(), "grpc_tools.protoc {proto}");
    out
}

/// Webhook events (`event`, alert kind) as they arrive.
pub async fn webhook_receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut conn, &mut chunk)
                    .await
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= pos + 4 + length {
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[pos + 4..pos + 4 + length]).unwrap_or_default();
                    let _ = tx.send((
                        body["event"].as_str().unwrap_or_default().to_string(),
                        body["alert"]["kind"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ));
                    break;
                }
            }
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut conn,
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        }
    });
    (port, rx)
}
