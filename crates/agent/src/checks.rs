//! The checkers. Each takes a [`CheckSpec`] and returns a [`CheckResult`];
//! none panics or hangs past its timeout.
//!
//! | kind | target | passes when |
//! |---|---|---|
//! | `nats_leaf` | monitoring base URL (`http://127.0.0.1:8222`) | `/healthz` is ok and a leafnode remote is connected (`/leafz`); `/varz` and `/jsz` add server name and JetStream usage |
//! | `tcp` | `host:port` | a TCP connection opens |
//! | `http` | `http(s)://...` | the response status is 2xx or 3xx |
//! | `dns` | a host name | it resolves to at least one address |
//! | `icmp` | a host | an echo reply arrives; needs root / `CAP_NET_RAW` or a `ping_group_range` that includes the agent's group, otherwise `unsupported` |

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use serviceradar_proto::v1::{CheckResult, CheckSpec, LeafHealth};

/// `ok`.
pub const OK: &str = "ok";
/// `fail`.
pub const FAIL: &str = "fail";
/// `unsupported` (the check cannot run here, e.g. ICMP without privileges).
pub const UNSUPPORTED: &str = "unsupported";

/// Runs checks; holds the HTTP client they share.
#[derive(Clone)]
pub struct Checker {
    http: reqwest::Client,
}

impl Checker {
    /// A checker (needs a rustls crypto provider installed).
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(5))
                .build()?,
        })
    }

    /// Runs one check.
    pub async fn run(&self, spec: &CheckSpec) -> CheckResult {
        let timeout = Duration::from_millis(u64::from(spec.timeout_ms.max(100)));
        let start = Instant::now();
        let outcome = tokio::time::timeout(timeout, self.dispatch(spec, timeout)).await;
        let (status, message, leaf) = match outcome {
            Ok(o) => o,
            Err(_) => (FAIL, format!("timed out after {timeout:?}"), None),
        };
        CheckResult {
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            target: spec.target.clone(),
            status: status.to_owned(),
            message,
            observed_at_ms: crate::now_ms(),
            response_time_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            leaf,
        }
    }

    async fn dispatch(
        &self,
        spec: &CheckSpec,
        timeout: Duration,
    ) -> (&'static str, String, Option<LeafHealth>) {
        let (status, message) = match spec.kind.as_str() {
            "nats_leaf" => return self.nats_leaf(&spec.target).await,
            "tcp" => tcp(&spec.target).await,
            "http" => self.http_status(&spec.target).await,
            "dns" => dns(&spec.target).await,
            "icmp" => icmp(&spec.target, timeout).await,
            other => (UNSUPPORTED, format!("unknown check kind {other:?}")),
        };
        (status, message, None)
    }

    /// GETs `base` + `path` and parses the JSON answer (the error says which path failed).
    pub async fn get_json(&self, base: &str, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}: {}", body.trim()));
        }
        serde_json::from_str(&body).map_err(|e| format!("{path}: {e}"))
    }

    async fn nats_leaf(&self, base: &str) -> (&'static str, String, Option<LeafHealth>) {
        let mut leaf = LeafHealth::default();
        match self.get_json(base, "/healthz").await {
            Ok(v) if v.get("status").and_then(Value::as_str) == Some("ok") => leaf.up = true,
            Ok(v) => {
                return (FAIL, format!("leaf unhealthy: {v}"), Some(leaf));
            }
            Err(e) => {
                return (
                    FAIL,
                    format!("leaf monitoring unreachable: {e}"),
                    Some(leaf),
                );
            }
        }
        if let Ok(v) = self.get_json(base, "/varz").await {
            leaf.server_name = str_field(&v, "server_name");
        }
        match self.get_json(base, "/leafz").await {
            Ok(v) => {
                let remotes = v.get("leafs").and_then(Value::as_array).map_or(0, Vec::len);
                leaf.remotes = u32::try_from(remotes).unwrap_or(u32::MAX);
                leaf.remote_connected = remotes > 0;
            }
            Err(e) => return (FAIL, format!("reading leafz: {e}"), Some(leaf)),
        }
        if let Ok(v) = self
            .get_json(base, "/jsz?accounts=true&streams=true&consumers=true")
            .await
        {
            leaf.jetstream_streams = u64_field(&v, "streams");
            leaf.jetstream_consumers = u64_field(&v, "consumers");
            leaf.jetstream_messages = u64_field(&v, "messages");
            leaf.jetstream_bytes = u64_field(&v, "bytes");
            leaf.jetstream_pending = pending(&v);
        }
        if leaf.remote_connected {
            (
                OK,
                format!("leaf up, {} remote(s) connected", leaf.remotes),
                Some(leaf),
            )
        } else {
            (
                FAIL,
                "leaf up but no leafnode remote connected".into(),
                Some(leaf),
            )
        }
    }

    async fn http_status(&self, url: &str) -> (&'static str, String) {
        match self.http.get(url).send().await {
            Ok(r) if r.status().is_success() || r.status().is_redirection() => {
                (OK, format!("HTTP {}", r.status()))
            }
            Ok(r) => (FAIL, format!("HTTP {}", r.status())),
            Err(e) => (FAIL, format!("request failed: {e}")),
        }
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Sum of `num_pending` over every consumer in a `/jsz` detail answer.
fn pending(v: &Value) -> u64 {
    let mut total = 0;
    for account in v
        .get("account_details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for stream in account
            .get("stream_detail")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for consumer in stream
                .get("consumer_detail")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                total += u64_field(consumer, "num_pending");
            }
        }
    }
    total
}

