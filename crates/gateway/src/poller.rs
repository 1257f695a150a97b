//! Gateway-initiated mode (seed 004): the gateway polls the agents that
//! listen instead of dialing out.
//!
//! Every replica runs one poller beside its gateway. Each tick it claims
//! the agents due for a poll with a lease (`store::agent_polls`: a
//! compare-and-set on the row's lease, so one replica polls an agent at a
//! time; a dead replica's lease runs out), then for each:
//!
//! 1. dials the endpoint registered at the agent's enrollment (never one
//!    the agent sent), only at an address the operator's rule allows
//!    ([`PollRules`]: public, or in an allowed range; a name is resolved
//!    and every address it resolves to checked, then the checked address
//!    is dialled, so no DNS rebinding), over TLS, presenting the gateway's own certificate (CN
//!    `gateway.platform.serviceradar`, signed by the platform root: what
//!    the agent accepts) and accepting only the agent it means to reach
//!    (its SPIFFE id: kind `agent`, this tenant, this agent id, issued by
//!    the tenant CA that chains to the platform root);
//! 2. calls `AgentPoll.Poll` with the agent's current config; records the
//!    answer like a dial-out agent's calls (`register`, `record_status`:
//!    site health, leaf link, latest check results) and the config version
//!    it runs; acknowledges the results it stored; when the agent asked to
//!    renew its certificates in its answer, answers with the new ones (or
//!    why not) in the acknowledging call (`renewal.rs` has the checks);
//!    hands over the agent's pending commands (each moved to `sent` by one
//!    replica only; issuing one brings the agent's next poll forward) and
//!    records the acks, progress and results the agent returns in its
//!    answers (`control::record_update`, as from a stream), polling again a
//!    second later while a command runs;
//! 3. on failure retries with exponential backoff (capped, with jitter);
//!    once failures have lasted `unreachable_after` the agent is
//!    `unreachable` and an `agent_unreachable` alert is raised through
//!    [`Health`](serviceradar_health::Health) (webhooks, live events); the
//!    next successful poll resolves it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serviceradar_domain::agent_control::CommandStatus;
use serviceradar_domain::agent_poll::{AgentEndpoint, PollRules, Reachability, retry_delay_ms};
use serviceradar_domain::validate::Host;
use serviceradar_domain::{AgentIdentity, TenantScope};
use serviceradar_pki::{IdentityKind, PeerIdentity};
use serviceradar_proto::v1::agent_poll_client::AgentPollClient;
use serviceradar_proto::v1::{Command, CommandUpdate, PollRequest, RenewRequest, RenewResponse};
use serviceradar_store::agent_polls::AgentPoll;
use serviceradar_store::now_ms;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::service::GatewayService;
use crate::{GatewayError, GatewayTls};

/// When and how the gateway polls agents in gateway-initiated mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerSettings {
    /// Whether this replica polls at all.
    pub enabled: bool,
    /// How often it looks for agents due for a poll.
    pub tick: Duration,
    /// How long a claimed agent is this replica's (longer than a poll).
    pub lease: Duration,
    /// Connect, handshake and both calls of one poll.
    pub timeout: Duration,
    /// Failing this long makes an agent unreachable (and raises the alert).
    pub unreachable_after: Duration,
    /// First retry delay after a failure (doubling per failure).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Most polls in flight on this replica.
    pub concurrency: usize,
    /// Which endpoints may be dialled (and the interval bounds enrollment
    /// applies).
    pub rules: PollRules,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(15),
            unreachable_after: Duration::from_secs(90),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(60),
            concurrency: 64,
            rules: PollRules::default(),
        }
    }
}

impl PollerSettings {
    /// Checks the settings against each other (`serve` refuses to start
    /// otherwise).
    pub fn check(&self) -> Result<(), String> {
        self.rules.check()?;
        if self.retry_base.is_zero() || self.retry_base > self.retry_cap {
            return Err(
                "the first poll retry must be longer than 0 and no longer than the longest".into(),
            );
        }
        if self.timeout.is_zero() || self.unreachable_after.is_zero() {
            return Err(
                "the poll timeout and the unreachable timeout must be longer than 0".into(),
            );
        }
        Ok(())
    }
}

