//! Issuing end-entity certificates.
//!
//! One function per kind of certificate the product hands out. Each generates a
//! fresh ECDSA P-256 key, signs with the given CA and returns the certificate,
//! key and chain as PEM ([`IssuedCertificate`]).
//!
//! | function | CN | SPIFFE id (URI SAN) | other SANs | EKU |
//! |---|---|---|---|---|
//! | [`issue_leaf_client`] | `leaf.{site}.{tenant}.serviceradar` | `…/tenant/{t}/leaf/{site_id}` | DNS = CN | clientAuth, serverAuth |
//! | [`issue_leaf_server`] (and [`issue_leaf_server_for_key`]) | `nats.{site}.{tenant}.serviceradar` | `…/tenant/{t}/leaf-server/{site_id}` | hosts, `localhost`, `127.0.0.1` | serverAuth, clientAuth |
//! | [`issue_agent`] | `agent.{site}.{tenant}.serviceradar` | `…/tenant/{t}/agent/{agent_id}` | — | clientAuth |
//! | [`issue_collector`] | `collector.{package_id}.{tenant}.serviceradar` | `…/tenant/{t}/collector/{package_id}` | — | clientAuth |
//! | [`issue_platform_server`] | `{service}.platform.serviceradar` | — | hosts | serverAuth, clientAuth |
//!
//! Tenant certificates must be signed by *that tenant's* intermediate (checked
//! against the CA's SPIFFE URI, including the trust domain); platform server
//! certificates by the platform CA. End-entity subjects hold only the CN (so a
//! NATS `verify_and_map` subject is exactly `CN=…`). Serial numbers are 16
//! random bytes. Validity defaults to 365 days and never exceeds the CA's.
//!
//! **Renewal** is issuing again with the same identity: the new certificate
//! has a new key, serial and validity but the same CN and SPIFFE id, so
//! everything that authorizes by identity keeps working. Keep the old one
//! valid until the new one is deployed; retire it by serial/fingerprint.
//! Where a peer pins the public key (the routes of a leaf or hub cluster),
//! the `_for_key` variants issue the new certificate for the kept key.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ::time::{Duration, OffsetDateTime};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};
use serviceradar_domain::resources::{EdgeSite, Tenant};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::ca::{CaError, CaKind, CertificateAuthority, random_serial};
use crate::identity::{IdentityKind, SpiffeId};
use crate::inspect::{CertificateError, parse_der, serial_hex};
use crate::keys::SecretKeyPair;
use crate::names::{Host, NameError, check_slug, check_trust_domain, parse_host};
use crate::request::CertificateRequest;
use crate::seal::Keyring;

/// Default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "serviceradar.io";
/// Default validity of end-entity certificates.
pub const DEFAULT_VALIDITY: Duration = Duration::days(365);
/// Most hosts accepted for one server certificate.
pub const MAX_HOSTS: usize = 64;

/// Failure to issue a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A slug, host or trust domain is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The CA cannot issue (expired, invalid validity, ...).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A tenant certificate was requested from the platform CA.
    #[error("tenant certificates must be issued by the tenant's intermediate CA")]
    NotTenantCa,
    /// The CA belongs to another tenant.
    #[error("the CA belongs to another tenant")]
    TenantMismatch,
    /// The CA's trust domain differs from the requested one.
    #[error("the CA's trust domain {ca:?} differs from the requested {requested:?}")]
    TrustDomainMismatch {
        /// Trust domain in the CA certificate.
        ca: String,
        /// Trust domain in the options.
        requested: String,
    },
    /// A platform certificate was requested from a tenant CA.
    #[error("platform certificates must be issued by the platform CA")]
    NotPlatformCa,
    /// A server certificate needs at least one host.
    #[error("at least one host is required")]
    NoHosts,
    /// Too many hosts for one certificate.
    #[error("at most {MAX_HOSTS} hosts are allowed")]
    TooManyHosts,
    /// Reading back the certificate just issued failed (a bug).
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// Key or certificate generation failed.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    /// A certificate signing request is unreadable, or its signature does
    /// not verify (the requester does not hold the key).
    #[error("the certificate signing request is invalid: {0}")]
    Request(&'static str),
}

