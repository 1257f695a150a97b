//! Gateway-initiated mode (seed 004): the agent listens with mTLS and the
//! platform's gateway polls it; the agent never dials out.
//!
//! * **Who may call**: only the platform gateway. The client certificate
//!   must be signed by the platform root itself (intermediates the client
//!   sends are ignored, so no tenant CA's certificate passes: not another
//!   agent's, of this tenant or another) and be the gateway's
//!   (CN [`GATEWAY_COMMON_NAME`], which only the gateway's certificate
//!   carries; the hub's, also root-signed, is `hub.platform.serviceradar`).
//!   Anything else fails the TLS handshake before a request is read.
//! * **What it serves**: `AgentPoll.Poll` (`gateway.proto`): the gateway
//!   sends the agent's config (applied when its version differs), the
//!   sequence number up to which it stored results, and takes the next
//!   buffered results.
//! * **Checks** run on their schedule meanwhile into a bounded buffer
//!   (oldest dropped and counted), as in dial-out mode.
//!
//! The agent presents its own agent certificate (followed by its tenant CA)
//! as its server certificate; the gateway checks it is the agent it meant
//! to reach.
//!
//! **Renewal** (a box enrolled with a token, `[renewal]` in its config)
//! rides on the polls, since this agent dials nothing: once its certificate
//! is due (about 2/3 of its lifetime, [`crate::renew::due`]) the agent makes
//! new keys and puts their CSRs in every poll answer until the gateway
//! answers in its next call of the same poll; the new files are checked and
//! written as in dial-out mode (and the local leaf reloaded), and the
//! listener serves its next TLS handshake with the new certificate
//! ([`CurrentCert`]), so no restart and no poll is lost. A refusal keeps the
//! old files and asks again later ([`crate::renew::retry_after`]).
//!
//! **Commands** ride on the polls as well: the gateway hands over the
//! agent's pending commands in a poll; the agent acknowledges them in that
//! answer and runs them (`run_checks`, `collect_diagnostics`,
//! `renew_certificates`, which makes the renewal due now, and
//! `reload_config`, a no-op here since every poll carries the config); their
//! progress and results go back with the next answers (`Shared::updates`).
//! Result uploads (`PushResults`) need the dial-out mode: a result over
//! 1 MiB is replaced by a note saying so.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serviceradar_proto::v1::agent_poll_server::{AgentPoll, AgentPollServer};
use serviceradar_proto::v1::{
    AgentConfig, CheckResult, CheckSpec, Command, CommandUpdate, IdentityClaim, PollRequest,
    PollResponse, RenewRequest, RenewResponse,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::checks::Checker;
use crate::config::Settings;

/// The common name of the platform gateway's certificate (issued by the
/// platform root for the `gateway` service).
pub const GATEWAY_COMMON_NAME: &str = "gateway.platform.serviceradar";

/// Most results returned by one poll.
pub const MAX_RESULTS_PER_POLL: usize = 1_000;

/// Most command updates kept for the next answers (oldest dropped).
const MAX_UPDATES: usize = 256;

/// Where the agent listens and with which identity.
#[derive(Debug, Clone)]
pub struct ListenTarget {
    /// Listen address.
    pub addr: SocketAddr,
    /// The agent's certificate chain (its certificate, then its tenant CA).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The platform root CA (the gateway's certificate is signed by it).
    pub ca: PathBuf,
}

/// Accepts only the platform gateway's client certificate.
#[derive(Debug)]
struct GatewayOnly {
    root: Arc<dyn ClientCertVerifier>,
}

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

/// The subject CN of a certificate, if it has one.
fn common_name(der: &[u8]) -> Option<String> {
    let cert = serviceradar_pki::inspect::parse_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

impl ClientCertVerifier for GatewayOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.root.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Signed by the platform root itself: whatever intermediates the
        // client sent are not used, so a tenant CA's certificate fails here.
        self.root.verify_client_cert(end_entity, &[], now)?;
        if common_name(end_entity).as_deref() != Some(GATEWAY_COMMON_NAME) {
            tracing::warn!("refused a client certificate that is not the platform gateway's");
            return Err(refused());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.root.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.root.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.root.supported_verify_schemes()
    }
}

/// The certificate the listener serves: read from the agent's files at
/// start and again after a renewal replaced them; each TLS handshake takes
/// the current one.
#[derive(Debug)]
pub struct CurrentCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        provider: &rustls::crypto::CryptoProvider,
    ) -> anyhow::Result<CertifiedKey> {
        let chain = pem_ders(&read(cert)?)?;
        let key_pem = zeroize::Zeroizing::new(read(key)?);
        let key_der: PrivateKeyDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("parsing {}: {e}", key.display()))?;
        CertifiedKey::from_der(chain, key_der, provider)
            .with_context(|| format!("{} and {}", cert.display(), key.display()))
    }

    /// Reads the files again; the next handshakes serve what they hold now.
    pub fn reload(&self) -> anyhow::Result<()> {
        let loaded = Arc::new(Self::load(&self.cert, &self.key, &self.provider)?);
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow::anyhow!("the listener's certificate is unavailable"))?;
        *current = loaded;
        Ok(())
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn read(p: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

fn pem_ders(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(serviceradar_pki::inspect::pem_chain_to_der(pem)
        .context("parsing a certificate")?
        .into_iter()
        .map(CertificateDer::from)
        .collect())
}

/// The TLS settings of the listener: the agent's certificate (swappable:
/// the returned [`CurrentCert`]), the gateway only as client.
pub fn server_config(
    target: &ListenTarget,
) -> anyhow::Result<(rustls::ServerConfig, Arc<CurrentCert>)> {
    let mut roots = rustls::RootCertStore::empty();
    for root in pem_ders(&read(&target.ca)?)? {
        roots.add(root).context("the platform root CA")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("client verifier")?;
    let certified = CurrentCert::load(&target.cert, &target.key, &provider)
        .context("the agent's certificate and key")?;
    let current = Arc::new(CurrentCert {
        cert: target.cert.clone(),
        key: target.key.clone(),
        current: std::sync::RwLock::new(Arc::new(certified)),
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(Arc::new(GatewayOnly { root }))
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, current))
}

/// Renewal through the polls (module doc).
struct PollRenewal {
    setup: crate::renew::RenewalSetup,
    claim: IdentityClaim,
    listener: Arc<CurrentCert>,
    state: Mutex<RenewState>,
}

struct RenewState {
    /// When to ask next (when nothing is asked).
    due: std::time::SystemTime,
    /// The keys whose CSRs the gateway was asked to sign.
    asked: Option<crate::renew::Prepared>,
}

impl PollRenewal {
    fn new(
        setup: crate::renew::RenewalSetup,
        claim: IdentityClaim,
        listener: Arc<CurrentCert>,
    ) -> Self {
        let due = Self::next_due(&setup);
        Self {
            setup,
            claim,
            listener,
            state: Mutex::new(RenewState { due, asked: None }),
        }
    }

    /// When the current certificate is due (logged), or a retry's delay
    /// from now if it cannot be read.
    fn next_due(setup: &crate::renew::RenewalSetup) -> std::time::SystemTime {
        let now = std::time::SystemTime::now();
        match crate::renew::due(&setup.agent.cert) {
            Ok(due) => {
                let wait = due.duration_since(now).unwrap_or_default();
                tracing::info!(
                    in_secs = wait.as_secs(),
                    "certificate renewal scheduled (asked at a gateway poll once due)"
                );
                due
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot schedule certificate renewal");
                now + crate::renew::retry_after(&setup.agent.cert)
            }
        }
    }

    /// The gateway's answer (in `request`) to what the last poll answer
    /// asked: applied, or the refusal logged; `None` when it carries none.
    fn answered(
        &self,
        renewed: Option<&RenewResponse>,
        refused: &str,
    ) -> Option<Result<(), String>> {
        if renewed.is_none() && refused.is_empty() {
            return None;
        }
        let mut state = self.state.lock().ok()?;
        let Some(prepared) = state.asked.take() else {
            tracing::warn!("the gateway answered a renewal this agent did not ask for: ignored");
            return None;
        };
        let outcome = match renewed {
            Some(response) => crate::renew::apply(&self.setup, prepared, response)
                .map_err(|e| e.to_string())
                .and_then(|expires| {
                    self.listener
                        .reload()
                        .map(|()| expires)
                        .map_err(|e| format!("serving the renewed certificate: {e:#}"))
                }),
            None => Err(format!("the gateway refused the renewal: {refused}")),
        };
        match &outcome {
            Ok(expires) => {
                tracing::info!(valid_until = %crate::renew::utc(*expires),
                    "certificates renewed; the listener serves the new one");
                state.due = Self::next_due(&self.setup);
            }
            Err(e) => {
                let retry = crate::renew::retry_after(&self.setup.agent.cert);
                tracing::error!(error = %e, retry_in = ?retry, "certificate renewal failed");
                state.due = std::time::SystemTime::now() + retry;
            }
        }
        Some(outcome.map(|_| ()))
    }

    /// Makes the renewal due now (`renew_certificates`): asked in the next
    /// poll's answer, unless a request is already out.
    fn due_now(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.due = std::time::SystemTime::now();
        }
    }

    /// The request for this poll's answer: the one asked and not yet
    /// answered, or a new one once the certificate is due.
    fn request(&self) -> Option<RenewRequest> {
        let mut state = self.state.lock().ok()?;
        if state.asked.is_none() {
            if std::time::SystemTime::now() < state.due {
                return None;
            }
            match crate::renew::prepare(&self.setup, &self.claim) {
                Ok(prepared) => {
                    tracing::info!("certificates due: asking the gateway to renew them");
                    state.asked = Some(prepared);
                }
                Err(e) => {
                    let retry = crate::renew::retry_after(&self.setup.agent.cert);
                    tracing::error!(error = %e, retry_in = ?retry, "certificate renewal failed");
                    state.due = std::time::SystemTime::now() + retry;
                    return None;
                }
            }
        }
        state.asked.as_ref().map(|p| p.request.clone())
    }
}

/// Results waiting for the gateway, numbered.
#[derive(Debug)]
struct Pending {
    items: VecDeque<(u64, CheckResult)>,
    next_seq: u64,
    bound: usize,
    dropped: u64,
}

impl Pending {
    fn push(&mut self, result: CheckResult) {
        if self.items.len() >= self.bound {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.next_seq += 1;
        self.items.push_back((self.next_seq, result));
    }

    fn ack(&mut self, seq: u64) {
        let before = self.items.len();
        while self.items.front().is_some_and(|(s, _)| *s <= seq) {
            self.items.pop_front();
        }
        if self.items.len() < before {
            self.dropped = 0;
        }
    }
}

/// The state shared by the poll handler and the check loop.
struct Shared {
    pending: Mutex<Pending>,
    config: watch::Sender<Option<AgentConfig>>,
    hostname: String,
    /// Whether the gateway polled since the agent started (the first poll
    /// is logged: `serviceradar-cli agent setup` waits for that line).
    polled: std::sync::atomic::AtomicBool,
    /// Certificate renewal, when the box was enrolled with a token.
    renewal: Option<PollRenewal>,
    /// Last contact and renewal, for `serviceradar-cli status`.
    status: Option<Mutex<crate::status_file::StatusFile>>,
    /// Runs the checks of `run_checks` and `collect_diagnostics`.
    checker: Checker,
    /// The checks in this agent's config file (beside the gateway's).
    local_checks: Vec<CheckSpec>,
    /// Command acks, progress and results not yet returned to the gateway.
    updates: Mutex<VecDeque<CommandUpdate>>,
}

impl Shared {
    /// Queues a command update for the next poll answer.
    fn update(&self, command: &Command, phase: &str, ok: bool, message: &str, result: String) {
        let Ok(mut updates) = self.updates.lock() else {
            return;
        };
        if updates.len() >= MAX_UPDATES {
            updates.pop_front();
            tracing::warn!("too many command updates waiting for a poll; the oldest was dropped");
        }
        updates.push_back(CommandUpdate {
            command_id: command.id.clone(),
            phase: phase.to_owned(),
            ok,
            message: message.to_owned(),
            result_json: result,
        });
    }

    /// The checks the agent runs now (the gateway's config and its own)
    /// and the config version.
    fn checks(&self) -> (Vec<CheckSpec>, String) {
        let config = self.config.borrow();
        let specs = crate::runner::schedule(config.as_ref(), &self.local_checks)
            .into_iter()
            .map(|c| c.spec)
            .collect();
        let version = config
            .as_ref()
            .map(|c| c.version.clone())
            .unwrap_or_default();
        (specs, version)
    }
}

/// Starts a command handed over with a poll: acknowledged in this poll's
/// answer, run in the background, its result returned with a later answer.
fn start_command(shared: &Arc<Shared>, command: Command) {
    if command.expires_at_ms < crate::now_ms() {
        shared.update(
            &command,
            "result",
            false,
            "expired before it started",
            String::new(),
        );
        return;
    }
    tracing::info!(command_id = %command.id, kind = %command.kind, "command received with a poll");
    shared.update(&command, "ack", true, "", String::new());
    let shared = shared.clone();
    tokio::spawn(async move {
        let (ok, message, result) = run_command(&shared, &command).await;
        let mut result = if result.is_null() {
            String::new()
        } else {
            result.to_string()
        };
        if result.len() > serviceradar_proto::MAX_COMMAND_RESULT_BYTES {
            result = serde_json::json!({ "bytes": result.len(),
                "note": "larger than the 1 MiB a command result holds; result uploads need the \
                         agent in dial-out mode" })
            .to_string();
        }
        tracing::info!(command_id = %command.id, ok, "command finished; its result goes with the next poll");
        shared.update(&command, "result", ok, &message, result);
    });
}

/// Runs one command: (succeeded, message, result document).
async fn run_command(shared: &Shared, command: &Command) -> (bool, String, serde_json::Value) {
    match command.kind.as_str() {
        "run_checks" => {
            let (specs, _) = shared.checks();
            let mut results = Vec::with_capacity(specs.len());
            for spec in &specs {
                let r = shared.checker.run(spec).await;
                results.push(
                    serde_json::from_str::<serde_json::Value>(&crate::runner::result_json(&r))
                        .unwrap_or_default(),
                );
                if let Ok(mut pending) = shared.pending.lock() {
                    pending.push(r);
                }
            }
            let n = results.len();
            (
                true,
                format!("{n} check(s) ran"),
                serde_json::json!({ "results": results }),
            )
        }
        "reload_config" => {
            let (_, version) = shared.checks();
            (
                true,
                "every poll brings the config in gateway-initiated mode: nothing to reload".to_owned(),
                serde_json::json!({ "version": version }),
            )
        }
        "renew_certificates" => match &shared.renewal {
            None => (
                false,
                "this box was not enrolled with a token: its certificates come with the site bundle"
                    .to_owned(),
                serde_json::Value::Null,
            ),
            Some(renewal) => {
                renewal.due_now();
                (
                    true,
                    "renewal due now: the agent asks the gateway in its answer to the next poll"
                        .to_owned(),
                    serde_json::Value::Null,
                )
            }
        },
        "collect_diagnostics" => {
            shared.update(command, "progress", true, "collecting", String::new());
            let (specs, version) = shared.checks();
            let bundle = crate::diagnostics::collect(&shared.checker, &specs, &version).await;
            (true, "diagnostics collected".to_owned(), bundle)
        }
        other => (
            false,
            format!("unknown command kind {other:?}"),
            serde_json::Value::Null,
        ),
    }
}

struct PollService(Arc<Shared>);

#[tonic::async_trait]
impl AgentPoll for PollService {
    async fn poll(
        &self,
        request: tonic::Request<PollRequest>,
    ) -> Result<tonic::Response<PollResponse>, tonic::Status> {
        let req = request.into_inner();
        if !self
            .0
            .polled
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!("polled by the platform gateway (first contact since start)");
        }
        for command in req.commands {
            start_command(&self.0, command);
        }
        let renewed = self
            .0
            .renewal
            .as_ref()
            .and_then(|r| r.answered(req.renewed.as_ref(), &req.renewal_refused));
        if let Some(status) = &self.0.status
            && let Ok(mut status) = status.lock()
        {
            status.contact();
            if let Some(outcome) = renewed {
                status.renewal(outcome);
            }
        }
        if let Some(config) = req.config {
            self.0.config.send_if_modified(|current| {
                let changed = current.as_ref().map(|c| &c.version) != Some(&config.version);
                if changed {
                    tracing::info!(version = %config.version, checks = config.checks.len(),
                        "config from the gateway applied");
                    *current = Some(config);
                }
                changed
            });
        }
        let config_version = self
            .0
            .config
            .borrow()
            .as_ref()
            .map(|c| c.version.clone())
            .unwrap_or_default();
        let mut pending = self
            .0
            .pending
            .lock()
            .map_err(|_| tonic::Status::internal("the result buffer is unavailable"))?;
        pending.ack(req.ack_seq);
        let max = usize::try_from(req.max_results)
            .unwrap_or(usize::MAX)
            .min(MAX_RESULTS_PER_POLL);
        let results: Vec<_> = pending.items.iter().take(max).collect();
        let last_seq = results.last().map_or(req.ack_seq, |(s, _)| *s);
        let results = results.into_iter().map(|(_, r)| r.clone()).collect();
        Ok(tonic::Response::new(PollResponse {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: self.0.hostname.clone(),
            capabilities: crate::runner::CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            config_version,
            results,
            last_seq,
            dropped: pending.dropped,
            renewal: self.0.renewal.as_ref().and_then(PollRenewal::request),
            updates: self
                .0
                .updates
                .lock()
                .map(|mut u| u.drain(..).collect())
                .unwrap_or_default(),
        }))
    }
}

/// Accepts connections and completes their TLS handshakes concurrently
/// (a slow or refused handshake holds up no other); yields the accepted.
fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> tokio::sync::mpsc::Receiver<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let accepted = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = accepted.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Runs the listening agent until the process is stopped.
pub async fn run(settings: &Settings, target: &ListenTarget) -> anyhow::Result<()> {
    let (tls, listener_cert) = server_config(target)?;
    if let Some(setup) = settings.edge_buffer.clone() {
        tokio::spawn(async move {
            if let Err(e) = crate::buffer::ensure_edge_buffer(&setup).await {
                tracing::error!(error = %format!("{e:#}"), "cannot create the site's buffer stream");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(target.addr)
        .await
        .with_context(|| format!("listening on {}", target.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening for the platform gateway (gateway-initiated mode)");
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            items: VecDeque::new(),
            next_seq: 0,
            bound: settings.buffer.max(1),
            dropped: 0,
        }),
        config: watch::channel(None).0,
        hostname: crate::runner::hostname(),
        polled: std::sync::atomic::AtomicBool::new(false),
        renewal: settings
            .renewal
            .clone()
            .map(|setup| PollRenewal::new(setup, settings.claim.clone(), listener_cert)),
        status: settings
            .status_file
            .as_deref()
            .map(|p| Mutex::new(crate::status_file::StatusFile::new(p))),
        checker: Checker::new().context("starting the checkers")?,
        local_checks: settings.local_checks.clone(),
        updates: Mutex::new(VecDeque::new()),
    });
    let incoming = accept_loop(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)));
    let server = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .add_service(AgentPollServer::new(PollService(shared.clone())))
        .serve_with_incoming(tokio_stream_receiver(incoming));
    tokio::select! {
        served = server => served.context("serving the gateway's polls"),
        () = check_loop(settings, &shared) => Ok(()),
    }
}

/// Runs the configured (gateway's and local) checks on schedule into the
/// shared buffer; reschedules when the gateway delivers a new config.
async fn check_loop(settings: &Settings, shared: &Shared) {
    let checker = match Checker::new() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start the checkers");
            return std::future::pending().await;
        }
    };
    let mut config = shared.config.subscribe();
    let mut checks = crate::runner::schedule(None, &settings.local_checks);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let current = config.borrow_and_update().clone();
                checks = crate::runner::schedule(current.as_ref(), &settings.local_checks);
            }
        }
        let now = Instant::now();
        for c in checks.iter_mut().filter(|c| c.due <= now) {
            c.due = now + Duration::from_secs(u64::from(c.spec.interval_secs.max(1)));
            let result = checker.run(&c.spec).await;
            tracing::debug!(check = %c.spec.name, status = %result.status, "check ran");
            if let Ok(mut pending) = shared.pending.lock() {
                pending.push(result);
            }
        }
    }
}

/// The accepted connections as the stream tonic serves.
fn tokio_stream_receiver<T>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> {
    Receiver(rx)
}

struct Receiver<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for Receiver<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn acknowledged_results_are_dropped_and_the_rest_kept_in_order() {
        let mut p = Pending {
            items: VecDeque::new(),
            next_seq: 0,
            bound: 3,
            dropped: 0,
        };
        for n in ["a", "b", "c", "d"] {
            p.push(result(n));
        }
        assert_eq!(p.dropped, 1, "the oldest was dropped");
        p.ack(1);
        assert_eq!(p.dropped, 1, "nothing acknowledged yet (1 was dropped)");
        let names: Vec<_> = p.items.iter().map(|(s, r)| (*s, r.name.clone())).collect();
        assert_eq!(names, [(2, "b".into()), (3, "c".into()), (4, "d".into())]);
        p.ack(3);
        assert_eq!(p.items.len(), 1);
        assert_eq!(
            p.dropped, 0,
            "reported, then cleared by the acknowledgement"
        );
    }
}
