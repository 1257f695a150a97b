//! Who a peer is, from the certificate it presented.
//!
//! The server never trusts what a request *claims* about its tenant or site:
//! after TLS has verified the chain, the identity comes from the certificate.
//! This module defines the two identity formats we issue and parses them
//! strictly (a lenient parser is how `tenant/A/../B` style confusions start):
//!
//! * SPIFFE id (URI SAN): `spiffe://{trust_domain}/tenant/{tenant_id}/{kind}/{id}`
//!   where `tenant_id` and `id` are lowercase hyphenated UUIDs, and the tenant
//!   CA's own URI `spiffe://{trust_domain}/tenant/{tenant_id}`.
//! * Common name: `{kind}.{site_slug|package_id}.{tenant_slug}.serviceradar`, as
//!   used by the NATS auth callout.
//!
//! [`PeerIdentity::from_der`] requires both to be present and consistent.
//! [`PeerIdentity::from_der_with_issuer`] additionally checks that the issuing
//! tenant CA belongs to the same tenant — the check that makes "a tenant's
//! intermediate can only issue for that tenant" hold for a verifier, since the
//! intermediates carry no name constraints (see [`crate::ca`]).

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::inspect::{CertificateError, parse_der};
use crate::names::{NameError, check_slug, check_trust_domain};

const SCHEME: &str = "spiffe://";
const CN_SUFFIX: &str = "serviceradar";

/// Failure to derive an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The string is not a SPIFFE id of our shape.
    #[error("invalid SPIFFE id: {0}")]
    InvalidSpiffeId(&'static str),
    /// The common name is not `{kind}.{scope}.{tenant}.serviceradar`.
    #[error("invalid common name: {0}")]
    InvalidCommonName(&'static str),
    /// The certificate could not be decoded.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A trust domain given as expected value is itself invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The certificate is a CA, not an end entity.
    #[error("certificate is a CA, not an end-entity certificate")]
    NotEndEntity,
    /// The certificate has no URI SAN.
    #[error("certificate has no SPIFFE id")]
    MissingSpiffeId,
    /// The certificate has more than one URI SAN (SPIFFE allows exactly one).
    #[error("certificate has more than one URI SAN")]
    MultipleUris,
    /// The certificate has no (or more than one) common name.
    #[error("certificate must have exactly one common name")]
    CommonNameCount,
    /// The SPIFFE id belongs to another trust domain.
    #[error("trust domain {found:?} is not the expected {expected:?}")]
    TrustDomainMismatch {
        /// The trust domain we accept.
        expected: String,
        /// The one in the certificate.
        found: String,
    },
    /// The common name and the SPIFFE id describe different identities.
    #[error("common name does not match the SPIFFE id")]
    CommonNameMismatch,
    /// The certificate was not signed by the given issuer.
    #[error("certificate is not signed by the given issuer")]
    IssuerMismatch,
    /// The issuing CA belongs to another tenant than the certificate claims.
    #[error("issuing CA belongs to another tenant")]
    TenantMismatch,
}

/// What a certificate identifies. The SPIFFE path segment and the CN prefix
/// differ only for the leaf server (`leaf-server` / `nats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum IdentityKind {
    /// The NATS leaf server dialling the hub (client certificate); id = site id.
    Leaf,
    /// The NATS leaf server's listener for local collectors; id = site id.
    LeafServer,
    /// The edge agent; id = agent id.
    Agent,
    /// A collector package (flowgger, trapd, ...); id = package id.
    Collector,
    /// A device registered at a site (issue 16); id = device id. Its common
    /// name's first label also carries the id: `device-{id}.{site}.{tenant}.serviceradar`.
    Device,
}

impl IdentityKind {
    /// All kinds.
    pub const ALL: [Self; 5] = [
        Self::Leaf,
        Self::LeafServer,
        Self::Agent,
        Self::Collector,
        Self::Device,
    ];

    /// The SPIFFE path segment (`leaf`, `leaf-server`, `agent`, `collector`).
    pub fn spiffe_segment(self) -> &'static str {
        match self {
            Self::Leaf => "leaf",
            Self::LeafServer => "leaf-server",
            Self::Agent => "agent",
            Self::Collector => "collector",
            Self::Device => "device",
        }
    }

    /// The first label of the common name (`leaf`, `nats`, `agent`,
    /// `collector`); a device's first label is `device-{id}` (see
    /// [`device_common_name_label`]).
    pub fn cn_prefix(self) -> &'static str {
        match self {
            Self::Leaf => "leaf",
            Self::LeafServer => "nats",
            Self::Agent => "agent",
            Self::Collector => "collector",
            Self::Device => "device",
        }
    }

    fn from_spiffe_segment(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.spiffe_segment() == s)
    }

    fn from_cn_prefix(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.cn_prefix() == s)
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spiffe_segment())
    }
}