async fn tcp(target: &str) -> (&'static str, String) {
    match tokio::net::TcpStream::connect(target).await {
        Ok(_) => (OK, "connected".into()),
        Err(e) => (FAIL, format!("connect failed: {e}")),
    }
}

async fn dns(name: &str) -> (&'static str, String) {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => {
            let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            if addrs.is_empty() {
                (FAIL, "no addresses".into())
            } else {
                let shown: Vec<String> = addrs.iter().take(4).map(IpAddr::to_string).collect();
                (OK, format!("resolved to {}", shown.join(", ")))
            }
        }
        Err(e) => (FAIL, format!("resolution failed: {e}")),
    }
}

async fn icmp(host: &str, timeout: Duration) -> (&'static str, String) {
    let addr = match tokio::net::lookup_host((host, 0)).await {
        Ok(mut addrs) => match addrs.find(|a| a.is_ipv4()) {
            Some(a) => a,
            None => return (FAIL, "no IPv4 address to ping".into()),
        },
        Err(e) => return (FAIL, format!("resolution failed: {e}")),
    };
    match tokio::task::spawn_blocking(move || ping(addr, timeout)).await {
        Ok(outcome) => outcome,
        Err(e) => (FAIL, format!("ping task failed: {e}")),
    }
}

/// One ICMP echo over a raw socket (root / `CAP_NET_RAW`) or, failing that, an
/// unprivileged datagram ICMP socket (`net.ipv4.ping_group_range`).
fn ping(addr: SocketAddr, timeout: Duration) -> (&'static str, String) {
    use socket2::{Domain, Protocol, Socket, Type};
    let (socket, raw) = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        Ok(s) => (s, true),
        Err(_) => match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
            Ok(s) => (s, false),
            Err(e) => {
                return (
                    UNSUPPORTED,
                    format!(
                        "ICMP needs root, CAP_NET_RAW or net.ipv4.ping_group_range covering this group ({e})"
                    ),
                );
            }
        },
    };
    let ident = u16::try_from(std::process::id() & 0xffff).unwrap_or(0);
    let seq: u16 = rand::random();
    let mut packet = [0u8; 16];
    packet[0] = 8; // echo request
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..16].copy_from_slice(b"srping!!");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let start = Instant::now();
    if let Err(e) = socket.send_to(&packet, &addr.into()) {
        return (FAIL, format!("sending echo request: {e}"));
    }
    let mut socket = socket;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return (FAIL, "no echo reply".into());
        }
        let n = match std::io::Read::read(&mut socket, &mut buf) {
            Ok(n) => n,
            Err(_) => return (FAIL, "no echo reply".into()),
        };
        let bytes = &buf[..n];
        // A raw socket delivers the IP header first.
        let icmp = if raw {
            let ihl = usize::from(bytes.first().copied().unwrap_or(0) & 0x0f) * 4;
            bytes.get(ihl..).unwrap_or_default()
        } else {
            bytes
        };
        // Datagram sockets rewrite the identifier; match on the sequence.
        if icmp.len() >= 8 && icmp[0] == 0 && icmp[6..8] == seq.to_be_bytes() {
            return (OK, format!("echo reply in {:?}", start.elapsed()));
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}