/// The poller's `serve` flags (gateway-initiated mode, seed 004).
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Gateway-initiated mode (the gateway polls listening agents)")]
pub struct PollerArgs {
    /// Internal address ranges agent endpoints may be in, e.g.
    /// `10.0.0.0/8`, `127.0.0.0/8` for agents on this machine; repeat or
    /// comma-separate. Public addresses are always allowed; loopback,
    /// private, link-local and similar ranges only when listed here
    /// (enrollment tokens naming others are refused, and the gateway never
    /// dials them).
    #[arg(
        long = "agent-endpoint-allow-cidr",
        env = "SERVICERADAR_AGENT_ENDPOINT_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub allow_cidrs: Vec<serviceradar_domain::net::IpRange>,
    /// Shortest poll interval an enrollment token may ask for (seconds).
    #[arg(long = "agent-poll-min-interval-secs", env = "SERVICERADAR_AGENT_POLL_MIN_INTERVAL_SECS",
        default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub min_interval_secs: u32,
    /// Longest poll interval an enrollment token may ask for (seconds).
    #[arg(long = "agent-poll-max-interval-secs", env = "SERVICERADAR_AGENT_POLL_MAX_INTERVAL_SECS",
        default_value_t = 3_600, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub max_interval_secs: u32,
    /// Seconds one poll may take (connect, TLS handshake and the calls).
    #[arg(long = "agent-poll-timeout-secs", env = "SERVICERADAR_AGENT_POLL_TIMEOUT_SECS",
        default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
    /// Seconds of failed polls after which an agent is `unreachable` and an
    /// `agent_unreachable` alert is raised.
    #[arg(long = "agent-unreachable-after-secs", env = "SERVICERADAR_AGENT_UNREACHABLE_AFTER_SECS",
        default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub unreachable_after_secs: u64,
    /// First retry after a failed poll (milliseconds); it doubles with each
    /// failure (with jitter) up to the longest.
    #[arg(long = "agent-poll-retry-base-ms", env = "SERVICERADAR_AGENT_POLL_RETRY_BASE_MS",
        default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub retry_base_ms: u64,
    /// Longest retry delay after failed polls (seconds).
    #[arg(long = "agent-poll-retry-max-secs", env = "SERVICERADAR_AGENT_POLL_RETRY_MAX_SECS",
        default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub retry_max_secs: u64,
}

#[cfg(feature = "cli")]
impl PollerArgs {
    /// The poller's settings (checked when the gateway starts).
    pub fn settings(&self) -> PollerSettings {
        PollerSettings {
            timeout: Duration::from_secs(self.timeout_secs),
            unreachable_after: Duration::from_secs(self.unreachable_after_secs),
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_cap: Duration::from_secs(self.retry_max_secs),
            rules: PollRules {
                allow_internal: self.allow_cidrs.clone(),
                min_interval_secs: self.min_interval_secs,
                max_interval_secs: self.max_interval_secs,
            },
            ..PollerSettings::default()
        }
    }
}

/// Most commands handed over with one poll (the rest wait for the next).
const COMMANDS_PER_POLL: u32 = 16;

/// Most command updates read from one answer.
const MAX_UPDATES_PER_ANSWER: usize = 256;

/// After handing over commands (or hearing of one still running), the next
/// poll comes this soon (ms), not a whole interval later.
const COMMAND_FOLLOW_UP_MS: i64 = 1_000;

/// Whether `updates` tell of a command still running (an ack or progress).
fn running(updates: &[CommandUpdate]) -> bool {
    updates.iter().any(|u| u.phase != "result")
}

/// Accepts only the agent the gateway means to reach.
#[derive(Debug)]
struct ExpectedAgent {
    chain: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    tenant_id: uuid::Uuid,
    agent_id: uuid::Uuid,
    /// The verified certificate's common name, for the records.
    common_name: Mutex<Option<String>>,
}

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

