//! Test harness for the HTTP API: `spawn_app` starts a real `serviceradar-core`
//! in-process on port 0 against a fresh SQLite file or a fresh database on the
//! shared private PostgreSQL cluster, and returns a client for it.
//!
//! Logs of every app in the process go to one in-memory buffer so tests can
//! assert that secrets never reach a log line.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::{Role, Scope};
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::{NewUser, Store};

pub const OWNER_PASSWORD: &str = "owner password 123";

#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Every log line written by any app in this test process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("log buffer lock")).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .expect("log buffer lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the ring TLS provider and the capturing log subscriber (once).
pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // SAFETY-free: set the filter through the env var the subscriber reads.
        serviceradar_server::telemetry::init_tracing(true, || CaptureWriter);
    });
}

pub struct TestApp {
    pub base: String,
    /// `http://` base of the metrics listener.
    pub metrics_base: String,
    pub store: Store,
    pub pki: std::sync::Arc<serviceradar_identity::Pki>,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Like [`spawn_app`], with `configure` applied to the settings last.
pub async fn spawn_app_with(db: Db, configure: impl FnOnce(&mut Settings)) -> TestApp {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
        Db::Postgres => serviceradar_testkit::postgres().create_database(),
    };
    let mut settings = Settings::new(url);
    settings.bootstrap.admin_password = Some(OWNER_PASSWORD.into());
    settings.job_workers = 0;
    configure(&mut settings);
    let app = Application::build(settings).await.expect("build app");
    TestApp::from_application(app, dir)
}

impl TestApp {
    /// Runs a built application until the returned value is dropped.
    pub fn from_application(app: Application, dir: tempfile::TempDir) -> TestApp {
        let base = format!("http://127.0.0.1:{}", app.port());
        let metrics_base = format!(
            "http://127.0.0.1:{}",
            app.metrics_port().expect("metrics listener")
        );
        let store = app.store().clone();
        let pki = app.pki().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TestApp {
            base,
            metrics_base,
            store,
            pki,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            _dir: dir,
        }
    }
}