/// The tenant a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRef<'a> {
    /// Tenant id (goes into the SPIFFE id, must match the CA).
    pub id: Uuid,
    /// Tenant slug (goes into the CN).
    pub slug: &'a str,
}

impl<'a> TenantRef<'a> {
    /// The tenant's id and slug.
    pub fn of(tenant: &'a Tenant) -> Self {
        Self {
            id: tenant.id.as_uuid(),
            slug: tenant.slug.as_str(),
        }
    }
}

/// The edge site a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteRef<'a> {
    /// Site id (goes into the SPIFFE id of leaf certificates).
    pub id: Uuid,
    /// Site slug (goes into the CN).
    pub slug: &'a str,
}

impl<'a> SiteRef<'a> {
    /// The site's id and slug.
    pub fn of(site: &'a EdgeSite) -> Self {
        Self {
            id: site.id.as_uuid(),
            slug: site.slug.as_str(),
        }
    }
}

/// Trust domain and validity of an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueOptions {
    /// SPIFFE trust domain; must equal the tenant CA's.
    pub trust_domain: String,
    /// Requested validity (clamped to the CA's `notAfter`).
    pub validity: Duration,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            validity: DEFAULT_VALIDITY,
        }
    }
}

/// An issued certificate with its private key.
pub struct IssuedCertificate {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM). Seal before storing.
    pub key_pem: Zeroizing<String>,
    /// The issuing CA's certificate followed by the certificates above it
    /// (intermediate then root; the root only for platform certificates).
    pub chain_pem: String,
    /// Serial number, lowercase hex (32 digits).
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl IssuedCertificate {
    /// Certificate followed by the chain (what a TLS server presents).
    pub fn full_chain_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.chain_pem)
    }

    /// The private key sealed under the keyring's current key, bound to `aad`.
    pub fn seal_key(&self, keyring: &Keyring, aad: &[u8]) -> Vec<u8> {
        keyring.seal(self.key_pem.as_bytes(), aad)
    }
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("serial_hex", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"...")
            .finish_non_exhaustive()
    }
}

/// Client certificate of a site's NATS leaf server, used to dial the hub.
pub fn issue_leaf_client(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    opts: &IssueOptions,
) -> Result<IssuedCertificate, IssueError> {
    let spec = leaf_client_spec(ca, tenant, site, opts)?;
    issue(ca, spec, opts.validity)
}

fn leaf_client_spec(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    opts: &IssueOptions,
) -> Result<Spec, IssueError> {
    check_tenant_ca(ca, tenant, opts)?;
    check_slug("site", site.slug)?;
    let cn = common_name(IdentityKind::Leaf, site.slug, tenant.slug);
    Ok(Spec {
        sans: vec![
            spiffe_san(opts, tenant, IdentityKind::Leaf, site.id)?,
            SanType::DnsName(Ia5String::try_from(cn.as_str())?),
        ],
        common_name: cn,
        ekus: vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ],
    })
}

/// Server certificate of a site's NATS leaf server, presented to local
/// collectors. `hosts` are IP literals or DNS names; `localhost` and
/// `127.0.0.1` are always added.
pub fn issue_leaf_server<I, S>(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    hosts: I,
    opts: &IssueOptions,
) -> Result<IssuedCertificate, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let spec = leaf_server_spec(ca, tenant, site, hosts, opts)?;
    issue(ca, spec, opts.validity)
}

