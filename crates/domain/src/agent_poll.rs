//! Gateway-initiated mode (seed 004): where the platform's gateway dials an
//! agent that listens, how often, and how an unreachable agent is retried.
//! The endpoint is set by an operator (or at registration), never taken
//! from anything the agent sends; it is parsed here once.

use std::fmt;

use serde::Serialize;

use crate::validate::{FieldError, FieldErrors, Host, ListenAddr, rule};

/// An agent's listening endpoint, `host:port` (IPv6 in brackets): the
/// gateway dials it. An unspecified address (`0.0.0.0`, `[::]`) is refused:
/// it names no host to dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct AgentEndpoint(ListenAddr);

impl From<AgentEndpoint> for String {
    fn from(e: AgentEndpoint) -> String {
        e.to_string()
    }
}

impl AgentEndpoint {
    /// Parses `host:port` ([`rule::listen_addr`]); the field is `endpoint`.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let field = |m: &str| FieldError::new("endpoint", m);
        let addr = rule::listen_addr(raw).map_err(field)?;
        if let Host::Ip(ip) = addr.host()
            && ip.is_unspecified()
        {
            return Err(field(
                "must name the agent's host, not an unspecified address such as 0.0.0.0",
            ));
        }
        Ok(Self(addr))
    }

    /// The host.
    pub fn host(&self) -> &Host {
        self.0.host()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

impl fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How often the gateway polls an agent (seconds), 5–3600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PollInterval(u32);

impl PollInterval {
    /// The default: 30 s, the dial-out agents' push interval.
    pub const DEFAULT: Self = Self(30);
    /// Shortest.
    pub const MIN: u32 = 5;
    /// Longest.
    pub const MAX: u32 = 3_600;

    /// Checks the range; the field is `poll_interval_secs`.
    pub fn new(secs: u32) -> Result<Self, FieldError> {
        if (Self::MIN..=Self::MAX).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(FieldError::new(
                "poll_interval_secs",
                format!("must be between {} and {} seconds", Self::MIN, Self::MAX),
            ))
        }
    }

    /// Seconds.
    pub fn secs(self) -> u32 {
        self.0
    }
}

/// The gateway-initiated settings of a site's agent, parsed together so
/// every field error is reported at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// Where the agent listens.
    pub endpoint: AgentEndpoint,
    /// How often it is polled.
    pub interval: PollInterval,
}

impl PollTarget {
    /// Parses raw input (`poll_interval_secs` defaults to 30).
    pub fn parse(endpoint: &str, interval_secs: Option<u32>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let endpoint = errors.check("endpoint", AgentEndpoint::parse(endpoint));
        let interval = errors.check(
            "poll_interval_secs",
            interval_secs.map_or(Ok(PollInterval::DEFAULT), PollInterval::new),
        );
        errors.into_result()?;
        match (endpoint, interval) {
            (Some(endpoint), Some(interval)) => Ok(Self { endpoint, interval }),
            // into_result() returned Ok, so both parsed.
            _ => Err(FieldErrors(vec![FieldError::new("endpoint", "invalid")])),
        }
    }
}

/// Whether the gateway reaches a polled agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Not polled yet since the endpoint was set.
    Unknown,
    /// The last poll succeeded.
    Reachable,
    /// Polls failed for longer than the unreachable timeout.
    Unreachable,
}

impl Reachability {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Reachable => "reachable",
            Self::Unreachable => "unreachable",
        }
    }

    /// Parses the stored name.
    pub fn from_stored(s: &str) -> Option<Self> {
        [Self::Unknown, Self::Reachable, Self::Unreachable]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The delay before retry `failures` (1-based) of an unreachable agent:
/// `base` doubling up to `cap`, drawn from the upper half with `jitter` in
/// `[0, 1)` (so replicas and agents do not retry in step).
pub fn retry_delay_ms(base_ms: u64, cap_ms: u64, failures: u32, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    let ceiling = exp.min(cap_ms).max(1);
    let half = ceiling / 2;
    half + ((ceiling - half) as f64 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port_and_name_a_host() {
        assert_eq!(
            AgentEndpoint::parse("10.0.0.5:50061")
                .expect("ok")
                .to_string(),
            "10.0.0.5:50061"
        );
        assert_eq!(
            AgentEndpoint::parse("Agent.Example.com:443")
                .expect("ok")
                .to_string(),
            "agent.example.com:443"
        );
        assert!(AgentEndpoint::parse("[::1]:50061").is_ok());
        for bad in [
            "",
            "host",
            "host:0",
            "host:70000",
            "0.0.0.0:50061",
            "[::]:50061",
            "https://host:1",
            "host:1/x",
            "a b:1",
            "host:1\n",
            "$(reboot):1",
        ] {
            assert!(AgentEndpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn poll_targets_report_every_field() {
        let e = PollTarget::parse("0.0.0.0:1", Some(1)).expect_err("both bad");
        let fields: Vec<_> = e.0.iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["endpoint", "poll_interval_secs"]);
        let t = PollTarget::parse("gw-agent:50061", None).expect("ok");
        assert_eq!(t.interval, PollInterval::DEFAULT);
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_within_the_upper_half() {
        assert_eq!(retry_delay_ms(1_000, 60_000, 1, 0.0), 500);
        assert_eq!(retry_delay_ms(1_000, 60_000, 1, 0.999), 999);
        assert_eq!(retry_delay_ms(1_000, 60_000, 3, 0.0), 2_000);
        assert_eq!(retry_delay_ms(1_000, 60_000, 30, 0.0), 30_000);
        assert!(retry_delay_ms(1_000, 60_000, 30, 0.999) < 60_000);
        for r in [
            Reachability::Unknown,
            Reachability::Reachable,
            Reachability::Unreachable,
        ] {
            assert_eq!(Reachability::from_stored(r.as_str()), Some(r));
        }
    }
}