/// `spiffe://{trust_domain}/tenant/{tenant_id}/{kind}/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    tenant_id: Uuid,
    kind: IdentityKind,
    id: Uuid,
}

impl SpiffeId {
    /// Builds an id; fails if the trust domain is invalid.
    pub fn new(
        trust_domain: &str,
        tenant_id: Uuid,
        kind: IdentityKind,
        id: Uuid,
    ) -> Result<Self, NameError> {
        check_trust_domain(trust_domain)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            tenant_id,
            kind,
            id,
        })
    }

    /// Parses strictly: exactly five path parts, canonical lowercase UUIDs,
    /// known kind, valid trust domain, nothing else (no query, port, `..`).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let (trust_domain, rest) = split_scheme_and_domain(s)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [tenant_kw, tenant, kind, id] = parts.as_slice() else {
            return Err(IdentityError::InvalidSpiffeId(
                "expected /tenant/{tenant_id}/{kind}/{id}",
            ));
        };
        if *tenant_kw != "tenant" {
            return Err(IdentityError::InvalidSpiffeId(
                "path must start with /tenant/",
            ));
        }
        let kind = IdentityKind::from_spiffe_segment(kind)
            .ok_or(IdentityError::InvalidSpiffeId("unknown kind"))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            tenant_id: parse_canonical_uuid(tenant)?,
            kind,
            id: parse_canonical_uuid(id)?,
        })
    }

    /// The trust domain (`serviceradar.io`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The tenant.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// What the certificate identifies.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The site, agent or package id, depending on [`Self::kind`].
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/tenant/{}/{}/{}",
            self.trust_domain,
            self.tenant_id.hyphenated(),
            self.kind.spiffe_segment(),
            self.id.hyphenated()
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A tenant CA's URI SAN: `spiffe://{trust_domain}/tenant/{tenant_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantSpiffeId {
    trust_domain: String,
    tenant_id: Uuid,
}

impl TenantSpiffeId {
    /// Builds an id; fails if the trust domain is invalid.
    pub fn new(trust_domain: &str, tenant_id: Uuid) -> Result<Self, NameError> {
        check_trust_domain(trust_domain)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            tenant_id,
        })
    }

    /// Parses strictly (exactly `/tenant/{uuid}` after the trust domain).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let (trust_domain, rest) = split_scheme_and_domain(s)?;
        let Some(("tenant", tenant)) = rest.split_once('/') else {
            return Err(IdentityError::InvalidSpiffeId(
                "expected /tenant/{tenant_id}",
            ));
        };
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            tenant_id: parse_canonical_uuid(tenant)?,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The tenant.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
}

impl fmt::Display for TenantSpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/tenant/{}",
            self.trust_domain,
            self.tenant_id.hyphenated()
        )
    }
}

/// Splits `spiffe://{td}/{rest}` and validates the trust domain.
fn split_scheme_and_domain(s: &str) -> Result<(&str, &str), IdentityError> {
    let rest = s
        .strip_prefix(SCHEME)
        .ok_or(IdentityError::InvalidSpiffeId("must start with spiffe://"))?;
    let (trust_domain, path) = rest
        .split_once('/')
        .ok_or(IdentityError::InvalidSpiffeId("missing path"))?;
    check_trust_domain(trust_domain)
        .map_err(|_| IdentityError::InvalidSpiffeId("invalid trust domain"))?;
    Ok((trust_domain, path))
}

/// Accepts only the canonical lowercase hyphenated form, so one UUID has one
/// spelling (braces, `urn:uuid:`, upper case and the simple form are rejected).
fn parse_canonical_uuid(s: &str) -> Result<Uuid, IdentityError> {
    let uuid = Uuid::try_parse(s).map_err(|_| IdentityError::InvalidSpiffeId("invalid uuid"))?;
    if uuid.hyphenated().to_string() != s {
        return Err(IdentityError::InvalidSpiffeId(
            "uuid must be lowercase and hyphenated",
        ));
    }
    Ok(uuid)
}