/// [`issue_leaf_server`] for a key the platform keeps (`key_pem`, from
/// [`new_server_key`] or a previous certificate's key) instead of a new one:
/// a certificate issued again for the same key keeps its public key, so a
/// pin of it (a leaf cluster's routes pin each node's) survives renewal.
pub fn issue_leaf_server_for_key<I, S>(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    hosts: I,
    opts: &IssueOptions,
    key_pem: &str,
) -> Result<IssuedCertificate, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let spec = leaf_server_spec(ca, tenant, site, hosts, opts)?;
    issue_with_key(ca, spec, opts.validity, SecretKeyPair::from_pem(key_pem)?)
}

fn leaf_server_spec<I, S>(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    hosts: I,
    opts: &IssueOptions,
) -> Result<Spec, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    check_tenant_ca(ca, tenant, opts)?;
    check_slug("site", site.slug)?;
    let mut parsed = parse_hosts(hosts)?;
    parsed.push(Host::Dns("localhost".to_owned()));
    parsed.push(Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let mut sans = vec![spiffe_san(opts, tenant, IdentityKind::LeafServer, site.id)?];
    sans.extend(host_sans(parsed)?);
    Ok(Spec {
        common_name: common_name(IdentityKind::LeafServer, site.slug, tenant.slug),
        sans,
        ekus: vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    })
}

/// Client certificate of an edge agent.
pub fn issue_agent(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    agent_id: Uuid,
    opts: &IssueOptions,
) -> Result<IssuedCertificate, IssueError> {
    let spec = agent_spec(ca, tenant, site, agent_id, opts)?;
    issue(ca, spec, opts.validity)
}

fn agent_spec(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    agent_id: Uuid,
    opts: &IssueOptions,
) -> Result<Spec, IssueError> {
    check_tenant_ca(ca, tenant, opts)?;
    check_slug("site", site.slug)?;
    Ok(Spec {
        common_name: common_name(IdentityKind::Agent, site.slug, tenant.slug),
        sans: vec![spiffe_san(opts, tenant, IdentityKind::Agent, agent_id)?],
        ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
    })
}

/// Which certificate to issue for a [`CertificateRequest`]: the same
/// identities as [`issue_leaf_client`], [`issue_leaf_server`] and
/// [`issue_agent`]. The request's own subject and extensions are ignored;
/// only its public key is used.
#[derive(Debug, Clone, Copy)]
pub enum RequestProfile<'a> {
    /// A leaf's client certificate (its hub link).
    LeafClient,
    /// A leaf's server certificate for these hosts (plus `localhost` and
    /// `127.0.0.1`).
    LeafServer {
        /// IP literals or DNS names the leaf is reached at.
        hosts: &'a [String],
    },
    /// The site's edge agent.
    Agent {
        /// The agent's id (its SPIFFE id).
        agent_id: Uuid,
    },
    /// A collector package.
    Collector {
        /// The package's id (its SPIFFE id).
        package_id: Uuid,
    },
    /// A device registered at the site (client certificate for the site
    /// leaf's device port): SPIFFE `.../device/{id}`, CN
    /// `device-{id}.{site}.{tenant}.serviceradar`.
    Device {
        /// The device's id.
        device_id: Uuid,
    },
}

/// Issues a certificate for the public key of `request`, which proved it
/// holds the private key (the request's signature was verified when it was
/// parsed). The platform never sees the key.
pub fn issue_for_request(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    profile: RequestProfile<'_>,
    request: &CertificateRequest,
    opts: &IssueOptions,
) -> Result<SignedCertificate, IssueError> {
    let spec = match profile {
        RequestProfile::LeafClient => leaf_client_spec(ca, tenant, site, opts)?,
        RequestProfile::LeafServer { hosts } => leaf_server_spec(ca, tenant, site, hosts, opts)?,
        RequestProfile::Agent { agent_id } => agent_spec(ca, tenant, site, agent_id, opts)?,
        RequestProfile::Collector { package_id } => collector_spec(ca, tenant, package_id, opts)?,
        RequestProfile::Device { device_id } => device_spec(ca, tenant, site, device_id, opts)?,
    };
    let params = params_for(ca, spec, opts.validity)?;
    let cert = ca.sign(&params, request.public_key())?;
    signed(ca, &cert)
}

