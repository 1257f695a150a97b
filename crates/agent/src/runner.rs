//! The agent loop.
//!
//! Connect (exponential backoff with jitter between attempts) → `Hello`
//! (gets the config) → every second: run the checks that are due, buffer
//! their results, push the buffer when the push interval passed, poll the
//! config when its interval passed. A failed call drops the connection and
//! goes back to connecting; checks keep running meanwhile and the buffer
//! keeps the newest `buffer` results (older ones are dropped and counted).
//!
//! After `Hello` the agent opens the control stream and keeps it open
//! (a broken stream reconnects like a failed call, with backoff): the
//! gateway pushes config changes on it (applied at once and acknowledged
//! with the version) and commands (`run_checks`, `reload_config`,
//! `renew_certificates`, `collect_diagnostics`), each answered with ack and
//! result. Against a gateway without one (`UNIMPLEMENTED`) the agent only
//! polls.
//!
//! The outputs of `run_checks` and `collect_diagnostics` are also uploaded
//! with `PushResults` ([`crate::uploads`]) after the next status push; the
//! command's result names the upload.
//!
//! A box enrolled with a token also renews its certificates when due
//! ([`crate::renew`]) and then reconnects with the new one.
//!
//! Two answers are final and end the loop with [`Retired`] instead of a
//! retry: `NOT_FOUND` (the agent's site was deleted) and `PERMISSION_DENIED`
//! (the agent was revoked, or its certificate names another site). Retrying
//! could not change either; the binary exits with status 3, which the
//! bundle's systemd unit does not restart.

use std::collections::VecDeque;
use std::time::Duration;

