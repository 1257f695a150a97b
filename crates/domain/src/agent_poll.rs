//! Gateway-initiated mode (seed 004): where the platform's gateway dials an
//! agent that listens, how often, and how an unreachable agent is retried.
//! The endpoint is registered at onboarding (an enrollment token created for
//! this mode names it, and redeeming the token stores it with the agent),
//! never taken from anything the agent sends; it is parsed here once, and
//! the address rule ([`PollRules::check_dialable`]) says which endpoints the
//! platform may dial at all: the gateway would otherwise be a way for a
//! tenant to probe the operator's own network (SSRF), as webhooks would.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use crate::net::{IpRange, internal_kind, may_connect};
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

/// How often the gateway polls an agent (seconds), within the operator's
/// bounds ([`PollRules`]; 5–3600 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PollInterval(u32);

impl PollInterval {
    /// The default: 30 s, the dial-out agents' push interval (moved into
    /// the operator's bounds when they exclude it).
    pub const DEFAULT: Self = Self(30);
    /// Shortest the operator may allow.
    pub const MIN: u32 = 1;
    /// Longest the operator may allow.
    pub const MAX: u32 = 86_400;

    /// Checks `secs` against `rules`' bounds; the field is `poll_interval_secs`.
    pub fn new(secs: u32, rules: &PollRules) -> Result<Self, FieldError> {
        if (rules.min_interval_secs..=rules.max_interval_secs).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(FieldError::new(
                "poll_interval_secs",
                format!(
                    "must be between {} and {} seconds",
                    rules.min_interval_secs, rules.max_interval_secs
                ),
            ))
        }
    }

    /// The default within `rules`' bounds.
    pub fn default_within(rules: &PollRules) -> Self {
        Self(
            Self::DEFAULT
                .0
                .clamp(rules.min_interval_secs, rules.max_interval_secs),
        )
    }

    /// Seconds.
    pub fn secs(self) -> u32 {
        self.0
    }
}

/// What the operator allows of gateway-initiated mode (`serve` flags): the
/// internal address ranges the gateway may dial, and the bounds of a poll
/// interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRules {
    /// Internal ranges agent endpoints may be in (self-hosted installs,
    /// agents on the platform's own machine). Public addresses are always
    /// allowed; loopback, private, link-local and the like only when listed.
    pub allow_internal: Vec<IpRange>,
    /// Shortest poll interval (s).
    pub min_interval_secs: u32,
    /// Longest poll interval (s).
    pub max_interval_secs: u32,
}

impl Default for PollRules {
    fn default() -> Self {
        Self {
            allow_internal: Vec::new(),
            min_interval_secs: 5,
            max_interval_secs: 3_600,
        }
    }
}

/// The operator's switch that allows internal agent endpoints, named in
/// refusals.
pub const ALLOW_FLAG: &str = "serviceradar-core serve --agent-endpoint-allow-cidr";

impl PollRules {
    /// Checks the bounds themselves (`serve` refuses to start otherwise).
    pub fn check(&self) -> Result<(), String> {
        let range = PollInterval::MIN..=PollInterval::MAX;
        if !range.contains(&self.min_interval_secs)
            || !range.contains(&self.max_interval_secs)
            || self.min_interval_secs > self.max_interval_secs
        {
            return Err(format!(
                "poll interval bounds {}..{} s: both must be within {}..{} s, the shortest first",
                self.min_interval_secs,
                self.max_interval_secs,
                PollInterval::MIN,
                PollInterval::MAX
            ));
        }
        Ok(())
    }

    /// Whether the platform may dial `endpoint` as written: an address must
    /// be public or in an allowed range; `localhost` (and `*.localhost`) is
    /// judged as the loopback address it names. Other names are resolved
    /// and checked again at every poll ([`PollRules::pick`]). The error
    /// says why, for the caller's field.
    pub fn check_dialable(&self, endpoint: &AgentEndpoint) -> Result<(), String> {
        let ip = match endpoint.host() {
            Host::Ip(ip) => *ip,
            Host::Dns(name) => {
                let name = name.trim_end_matches('.');
                if name == "localhost" || name.ends_with(".localhost") {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    return Ok(());
                }
            }
        };
        match internal_kind(ip) {
            Some(kind) if !may_connect(ip, &self.allow_internal) => Err(format!(
                "{} is a {kind} address: the platform's gateway dials only public \
                 addresses, unless its operator allows the range ({ALLOW_FLAG})",
                endpoint.host()
            )),
            _ => Ok(()),
        }
    }