fn device_spec(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    site: SiteRef<'_>,
    device_id: Uuid,
    opts: &IssueOptions,
) -> Result<Spec, IssueError> {
    check_tenant_ca(ca, tenant, opts)?;
    check_slug("site", site.slug)?;
    Ok(Spec {
        common_name: format!(
            "{}.{}.{}.serviceradar",
            crate::identity::device_common_name_label(device_id),
            site.slug,
            tenant.slug
        ),
        sans: vec![spiffe_san(opts, tenant, IdentityKind::Device, device_id)?],
        ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
    })
}

/// Client certificate of a collector package.
pub fn issue_collector(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    package_id: Uuid,
    opts: &IssueOptions,
) -> Result<IssuedCertificate, IssueError> {
    let spec = collector_spec(ca, tenant, package_id, opts)?;
    issue(ca, spec, opts.validity)
}

fn collector_spec(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    package_id: Uuid,
    opts: &IssueOptions,
) -> Result<Spec, IssueError> {
    check_tenant_ca(ca, tenant, opts)?;
    let package = package_id.hyphenated().to_string();
    Ok(Spec {
        common_name: common_name(IdentityKind::Collector, &package, tenant.slug),
        sans: vec![spiffe_san(
            opts,
            tenant,
            IdentityKind::Collector,
            package_id,
        )?],
        ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
    })
}

/// Server certificate of a platform service (`service` is a slug such as
/// `hub` or `gateway`) for the given hosts, signed by the platform CA. Only
/// `opts.validity` is used.
pub fn issue_platform_server<I, S>(
    ca: &CertificateAuthority,
    service: &str,
    hosts: I,
    opts: &IssueOptions,
) -> Result<IssuedCertificate, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let spec = platform_server_spec(ca, service, hosts)?;
    issue(ca, spec, opts.validity)
}

/// [`issue_platform_server`] for a key the platform keeps (`key_pem`, from
/// [`new_server_key`]) instead of a new one: certificates issued again for
/// the same key keep its public key, so a pin of it (a hub cluster's routes
/// pin each node's) survives re-issuing.
pub fn issue_platform_server_for_key<I, S>(
    ca: &CertificateAuthority,
    service: &str,
    hosts: I,
    opts: &IssueOptions,
    key_pem: &str,
) -> Result<IssuedCertificate, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let spec = platform_server_spec(ca, service, hosts)?;
    issue_with_key(ca, spec, opts.validity, SecretKeyPair::from_pem(key_pem)?)
}

fn platform_server_spec<I, S>(
    ca: &CertificateAuthority,
    service: &str,
    hosts: I,
) -> Result<Spec, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    if ca.kind() != &CaKind::Platform {
        return Err(IssueError::NotPlatformCa);
    }
    check_slug("service", service)?;
    let parsed = parse_hosts(hosts)?;
    if parsed.is_empty() {
        return Err(IssueError::NoHosts);
    }
    Ok(Spec {
        common_name: format!("{service}.platform.serviceradar"),
        sans: host_sans(parsed)?,
        ekus: vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    })
}

/// A new private key (PEM) of the kind every issued certificate has, for
/// [`issue_platform_server_for_key`].
pub fn new_server_key() -> Result<Zeroizing<String>, IssueError> {
    Ok(SecretKeyPair::generate()?.key_pem())
}

/// What differs between the kinds of end-entity certificates.
struct Spec {
    common_name: String,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
}

fn issue(
    ca: &CertificateAuthority,
    spec: Spec,
    validity: Duration,
) -> Result<IssuedCertificate, IssueError> {
    issue_with_key(ca, spec, validity, SecretKeyPair::generate()?)
}