/// A caller of the API: a bearer token, or a session cookie + CSRF token.
#[derive(Clone)]
pub struct Caller {
    pub token: Option<String>,
    pub session: Option<(String, String)>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            token: None,
            session: None,
        }
    }
    pub fn bearer(token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            session: None,
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn call(
        &self,
        who: &Caller,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &who.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if let Some((cookie, csrf)) = &who.session {
            req = req.header("cookie", format!("sr_session={cookie}"));
            if !csrf.is_empty() {
                req = req.header("x-csrf-token", csrf);
            }
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        record_response(&text);
        Reply { status, body, text }
    }

    pub async fn get(&self, who: &Caller, path: &str) -> Reply {
        self.call(who, Method::GET, path, None).await
    }
    pub async fn post(&self, who: &Caller, path: &str, body: Value) -> Reply {
        self.call(who, Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, who: &Caller, path: &str, body: Value) -> Reply {
        self.call(who, Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, who: &Caller, path: &str) -> Reply {
        self.call(who, Method::DELETE, path, None).await
    }

    /// Creates a tenant with an owner and returns an all-scope token for the owner.
    pub async fn tenant(&self, slug: &str) -> Caller {
        let email = format!("owner@{slug}.example.com");
        serviceradar_provisioning::tenants::create_tenant(
            &self.store,
            &self.pki,
            serviceradar_provisioning::tenants::NewTenant {
                slug,
                name: None,
                owner_email: &email,
                owner_password: Some(OWNER_PASSWORD),
            },
        )
        .await
        .expect("create tenant");
        self.token_for(slug, &email, &Scope::ALL).await
    }

    /// A token for an existing user.
    pub async fn token_for(&self, tenant: &str, email: &str, scopes: &[Scope]) -> Caller {
        let token = serviceradar_control::tokens::create_token_for(
            &self.store,
            tenant,
            email,
            "test",
            scopes,
            30,
        )
        .await
        .expect("create token");
        Caller::bearer(&token)
    }

    /// Adds a user with `role` to `tenant` and returns an all-scope token.
    pub async fn user_with_role(&self, tenant: &str, role: Role) -> Caller {
        let t = self.store.tenant_by_slug(tenant).await.expect("tenant");
        let email = format!(
            "{}-{}@{tenant}.example.com",
            role,
            uuid::Uuid::new_v4().simple()
        );
        self.store
            .scoped(TenantScope::for_system_task(t.id))
            .create_user(&NewUser {
                email: serviceradar_domain::validate::Email::parse(&email).expect("email"),
                role,
                password_hash: "$argon2id$not-a-real-hash-for-tests".into(),
            })
            .await
            .expect("create user");
        self.token_for(tenant, &email, &Scope::ALL).await
    }

    /// Signs in with a password and returns a session caller.
    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> (Reply, Caller) {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"tenant": tenant, "email": email, "password": password}))
            .send()
            .await
            .expect("login request");
        let status = resp.status();
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("sr_session="))
            .map(|v| v.split(';').next().unwrap_or("").to_string());
        let text = resp.text().await.expect("body");
        record_response(&text);
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let csrf = body["csrf_token"].as_str().unwrap_or("").to_string();
        let caller = Caller {
            token: None,
            session: cookie.map(|c| (c, csrf)),
        };
        (Reply { status, body, text }, caller)
    }

    pub async fn create_site(&self, who: &Caller, name: &str, slug: &str) -> Value {
        let reply = self
            .post(
                who,
                "/api/v1/edge-sites",
                json!({"name": name, "slug": slug, "nats_leaf_url": "nats://10.0.1.50:4222"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body
    }
}

/// Every response body seen in this process (for the leak test).
pub fn captured_responses() -> String {
    responses().lock().expect("lock").join("\n")
}

fn responses() -> &'static Mutex<Vec<String>> {
    static R: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

fn record_response(text: &str) {
    responses().lock().expect("lock").push(text.to_string());
}

/// Generates one test per backend from `async fn name(db: Db)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Db::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Db::Postgres).await;
                }
            )+
        }
    };
}

/// A site provisioned with the product's code, its bundle built and
/// installed with `setup.sh --prefix` (no root).
pub struct InstalledSite {
    /// The site.
    pub site: serviceradar_domain::resources::EdgeSite,
    /// The unpacked bundle's root directory.
    pub root: std::path::PathBuf,
    /// The installed `nats-leaf.conf`.
    pub config: std::path::PathBuf,
}