/// The first label of a device's common name: `device-{id}` (the seed's
/// `device-<id>` CN style; a hyphenated UUID keeps it one DNS label).
pub fn device_common_name_label(device_id: Uuid) -> String {
    format!("device-{}", device_id.hyphenated())
}

/// The parts of a common name `{kind}.{scope}.{tenant_slug}.serviceradar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommonName<'a> {
    /// From the first label (`nats` means [`IdentityKind::LeafServer`],
    /// `device-{id}` [`IdentityKind::Device`]).
    pub kind: IdentityKind,
    /// The device id of a `device-{id}` first label.
    pub device_id: Option<Uuid>,
    /// Site slug (leaf, leaf server, agent) or package id (collector).
    pub scope: &'a str,
    /// Tenant slug.
    pub tenant_slug: &'a str,
}

/// Parses `leaf|nats|agent|collector . {scope} . {tenant_slug} . serviceradar`;
/// scope and tenant must be slugs.
pub fn parse_common_name(cn: &str) -> Result<ParsedCommonName<'_>, IdentityError> {
    let parts: Vec<&str> = cn.split('.').collect();
    let [kind, scope, tenant_slug, suffix] = parts.as_slice() else {
        return Err(IdentityError::InvalidCommonName(
            "expected {kind}.{scope}.{tenant}.serviceradar",
        ));
    };
    if *suffix != CN_SUFFIX {
        return Err(IdentityError::InvalidCommonName(
            "must end with .serviceradar",
        ));
    }
    let (kind, device_id) = match kind.strip_prefix("device-") {
        Some(id) => (
            IdentityKind::Device,
            Some(
                parse_canonical_uuid(id)
                    .map_err(|_| IdentityError::InvalidCommonName("invalid device id"))?,
            ),
        ),
        None => (
            IdentityKind::from_cn_prefix(kind)
                .filter(|k| *k != IdentityKind::Device)
                .ok_or(IdentityError::InvalidCommonName("unknown kind"))?,
            None,
        ),
    };
    check_slug("scope", scope).map_err(|_| IdentityError::InvalidCommonName("invalid scope"))?;
    check_slug("tenant", tenant_slug)
        .map_err(|_| IdentityError::InvalidCommonName("invalid tenant slug"))?;
    Ok(ParsedCommonName {
        kind,
        device_id,
        scope,
        tenant_slug,
    })
}

/// The verified identity of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The full SPIFFE id.
    pub spiffe_id: SpiffeId,
    /// The tenant (from the SPIFFE id).
    pub tenant_id: Uuid,
    /// What the peer is.
    pub kind: IdentityKind,
    /// Site id (leaf, leaf server), agent id or package id.
    pub id: Uuid,
    /// The certificate's common name.
    pub common_name: String,
    /// Tenant slug from the common name (display only: slugs can be renamed,
    /// the tenant id is authoritative).
    pub tenant_slug: String,
    /// Site slug or package id from the common name.
    pub scope: String,
    /// End of the certificate's validity.
    pub not_after: ::time::OffsetDateTime,
}

impl PeerIdentity {
    /// Derives the identity of an end-entity certificate (DER, as received
    /// over TLS **after** the TLS layer verified the chain). Requires exactly
    /// one URI SAN holding a SPIFFE id in `expected_trust_domain`, and a
    /// common name consistent with it.
    pub fn from_der(cert_der: &[u8], expected_trust_domain: &str) -> Result<Self, IdentityError> {
        check_trust_domain(expected_trust_domain)?;
        let cert = parse_der(cert_der)?;
        if cert.is_ca() {
            return Err(IdentityError::NotEndEntity);
        }
        let spiffe_id = SpiffeId::parse(single_uri_san(&cert)?)?;
        if spiffe_id.trust_domain() != expected_trust_domain {
            return Err(IdentityError::TrustDomainMismatch {
                expected: expected_trust_domain.to_owned(),
                found: spiffe_id.trust_domain().to_owned(),
            });
        }
        let common_name = single_common_name(&cert)?;
        let parsed = parse_common_name(&common_name)?;
        check_consistent(&spiffe_id, &parsed)?;
        Ok(Self {
            tenant_id: spiffe_id.tenant_id(),
            kind: spiffe_id.kind(),
            id: spiffe_id.id(),
            tenant_slug: parsed.tenant_slug.to_owned(),
            scope: parsed.scope.to_owned(),
            common_name,
            not_after: cert.validity().not_after.to_datetime(),
            spiffe_id,
        })
    }