use serviceradar_proto::v1::agent_message::Body as AgentBody;
use serviceradar_proto::v1::control_message::Body as ControlBody;
use serviceradar_proto::v1::{
    AgentConfig, AgentMessage, CheckResult, CheckSpec, Command, CommandUpdate, ConfigAck,
    ControlMessage, GetConfigRequest, HelloRequest, PushStatusRequest,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::checks::{Checker, OK};
use crate::config::{GatewayTarget, Settings};
use crate::transport::{GrpcTransport, Transport};
use crate::uploads::{CHECK_RESULTS, DIAGNOSTICS, Upload, Uploads, refused_for_good};

/// The platform refused this agent for good (see the module docs); `.0` is
/// the gateway's message.
#[derive(Debug, thiserror::Error)]
#[error("the platform no longer accepts this agent: {0}")]
pub struct Retired(pub String);

/// Whether `status` is a final refusal ([`Retired`]).
fn retired(status: &tonic::Status) -> Option<Retired> {
    matches!(
        status.code(),
        tonic::Code::NotFound | tonic::Code::PermissionDenied
    )
    .then(|| Retired(status.message().to_owned()))
}

/// Capabilities announced in `Hello`.
pub const CAPABILITIES: [&str; 5] = ["nats_leaf", "tcp", "http", "dns", "icmp"];

/// Reconnect delays: doubling from `base` up to `max`, each drawn uniformly
/// from its upper half (jitter spreads a reconnect storm).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(self.max);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rand::random::<f64>())
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Results waiting to be pushed, bounded.
#[derive(Debug)]
pub struct Buffer {
    items: VecDeque<CheckResult>,
    bound: usize,
    /// Results dropped since the last successful push.
    pub dropped: u64,
}

impl Buffer {
    /// An empty buffer holding at most `bound` results.
    pub fn new(bound: usize) -> Self {
        Self {
            items: VecDeque::new(),
            bound: bound.max(1),
            dropped: 0,
        }
    }

    /// Adds a result, dropping the oldest when full.
    pub fn push(&mut self, result: CheckResult) {
        if self.items.len() >= self.bound {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(result);
    }

    /// Number of buffered results.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn snapshot(&self) -> Vec<CheckResult> {
        self.items.iter().cloned().collect()
    }

    fn acknowledge(&mut self, n: usize) {
        self.items.drain(..n.min(self.items.len()));
        self.dropped = 0;
    }
}

pub(crate) struct Scheduled {
    pub(crate) spec: CheckSpec,
    pub(crate) due: Instant,
}

pub(crate) fn schedule(config: Option<&AgentConfig>, local: &[CheckSpec]) -> Vec<Scheduled> {
    let now = Instant::now();
    config
        .map(|c| c.checks.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(local.iter().cloned())
        .map(|spec| Scheduled { spec, due: now })
        .collect()
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn hello_request(settings: &Settings) -> HelloRequest {
    HelloRequest {
        claim: Some(settings.claim.clone()),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        hostname: hostname(),
    }
}

/// Runs the local checks once and prints them as JSON lines. It never
/// contacts the gateway: every gateway call counts as agent contact (the
/// site becomes `active`) and results would be recorded, so a "check and
/// print" run would change state. `Ok(true)` when every check passed.
pub async fn run_once(settings: &Settings) -> anyhow::Result<bool> {
    anyhow::ensure!(
        !settings.local_checks.is_empty(),
        "--once runs only local checks and does not contact the gateway (so it changes no state); \
         give one with --check kind=target or [[checks]] in the config"
    );
    let checker = Checker::new()?;
    let mut all_ok = true;
    for s in schedule(None, &settings.local_checks) {
        let r = checker.run(&s.spec).await;
        println!("{}", result_json(&r));
        all_ok &= r.status == OK;
    }
    Ok(all_ok)
}

/// One result as a JSON line.
pub fn result_json(r: &CheckResult) -> String {
    let mut v = serde_json::json!({
        "name": r.name, "kind": r.kind, "target": r.target, "status": r.status,
        "message": r.message, "observed_at_ms": r.observed_at_ms,
        "response_time_us": r.response_time_us,
    });
    if let Some(l) = &r.leaf {
        v["leaf"] = serde_json::json!({
            "up": l.up, "remote_connected": l.remote_connected, "remotes": l.remotes,
            "server_name": l.server_name, "jetstream_streams": l.jetstream_streams,
            "jetstream_messages": l.jetstream_messages, "jetstream_bytes": l.jetstream_bytes,
            "jetstream_consumers": l.jetstream_consumers, "jetstream_pending": l.jetstream_pending,
        });
    }
    v.to_string()
}

/// `--renew-now`: one renewal, its outcome printed.
pub async fn renew_now(settings: &Settings) -> anyhow::Result<()> {
    let setup = settings.renewal.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "this agent's config has no [renewal] section: only boxes enrolled with \
             `serviceradar-cli site init` renew their certificates"
        )
    })?;
    if settings.listen.is_some() {
        let due = crate::renew::due(&setup.agent.cert)?;
        anyhow::bail!(
            "this agent listens (gateway-initiated mode) and dials nothing: it renews through the \
             gateway's polls, from about {} (2/3 of the certificate's lifetime); the site's agent \
             view shows the last renewal or why one was refused",
            crate::renew::utc(
                due.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            )
        );
    }
    let target = settings
        .gateway
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no gateway URL configured"))?;
    let mut t = GrpcTransport::connect(target).await?;
    let expires = crate::renew::renew(&mut t, setup, &settings.claim).await?;
    println!(
        "Certificates renewed; valid until {}.",
        crate::renew::utc(expires)
    );
    Ok(())
}

/// Runs until the process is stopped.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let target = settings.gateway.clone().ok_or_else(|| {
        anyhow::anyhow!("no gateway URL configured (use --once for local checks)")
    })?;
    run_with(settings, &target, |t| Box::pin(GrpcTransport::connect(t))).await
}

type ConnectFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// The loop over any transport (`connect` dials one).
pub async fn run_with<T, F>(
    settings: &Settings,
    target: &GatewayTarget,
    connect: F,
) -> anyhow::Result<()>
where
    T: Transport,
    F: for<'a> Fn(&'a GatewayTarget) -> ConnectFuture<'a, T>,
{
    let checker = Checker::new()?;
    if let Some(auth) = settings.device_auth.clone() {
        tokio::spawn(crate::device_auth::serve(auth));
    }
    if let Some(setup) = settings.edge_buffer.clone() {
        tokio::spawn(async move {
            if let Err(e) = crate::buffer::ensure_edge_buffer(&setup).await {
                tracing::error!(error = %format!("{e:#}"), "cannot create the site's buffer stream");
            }
        });
    }
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut buffer = Buffer::new(settings.buffer);
    let mut uploads = Uploads::default();
    let mut config: Option<AgentConfig> = None;
    let mut checks = schedule(None, &settings.local_checks);
    let mut transport: Option<T> = None;
    let mut next_connect = Instant::now();
    let mut next_push = Instant::now();
    let mut next_poll = Instant::now();
    let mut next_renewal = settings.renewal.as_ref().and_then(renewal_due);
    let mut status = settings
        .status_file
        .as_deref()
        .map(crate::status_file::StatusFile::new);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut control: Option<ControlLink> = None;
    let mut stream_supported = true;
    loop {
        let pushed = tokio::select! {
            _ = tick.tick() => None,
            message = next_control(&mut control) => Some(message),
        };
        let now = Instant::now();
        if let Some(message) = pushed {
            let outcome = match (message, transport.as_mut(), control.as_ref()) {
                (Ok(Some(message)), Some(t), Some(link)) => {
                    let mut state = LoopState {
                        settings,
                        checker: &checker,
                        config: &mut config,
                        checks: &mut checks,
                        buffer: &mut buffer,
                        uploads: &mut uploads,
                        next_push: &mut next_push,
                        next_renewal: &mut next_renewal,
                    };
                    on_control(&mut state, t, link, message).await
                }
                (Ok(Some(_)), _, _) => Ok(Flow::Continue),
                (Ok(None), _, _) => Err(tonic::Status::unavailable(
                    "the gateway closed the control stream",
                )),
                (Err(status), _, _) => Err(status),
            };
            match outcome {
                Ok(Flow::Continue) => {}
                Ok(Flow::Reconnect) => {
                    control = None;
                    transport = None;
                    next_connect = now + Duration::from_secs(1);
                }
                Err(status) => {
                    if let Some(retired) = retired(&status) {
                        return Err(retired.into());
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(code = ?status.code(), message = status.message(),
                        retry_in = ?delay, "control stream ended; reconnecting");
                    control = None;
                    transport = None;
                    next_connect = now + delay;
                }
            }
            continue;
        }
        // Connect and register.
        if transport.is_none() && now >= next_connect {
            match connect(target).await {
                Ok(mut t) => match t.hello(hello_request(settings)).await {
                    Ok(hello) => {
                        tracing::info!(site_id = %hello.site_id, agent_id = %hello.agent_id,
                            "registered with the gateway");
                        if let Some(s) = status.as_mut() {
                            s.contact();
                        }
                        backoff.reset();
                        if hello.config != config {
                            config = hello.config;
                            checks = schedule(config.as_ref(), &settings.local_checks);
                        }
                        next_poll = now + poll_interval(config.as_ref());
                        next_push = now;
                        if stream_supported {
                            match open_control(&mut t, settings).await {
                                Ok(link) => control = Some(link),
                                Err(status) if status.code() == tonic::Code::Unimplemented => {
                                    tracing::info!(
                                        "the gateway has no control stream; polling the config"
                                    );
                                    stream_supported = false;
                                }
                                Err(status) => {
                                    if let Some(retired) = retired(&status) {
                                        return Err(retired.into());
                                    }
                                    tracing::warn!(code = ?status.code(), message = status.message(),
                                        "opening the control stream failed; polling until the next reconnect");
                                }
                            }
                        }
                        transport = Some(t);
                    }
                    Err(status) => {
                        if let Some(retired) = retired(&status) {
                            return Err(retired.into());
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(code = ?status.code(), message = status.message(),
                            retry_in = ?delay, "gateway refused hello");
                        next_connect = now + delay;
                    }
                },
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "gateway unreachable");
                    next_connect = now + delay;
                }
            }
        }
        // Run due checks.
        for c in checks.iter_mut().filter(|c| c.due <= now) {
            c.due = now + Duration::from_secs(u64::from(c.spec.interval_secs.max(1)));
            let result = checker.run(&c.spec).await;
            tracing::debug!(check = %c.spec.name, status = %result.status, "check ran");
            buffer.push(result);
        }
        let Some(t) = transport.as_mut() else {
            continue;
        };
        // Renew enrolled certificates when due, then reconnect with the new one.
        if let Some(setup) = &settings.renewal
            && next_renewal.is_some_and(|due| now >= due)
        {
            match crate::renew::renew(t, setup, &settings.claim).await {
                Ok(expires) => {
                    tracing::info!(valid_until = %crate::renew::utc(expires),
                        "certificates renewed; reconnecting with the new one");
                    if let Some(s) = status.as_mut() {
                        s.renewal(Ok(()));
                    }
                    next_renewal = renewal_due(setup);
                    transport = None;
                    control = None;
                    next_connect = now;
                    continue;
                }
                Err(e) => {
                    if let crate::renew::RenewError::Refused(status) = &e
                        && let Some(retired) = retired(status)
                    {
                        return Err(retired.into());
                    }
                    let retry = crate::renew::retry_after(&setup.agent.cert);
                    tracing::error!(error = %e, retry_in = ?retry, "certificate renewal failed");
                    if let Some(s) = status.as_mut() {
                        s.renewal(Err(e.to_string()));
                    }
                    next_renewal = Some(now + retry);
                }
            }
        }
        let mut failed = None;
        // Push.
        if now >= next_push && !buffer.is_empty() {
            let results = buffer.snapshot();
            let n = results.len();
            match t
                .push_status(PushStatusRequest {
                    claim: Some(settings.claim.clone()),
                    results,
                    dropped: buffer.dropped,
                })
                .await
            {
                Ok(_) => {
                    if let Some(s) = status.as_mut() {
                        s.contact();
                    }
                    buffer.acknowledge(n);
                    next_push = now + push_interval(config.as_ref());
                }
                Err(status) => failed = Some(status),
            }
        }
        // Upload command outputs (resumed with the same id after a failure).
        while failed.is_none()
            && let Some(upload) = uploads.front()
        {
            let bytes = upload.data.len();
            match t.push_results(upload.chunks(&settings.claim)).await {
                Ok(reply) => {
                    if reply.complete {
                        tracing::info!(upload_id = %reply.upload_id, bytes, "results uploaded");
                    } else {
                        tracing::warn!(upload_id = %reply.upload_id, next = reply.next_chunk_index,
                            "the gateway did not complete the upload; dropped");
                    }
                    uploads.pop();
                }
                Err(status) if refused_for_good(&status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(),
                        "the gateway refused an upload; dropped");
                    uploads.pop();
                }
                Err(status) => failed = Some(status),
            }
        }
        // Poll config.
        if failed.is_none() && now >= next_poll {
            let current = config
                .as_ref()
                .map(|c| c.version.clone())
                .unwrap_or_default();
            match t
                .get_config(GetConfigRequest {
                    claim: Some(settings.claim.clone()),
                    current_version: current,
                })
                .await
            {
                Ok(reply) => {
                    if let Some(s) = status.as_mut() {
                        s.contact();
                    }
                    if reply.changed && reply.config.is_some() {
                        tracing::info!(version = %reply.version, "config changed");
                        config = reply.config;
                        checks = schedule(config.as_ref(), &settings.local_checks);
                    }
                    next_poll = now + poll_interval(config.as_ref());
                }
                Err(status) => failed = Some(status),
            }
        }
        if let Some(status) = failed {
            if let Some(retired) = retired(&status) {
                return Err(retired.into());
            }
            let delay = backoff.next_delay();
            tracing::warn!(code = ?status.code(), message = status.message(), buffered = buffer.len(),
                retry_in = ?delay, "gateway call failed; reconnecting");
            transport = None;
            control = None;
            next_connect = now + delay;
        }
    }
}

