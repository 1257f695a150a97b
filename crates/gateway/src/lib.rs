//! The agent gateway: gRPC over mTLS for edge agents (`serviceradar-agent`).
//!
//! * **Transport** ([`GatewayTls`]): rustls via tonic, a client certificate is
//!   *required* and must chain to the platform root (agents present their
//!   tenant intermediate with their certificate). No certificate, an expired
//!   one or one from an unknown CA fails the TLS handshake; no handler runs.
//!   The gateway's server certificate is issued by the platform root at start
//!   (like the hub's), so agents trust it through the `root-ca.pem` of their
//!   site bundle.
//! * **Identity** ([`identity`]): tenant, agent and site come from the verified
//!   certificate (SPIFFE URI SAN + CN `agent.{site}.{tenant}.serviceradar`),
//!   checked against the tenant CA that issued it and the stored agent row.
//!   Identity claims in requests that disagree are `PERMISSION_DENIED` and
//!   audited (`gateway_audit` table, `serviceradar_gateway_denied_total`).
//! * **Service** ([`service`]): `Hello`, `GetConfig`, `PushStatus`,
//!   `PushResults`; agent contact and leaf checker results feed
//!   `serviceradar_health`; `RenewCertificates` (module `renewal`) renews the
//!   certificates of a box enrolled with a token.
//! * **Devices** ([`devices`]): `DeviceEnrollment.SimpleReenroll` on the same
//!   port renews a registered device's certificate over its own mTLS
//!   identity (EST `simplereenroll` shape).
//! * **Connections** ([`connections`]): open agent connections per replica,
//!   `serviceradar_gateway_connections`.
//! * **Control stream** (`ControlStream`, [`links`]): config pushes and
//!   commands to connected agents, across replicas through PostgreSQL
//!   `NOTIFY`.
//! * **Status write-behind** ([`status`]): steady status reports are
//!   coalesced per replica and written in batches; changes are written in
//!   the agent's call, in order; the buffer is flushed on shutdown. Config
//!   acknowledgements are written behind the same way ([`acks`]), and the
//!   control streams' config reads are batched ([`configs`]), so a change
//!   to every agent of a tenant costs a few statements per replica, not
//!   three per agent.
//! * **ServiceRadar agents** ([`monitoring`]): ServiceRadar's
//!   `monitoring.AgentGatewayService` on the same port, translated onto the
//!   same service.
//! * **Gateway-initiated mode** ([`poller`], seed 004): agents that listen
//!   instead of dialing out are polled on a schedule, one replica per agent
//!   at a time (a lease row), with backoff and an unreachable alert.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serviceradar_pki::issue_platform_server;
use serviceradar_proto::monitoring::agent_gateway_service_server::AgentGatewayServiceServer;
use serviceradar_proto::v1::agent_gateway_server::AgentGatewayServer;
use serviceradar_proto::v1::device_enrollment_server::DeviceEnrollmentServer;
use serviceradar_store::Store;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use serviceradar_health::Health;
use serviceradar_identity::Pki;