fn issue_with_key(
    ca: &CertificateAuthority,
    spec: Spec,
    validity: Duration,
    key: SecretKeyPair,
) -> Result<IssuedCertificate, IssueError> {
    let params = params_for(ca, spec, validity)?;
    let cert = ca.sign(&params, key.key_pair())?;
    let signed = signed(ca, &cert)?;
    Ok(IssuedCertificate {
        cert_pem: signed.cert_pem,
        key_pem: key.key_pem(),
        chain_pem: signed.chain_pem,
        serial_hex: signed.serial_hex,
        not_before: signed.not_before,
        not_after: signed.not_after,
    })
}

/// A certificate issued for a key the platform does not hold.
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The issuing CA's certificate followed by the certificates above it.
    pub chain_pem: String,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

fn signed(
    ca: &CertificateAuthority,
    cert: &rcgen::Certificate,
) -> Result<SignedCertificate, IssueError> {
    let parsed = parse_der(cert.der())?;
    Ok(SignedCertificate {
        cert_pem: cert.pem(),
        chain_pem: ca.chain_pem(),
        serial_hex: serial_hex(&parsed),
        not_before: parsed.validity().not_before.to_datetime(),
        not_after: parsed.validity().not_after.to_datetime(),
    })
}

fn params_for(
    ca: &CertificateAuthority,
    spec: Spec,
    validity: Duration,
) -> Result<CertificateParams, IssueError> {
    let (not_before, not_after) = ca.validity_window(validity)?;
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, spec.common_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name;
    params.subject_alt_names = spec.sans;
    params.extended_key_usages = spec.ekus;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The CA must be the intermediate of exactly this tenant and trust domain.
fn check_tenant_ca(
    ca: &CertificateAuthority,
    tenant: TenantRef<'_>,
    opts: &IssueOptions,
) -> Result<(), IssueError> {
    check_slug("tenant", tenant.slug)?;
    check_trust_domain(&opts.trust_domain)?;
    let CaKind::Tenant {
        tenant_id,
        trust_domain,
    } = ca.kind()
    else {
        return Err(IssueError::NotTenantCa);
    };
    if *tenant_id != tenant.id {
        return Err(IssueError::TenantMismatch);
    }
    if *trust_domain != opts.trust_domain {
        return Err(IssueError::TrustDomainMismatch {
            ca: trust_domain.clone(),
            requested: opts.trust_domain.clone(),
        });
    }
    Ok(())
}

fn common_name(kind: IdentityKind, scope: &str, tenant_slug: &str) -> String {
    format!("{}.{scope}.{tenant_slug}.serviceradar", kind.cn_prefix())
}

fn spiffe_san(
    opts: &IssueOptions,
    tenant: TenantRef<'_>,
    kind: IdentityKind,
    id: Uuid,
) -> Result<SanType, IssueError> {
    let spiffe = SpiffeId::new(&opts.trust_domain, tenant.id, kind, id)?;
    Ok(SanType::URI(Ia5String::try_from(spiffe.to_string())?))
}

/// Parses and de-duplicates hosts, keeping their order.
fn parse_hosts<I, S>(hosts: I) -> Result<Vec<Host>, IssueError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut parsed: Vec<Host> = Vec::new();
    for raw in hosts {
        let host = parse_host(raw.as_ref())?;
        if !parsed.contains(&host) {
            if parsed.len() == MAX_HOSTS {
                return Err(IssueError::TooManyHosts);
            }
            parsed.push(host);
        }
    }
    Ok(parsed)
}

