//! What the platform tells an edge agent over its control stream, validated
//! once here: commands (kind, time to live, status machine) and the checks
//! an operator configures for an agent (name, kind, target, interval,
//! timeout). The API, the CLI and the gateway all take these types, so a
//! value the API accepted is one the agent can run.

use serde::Serialize;

use crate::validate::{FieldError, FieldErrors, rule};

/// What a command asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Run every configured check now and report the results.
    RunChecks,
    /// Fetch the agent's config from the gateway now.
    ReloadConfig,
    /// Renew the agent's enrolled certificates now.
    RenewCertificates,
    /// Collect a diagnostics bundle: leaf `/varz`, `/leafz`, `/jsz`, a tail
    /// of the agent's log and its clock.
    CollectDiagnostics,
}

impl CommandKind {
    /// Every kind.
    pub const ALL: [CommandKind; 4] = [
        Self::RunChecks,
        Self::ReloadConfig,
        Self::RenewCertificates,
        Self::CollectDiagnostics,
    ];

    /// The wire and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunChecks => "run_checks",
            Self::ReloadConfig => "reload_config",
            Self::RenewCertificates => "renew_certificates",
            Self::CollectDiagnostics => "collect_diagnostics",
        }
    }

    /// Parses an API name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    "kind",
                    "must be one of run_checks, reload_config, renew_certificates, collect_diagnostics",
                )
            })
    }
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Stored, not yet handed to a gateway holding the agent's stream.
    Pending,
    /// Written to the agent's control stream.
    Sent,
    /// The agent received it and started.
    Acked,
    /// The agent finished it.
    Succeeded,
    /// The agent could not do it.
    Failed,
    /// No result within its time to live.
    Expired,
    /// No replica held a control stream of the agent when it was issued.
    Offline,
}

impl CommandStatus {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Acked => "acked",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Offline => "offline",
        }
    }

    /// Parses a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Sent,
            Self::Acked,
            Self::Succeeded,
            Self::Failed,
            Self::Expired,
            Self::Offline,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// Whether nothing can change it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Expired | Self::Offline
        )
    }

    /// The statuses a command may move to `next` from (the store's
    /// compare-and-set list); empty when `next` is not a target.
    pub fn allowed_from(next: Self) -> &'static [Self] {
        match next {
            Self::Pending => &[],
            Self::Sent | Self::Offline => &[Self::Pending],
            Self::Acked => &[Self::Pending, Self::Sent],
            Self::Succeeded | Self::Failed | Self::Expired => {
                &[Self::Pending, Self::Sent, Self::Acked]
            }
        }
    }
}

/// A command's time to live: 1 s to 1 h, 60 s when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandTtl(u32);

impl CommandTtl {
    /// When the request does not say.
    pub const DEFAULT_SECS: u32 = 60;
    /// Longest.
    pub const MAX_SECS: u32 = 3_600;

    /// Parses a request's `ttl_secs`.
    pub fn parse(raw: Option<i64>) -> Result<Self, FieldError> {
        match raw {
            None => Ok(Self(Self::DEFAULT_SECS)),
            Some(s) if (1..=i64::from(Self::MAX_SECS)).contains(&s) => {
                Ok(Self(u32::try_from(s).unwrap_or(Self::DEFAULT_SECS)))
            }
            Some(_) => Err(FieldError::new(
                "ttl_secs",
                "must be between 1 and 3600 seconds",
            )),
        }
    }

    /// Seconds.
    pub fn secs(self) -> u32 {
        self.0
    }
}

/// A kind of check the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The local NATS leaf's monitoring port (`http://127.0.0.1:8222`).
    NatsLeaf,
    /// A TCP connection to `host:port`.
    Tcp,
    /// An HTTP(S) GET answering 2xx/3xx.
    Http,
    /// A name that resolves.
    Dns,
    /// An echo reply from a host.
    Icmp,
}

impl CheckKind {
    /// Every kind, as the agent announces them.
    pub const ALL: [CheckKind; 5] = [Self::NatsLeaf, Self::Tcp, Self::Http, Self::Dns, Self::Icmp];