pub mod acks;
pub mod configs;
pub mod connections;
mod control;
pub mod devices;
pub mod identity;
pub mod links;
pub mod monitoring;
pub mod poller;
mod renewal;
pub mod service;
pub mod status;
mod write_behind;

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Loading the platform root CA failed.
    #[error("loading the platform root CA: {0}")]
    RootCa(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Issuing the gateway's server certificate failed.
    #[error("issuing the gateway server certificate: {0}")]
    Certificate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The listen address could not be bound.
    #[error("binding the agent gateway on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The settings contradict themselves.
    #[error("agent gateway settings: {0}")]
    Settings(String),
    /// The gRPC server failed (TLS setup or serving).
    #[error("serving the agent gateway: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Gateway settings: its certificate's names and what it tells agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Host names / IPs in the gateway's server certificate.
    pub hosts: Vec<String>,
    /// Config poll interval given to agents (seconds).
    pub agent_config_poll_secs: u32,
    /// Status push interval given to agents (seconds).
    pub agent_push_interval_secs: u32,
    /// The leaf monitoring listener of provisioned leaves (the agent's leaf
    /// check dials its port on loopback); `None` gives agents no leaf check.
    pub leaf_monitoring_listen: Option<String>,
    /// Lifetime of certificates issued by `RenewCertificates` and
    /// `SimpleReenroll` (the same as enrollment's).
    pub edge_cert_validity: Duration,
    /// Polling of agents in gateway-initiated mode.
    pub poll: poller::PollerSettings,
    /// How often steady status reports and config acknowledgements are
    /// written in batches ([`status`], [`acks`]: write-behind); `None`
    /// writes every push and acknowledgement in its call.
    pub status_flush_every: Option<Duration>,
    /// Read the configs control streams push in batches ([`configs`]);
    /// `false` reads each stream's on its own (the code before batching,
    /// which the benchmark compares with).
    pub batch_config_reads: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            agent_config_poll_secs: serviceradar_proto::DEFAULT_CONFIG_POLL_SECS,
            agent_push_interval_secs: 30,
            leaf_monitoring_listen: Some("127.0.0.1:8222".into()),
            edge_cert_validity: Duration::from_secs(7 * 86_400),
            poll: poller::PollerSettings::default(),
            status_flush_every: Some(Duration::from_millis(200)),
            batch_config_reads: true,
        }
    }
}

/// Server identity and client trust of the gateway.
pub struct GatewayTls {
    /// Server certificate chain (PEM).
    pub cert_chain_pem: String,
    /// Server key (PEM).
    pub key_pem: zeroize::Zeroizing<String>,
    /// The platform root, the only trust anchor for client certificates.
    pub client_root_pem: String,
}

impl GatewayTls {
    /// The gateway's server certificate for `hosts`: the stored one
    /// (migration 0024, shared by every replica and kept across restarts)
    /// while it names the same hosts, chains to the current root and has
    /// more than a third of its lifetime left; otherwise a new one from the
    /// platform root, stored in place of the old (compare-and-set, so
    /// replicas starting together issue once).
    pub async fn issue(store: &Store, pki: &Pki, hosts: &[String]) -> Result<Self, GatewayError> {
        let root = pki
            .root_ca(store)
            .await
            .map_err(|e| GatewayError::RootCa(e.into()))?;
        let client_root_pem = root.cert_pem().to_owned();
        let names = hosts.join(",");
        let aad = serviceradar_identity::aad::platform(GATEWAY_CERT);
        let stored = store
            .server_certificate(GATEWAY_CERT)
            .await
            .map_err(|e| GatewayError::Certificate(e.into()))?;
        let now = serviceradar_store::now_ms();
        let usable = |r: &serviceradar_store::ServerCertRecord| {
            let fresh = r.not_after - now > (r.not_after - r.created_at) / 3;
            let same = r.hosts == names && r.cert_pem.contains(client_root_pem.trim());
            (fresh && same)
                .then(|| pki.open(&r.key_sealed, &aad).ok())
                .flatten()
        };
        if let Some(record) = &stored
            && let Some(key_pem) = usable(record)
        {
            tracing::info!(
                not_after_ms = record.not_after,
                "gateway certificate reused"
            );
            return Ok(Self {
                cert_chain_pem: record.cert_pem.clone(),
                key_pem,
                client_root_pem,
            });
        }
        let server = issue_platform_server(&root, "gateway", hosts, &pki.issue_options())
            .map_err(|e| GatewayError::Certificate(e.into()))?;
        let record = serviceradar_store::ServerCertRecord {
            hosts: names,
            cert_pem: server.full_chain_pem(),
            key_sealed: pki.seal(&server.key_pem, &aad),
            not_after: i64::try_from(server.not_after.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX),
            created_at: now,
        };
        let kept = store
            .put_server_certificate(GATEWAY_CERT, &record, stored.map(|r| r.created_at))
            .await
            .map_err(|e| GatewayError::Certificate(e.into()))?;
        tracing::info!(not_after_ms = kept.not_after, "gateway certificate issued");
        // Another replica may have stored its own at the same time: use the
        // stored one, so every replica presents the same certificate.
        let key_pem = if kept.created_at == record.created_at && kept.cert_pem == record.cert_pem {
            server.key_pem.clone()
        } else {
            pki.open(&kept.key_sealed, &aad)
                .map_err(|e| GatewayError::Certificate(e.into()))?
        };
        Ok(Self {
            cert_chain_pem: kept.cert_pem,
            key_pem,
            client_root_pem,
        })
    }

    fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &self.cert_chain_pem,
                self.key_pem.as_bytes(),
            ))
            .client_ca_root(Certificate::from_pem(&self.client_root_pem))
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10))
    }
}

/// The stored certificate's name (and its key's sealing context).
const GATEWAY_CERT: &str = "gateway";

/// Listen backlog: a reconnect storm of thousands of agents must not
/// overflow the accept queue (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    tls: GatewayTls,
    service: service::GatewayService,
    devices: devices::DeviceEnrollmentService,
}

impl Gateway {
    /// Binds `addr` and prepares the service.
    pub async fn bind(
        addr: SocketAddr,
        store: Store,
        pki: Arc<Pki>,
        settings: Arc<GatewaySettings>,
        health: Health,
    ) -> Result<Self, GatewayError> {
        let links = links::AgentLinks::new(store.clone(), links::LinkSettings::default());
        Self::bind_with_links(addr, store, pki, settings, health, links).await
    }

    /// Binds `addr` with the replica's shared [`links::AgentLinks`] (the
    /// same registry the use-cases issue commands through).
    pub async fn bind_with_links(
        addr: SocketAddr,
        store: Store,
        pki: Arc<Pki>,
        settings: Arc<GatewaySettings>,
        health: Health,
        links: links::AgentLinks,
    ) -> Result<Self, GatewayError> {
        settings.poll.check().map_err(GatewayError::Settings)?;
        let tls = GatewayTls::issue(&store, &pki, &settings.hosts).await?;
        let listener = listen(addr).map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Self {
            listener,
            tls,
            devices: devices::DeviceEnrollmentService::new(
                store.clone(),
                pki.clone(),
                settings.clone(),
            ),
            service: service::GatewayService::new(store, pki, settings, health, links),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        connections::describe();
        // Every accepted connection is counted while it is open.
        let incoming = TcpListenerStream::new(self.listener)
            .map(|accepted| accepted.map(connections::Counted::new));
        // Control streams never end by themselves: close them when stopping,
        // so the graceful shutdown does not wait for them.
        let links = self.service.links.clone();
        let service = Arc::new(self.service);
        // Agents in gateway-initiated mode are polled while the gateway serves.
        let (stop_polls, polls_stopped) = tokio::sync::watch::channel(false);
        let poller = if service.settings().poll.enabled {
            let poller = Arc::new(poller::Poller::new(service.clone(), &self.tls)?);
            Some(tokio::spawn(poller.run(polls_stopped)))
        } else {
            None
        };
        let poll_timeout = service.settings().poll.timeout;
        let status = service.status.clone();
        let acks = service.acks.clone();
        let shutdown = async move {
            shutdown.await;
            links.close_all();
            let _ = stop_polls.send(true);
        };
        let served = Server::builder()
            .tls_config(self.tls.server_config())?
            .http2_keepalive_interval(Some(Duration::from_secs(60)))
            .timeout(Duration::from_secs(60))
            .add_service(
                AgentGatewayServer::from_arc(service.clone()).max_decoding_message_size(
                    serviceradar_proto::MAX_COMMAND_RESULT_BYTES + 64 * 1024,
                ),
            )
            .add_service(
                AgentGatewayServiceServer::new(monitoring::Monitoring::new(service))
                    .max_decoding_message_size(
                        serviceradar_proto::MAX_COMMAND_RESULT_BYTES + 64 * 1024,
                    ),
            )
            .add_service(DeviceEnrollmentServer::new(self.devices))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(GatewayError::Serve);
        // Polls in flight finish and the leases still held are released
        // (another replica takes those agents over at once).
        if let Some(poller) = poller {
            let _ = tokio::time::timeout(poll_timeout + Duration::from_secs(1), poller).await;
        }
        // What agents reported before the stop is written, not lost.
        if let Some(status) = status {
            status.close().await;
        }
        if let Some(acks) = acks {
            acks.close().await;
        }
        served
    }
}
