//! Building and running the HTTP application.
//!
//! [`Application::build`] connects the store, migrates, bootstraps, binds the
//! listener (port 0 works: tests read [`Application::port`]) and starts job
//! workers; [`Application::run_until_stopped`] serves until the shutdown
//! future resolves, then drains in-flight requests and stops the workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serviceradar_health::fleet_metrics;
use serviceradar_http::ops::Readiness;
use serviceradar_runtime::tasks::{NamedTask, drain, stopped};
use serviceradar_runtime::telemetry;
use serviceradar_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use serviceradar_auth::SessionSettings;
use serviceradar_control::throttle::ThrottleSettings;
use serviceradar_control::{Control, ControlSettings};
use serviceradar_gateway::links::{AgentLinks, LinkSettings};
use serviceradar_gateway::{Gateway, GatewaySettings};
use serviceradar_health::webhooks::WebhookSettings;
use serviceradar_health::{Health, HealthSettings};
use serviceradar_hub::embedded::{EmbeddedHub, EmbeddedHubSettings};
use serviceradar_hub::leaf_auth::LeafAuthSettings;
use serviceradar_identity::{MasterKeySource, Pki};
use serviceradar_ingest::{IngestSettings, IngestStatus};
use serviceradar_jobs::Jobs;
use serviceradar_provisioning::ProvisioningSettings;
use serviceradar_provisioning::bootstrap::{BootstrapOutcome, BootstrapSettings, bootstrap};

/// Runtime settings of the server (what `serve` flags turn into): the
/// process's own, and each service's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Database URL.
    pub database_url: String,
    /// Pool size.
    pub database_max_connections: u32,
    /// Listen address (port 0 for tests).
    pub listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics`: its own listener, loopback by
    /// default, never the public API port; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Job worker loops in this process.
    pub job_workers: usize,
    /// Where the master key that seals private keys comes from.
    pub master_key: MasterKeySource,
    /// SPIFFE trust domain of issued certificates.
    pub trust_domain: String,
    /// The first tenant and owner on an empty database.
    pub bootstrap: BootstrapSettings,
    /// What provisioning writes into configs and bundles (hub URL, SaaS
    /// NATS URL, gateway URL, leaf monitoring listener).
    pub provisioning: ProvisioningSettings,
    /// Session lifetime and cookie flags.
    pub sessions: SessionSettings,
    /// Sign-in throttling.
    pub throttle: ThrottleSettings,
    /// Where webhooks may point (internal ranges the operator allows).
    pub webhooks: WebhookSettings,
    /// Offline timeout, alert delay, sweep interval.
    pub health: HealthSettings,
    /// Register the `provision_leaf` job handler (new sites get certificates,
    /// credentials and config). `serve` turns it on; [`Settings::new`] leaves
    /// it off so API tests see sites stay `pending`.
    pub provision_leaves: bool,
    /// The ingestion pipeline (hub JetStream -> database); `None` disables it.
    pub ingest: Option<IngestSettings>,
    /// How long a tenant's ingestion may fail before `/readyz` says not
    /// ready (default [`INGEST_STALL_UNREADY`]; zero: never).
    pub ingest_stall_unready: Duration,
    /// How long stopping may take: requests, open streams and workers are
    /// drained in parallel for at most this long, then aborted.
    pub shutdown_grace: Duration,
    /// How long rows are kept.
    pub retention: serviceradar_store::RetentionPolicy,
    /// How often a retention sweep is enqueued; `None` (the default of
    /// [`Settings::new`]; `serve` sweeps hourly) disables it.
    pub retention_sweep: Option<Duration>,
    /// The hub's leaf authorization callout service; `None` disables it (then
    /// no leaf can join the hub: run it wherever leaves connect).
    pub leaf_auth: Option<LeafAuthSettings>,
    /// The hub `nats-server` this process runs and supervises itself (no
    /// external hub); `None` runs none.
    pub embedded_hub: Option<EmbeddedHubSettings>,
    /// Agent gateway (gRPC, mTLS) listen address; `None` disables it.
    pub gateway_listen: Option<SocketAddr>,
    /// The gateway's certificate names and agent intervals (its leaf
    /// monitoring listener is taken from [`Settings::provisioning`]).
    pub gateway: GatewaySettings,
    /// How long a command waits for another replica to claim it before it
    /// is `offline`.
    pub agent_links: LinkSettings,
    /// The URL edge boxes reach this control plane at, written into
    /// enrollment tokens; `None`: `http://` plus the bound listen address.
    pub public_url: Option<String>,
    /// Lifetime of certificates issued through enrollment tokens.
    pub enrollment_cert_validity: std::time::Duration,
    /// How often the gauges read from the database (sites, leaves, jobs,
    /// certificate expiries: [`serviceradar_health::fleet_metrics`]) are refreshed;
    /// `None` disables them (they are off without a metrics listener too).
    pub fleet_metrics_interval: Option<Duration>,
}