    /// The wire and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NatsLeaf => "nats_leaf",
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Dns => "dns",
            Self::Icmp => "icmp",
        }
    }

    /// Parses an API name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new("kind", "must be one of nats_leaf, tcp, http, dns, icmp")
            })
    }

    /// What a target of this kind must look like (the agent's checker takes
    /// it as is).
    pub fn parse_target(self, raw: &str) -> Result<String, FieldError> {
        let bad = |why: &str| FieldError::new("target", why);
        if raw.is_empty() || raw.len() > 512 {
            return Err(bad("must be 1 to 512 characters"));
        }
        match self {
            Self::Tcp => match rule::listen_addr(raw) {
                Ok(addr) if addr.port() > 0 => Ok(raw.to_owned()),
                _ => Err(bad("must be host:port, e.g. 10.0.0.5:443")),
            },
            Self::Dns => rule::dns_name(&raw.to_ascii_lowercase())
                .map(|()| raw.to_ascii_lowercase())
                .map_err(bad),
            Self::Icmp => rule::host(raw).map(|_| raw.to_owned()).map_err(bad),
            Self::Http | Self::NatsLeaf => {
                let url =
                    url::Url::parse(raw).map_err(|_| bad("must be an http:// or https:// URL"))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(bad("must be an http:// or https:// URL"));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(bad("must not carry credentials"));
                }
                if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad("must not contain whitespace or control characters"));
                }
                Ok(raw.to_owned())
            }
        }
    }
}

/// A check configured for an agent, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    /// Unique per agent: 1–64 characters of `[a-z0-9._-]`, starting with a
    /// letter or digit.
    pub name: String,
    /// Kind.
    pub kind: CheckKind,
    /// What it checks (see [`CheckKind::parse_target`]).
    pub target: String,
    /// How often (seconds, 5 to 86,400).
    pub interval_secs: u32,
    /// How long one run may take (ms, 100 to 60,000, less than the interval).
    pub timeout_ms: u32,
}

/// The raw fields of a check from a request.
#[derive(Debug, Clone, Default)]
pub struct RawCheck<'a> {
    /// `name`.
    pub name: &'a str,
    /// `kind`.
    pub kind: &'a str,
    /// `target`.
    pub target: &'a str,
    /// `interval_secs` (default 30).
    pub interval_secs: Option<i64>,
    /// `timeout_ms` (default 5,000, capped below the interval).
    pub timeout_ms: Option<i64>,
}

impl CheckConfig {
    /// Shortest interval (s).
    pub const MIN_INTERVAL_SECS: u32 = 5;
    /// Longest interval (s).
    pub const MAX_INTERVAL_SECS: u32 = 86_400;
    /// Default interval (s).
    pub const DEFAULT_INTERVAL_SECS: u32 = 30;
    /// Shortest timeout (ms).
    pub const MIN_TIMEOUT_MS: u32 = 100;
    /// Longest timeout (ms).
    pub const MAX_TIMEOUT_MS: u32 = 60_000;
    /// Default timeout (ms).
    pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;
    /// The name of the built-in leaf check the gateway adds itself.
    pub const RESERVED_NAME: &'static str = "nats-leaf";