/// The agent's half of an open control stream.
struct ControlLink {
    out: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<ControlMessage>,
}

/// What the loop does after a control message.
enum Flow {
    Continue,
    /// Certificates were renewed: reconnect with them.
    Reconnect,
}

/// The loop's state a control message may change.
struct LoopState<'a> {
    settings: &'a Settings,
    checker: &'a Checker,
    config: &'a mut Option<AgentConfig>,
    checks: &'a mut Vec<Scheduled>,
    buffer: &'a mut Buffer,
    uploads: &'a mut Uploads,
    next_push: &'a mut Instant,
    next_renewal: &'a mut Option<Instant>,
}

async fn open_control<T: Transport>(
    t: &mut T,
    settings: &Settings,
) -> Result<ControlLink, tonic::Status> {
    let (out, rx) = mpsc::channel(32);
    // The first message carries the claim (the gateway waits for it).
    let _ = out.try_send(AgentMessage {
        claim: Some(settings.claim.clone()),
        body: None,
    });
    let inbound = t.control_stream(rx).await?;
    tracing::info!("control stream open");
    Ok(ControlLink { out, inbound })
}

/// The next message of the open stream; never resolves without one.
async fn next_control(
    control: &mut Option<ControlLink>,
) -> Result<Option<ControlMessage>, tonic::Status> {
    match control {
        Some(link) => link.inbound.message().await,
        None => std::future::pending().await,
    }
}