    /// Like [`Self::from_der`], and also checks that `issuer_der` (the tenant
    /// CA from the presented chain) signed the certificate and belongs to the
    /// same tenant and trust domain.
    pub fn from_der_with_issuer(
        cert_der: &[u8],
        issuer_der: &[u8],
        expected_trust_domain: &str,
    ) -> Result<Self, IdentityError> {
        let identity = Self::from_der(cert_der, expected_trust_domain)?;
        let cert = parse_der(cert_der)?;
        let issuer = parse_der(issuer_der)?;
        if !issuer.is_ca()
            || cert.issuer().as_raw() != issuer.subject().as_raw()
            || cert.verify_signature(Some(issuer.public_key())).is_err()
        {
            return Err(IdentityError::IssuerMismatch);
        }
        let tenant_ca = TenantSpiffeId::parse(single_uri_san(&issuer)?)?;
        if tenant_ca.tenant_id() != identity.tenant_id
            || tenant_ca.trust_domain() != expected_trust_domain
        {
            return Err(IdentityError::TenantMismatch);
        }
        Ok(identity)
    }
}

/// The one URI SAN of a certificate.
pub(crate) fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| CertificateError::Der)?
        .ok_or(IdentityError::MissingSpiffeId)?;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let first = uris.next().ok_or(IdentityError::MissingSpiffeId)?;
    if uris.next().is_some() {
        return Err(IdentityError::MultipleUris);
    }
    Ok(first)
}

/// The one common name of a certificate's subject.
pub(crate) fn single_common_name(cert: &X509Certificate<'_>) -> Result<String, IdentityError> {
    let mut names = cert.subject().iter_common_name();
    let first = names.next().ok_or(IdentityError::CommonNameCount)?;
    if names.next().is_some() {
        return Err(IdentityError::CommonNameCount);
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|_| IdentityError::InvalidCommonName("not a string"))
}