impl ServerCertVerifier for ExpectedAgent {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // An agent certificate is a client certificate (clientAuth only,
        // no host names): verify its chain as one, to the platform root.
        self.chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let issuer = intermediates.first().ok_or_else(refused)?;
        let peer = PeerIdentity::from_der_with_issuer(
            end_entity.as_ref(),
            issuer.as_ref(),
            &self.trust_domain,
        )
        .map_err(|_| refused())?;
        if peer.kind != IdentityKind::Agent
            || peer.tenant_id != self.tenant_id
            || peer.id != self.agent_id
        {
            return Err(refused());
        }
        if let Ok(mut cn) = self.common_name.lock() {
            *cn = Some(peer.common_name);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Why a poll failed, in words safe to store and show (no detail of the
/// network beyond the kind of failure).
#[derive(Debug)]
enum Failure {
    /// The agent (or the network) did not answer as an agent should.
    Agent(String),
    /// The platform could not record the poll: not the agent's fault.
    Platform(String),
}

/// What a tenant is told of any failure to reach its agent. One message
/// for refused, timed out and certificate not accepted alike: the endpoint
/// is the tenant's to set, and telling those apart would let a tenant map
/// which addresses and ports answer on the platform's network. The kind goes
/// to the gateway's log (`describe_connect`) for the operator.
pub const UNANSWERED: &str = "no answer from the agent (connection failed, timed out, or its \
     certificate was not accepted; the platform's log has the detail)";

/// Logs the kind of a connection failure for the operator and answers the
/// tenant's [`UNANSWERED`].
fn describe_connect(error: &(dyn std::error::Error + 'static)) -> String {
    tracing::info!(failure = %connect_kind(error), "polling the agent failed");
    UNANSWERED.into()
}

fn connect_kind(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::InvalidData => {
                    "TLS handshake failed (certificate not accepted)".into()
                }
                std::io::ErrorKind::TimedOut => "connection timed out".into(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => {
                    "connection closed during the TLS handshake (certificate not accepted)".into()
                }
                kind => format!("connection failed ({kind})"),
            };
        }
        cause = e.source();
    }
    "connection failed".into()
}

/// The poller of one replica.
pub(crate) struct Poller {
    service: Arc<GatewayService>,
    settings: PollerSettings,
    owner: String,
    chain: Arc<dyn ClientCertVerifier>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
    slots: Arc<Semaphore>,
}

impl Poller {
    /// A poller presenting the gateway's certificate `tls`.
    pub(crate) fn new(
        service: Arc<GatewayService>,
        tls: &GatewayTls,
    ) -> Result<Self, GatewayError> {
        let cert_err = |e: &dyn std::fmt::Display| GatewayError::Certificate(e.to_string().into());
        let ders = |pem: &str| -> Result<Vec<CertificateDer<'static>>, GatewayError> {
            Ok(serviceradar_pki::inspect::pem_chain_to_der(pem)
                .map_err(|e| cert_err(&e))?
                .into_iter()
                .map(CertificateDer::from)
                .collect())
        };
        let mut roots = rustls::RootCertStore::empty();
        for root in ders(&tls.client_root_pem)? {
            roots.add(root).map_err(|e| cert_err(&e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| cert_err(&e))?;
        let client_key: PrivateKeyDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(tls.key_pem.as_bytes())
                .map_err(|e| cert_err(&e))?;
        let settings = service.settings().poll.clone();
        Ok(Self {
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            owner: format!("gateway-{}", service.links.replica()),
            chain,
            client_chain: ders(&tls.cert_chain_pem)?,
            client_key,
            service,
        })
    }

    /// Polls until `stop` changes.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {
                    // Stopping: polls in flight finish (each releases its
                    // lease as it records its outcome); whatever lease is
                    // still held after that is released, so another replica
                    // polls those agents at their next due time instead of
                    // after the lease ran out.
                    let all = u32::try_from(self.settings.concurrency.max(1)).unwrap_or(u32::MAX);
                    let _ = tokio::time::timeout(self.settings.timeout, self.slots.acquire_many(all)).await;
                    match self.service.store().release_agent_polls(&self.owner).await {
                        Ok(n) if n > 0 => tracing::info!(released = n, "agent poll leases released"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "releasing agent poll leases failed"),
                    }
                    return;
                }
            }
            let free = self.slots.available_permits();
            if free == 0 {
                continue;
            }
            let now = now_ms();
            let claimed = match self
                .service
                .store()
                .claim_agent_polls(
                    &self.owner,
                    now,
                    now + ms(self.settings.lease),
                    i64::try_from(free).unwrap_or(i64::MAX),
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "claiming agents to poll failed");
                    continue;
                }
            };
            for poll in claimed {
                let Ok(slot) = self.slots.clone().acquire_owned().await else {
                    return;
                };
                let me = self.clone();
                let span = tracing::info_span!("agent_poll", tenant_id = %poll.tenant_id,
                    site_id = %poll.edge_site_id, agent_id = %poll.agent_id,
                    endpoint = %poll.endpoint);
                tokio::spawn(
                    async move {
                        me.poll_one(poll).await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
        }
    }

    async fn poll_one(&self, poll: AgentPoll) {
        let mut id = AgentIdentity {
            tenant_id: poll.tenant_id,
            site_id: poll.edge_site_id,
            agent_id: poll.agent_id,
            common_name: String::new(),
        };
        let outcome = match tokio::time::timeout(
            self.settings.timeout,
            self.exchange(&poll, &mut id),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::info!(failure = "timed out", "polling the agent failed");
                Err(Failure::Agent(UNANSWERED.into()))
            }
        };
        let store = self.service.store();
        let now = now_ms();
        match outcome {
            Ok(busy) => {
                // Commands handed over or still reporting: poll again soon
                // for their results instead of a whole interval later.
                let interval = poll.interval_secs.max(1) * 1_000;
                let next = now
                    + if busy {
                        interval.min(COMMAND_FOLLOW_UP_MS)
                    } else {
                        interval
                    };
                match store
                    .agent_poll_succeeded(poll.agent_id, &self.owner, now, next)
                    .await
                {
                    Ok(Some(_)) if poll.reachability != Reachability::Reachable => {
                        tracing::info!("agent reachable");
                        if let Err(e) = self
                            .service
                            .health
                            .agent_reachable(poll.tenant_id, poll.edge_site_id)
                            .await
                        {
                            tracing::error!(error = %e, "resolving the unreachable alert failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "recording a poll failed"),
                }
            }
            Err(Failure::Platform(what)) => {
                // Not the agent's fault: the lease runs out and the next
                // claim retries; nothing counts against the agent.
                tracing::error!(error = %what, "recording the agent's answer failed");
            }
            Err(Failure::Agent(reason)) => {
                let failures = u32::try_from(poll.failures + 1).unwrap_or(u32::MAX);
                let delay = retry_delay_ms(
                    ms(self.settings.retry_base) as u64,
                    ms(self.settings.retry_cap) as u64,
                    failures,
                    rand::random::<f64>(),
                );
                let recorded = store
                    .agent_poll_failed(
                        poll.agent_id,
                        &self.owner,
                        now,
                        now + i64::try_from(delay).unwrap_or(i64::MAX / 2),
                        &reason,
                        ms(self.settings.unreachable_after),
                    )
                    .await;
                match recorded {
                    Ok(Some(f)) => {
                        tracing::warn!(%reason, failures = f.failures, retry_in_ms = delay,
                            "polling the agent failed");
                        if f.after == Reachability::Unreachable
                            && f.before != Reachability::Unreachable
                        {
                            let held = now - poll.failing_since.unwrap_or(now);
                            let message = format!(
                                "the gateway cannot reach the site's agent at {} ({reason}; {} \
                                 failed polls over {})",
                                poll.endpoint,
                                f.failures,
                                serviceradar_domain::duration::human(held)
                            );
                            if let Err(e) = self
                                .service
                                .health
                                .agent_unreachable(poll.tenant_id, poll.edge_site_id, &message)
                                .await
                            {
                                tracing::error!(error = %e, "raising the unreachable alert failed");
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "recording a failed poll failed"),
                }
            }
        }
    }

    /// Connects, polls, records the answer and acknowledges the results.
    /// `Ok(true)` when commands were handed over or reported on (their
    /// results come with a later poll).
    async fn exchange(&self, poll: &AgentPoll, id: &mut AgentIdentity) -> Result<bool, Failure> {
        let platform =
            |what: &str, e: &dyn std::fmt::Display| Failure::Platform(format!("{what}: {e}"));
        let config = self
            .service
            .config_for(id)
            .await
            .map_err(|s| platform("the agent's config", &s.message()))?;
        let expected = Arc::new(ExpectedAgent {
            chain: self.chain.clone(),
            trust_domain: self.service.pki().trust_domain().to_owned(),
            tenant_id: poll.tenant_id.0,
            agent_id: poll.agent_id,
            common_name: Mutex::new(None),
        });
        let mut client = self.connect(&poll.endpoint, expected.clone()).await?;
        id.common_name = expected
            .common_name
            .lock()
            .ok()
            .and_then(|cn| cn.clone())
            .unwrap_or_default();
        // Taken only once the agent answered TLS as itself: a command is
        // handed over to that agent or not at all.
        let commands = self.take_commands(id).await?;
        let mut busy = !commands.is_empty();
        let answer = client
            .poll(PollRequest {
                config: Some(config),
                ack_seq: 0,
                max_results: crate::service::MAX_RESULTS_PER_PUSH as u32,
                commands,
                ..PollRequest::default()
            })
            .await
            .map_err(|s| Failure::Agent(format!("the agent answered {:?}", s.code())))?
            .into_inner();
        busy |= running(&answer.updates);
        self.record_updates(id, answer.updates.clone()).await;
        if poll.reachability != Reachability::Reachable {
            self.service
                .register(
                    id,
                    &answer.agent_version,
                    &answer.capabilities,
                    &answer.hostname,
                )
                .await
                .map_err(|s| platform("registering the agent", &s.message()))?;
        }
        self.service
            .record_status(id, &answer.results, answer.dropped)
            .await
            .map_err(|s| platform("recording results", &s.message()))?;
        if !answer.config_version.is_empty() {
            self.service
                .store()
                .scoped(TenantScope::for_system_task(id.tenant_id))
                .ack_agent_config(id.agent_id, &answer.config_version)
                .await
                .map_err(|e| platform("recording the config version", &e))?;
        }
        let (renewed, renewal_refused) = match &answer.renewal {
            None => (None, String::new()),
            Some(request) => match self.renew(id, poll, request).await {
                Ok(renewed) => (Some(renewed), String::new()),
                Err(refused) => (None, refused.message().to_owned()),
            },
        };
        if !answer.results.is_empty() || answer.renewal.is_some() {
            let acked = client
                .poll(PollRequest {
                    config: None,
                    ack_seq: answer.last_seq,
                    max_results: 0,
                    renewed,
                    renewal_refused,
                    commands: Vec::new(),
                })
                .await
                .map_err(|s| Failure::Agent(format!("the agent answered {:?}", s.code())))?
                .into_inner();
            busy |= running(&acked.updates);
            self.record_updates(id, acked.updates).await;
        }
        tracing::debug!(results = answer.results.len(), "agent polled");
        Ok(busy)
    }

    /// The agent's pending commands, each moved to `sent` (a command
    /// another replica took meanwhile is left out).
    async fn take_commands(&self, id: &AgentIdentity) -> Result<Vec<Command>, Failure> {
        let scoped = self
            .service
            .store()
            .scoped(TenantScope::for_system_task(id.tenant_id));
        let pending = scoped
            .pending_agent_commands(id.agent_id, COMMANDS_PER_POLL)
            .await
            .map_err(|e| Failure::Platform(format!("reading the agent's commands: {e}")))?;
        let mut commands = Vec::with_capacity(pending.len());
        for c in pending {
            let taken = scoped
                .set_agent_command_status(c.id, CommandStatus::Sent, None, None)
                .await
                .map_err(|e| Failure::Platform(format!("handing a command over: {e}")))?;
            if taken {
                tracing::info!(command_id = %c.id, kind = c.kind.as_str(), "command sent with the poll");
                commands.push(Command {
                    id: c.id.to_string(),
                    kind: c.kind.as_str().to_owned(),
                    expires_at_ms: c.expires_at,
                });
            }
        }
        Ok(commands)
    }

    /// Records the command updates of a poll answer (as from a control
    /// stream); a failure is logged, the poll still counts.
    async fn record_updates(&self, id: &AgentIdentity, updates: Vec<CommandUpdate>) {
        for update in updates.into_iter().take(MAX_UPDATES_PER_ANSWER) {
            if let Err(e) = crate::control::record_update(self.service.store(), id, update).await {
                tracing::error!(error = %e, "recording a command update failed");
            }
        }
    }

    /// The agent asked to renew its certificates in its poll answer: the
    /// same checks and issuance as `RenewCertificates`, for the identity
    /// verified when it was dialled, its revocation read now. If the answer
    /// does not reach the agent, it asks again with the same requests at
    /// the next poll.
    async fn renew(
        &self,
        id: &AgentIdentity,
        poll: &AgentPoll,
        request: &RenewRequest,
    ) -> Result<RenewResponse, tonic::Status> {
        let revoked_at = self
            .service
            .store()
            .scoped(TenantScope::for_system_task(id.tenant_id))
            .agent(id.agent_id)
            .await
            .map_err(|e| crate::service::internal_status("agent lookup", &e))?
            .revoked_at;
        let remote = AgentEndpoint::parse(&poll.endpoint)
            .ok()
            .map(|e| e.host().to_bare());
        self.service
            .renew_for("Poll", id, revoked_at, remote.as_deref(), request)
            .await
    }

    async fn connect(
        &self,
        endpoint: &str,
        expected: Arc<ExpectedAgent>,
    ) -> Result<AgentPollClient<tonic::transport::Channel>, Failure> {
        let parsed = AgentEndpoint::parse(endpoint)
            .map_err(|e| Failure::Platform(format!("stored endpoint: {e}")))?;
        let server_name = match parsed.host() {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Dns(name) => ServerName::try_from(name.clone())
                .map_err(|e| Failure::Platform(format!("stored endpoint: {e}")))?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Platform(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(expected)
            .with_client_auth_cert(self.client_chain.clone(), self.client_key.clone_key())
            .map_err(|e| Failure::Platform(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = self.dial_address(&parsed).await?;
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let tls = tls.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{parsed}"))
            .map_err(|e| Failure::Platform(format!("stored endpoint: {e}")))?
            .connect_timeout(self.settings.timeout)
            .timeout(self.settings.timeout)
            .connect_with_connector(connector)
            .await
            .map_err(|e| Failure::Agent(describe_connect(&e)))?;
        Ok(AgentPollClient::new(channel))
    }
}

impl Poller {
    /// The address to dial for `endpoint`: its address, or the first its
    /// name resolves to, once the operator's rule allows every one of them
    /// (checked at each poll: the rule may have narrowed, a name may
    /// resolve elsewhere now). A refusal is told to the tenant as any
    /// other failure to reach the agent ([`UNANSWERED`]); the log says why.
    async fn dial_address(
        &self,
        endpoint: &AgentEndpoint,
    ) -> Result<std::net::SocketAddr, Failure> {
        let resolved: Vec<std::net::SocketAddr> = match endpoint.host() {
            Host::Ip(ip) => vec![std::net::SocketAddr::new(*ip, endpoint.port())],
            Host::Dns(name) => {
                match tokio::net::lookup_host((name.as_str(), endpoint.port())).await {
                    Ok(found) => found.collect(),
                    Err(e) => {
                        tracing::info!(failure = %format!("resolving {name}: {e}"),
                        "polling the agent failed");
                        return Err(Failure::Agent(UNANSWERED.into()));
                    }
                }
            }
        };
        self.settings.rules.pick(&resolved).ok_or_else(|| {
            tracing::warn!(failure = "the endpoint is (or resolves to) an address the operator does not allow",
                resolved = ?resolved, "polling the agent failed");
            Failure::Agent(UNANSWERED.into())
        })
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