/// Converts hosts to SANs, dropping duplicates.
fn host_sans(hosts: Vec<Host>) -> Result<Vec<SanType>, IssueError> {
    let mut sans: Vec<SanType> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let san = match host {
            Host::Ip(ip) => SanType::IpAddress(ip),
            Host::Dns(name) => SanType::DnsName(Ia5String::try_from(name)?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerIdentity;
    use crate::inspect::pem_to_der;
    use x509_parser::extensions::GeneralName;

    struct Fixture {
        root: CertificateAuthority,
        ca: CertificateAuthority,
        tenant_id: Uuid,
        site_id: Uuid,
    }

    impl Fixture {
        fn new() -> Self {
            let root =
                CertificateAuthority::generate_root("Root", Duration::days(30)).expect("root");
            let tenant_id = Uuid::now_v7();
            let ca = CertificateAuthority::generate_tenant_intermediate(
                &root,
                tenant_id,
                "acme",
                DEFAULT_TRUST_DOMAIN,
                Duration::days(20),
            )
            .expect("intermediate");
            Self {
                root,
                ca,
                tenant_id,
                site_id: Uuid::now_v7(),
            }
        }

        fn tenant(&self) -> TenantRef<'static> {
            TenantRef {
                id: self.tenant_id,
                slug: "acme",
            }
        }

        fn site(&self) -> SiteRef<'static> {
            SiteRef {
                id: self.site_id,
                slug: "nyc-office",
            }
        }
    }

    fn sans(cert_pem: &str) -> Vec<String> {
        let der = pem_to_der(cert_pem).expect("der");
        let cert = parse_der(&der).expect("parse");
        let san = cert
            .subject_alternative_name()
            .expect("ok")
            .expect("present");
        san.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn leaf_client() {
        let f = Fixture::new();
        let cert = issue_leaf_client(&f.ca, f.tenant(), f.site(), &IssueOptions::default())
            .expect("issue");
        let cn = "leaf.nyc-office.acme.serviceradar";
        assert_eq!(
            sans(&cert.cert_pem),
            [
                format!(
                    "uri:spiffe://serviceradar.io/tenant/{}/leaf/{}",
                    f.tenant_id, f.site_id
                ),
                format!("dns:{cn}"),
            ]
        );
        assert_eq!(
            cert.chain_pem,
            format!("{}{}", f.ca.cert_pem(), f.root.cert_pem())
        );
        assert_eq!(cert.serial_hex.len(), 32);
        assert!(cert.not_after <= f.ca.not_after());

        let der = pem_to_der(&cert.cert_pem).expect("der");
        let id = PeerIdentity::from_der_with_issuer(&der, f.ca.cert_der(), DEFAULT_TRUST_DOMAIN)
            .expect("identity");
        assert_eq!(id.kind, IdentityKind::Leaf);
        assert_eq!(id.tenant_id, f.tenant_id);
        assert_eq!(id.id, f.site_id);
        assert_eq!(id.common_name, cn);
        assert_eq!(id.scope, "nyc-office");
        assert_eq!(id.tenant_slug, "acme");
        assert_eq!(id.not_after, cert.not_after);
    }

    #[test]
    fn leaf_server_sans() {
        let f = Fixture::new();
        let cert = issue_leaf_server(
            &f.ca,
            f.tenant(),
            f.site(),
            [
                "NATS.example.com",
                "10.0.0.5",
                "[fd00::1]",
                "localhost",
                "10.0.0.5",
            ],
            &IssueOptions::default(),
        )
        .expect("issue");
        let sans = sans(&cert.cert_pem);
        assert_eq!(sans.len(), 6, "{sans:?}");
        assert!(sans[0].starts_with("uri:spiffe://serviceradar.io/tenant/"));
        assert!(sans[0].contains("/leaf-server/"));
        assert_eq!(sans[1], "dns:nats.example.com");
        assert_eq!(sans[2], "ip:[10, 0, 0, 5]");
        assert_eq!(sans[4], "dns:localhost");
        assert_eq!(sans[5], "ip:[127, 0, 0, 1]");

        assert!(matches!(
            issue_leaf_server(
                &f.ca,
                f.tenant(),
                f.site(),
                ["nats://x:4222"],
                &IssueOptions::default()
            ),
            Err(IssueError::Name(NameError::Host { .. }))
        ));
        let many: Vec<String> = (0..=MAX_HOSTS)
            .map(|i| format!("h{i}.example.com"))
            .collect();
        assert!(matches!(
            issue_leaf_server(&f.ca, f.tenant(), f.site(), &many, &IssueOptions::default()),
            Err(IssueError::TooManyHosts)
        ));
        // No host at all still yields localhost + 127.0.0.1.
        let local = issue_leaf_server(
            &f.ca,
            f.tenant(),
            f.site(),
            Vec::<String>::new(),
            &IssueOptions::default(),
        )
        .expect("issue");
        assert_eq!(super::tests::sans(&local.cert_pem).len(), 3);
    }

    #[test]
    fn a_leaf_server_certificate_issued_again_for_its_key_keeps_the_pin() {
        let f = Fixture::new();
        let first = issue_leaf_server(
            &f.ca,
            f.tenant(),
            f.site(),
            ["10.0.0.5"],
            &IssueOptions::default(),
        )
        .expect("issue");
        let again = issue_leaf_server_for_key(
            &f.ca,
            f.tenant(),
            f.site(),
            ["10.0.0.6"],
            &IssueOptions::default(),
            &first.key_pem,
        )
        .expect("issue for the key");
        assert_ne!(first.serial_hex, again.serial_hex, "a new certificate");
        assert_ne!(first.cert_pem, again.cert_pem);
        assert_eq!(
            crate::spki_sha256(&first.cert_pem).expect("pin"),
            crate::spki_sha256(&again.cert_pem).expect("pin"),
            "the same public key"
        );
        assert_eq!(sans(&again.cert_pem)[1], "ip:[10, 0, 0, 6]");
        assert!(crate::check_key_matches(&again.cert_pem, &first.key_pem).is_ok());
        assert!(matches!(
            issue_leaf_server_for_key(
                &f.ca,
                f.tenant(),
                f.site(),
                ["10.0.0.6"],
                &IssueOptions::default(),
                "not a key",
            ),
            Err(IssueError::Generate(_))
        ));
    }

    #[test]
    fn agent_and_collector_identities() {
        let f = Fixture::new();
        let agent_id = Uuid::now_v7();
        let agent = issue_agent(
            &f.ca,
            f.tenant(),
            f.site(),
            agent_id,
            &IssueOptions::default(),
        )
        .expect("agent");
        let id = PeerIdentity::from_der(
            &pem_to_der(&agent.cert_pem).expect("der"),
            DEFAULT_TRUST_DOMAIN,
        )
        .expect("identity");
        assert_eq!((id.kind, id.id), (IdentityKind::Agent, agent_id));
        assert_eq!(id.common_name, "agent.nyc-office.acme.serviceradar");

        let package_id = Uuid::now_v7();
        let collector = issue_collector(&f.ca, f.tenant(), package_id, &IssueOptions::default())
            .expect("collector");
        let id = PeerIdentity::from_der(
            &pem_to_der(&collector.cert_pem).expect("der"),
            DEFAULT_TRUST_DOMAIN,
        )
        .expect("identity");
        assert_eq!((id.kind, id.id), (IdentityKind::Collector, package_id));
        assert_eq!(
            id.common_name,
            format!("collector.{package_id}.acme.serviceradar")
        );
    }

    #[test]
    fn tenant_binding_is_enforced() {
        let f = Fixture::new();
        let other = TenantRef {
            id: Uuid::now_v7(),
            slug: "acme",
        };
        assert!(matches!(
            issue_agent(
                &f.ca,
                other,
                f.site(),
                Uuid::nil(),
                &IssueOptions::default()
            ),
            Err(IssueError::TenantMismatch)
        ));
        assert!(matches!(
            issue_agent(
                &f.root,
                f.tenant(),
                f.site(),
                Uuid::nil(),
                &IssueOptions::default()
            ),
            Err(IssueError::NotTenantCa)
        ));
        let other_td = IssueOptions {
            trust_domain: "other.example".into(),
            ..IssueOptions::default()
        };
        assert!(matches!(
            issue_collector(&f.ca, f.tenant(), Uuid::nil(), &other_td),
            Err(IssueError::TrustDomainMismatch { .. })
        ));
        assert!(matches!(
            issue_platform_server(&f.ca, "hub", ["hub.example.com"], &IssueOptions::default()),
            Err(IssueError::NotPlatformCa)
        ));
    }

    #[test]
    fn slugs_are_rechecked() {
        let f = Fixture::new();
        let bad_site = SiteRef {
            id: f.site_id,
            slug: "nyc.office",
        };
        assert!(matches!(
            issue_leaf_client(&f.ca, f.tenant(), bad_site, &IssueOptions::default()),
            Err(IssueError::Name(NameError::Slug { field: "site", .. }))
        ));
        let bad_tenant = TenantRef {
            id: f.tenant_id,
            slug: "Acme",
        };
        assert!(matches!(
            issue_collector(&f.ca, bad_tenant, Uuid::nil(), &IssueOptions::default()),
            Err(IssueError::Name(NameError::Slug {
                field: "tenant",
                ..
            }))
        ));
    }

    #[test]
    fn platform_server() {
        let f = Fixture::new();
        let cert = issue_platform_server(
            &f.root,
            "hub",
            ["hub.example.com", "192.0.2.1"],
            &IssueOptions::default(),
        )
        .expect("issue");
        assert_eq!(cert.chain_pem, f.root.cert_pem());
        assert_eq!(
            sans(&cert.cert_pem),
            ["dns:hub.example.com", "ip:[192, 0, 2, 1]"]
        );
        assert!(matches!(
            issue_platform_server(&f.root, "hub", Vec::<&str>::new(), &IssueOptions::default()),
            Err(IssueError::NoHosts)
        ));
    }

    #[test]
    fn validity_is_clamped_and_checked() {
        let f = Fixture::new();
        let short = IssueOptions {
            validity: Duration::days(2),
            ..IssueOptions::default()
        };
        let cert = issue_collector(&f.ca, f.tenant(), Uuid::nil(), &short).expect("issue");
        let span = cert.not_after - cert.not_before;
        assert!(span >= Duration::days(2) && span <= Duration::days(2) + Duration::minutes(6));
        let long = issue_collector(&f.ca, f.tenant(), Uuid::nil(), &IssueOptions::default())
            .expect("issue");
        assert_eq!(long.not_after, f.ca.not_after());
        let zero = IssueOptions {
            validity: Duration::seconds(-1),
            ..IssueOptions::default()
        };
        assert!(matches!(
            issue_collector(&f.ca, f.tenant(), Uuid::nil(), &zero),
            Err(IssueError::Ca(CaError::InvalidValidity))
        ));
    }

    #[test]
    fn renewal_keeps_identity_changes_key_and_serial() {
        let f = Fixture::new();
        let a =
            issue_leaf_client(&f.ca, f.tenant(), f.site(), &IssueOptions::default()).expect("a");
        let b =
            issue_leaf_client(&f.ca, f.tenant(), f.site(), &IssueOptions::default()).expect("b");
        assert_ne!(a.serial_hex, b.serial_hex);
        assert_ne!(*a.key_pem, *b.key_pem);
        assert_eq!(sans(&a.cert_pem), sans(&b.cert_pem));
    }

    #[test]
    fn debug_hides_the_key() {
        let f = Fixture::new();
        let cert = issue_agent(
            &f.ca,
            f.tenant(),
            f.site(),
            Uuid::nil(),
            &IssueOptions::default(),
        )
        .expect("issue");
        let debug = format!("{cert:?}");
        assert!(!debug.contains("PRIVATE KEY"));
        let body = cert.key_pem.lines().nth(1).expect("body");
        assert!(!debug.contains(body));
    }
}