/// Creates site `slug` of `tenant` (leaf on 127.0.0.1:`leaf_port`),
/// provisions it, builds its bundle and installs it below `dir`.
pub async fn install_site(
    dir: &std::path::Path,
    store: &Store,
    pki: &serviceradar_identity::Pki,
    settings: &Settings,
    tenant: &serviceradar_domain::resources::Tenant,
    slug: &str,
    leaf_port: u16,
) -> InstalledSite {
    use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
    use std::process::{Command, Stdio};
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let (site, leaf) = scoped
        .create_site(
            &serviceradar_store::NewSite {
                name: DisplayName::parse(slug).unwrap(),
                slug: Slug::parse(slug).unwrap(),
                nats_leaf_url: NatsUrl::parse(&format!("tls://127.0.0.1:{leaf_port}")).unwrap(),
                upstream_url: settings.provisioning.hub_leafnode_url.clone(),
                local_listen: ListenAddr::parse(&format!("127.0.0.1:{leaf_port}")).unwrap(),
            },
            None,
        )
        .await
        .unwrap();
    serviceradar_provisioning::provision_leaf(
        store,
        pki,
        &settings.provisioning,
        tenant,
        &site,
        &leaf,
    )
    .await
    .unwrap();
    let bundle = serviceradar_provisioning::build_site_bundle(
        store,
        pki,
        &settings.provisioning,
        TenantScope::for_system_task(tenant.id),
        site.id,
    )
    .await
    .map_err(|e| e.to_string())
    .unwrap();
    std::fs::write(dir.join(&bundle.file_name), &bundle.bytes).unwrap();
    assert!(
        Command::new("tar")
            .arg("xzf")
            .arg(dir.join(&bundle.file_name))
            .arg("-C")
            .arg(dir)
            .status()
            .unwrap()
            .success()
    );
    let root = dir.join(bundle.file_name.trim_end_matches(".tar.gz"));
    let prefix = dir.join(format!("edge-{}", tenant.slug));
    assert!(
        Command::new("bash")
            .arg("setup.sh")
            .arg("--prefix")
            .arg(&prefix)
            .arg("--no-start")
            .current_dir(&root)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    InstalledSite {
        site,
        root,
        config: prefix.join("etc/serviceradar/nats/nats-leaf.conf"),
    }
}

/// A collector on `tenant`'s leaf at 127.0.0.1:`leaf_port`, authenticated by
/// a collector certificate from the tenant CA (as a collector bundle has),
/// trusting the leaf through the site bundle's CA chain.
pub async fn collector(
    dir: &std::path::Path,
    store: &Store,
    pki: &serviceradar_identity::Pki,
    tenant: &serviceradar_domain::resources::Tenant,
    bundle_root: &std::path::Path,
    leaf_port: u16,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let ca = pki.tenant_ca(store, tenant).await.unwrap();
    let cert = serviceradar_pki::issue_collector(
        &ca,
        serviceradar_pki::TenantRef {
            id: tenant.id.as_uuid(),
            slug: tenant.slug.as_str(),
        },
        uuid::Uuid::now_v7(),
        &pki.issue_options(),
    )
    .unwrap();
    let cert_path = dir.join(format!("{}-collector.pem", tenant.slug));
    let key_path = dir.join(format!("{}-collector-key.pem", tenant.slug));
    std::fs::write(&cert_path, cert.full_chain_pem()).unwrap();
    std::fs::write(&key_path, cert.key_pem.as_bytes()).unwrap();
    async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(bundle_root.join("certs/ca-chain.pem"))
        .add_client_certificate(cert_path, key_path)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(format!("tls://127.0.0.1:{leaf_port}"))
        .await
}

/// Loopback ports of a test hub.
#[derive(Clone, Copy, Debug)]
pub struct HubPorts {
    /// Client listener.
    pub client: u16,
    /// Leafnode listener.
    pub leaf: u16,
    /// Monitoring listener.
    pub monitor: u16,
}

impl HubPorts {
    /// Three free ports.
    pub fn free() -> Self {
        use serviceradar_testkit::free_port;
        Self {
            client: free_port(),
            leaf: free_port(),
            monitor: free_port(),
        }
    }
}

/// Writes the hub config with the admin command's code into `dir/hub` (every
/// tenant account preloaded) and starts the hub on `ports`, waiting for its
/// monitoring port. Returns the server and what was written (to restart it).
pub async fn start_hub(
    dir: &std::path::Path,
    store: &Store,
    pki: &serviceradar_identity::Pki,
    ports: HubPorts,
) -> (
    serviceradar_testkit::NatsServer,
    serviceradar_hub::config::HubFiles,
) {
    use serviceradar_hub::config::{HubOptions, write_hub_config};
    let hub_dir = dir.join("hub");
    let files = write_hub_config(
        store,
        pki,
        &HubOptions {
            client_listen: format!("127.0.0.1:{}", ports.client),
            leafnode_listen: format!("127.0.0.1:{}", ports.leaf),
            monitoring_listen: Some(format!("127.0.0.1:{}", ports.monitor)),
            ..HubOptions::default()
        },
        &hub_dir,
    )
    .await
    .expect("hub config");
    let hub = serviceradar_testkit::NatsServer::start_file(
        &hub_dir,
        "hub",
        &files.config_path,
        ports.client,
    )
    .expect("hub starts");
    serviceradar_testkit::wait_for_port(
        ports.monitor,
        "hub monitoring",
        std::time::Duration::from_secs(60),
    )
    .expect("hub monitoring");
    (hub, files)
}

/// The hub's leaf authorization callout service for the hub whose client
/// port is `hub_client`, connected and subscribed.
pub async fn start_leaf_auth(
    store: &Store,
    pki: &Arc<serviceradar_identity::Pki>,
    hub_client: u16,
) -> serviceradar_hub::leaf_auth::LeafAuthService {
    serviceradar_hub::leaf_auth::start(
        store.clone(),
        pki.clone(),
        serviceradar_hub::leaf_auth::LeafAuthSettings::new(format!(
            "nats://127.0.0.1:{hub_client}"
        )),
    )
    .await
    .expect("the leaf authorization service starts")
}

/// The real `nats-server` executable (a version manager's shim on `PATH`
/// resolved to the binary it runs), for tests that give a process a `PATH`
/// of their own.
pub fn real_nats_server() -> std::path::PathBuf {
    let found = serviceradar_testkit::nats_server_binary().expect("nats-server installed");
    let head = std::fs::read(&found).unwrap_or_default();
    if head.starts_with(b"#!") {
        let out = std::process::Command::new("pyenv")
            .args(["which", "nats-server"])
            .output()
            .expect("pyenv");
        return std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    found
}

/// `serviceradar-agent` beside the `serviceradar-core` under test (built
/// here when this package's tests run alone, so the workspace did not).
pub fn agent_beside_core() -> std::path::PathBuf {
    workspace_binary("serviceradar-agent", "serviceradar-agent")
}

/// Binary `bin` of workspace package `package`, beside the
/// `serviceradar-core` under test (built here when it is not there: this
/// package's tests ran alone, so the workspace's binaries were not built).
pub fn workspace_binary(package: &str, bin: &str) -> std::path::PathBuf {
    let core = std::path::PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-core"));
    let path = core.with_file_name(bin);
    if !path.is_file() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", bin])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(status.success(), "building {bin}");
    }
    path
}

/// Settings of a platform on `database_url` that ingests from the hub at
/// `hub_client` and answers its leaf authorization callout: tenant `acme`
/// with `password`, a dev master key in `dir`, no job workers, batches
/// flushed every 200 ms, tenants re-read every 300 ms. Callers set what
/// their test varies (batch size, ack wait, leaf monitoring).
pub fn hub_platform_settings(
    dir: &std::path::Path,
    database_url: &str,
    hub_client: u16,
    password: &str,
) -> Settings {
    let mut settings = Settings::new(database_url);
    settings.bootstrap.admin_password = Some(password.into());
    settings.bootstrap.tenant = "acme".into();
    settings.master_key = serviceradar_identity::MasterKeySource::DevFile(dir.join("master.key"));
    settings.job_workers = 0;
    let mut ingest =
        serviceradar_ingest::IngestSettings::new(format!("nats://127.0.0.1:{hub_client}"));
    ingest.batch_timeout = std::time::Duration::from_millis(200);
    ingest.tenant_refresh = std::time::Duration::from_millis(300);
    settings.ingest = Some(ingest);
    // Leaves join the hub through the leaf authorization callout.
    settings.leaf_auth = Some(serviceradar_hub::leaf_auth::LeafAuthSettings::new(format!(
        "nats://127.0.0.1:{hub_client}"
    )));
    settings
}

/// The `pinned_certs` of a rendered `nats-server` config (a hub or a site
/// leaf cluster node's): the SHA-256 of each node key the routes admit.
pub fn pins_of(config: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(config).expect("config");
    text.split("pinned_certs = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_default()
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}