impl Settings {
    /// Defaults for `database_url` on loopback port 0 (tests and embedding).
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            database_max_connections: 16,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            job_workers: 1,
            master_key: MasterKeySource::Ephemeral,
            trust_domain: serviceradar_pki::DEFAULT_TRUST_DOMAIN.into(),
            bootstrap: BootstrapSettings::default(),
            provisioning: ProvisioningSettings::default(),
            sessions: SessionSettings::default(),
            throttle: ThrottleSettings::default(),
            webhooks: WebhookSettings::default(),
            health: HealthSettings::default(),
            provision_leaves: false,
            ingest: None,
            ingest_stall_unready: INGEST_STALL_UNREADY,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            retention: serviceradar_store::RetentionPolicy::default(),
            retention_sweep: None,
            leaf_auth: None,
            embedded_hub: None,
            gateway_listen: None,
            gateway: GatewaySettings::default(),
            agent_links: LinkSettings::default(),
            public_url: None,
            enrollment_cert_validity: serviceradar_control::enrollment::DEFAULT_CERT_VALIDITY,
            fleet_metrics_interval: Some(FLEET_METRICS_INTERVAL),
        }
    }
}

/// A built, bound server.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    router: Router,
    store: Store,
    jobs: Arc<Jobs>,
    settings: Arc<Settings>,
    pki: Arc<Pki>,
    health: Health,
    gateway: Option<Gateway>,
    agent_links: AgentLinks,
    hub: Option<EmbeddedHub>,
    ingest_status: IngestStatus,
    /// Flips to true when stopping starts (made at build time so the web
    /// UI's live streams, which the router holds, end with it).
    stop: (watch::Sender<bool>, watch::Receiver<bool>),
    dead_letters: serviceradar_ingest::DeadLetters,
    device_changes: serviceradar_ingest::DeviceChanges,
    hub_view: serviceradar_hub::leaf_view::HubView,
    /// What bootstrapping did (the first admin's password, once).
    pub bootstrap: BootstrapOutcome,
}

