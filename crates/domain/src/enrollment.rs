//! Enrollment tokens: what one lets an edge box join as, and the states it
//! goes through. The signed token format is in `serviceradar_pki::token`;
//! storage and redemption in the `store` and `control` crates.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::resources::CollectorType;

/// Shortest lifetime of an enrollment token.
pub const MIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Longest lifetime of an enrollment token.
pub const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime when none is asked for.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most redemptions one token may allow.
pub const MAX_USES: u32 = 100;

/// What a token enrolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentScope {
    /// The site's leaf and its agent (`site init`).
    Site,
    /// The site's agent only.
    Agent,
    /// A collector of this type at the site.
    Collector(CollectorType),
}

impl EnrollmentScope {
    /// The scope as text: `site`, `agent`, `collector:<type>`.
    pub fn as_text(&self) -> String {
        match self {
            Self::Site => "site".into(),
            Self::Agent => "agent".into(),
            Self::Collector(kind) => format!("collector:{kind}"),
        }
    }

    /// Whether a token of this scope may redeem `wanted`.
    pub fn allows(&self, wanted: &EnrollmentScope) -> bool {
        match (self, wanted) {
            (Self::Site, Self::Site | Self::Agent) => true,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for EnrollmentScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl FromStr for EnrollmentScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "site" => Ok(Self::Site),
            "agent" => Ok(Self::Agent),
            other => match other.strip_prefix("collector:") {
                Some(kind) => kind.parse().map(Self::Collector),
                None => Err(format!(
                    "unknown scope {other:?}: expected site, agent or collector:<type>"
                )),
            },
        }
    }
}

/// Where a token stands, derived from its row and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentStatus {
    /// Can be redeemed.
    Issued,
    /// Every allowed use is spent (the host that redeemed it may still
    /// re-run `site init` to resume its identity).
    Redeemed,
    /// Past its expiry.
    Expired,
    /// Revoked by an operator.
    Revoked,
}

impl EnrollmentStatus {
    /// The status of a token with these facts at `now_ms`. Revocation wins,
    /// then expiry, then use.
    pub fn of(revoked: bool, expires_at_ms: i64, uses: u32, max_uses: u32, now_ms: i64) -> Self {
        if revoked {
            Self::Revoked
        } else if now_ms >= expires_at_ms {
            Self::Expired
        } else if uses >= max_uses {
            Self::Redeemed
        } else {
            Self::Issued
        }
    }

    /// Lowercase name used in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Redeemed => "redeemed",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// Checks a requested lifetime against [`MIN_TTL`]..=[`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<Duration, String> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        Err("must be between 10 minutes and 90 days".into())
    } else {
        Ok(ttl)
    }
}

/// Checks a requested number of uses against `1..=`[`MAX_USES`].
pub fn check_uses(uses: u32) -> Result<u32, String> {
    if (1..=MAX_USES).contains(&uses) {
        Ok(uses)
    } else {
        Err(format!("must be between 1 and {MAX_USES}"))
    }
}

// --- The wire format of redemption (the CLI sends and reads these) -------

/// What an edge box sends to join. Public material only: certificate
/// signing requests and a NATS user *public* key.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The enrollment token.
    pub token: String,
    /// What to enroll: `site` (default) or `agent`.
    pub scope: Option<String>,
    /// A stable fingerprint of this host (hex, 16–128 characters), e.g. the
    /// SHA-256 of `/etc/machine-id`: the same host resumes, another conflicts.
    pub host_fingerprint: String,
    /// The host's name (shown in the token's history).
    pub hostname: String,
    /// CSR (PEM) for the leaf's client certificate (scope `site`).
    pub leaf_client_csr: Option<String>,
    /// CSR (PEM) for the leaf's server certificate (scope `site`).
    pub leaf_server_csr: Option<String>,
    /// The leaf's NATS user public key (`U...`, scope `site`).
    pub nats_user_public_key: Option<String>,
    /// CSR (PEM) for the agent's certificate (scopes `site`, `agent`).
    pub agent_csr: Option<String>,
    /// CSR (PEM) for a collector's certificate (scope `collector:<type>`).
    #[serde(default)]
    pub collector_csr: Option<String>,
}