fn check_consistent(spiffe: &SpiffeId, cn: &ParsedCommonName<'_>) -> Result<(), IdentityError> {
    if cn.kind != spiffe.kind() {
        return Err(IdentityError::CommonNameMismatch);
    }
    if spiffe.kind() == IdentityKind::Collector && cn.scope != spiffe.id().hyphenated().to_string()
    {
        return Err(IdentityError::CommonNameMismatch);
    }
    if spiffe.kind() == IdentityKind::Device && cn.device_id != Some(spiffe.id()) {
        return Err(IdentityError::CommonNameMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &str = "0192f0c1-7a4e-7000-8000-00000000000a";
    const S: &str = "0192f0c1-7a4e-7000-8000-00000000000b";

    #[test]
    fn spiffe_roundtrip() {
        let s = format!("spiffe://serviceradar.io/tenant/{T}/leaf/{S}");
        let id = SpiffeId::parse(&s).expect("valid");
        assert_eq!(id.trust_domain(), "serviceradar.io");
        assert_eq!(id.tenant_id().to_string(), T);
        assert_eq!(id.kind(), IdentityKind::Leaf);
        assert_eq!(id.id().to_string(), S);
        assert_eq!(id.to_string(), s);
        for kind in IdentityKind::ALL {
            let s = format!("spiffe://corp.internal/tenant/{T}/{kind}/{S}");
            assert_eq!(SpiffeId::parse(&s).expect("valid").to_string(), s);
        }
        let json = serde_json_like(&id);
        assert_eq!(json, s);
    }

    /// Serializes through serde's string form without pulling serde_json in.
    fn serde_json_like(id: &SpiffeId) -> String {
        use serde::de::IntoDeserializer as _;
        let s = id.to_string();
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            s.as_str().into_deserializer();
        let back: SpiffeId = serde::Deserialize::deserialize(de).expect("deserialize");
        back.to_string()
    }

    #[test]
    fn spiffe_rejects() {
        let upper = T.to_uppercase();
        let simple = T.replace('-', "");
        for bad in [
            String::new(),
            format!("spiffe://serviceradar.io/tenant/{T}/leaf"),
            format!("spiffe://serviceradar.io/tenant/{T}/leaf/{S}/extra"),
            format!("spiffe://serviceradar.io/tenant/{T}/leaf/{S}/"),
            format!("spiffe://serviceradar.io//tenant/{T}/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenants/{T}/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenant/{T}/gateway/{S}"),
            format!("spiffe://serviceradar.io/tenant/{upper}/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenant/{simple}/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenant/{{{T}}}/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenant/not-a-uuid/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenant/{T}/leaf/{S}?x=1"),
            format!("spiffe://serviceradar.io/tenant/{T}/leaf/{S}#f"),
            format!("spiffe://serviceradar.io:443/tenant/{T}/leaf/{S}"),
            format!("spiffe://user@serviceradar.io/tenant/{T}/leaf/{S}"),
            format!("spiffe://ServiceRadar.io/tenant/{T}/leaf/{S}"),
            format!("https://serviceradar.io/tenant/{T}/leaf/{S}"),
            format!("SPIFFE://serviceradar.io/tenant/{T}/leaf/{S}"),
            format!("spiffe://serviceradar.io/tenant/../tenant/{T}/leaf/{S}"),
            format!(" spiffe://serviceradar.io/tenant/{T}/leaf/{S}"),
        ] {
            assert!(SpiffeId::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_spiffe_id() {
        let s = format!("spiffe://serviceradar.io/tenant/{T}");
        let id = TenantSpiffeId::parse(&s).expect("valid");
        assert_eq!(id.to_string(), s);
        assert!(TenantSpiffeId::parse(&format!("{s}/")).is_err());
        assert!(TenantSpiffeId::parse(&format!("{s}/leaf/{S}")).is_err());
    }

    #[test]
    fn common_names() {
        let parsed = parse_common_name("agent.nyc-office.acme.serviceradar").expect("valid");
        assert_eq!(
            parsed,
            ParsedCommonName {
                kind: IdentityKind::Agent,
                device_id: None,
                scope: "nyc-office",
                tenant_slug: "acme"
            }
        );
        assert_eq!(
            parse_common_name("nats.s.t.serviceradar")
                .expect("valid")
                .kind,
            IdentityKind::LeafServer
        );
        assert_eq!(
            parse_common_name(&format!("collector.{S}.t.serviceradar"))
                .expect("valid")
                .scope,
            S
        );
        let device_cn = format!("device-{S}.lab.t.serviceradar");
        let device = parse_common_name(&device_cn).expect("valid");
        assert_eq!(device.kind, IdentityKind::Device);
        assert_eq!(device.device_id.map(|d| d.to_string()), Some(S.to_owned()));
        assert_eq!(device.scope, "lab");
        for bad in [
            "",
            "device.lab.t.serviceradar",
            "device-.lab.t.serviceradar",
            "device-not-a-uuid.lab.t.serviceradar",
            "agent.site.tenant",
            "agent.site.tenant.serviceradar.",
            "agent.site.tenant.serviceradar.evil.com",
            "agent.site.sub.tenant.serviceradar",
            "hub.site.tenant.serviceradar",
            "agent..tenant.serviceradar",
            "agent.Site.tenant.serviceradar",
            "agent.site.-tenant.serviceradar",
            "agent.site.tenant.ServiceRadar",
        ] {
            assert!(parse_common_name(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = SpiffeId::parse(&s);
            let _ = TenantSpiffeId::parse(&s);
            let _ = parse_common_name(&s);
        }

        #[test]
        fn spiffe_like_strings_never_panic(
            td in "[a-z.]{0,20}",
            a in "[0-9a-f-]{0,40}",
            kind in "(leaf|agent|collector|x)",
            b in "[0-9a-fA-F-]{0,40}",
            extra in "(|/|/x|\\?q)",
        ) {
            let s = format!("spiffe://{td}/tenant/{a}/{kind}/{b}{extra}");
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn spiffe_format_parse_roundtrip(t in any::<u128>(), i in any::<u128>(), k in 0usize..5) {
            let id = SpiffeId::new("serviceradar.io", Uuid::from_u128(t), IdentityKind::ALL[k], Uuid::from_u128(i))
                .expect("valid trust domain");
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).expect("parses"), id);
        }

        #[test]
        fn from_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = PeerIdentity::from_der(&bytes, "serviceradar.io");
            let _ = PeerIdentity::from_der_with_issuer(&bytes, &bytes, "serviceradar.io");
        }
    }
}