impl Application {
    /// Connects, migrates, bootstraps and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_jobs(settings, Jobs::default()).await
    }

    /// Like [`Application::build`] with job handlers registered.
    /// With [`Settings::provision_leaves`], the `provision_leaf` handler is
    /// registered unless `jobs` already has one.
    pub async fn build_with_jobs(settings: Settings, mut jobs: Jobs) -> anyhow::Result<Self> {
        use anyhow::Context;
        // One TLS stack (ring) for the gateway and the webhook client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::connect(&settings.database_url, settings.database_max_connections)
            .await
            .context("connecting to the database")?;
        store.migrate().await.context("applying migrations")?;
        let keyring = settings
            .master_key
            .load()
            .context("loading the master key")?;
        tracing::info!(key_id = keyring.current_key_id(), "master key loaded");
        let pki = Arc::new(Pki::new(keyring, &settings.trust_domain));
        let bootstrap = bootstrap(&store, &pki, &settings.bootstrap)
            .await
            .context("bootstrapping")?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics listener {addr}"))?;
                // The recorder is in place before any service starts: the
                // ingest status registers each tenant's series once and
                // keeps the handles.
                telemetry::metrics_handle();
                Some(listener)
            }
            None => None,
        };
        let hub = match &settings.embedded_hub {
            Some(hub) => Some(
                EmbeddedHub::start(store.clone(), pki.clone(), hub.clone())
                    .await
                    .context("starting the embedded hub (or name an external one with --ingest-nats-url)")?,
            ),
            None => None,
        };
        let settings = Arc::new(settings);
        if settings.provision_leaves && !jobs.has(serviceradar_jobs::PROVISION_LEAF) {
            serviceradar_provisioning::register(
                &mut jobs,
                store.clone(),
                pki.clone(),
                Arc::new(settings.provisioning.clone()),
            );
        }
        if !jobs.has(serviceradar_health::webhooks::DELIVER_WEBHOOK) {
            serviceradar_health::webhooks::register(
                &mut jobs,
                store.clone(),
                pki.clone(),
                settings.webhooks.clone(),
            );
        }
        if !jobs.has(serviceradar_jobs::retention::RETENTION_SWEEP) {
            serviceradar_jobs::retention::register(&mut jobs, store.clone(), settings.retention);
        }
        let jobs = Arc::new(jobs);
        let health = Health::new(store.clone(), Arc::new(settings.health.clone()));
        // The replica's agent control streams: its gateway registers them,
        // the use-cases send commands and config pushes through them (and,
        // on PostgreSQL, to other replicas' streams).
        let agent_links = AgentLinks::new(store.clone(), settings.agent_links);
        let gateway = match settings.gateway_listen {
            Some(addr) => {
                let mut gateway = settings.gateway.clone();
                gateway.leaf_monitoring_listen =
                    settings.provisioning.leaf_monitoring_listen.clone();
                gateway.edge_cert_validity = settings.enrollment_cert_validity;
                Some(
                    Gateway::bind_with_links(
                        addr,
                        store.clone(),
                        pki.clone(),
                        Arc::new(gateway),
                        health.clone(),
                        agent_links.clone(),
                    )
                    .await?,
                )
            }
            None => None,
        };
        let ingest_status = IngestStatus::new();
        let dead_letters = serviceradar_ingest::DeadLetters::new();
        let device_changes = serviceradar_ingest::DeviceChanges::default();
        let hub_view = serviceradar_hub::leaf_view::HubView::new();
        let control = Control::new(
            store.clone(),
            pki.clone(),
            jobs.clone(),
            ControlSettings {
                provisioning: settings.provisioning.clone(),
                sessions: settings.sessions.clone(),
                throttle: settings.throttle.clone(),
                webhooks: settings.webhooks.clone(),
                ingest_status: ingest_status.clone(),
                dead_letters: dead_letters.clone(),
                device_changes: device_changes.clone(),
                hub_view: hub_view.clone(),
                agent_links: Some(agent_links.clone()),
                agent_polls: settings.gateway.poll.rules.clone(),
                enrollment: serviceradar_control::enrollment::EnrollmentSettings {
                    public_url: match &settings.public_url {
                        Some(url) => url.trim_end_matches('/').to_string(),
                        None => format!("http://{}", listener.local_addr()?),
                    },
                    cert_validity: settings.enrollment_cert_validity,
                },
            },
        );
        let stop = watch::channel(false);
        Ok(Self {
            listener,
            metrics_listener,
            router: router(
                control,
                health.clone(),
                stop.1.clone(),
                Readiness {
                    ingest: ingest_status.clone(),
                    stall: settings.ingest_stall_unready,
                },
            ),
            ingest_status,
            stop,
            dead_letters,
            device_changes,
            hub_view,
            store,
            jobs,
            settings,
            pki,
            health,
            gateway,
            agent_links,
            hub,
            bootstrap,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The store (tests seed data through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics listener's bound port, when enabled.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// The agent gateway's bound port, when enabled.
    pub fn gateway_port(&self) -> Option<u16> {
        self.gateway
            .as_ref()
            .and_then(|g| g.local_addr().ok())
            .map(|a| a.port())
    }

    /// The embedded hub's settings, when this process runs one.
    pub fn embedded_hub(&self) -> Option<&EmbeddedHubSettings> {
        self.hub.as_ref().map(EmbeddedHub::settings)
    }

    /// The replica's agent control streams (commands, config pushes).
    pub fn agent_links(&self) -> &AgentLinks {
        &self.agent_links
    }

    /// Site/leaf health and its live status changes.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Each tenant's ingestion pipeline: state, lag, last error.
    pub fn ingest_status(&self) -> &IngestStatus {
        &self.ingest_status
    }

    /// The platform PKI (tests mint NATS users and read CAs through it).
    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    /// Serves until `shutdown` resolves, then drains and stops workers.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = self.stop;
        // The embedded hub stops last, after everything else has drained.
        let (hub_stop_tx, hub_stop_rx) = watch::channel(false);
        let hub = self.hub.map(|hub| hub.supervise(hub_stop_rx));
        // Every background task, named for the log if it does not drain.
        let mut tasks: Vec<NamedTask> = self
            .jobs
            .spawn_workers(
                self.store.clone(),
                self.settings.job_workers,
                stop_rx.clone(),
            )
            .into_iter()
            .map(|worker| ("a job worker", worker))
            .collect();
        // Leaves the callout admits are announced to ingestion, which sets up
        // their buffers at once.
        let admissions = serviceradar_hub::leaf_auth::Admissions::default();
        if let Some(ingest) = &self.settings.ingest {
            let mut ingest = ingest.clone();
            ingest.leaf_admissions = Some(admissions.clone());
            ingest.dead_letters = self.dead_letters.clone();
            ingest.device_changes = self.device_changes.clone();
            tasks.push((
                "the ingest supervisor",
                serviceradar_ingest::spawn(
                    self.store.clone(),
                    self.pki.clone(),
                    ingest,
                    self.ingest_status.clone(),
                    stop_rx.clone(),
                ),
            ));
        }
        if let Some(leaf_auth) = &self.settings.leaf_auth {
            let hub_endpoint = leaf_auth.hub.clone();
            let mut leaf_auth = leaf_auth.clone();
            leaf_auth.admissions = admissions.clone();
            tasks.push((
                "the leaf authorization service",
                serviceradar_hub::leaf_auth::spawn(
                    self.store.clone(),
                    self.pki.clone(),
                    leaf_auth,
                    stop_rx.clone(),
                ),
            ));
            // Leaf status from the hub's own connect/disconnect advisories.
            let (links, mut received) = tokio::sync::mpsc::unbounded_channel();
            tasks.push((
                "the leaf connection follower",
                serviceradar_hub::leaf_events::spawn(
                    self.store.clone(),
                    self.pki.clone(),
                    hub_endpoint,
                    links,
                    self.hub_view.clone(),
                    stop_rx.clone(),
                ),
            ));
            let health = self.health.clone();
            tasks.push((
                "the leaf status recorder",
                tokio::spawn(async move {
                    while let Some(link) = received.recv().await {
                        if let Err(e) = health
                            .site_leaf_link(link.tenant_id, link.site_id, link.up)
                            .await
                        {
                            tracing::warn!(error = %e, site_id = %link.site_id,
                                up = link.up, "recording a leaf link change from the hub failed");
                        }
                    }
                }),
            ));
        }
        if self.settings.provision_leaves && self.settings.job_workers > 0 {
            tasks.push((
                "the renewal sweeper",
                tokio::spawn(serviceradar_provisioning::renew_every_interval(
                    self.store.clone(),
                    stop_rx.clone(),
                )),
            ));
        }
        if let Some(interval) = self.settings.retention_sweep {
            tasks.push((
                "the retention sweeper",
                tokio::spawn(serviceradar_jobs::retention::enqueue_every(
                    self.store.clone(),
                    interval,
                    stop_rx.clone(),
                )),
            ));
        }
        tasks.push((
            "the health sweeper",
            tokio::spawn(
                self.health
                    .clone()
                    .sweep_every(self.settings.health.sweep_interval, stop_rx.clone()),
            ),
        ));
        tasks.push(("the health relay", self.health.spawn_relay(stop_rx.clone())));
        tasks.push((
            "the agent link relay",
            self.agent_links.spawn_relay(stop_rx.clone()),
        ));
        tasks.push((
            "the credential cache's invalidation listener",
            self.store.spawn_auth_invalidation(stop_rx.clone()),
        ));
        if let Some(gateway) = self.gateway {
            let stop = stop_rx.clone();
            tasks.push((
                "the agent gateway",
                tokio::spawn(async move {
                    let served = gateway.serve(stopped(stop)).await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "agent gateway failed");
                    }
                }),
            ));
        }
        if let Some(interval) = self.settings.fleet_metrics_interval
            && self.metrics_listener.is_some()
        {
            tasks.push((
                "the fleet metrics",
                tokio::spawn(fleet_metrics::publish_every(
                    self.store.clone(),
                    self.pki.clone(),
                    fleet_metrics::Published::with_job_kinds(&self.jobs.kinds()),
                    interval,
                    stop_rx.clone(),
                )),
            ));
        }
        if let Some(listener) = self.metrics_listener {
            let stop = stop_rx.clone();
            let metrics = serviceradar_http::ops::metrics(telemetry::metrics_handle());
            tasks.push((
                "the metrics listener",
                tokio::spawn(async move {
                    let served = axum::serve(listener, metrics)
                        .with_graceful_shutdown(stopped(stop))
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "the metrics listener failed");
                    }
                }),
            ));
        }
        let mut http = tokio::spawn(
            axum::serve(
                self.listener,
                self.router
                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
        );
        // Serve until told to stop, unless the HTTP server fails first.
        let failed = tokio::select! {
            () = shutdown => None,
            served = &mut http => Some(served),
        };
        let grace = self.settings.shutdown_grace;
        tracing::info!(grace = ?grace, "stopping: draining requests, streams and workers");
        let _ = stop_tx.send(true);
        if failed.is_none() {
            tasks.push((
                "the HTTP server",
                tokio::spawn(async move {
                    match http.await {
                        Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server failed"),
                        Err(e) if e.is_panic() => tracing::error!("the HTTP server panicked"),
                        _ => {}
                    }
                }),
            ));
        }
        drain(tasks, grace).await;
        self.dead_letters.release();
        let _ = hub_stop_tx.send(true);
        if let Some(hub) = hub
            && tokio::time::timeout(Duration::from_secs(30), hub)
                .await
                .is_err()
        {
            tracing::warn!("the embedded hub did not stop in time");
        }
        if tokio::time::timeout(Duration::from_secs(5), self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the database pool did not close in time");
        }
        match failed {
            Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the HTTP server failed")),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server task")),
            _ => Ok(()),
        }
    }
}

/// The public port's routes: the JSON API under `/api/v1`, the probes, and
/// the web UI (`/`, `/sign-in`, `/admin/...`, `/assets/...`), inside the
/// shared layers.
fn router(
    control: Control,
    health: Health,
    stop: watch::Receiver<bool>,
    readiness: Readiness,
) -> Router {
    let (api, _openapi) = serviceradar_api::router();
    let web = serviceradar_web::router(serviceradar_web::WebState {
        control: control.clone(),
        health,
        stop,
    });
    let probes = serviceradar_http::ops::probes(control.store().clone(), readiness);
    serviceradar_http::stack::layered(
        Router::new()
            .nest("/api/v1", api.with_state(control))
            .merge(probes)
            .merge(web),
    )
}

/// How long stopping may take by default (under the 30 s most service
/// managers wait before killing).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How often the gauges read from the database are refreshed by default.
pub const FLEET_METRICS_INTERVAL: Duration = Duration::from_secs(30);

/// How long a tenant's ingestion may fail before the server reports itself
/// not ready (short failures, such as a hub restart, are retried quietly).
pub const INGEST_STALL_UNREADY: Duration = Duration::from_secs(60);