    /// The address to dial among what an endpoint's name resolved to: the
    /// first, when every one of them may be dialled; `None` when any is
    /// internal (a name resolving to an internal address is refused whole,
    /// rather than dialling whichever answer looks harmless).
    pub fn pick(&self, resolved: &[SocketAddr]) -> Option<SocketAddr> {
        let allowed = |a: &SocketAddr| may_connect(a.ip(), &self.allow_internal);
        (!resolved.is_empty() && resolved.iter().all(allowed)).then(|| resolved[0])
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
    /// Parses raw input under the operator's `rules` (the address rule and
    /// the interval bounds; `poll_interval_secs` defaults to 30). The
    /// endpoint's field is `endpoint_field` (`agent_endpoint` on an
    /// enrollment token).
    pub fn parse(
        endpoint_field: &str,
        endpoint: &str,
        interval_secs: Option<i64>,
        rules: &PollRules,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let endpoint = errors.check(
            endpoint_field,
            AgentEndpoint::parse(endpoint)
                .and_then(|e| {
                    rules
                        .check_dialable(&e)
                        .map(|()| e)
                        .map_err(|m| FieldError::new("endpoint", m))
                })
                .map_err(|e| FieldError::new(endpoint_field, e.message)),
        );
        let interval = errors.check(
            "poll_interval_secs",
            match interval_secs {
                None => Ok(PollInterval::default_within(rules)),
                // Out of u32's range is out of the bounds too.
                Some(v) => PollInterval::new(u32::try_from(v).unwrap_or(0), rules),
            },
        );
        errors.into_result()?;
        match (endpoint, interval) {
            (Some(endpoint), Some(interval)) => Ok(Self { endpoint, interval }),
            // into_result() returned Ok, so both parsed.
            _ => Err(FieldErrors(vec![FieldError::new(
                endpoint_field,
                "invalid",
            )])),
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
        let rules = PollRules::default();
        let e = PollTarget::parse("agent_endpoint", "0.0.0.0:1", Some(1), &rules)
            .expect_err("both bad");
        let fields: Vec<_> = e.0.iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["agent_endpoint", "poll_interval_secs"]);
        let t = PollTarget::parse("agent_endpoint", "gw-agent:50061", None, &rules).expect("ok");
        assert_eq!(t.interval, PollInterval::DEFAULT);
        let narrow = PollRules {
            min_interval_secs: 60,
            max_interval_secs: 120,
            ..PollRules::default()
        };
        let t = PollTarget::parse("e", "gw-agent:50061", None, &narrow).expect("ok");
        assert_eq!(t.interval.secs(), 60, "the default moves into the bounds");
        assert!(PollTarget::parse("e", "gw-agent:50061", Some(30), &narrow).is_err());
        assert!(PollTarget::parse("e", "gw-agent:50061", Some(-1), &rules).is_err());
        assert!(PollTarget::parse("e", "gw-agent:50061", Some(i64::MAX), &rules).is_err());
    }

    #[test]
    fn only_public_endpoints_unless_the_operator_allows_the_range() {
        let strict = PollRules::default();
        for internal in [
            "10.0.0.5:50061",
            "169.254.169.254:80",
            "127.0.0.1:50061",
            "[::1]:50061",
            "[::ffff:127.0.0.1]:1",
            "172.16.3.4:1",
            "192.168.1.1:22",
            "100.64.0.1:1",
            "[fd00::1]:1",
            "localhost:50061",
            "agent.localhost:1",
        ] {
            let e =
                PollTarget::parse("agent_endpoint", internal, None, &strict).expect_err(internal);
            assert_eq!(e.0[0].field, "agent_endpoint");
            assert!(
                e.0[0].message.contains("--agent-endpoint-allow-cidr"),
                "{internal}: {}",
                e.0[0].message
            );
        }
        let message = |raw: &str| {
            PollTarget::parse("agent_endpoint", raw, None, &strict)
                .expect_err(raw)
                .0[0]
                .message
                .clone()
        };
        assert!(message("10.0.0.5:1").starts_with("10.0.0.5 is a private (RFC 1918) address"));
        assert!(message("169.254.169.254:1").contains("link-local"));
        assert!(message("127.0.0.1:1").contains("loopback"));
        for public in [
            "93.184.216.34:50061",
            "agent.example.com:50061",
            "[2606:4700::1111]:1",
        ] {
            assert!(
                PollTarget::parse("e", public, None, &strict).is_ok(),
                "{public}"
            );
        }
        let loopback = PollRules {
            allow_internal: vec!["127.0.0.0/8".parse().expect("range")],
            ..PollRules::default()
        };
        assert!(PollTarget::parse("e", "127.0.0.1:50061", None, &loopback).is_ok());
        assert!(PollTarget::parse("e", "10.0.0.5:50061", None, &loopback).is_err());
        assert!(PollTarget::parse("e", "localhost:50061", None, &loopback).is_ok());
        // At dial time: every resolved address must pass.
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            strict.pick(&[addr("93.184.216.34:1")]),
            Some(addr("93.184.216.34:1"))
        );
        assert_eq!(
            strict.pick(&[addr("93.184.216.34:1"), addr("10.0.0.1:1")]),
            None
        );
        assert_eq!(strict.pick(&[]), None);
        assert_eq!(
            loopback.pick(&[addr("127.0.0.1:1")]),
            Some(addr("127.0.0.1:1"))
        );
    }

    #[test]
    fn interval_bounds_are_checked() {
        assert!(PollRules::default().check().is_ok());
        for (min, max) in [(0, 10), (10, 5), (1, 86_401)] {
            let rules = PollRules {
                min_interval_secs: min,
                max_interval_secs: max,
                ..PollRules::default()
            };
            assert!(rules.check().is_err(), "{min}..{max}");
        }
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