    /// Parses a check's name.
    pub fn parse_name(raw: &str) -> Result<String, FieldError> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && raw.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !ok {
            return Err(FieldError::new(
                "name",
                "must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        if raw == Self::RESERVED_NAME {
            return Err(FieldError::new(
                "name",
                "nats-leaf is the platform's own leaf check; choose another name",
            ));
        }
        Ok(raw.to_owned())
    }

    /// Parses every field, reporting all errors together.
    pub fn parse(raw: &RawCheck<'_>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = errors.check("name", Self::parse_name(raw.name));
        let kind = errors.check("kind", CheckKind::parse(raw.kind));
        let target = kind.and_then(|k| errors.check("target", k.parse_target(raw.target)));
        let interval = errors.check(
            "interval_secs",
            match raw.interval_secs {
                None => Ok(Self::DEFAULT_INTERVAL_SECS),
                Some(s)
                    if (i64::from(Self::MIN_INTERVAL_SECS)
                        ..=i64::from(Self::MAX_INTERVAL_SECS))
                        .contains(&s) =>
                {
                    Ok(u32::try_from(s).unwrap_or(Self::DEFAULT_INTERVAL_SECS))
                }
                Some(_) => Err(FieldError::new(
                    "interval_secs",
                    "must be between 5 and 86400 seconds",
                )),
            },
        );
        let timeout = errors.check(
            "timeout_ms",
            match raw.timeout_ms {
                None => Ok(Self::DEFAULT_TIMEOUT_MS),
                Some(ms)
                    if (i64::from(Self::MIN_TIMEOUT_MS)..=i64::from(Self::MAX_TIMEOUT_MS))
                        .contains(&ms) =>
                {
                    Ok(u32::try_from(ms).unwrap_or(Self::DEFAULT_TIMEOUT_MS))
                }
                Some(_) => Err(FieldError::new(
                    "timeout_ms",
                    "must be between 100 and 60000 milliseconds",
                )),
            },
        );
        let timeout = match (interval, timeout, raw.timeout_ms) {
            (Some(i), Some(t), Some(_)) if u64::from(t) >= u64::from(i) * 1000 => {
                errors.0.push(FieldError::new(
                    "timeout_ms",
                    "must be shorter than the interval",
                ));
                None
            }
            // A default timeout never exceeds the interval (the shortest is 5 s).
            (_, t, _) => t,
        };
        errors.into_result()?;
        match (name, kind, target, interval, timeout) {
            (Some(name), Some(kind), Some(target), Some(interval_secs), Some(timeout_ms)) => {
                Ok(Self {
                    name,
                    kind,
                    target,
                    interval_secs,
                    timeout_ms,
                })
            }
            _ => Err(FieldErrors(vec![FieldError::new("check", "is invalid")])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(kind: &'a str, target: &'a str) -> RawCheck<'a> {
        RawCheck {
            name: "web",
            kind,
            target,
            interval_secs: Some(10),
            timeout_ms: Some(2_000),
        }
    }

    #[test]
    fn valid_checks_of_every_kind_parse() {
        for (kind, target) in [
            ("tcp", "10.0.0.5:443"),
            ("tcp", "db.internal:5432"),
            ("http", "https://example.com/health"),
            ("dns", "Example.COM"),
            ("icmp", "192.0.2.1"),
            ("nats_leaf", "http://127.0.0.1:8222"),
        ] {
            let c = CheckConfig::parse(&raw(kind, target)).expect(target);
            assert_eq!(c.kind.as_str(), kind);
        }
        let dns = CheckConfig::parse(&raw("dns", "Example.COM")).expect("dns");
        assert_eq!(dns.target, "example.com");
    }

    #[test]
    fn bad_fields_are_all_reported() {
        let errors = CheckConfig::parse(&RawCheck {
            name: "Bad Name",
            kind: "smtp",
            target: "x",
            interval_secs: Some(1),
            timeout_ms: Some(99_999),
        })
        .expect_err("invalid");
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "kind", "interval_secs", "timeout_ms"]);
        for (kind, target) in [
            ("tcp", "no-port"),
            ("tcp", "host:0"),
            ("http", "ftp://x"),
            ("http", "https://user:pw@example.com"),
            ("dns", "a b"),
            ("icmp", "$(reboot)"),
            ("nats_leaf", "127.0.0.1:8222"),
        ] {
            let e = CheckConfig::parse(&raw(kind, target)).expect_err(target);
            assert_eq!(e.0[0].field, "target", "{kind} {target}");
        }
        let e = CheckConfig::parse(&RawCheck {
            timeout_ms: Some(10_000),
            ..raw("tcp", "h:1")
        })
        .expect_err("timeout >= interval");
        assert_eq!(e.0[0].field, "timeout_ms");
        assert!(CheckConfig::parse_name("nats-leaf").is_err());
    }

    #[test]
    fn command_inputs_and_transitions() {
        assert_eq!(
            CommandKind::parse("collect_diagnostics").expect("kind"),
            CommandKind::CollectDiagnostics
        );
        assert!(CommandKind::parse("reboot").is_err());
        assert_eq!(CommandTtl::parse(None).expect("ttl").secs(), 60);
        assert!(CommandTtl::parse(Some(0)).is_err());
        assert!(CommandTtl::parse(Some(3_601)).is_err());
        assert!(
            CommandStatus::allowed_from(CommandStatus::Offline).contains(&CommandStatus::Pending)
        );
        assert!(
            !CommandStatus::allowed_from(CommandStatus::Acked).contains(&CommandStatus::Succeeded)
        );
        for s in [
            "pending",
            "sent",
            "acked",
            "succeeded",
            "failed",
            "expired",
            "offline",
        ] {
            assert_eq!(CommandStatus::parse(s).expect(s).as_str(), s);
        }
    }
}