fn send(link: &ControlLink, body: AgentBody) {
    if link
        .out
        .try_send(AgentMessage {
            claim: None,
            body: Some(body),
        })
        .is_err()
    {
        tracing::warn!("control stream congested; an update was dropped");
    }
}

fn update(
    link: &ControlLink,
    command: &Command,
    phase: &str,
    ok: bool,
    message: &str,
    result: String,
) {
    send(
        link,
        AgentBody::Update(CommandUpdate {
            command_id: command.id.clone(),
            phase: phase.to_owned(),
            ok,
            message: message.to_owned(),
            result_json: result,
        }),
    );
}

fn apply_config(state: &mut LoopState<'_>, link: &ControlLink, new: AgentConfig) {
    let version = new.version.clone();
    if state.config.as_ref() != Some(&new) {
        tracing::info!(%version, "config pushed");
        *state.config = Some(new);
        *state.checks = schedule(state.config.as_ref(), &state.settings.local_checks);
    }
    send(link, AgentBody::ConfigAck(ConfigAck { version }));
}

async fn on_control<T: Transport>(
    state: &mut LoopState<'_>,
    t: &mut T,
    link: &ControlLink,
    message: ControlMessage,
) -> Result<Flow, tonic::Status> {
    let command = match message.body {
        Some(ControlBody::Config(config)) => {
            apply_config(state, link, config);
            return Ok(Flow::Continue);
        }
        Some(ControlBody::Command(command)) => command,
        None => return Ok(Flow::Continue),
    };
    if command.expires_at_ms < crate::now_ms() {
        update(
            link,
            &command,
            "result",
            false,
            "expired before it started",
            String::new(),
        );
        return Ok(Flow::Continue);
    }
    tracing::info!(command_id = %command.id, kind = %command.kind, "command received");
    update(link, &command, "ack", true, "", String::new());
    let mut flow = Flow::Continue;
    let (ok, message, result) = match command.kind.as_str() {
        "run_checks" => {
            let mut results = Vec::new();
            for c in state.checks.iter_mut() {
                let r = state.checker.run(&c.spec).await;
                c.due = Instant::now() + Duration::from_secs(u64::from(c.spec.interval_secs.max(1)));
                results.push(serde_json::from_str::<serde_json::Value>(&result_json(&r)).unwrap_or_default());
                state.buffer.push(r);
            }
            *state.next_push = Instant::now();
            let n = results.len();
            (true, format!("{n} check(s) ran"), serde_json::json!({ "results": results }))
        }
        "reload_config" => {
            let reply = t
                .get_config(GetConfigRequest {
                    claim: Some(state.settings.claim.clone()),
                    current_version: String::new(),
                })
                .await?;
            if let Some(config) = reply.config {
                apply_config(state, link, config);
            }
            (true, "config reloaded".to_owned(), serde_json::json!({ "version": reply.version }))
        }
        "renew_certificates" => match &state.settings.renewal {
            None => (
                false,
                "this box was not enrolled with a token: its certificates come with the site bundle".to_owned(),
                serde_json::Value::Null,
            ),
            Some(setup) => match crate::renew::renew(t, setup, &state.settings.claim).await {
                Ok(expires) => {
                    *state.next_renewal = renewal_due(setup);
                    flow = Flow::Reconnect;
                    (
                        true,
                        "certificates renewed; reconnecting with them".to_owned(),
                        serde_json::json!({ "valid_until": crate::renew::utc(expires) }),
                    )
                }
                Err(e) => (false, e.to_string(), serde_json::Value::Null),
            },
        },
        "collect_diagnostics" => {
            update(link, &command, "progress", true, "collecting", String::new());
            let specs: Vec<CheckSpec> = state.checks.iter().map(|c| c.spec.clone()).collect();
            let version = state.config.as_ref().map(|c| c.version.clone()).unwrap_or_default();
            let bundle = crate::diagnostics::collect(state.checker, &specs, &version).await;
            (true, "diagnostics collected".to_owned(), bundle)
        }
        other => (false, format!("unknown command kind {other:?}"), serde_json::Value::Null),
    };
    // Detailed outputs are also uploaded; the result names the upload.
    let upload = match command.kind.as_str() {
        "run_checks" if ok => Some(("checks", CHECK_RESULTS)),
        "collect_diagnostics" if ok => Some(("diagnostics", DIAGNOSTICS)),
        _ => None,
    };
    let mut result = result;
    if let Some((prefix, content_type)) = upload {
        let upload = Upload::for_command(
            prefix,
            &command.id,
            content_type,
            result.to_string().into_bytes(),
        );
        let id = upload.id.clone();
        let bytes = upload.data.len();
        if state.uploads.push(upload) {
            if bytes > serviceradar_proto::MAX_COMMAND_RESULT_BYTES {
                // Too large for the command's history: the upload has it.
                result = serde_json::json!({ "upload_id": id, "bytes": bytes,
                    "note": "larger than the 1 MiB a command result holds; see the upload" });
            } else if let Some(object) = result.as_object_mut() {
                object.insert("upload_id".into(), serde_json::Value::String(id));
            }
        }
    }
    let result = if result.is_null() {
        String::new()
    } else {
        result.to_string()
    };
    let result = if result.len() > serviceradar_proto::MAX_COMMAND_RESULT_BYTES {
        update(
            link,
            &command,
            "result",
            false,
            "the result is larger than 1 MiB",
            String::new(),
        );
        return Ok(flow);
    } else {
        result
    };
    update(link, &command, "result", ok, &message, result);
    Ok(flow)
}