impl std::fmt::Debug for RedeemRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedeemRequest")
            .field("token", &"...")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// What an edge box gets back: certificates and a JWT, never a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enrolled {
    /// True when this host had redeemed the token before (a reinstall).
    pub resumed: bool,
    /// The scope enrolled.
    pub scope: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Tenant slug.
    pub tenant_slug: String,
    /// Site id.
    pub site_id: String,
    /// Site slug.
    pub site_slug: String,
    /// Site name.
    pub site_name: String,
    /// The platform root CA (PEM): what the hub's and gateway's certificates chain to.
    pub root_ca_pem: String,
    /// The tenant's intermediate CA (PEM).
    pub tenant_ca_pem: String,
    /// Earliest expiry of the issued certificates (Unix ms).
    pub expires_at: i64,
    /// The leaf's part (scope `site`).
    pub leaf: Option<EnrolledLeaf>,
    /// The agent's part.
    pub agent: Option<EnrolledAgent>,
    /// The collector's part (scope `collector:<type>`).
    #[serde(default)]
    pub collector: Option<EnrolledCollector>,
}

/// A collector enrolled at the site: its package, certificate, user JWT and
/// where to publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolledCollector {
    /// The collector package (one per collector type and host).
    pub package_id: String,
    /// `flowgger`, `trapd`, `otel`, `netflow` or `syslog`.
    pub collector_type: String,
    /// Its certificate, followed by the tenant CA.
    pub cert_pem: String,
    /// The NATS user JWT for the public key that was sent.
    pub user_jwt: String,
    /// The site's leaf, where it publishes.
    pub nats_url: String,
    /// What it publishes under (`edge.{tenant}.{site}.{family}`).
    pub subject_prefix: String,
}

/// The leaf's certificates, user JWT and settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolledLeaf {
    /// Client certificate for the hub link, followed by the tenant CA.
    pub client_cert_pem: String,
    /// Server certificate for local clients, followed by the tenant CA.
    pub server_cert_pem: String,
    /// The NATS user JWT for the public key that was sent.
    pub user_jwt: String,
    /// The hub's leafnode URL.
    pub hub_url: String,
    /// Where the leaf listens for local clients (`host:port`).
    pub client_listen: String,
    /// Where the leaf's monitoring listens, if enabled.
    pub monitoring_listen: Option<String>,
    /// The site's JetStream buffer stream definition.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub edge_buffer_stream: serde_json::Value,
}

/// The agent's certificate and where to report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolledAgent {
    /// The agent's id.
    pub agent_id: String,
    /// Its certificate, followed by the tenant CA.
    pub cert_pem: String,
    /// The agent gateway URL (dial-out mode).
    pub gateway_url: String,
    /// Gateway-initiated mode: where the platform's gateway reaches this
    /// agent (`host:port`, registered with the token). The agent then
    /// listens on that port for the gateway's polls and dials nothing.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds between the gateway's polls (gateway-initiated mode).
    #[serde(default)]
    pub poll_interval_secs: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_a_site_token_covers_its_agent() {
        for text in ["site", "agent", "collector:syslog"] {
            assert_eq!(text.parse::<EnrollmentScope>().unwrap().as_text(), text);
        }
        assert!("collector:nope".parse::<EnrollmentScope>().is_err());
        assert!("admin".parse::<EnrollmentScope>().is_err());
        assert!(EnrollmentScope::Site.allows(&EnrollmentScope::Agent));
        assert!(!EnrollmentScope::Agent.allows(&EnrollmentScope::Site));
        assert!(!EnrollmentScope::Collector(CollectorType::Syslog).allows(&EnrollmentScope::Site));
    }

    #[test]
    fn revocation_wins_over_expiry_and_expiry_over_use() {
        assert_eq!(
            EnrollmentStatus::of(true, 0, 1, 1, 10),
            EnrollmentStatus::Revoked
        );
        assert_eq!(
            EnrollmentStatus::of(false, 10, 1, 1, 10),
            EnrollmentStatus::Expired
        );
        assert_eq!(
            EnrollmentStatus::of(false, 20, 1, 1, 10),
            EnrollmentStatus::Redeemed
        );
        assert_eq!(
            EnrollmentStatus::of(false, 20, 0, 1, 10),
            EnrollmentStatus::Issued
        );
    }

    #[test]
    fn lifetimes_and_uses_are_bounded() {
        assert!(check_ttl(Duration::from_secs(599)).is_err());
        assert!(check_ttl(MIN_TTL).is_ok());
        assert!(check_ttl(MAX_TTL + Duration::from_secs(1)).is_err());
        assert!(check_uses(0).is_err());
        assert!(check_uses(MAX_USES + 1).is_err());
    }
}