/// When the enrolled certificates are due for renewal, as a loop instant.
fn renewal_due(setup: &crate::renew::RenewalSetup) -> Option<Instant> {
    match crate::renew::due(&setup.agent.cert) {
        Ok(due) => {
            let wait = due
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tracing::info!(in_secs = wait.as_secs(), "certificate renewal scheduled");
            Some(Instant::now() + wait)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot schedule certificate renewal");
            None
        }
    }
}

fn poll_interval(config: Option<&AgentConfig>) -> Duration {
    Duration::from_secs(u64::from(
        config
            .map(|c| c.config_poll_interval_secs)
            .filter(|s| *s > 0)
            .unwrap_or(serviceradar_proto::DEFAULT_CONFIG_POLL_SECS),
    ))
}

fn push_interval(config: Option<&AgentConfig>) -> Duration {
    Duration::from_secs(u64::from(
        config
            .map(|c| c.push_interval_secs)
            .filter(|s| *s > 0)
            .unwrap_or(30),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= Duration::from_secs(60));
        }
        assert!(last >= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn buffer_is_bounded_and_counts_drops() {
        let mut buf = Buffer::new(3);
        for i in 0..5 {
            buf.push(CheckResult {
                name: i.to_string(),
                ..Default::default()
            });
        }
        assert_eq!(buf.len(), 3);
        assert_eq!(buf.dropped, 2);
        assert_eq!(buf.snapshot()[0].name, "2", "oldest dropped first");
        buf.acknowledge(3);
        assert!(buf.is_empty());
        assert_eq!(buf.dropped, 0);
    }
}
