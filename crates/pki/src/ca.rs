//! The certificate authority hierarchy.
//!
//! ```text
//! platform root CA (pathlen 1)          — hub / agent-gateway server certs
//!   └─ tenant intermediate CA (pathlen 0, one per tenant,
//!        URI SAN spiffe://{td}/tenant/{tenant_id})
//!        └─ end-entity certs (leaf client/server, agent, collector)
//! ```
//!
//! A tenant's intermediate is the only key that signs that tenant's
//! certificates; its path length 0 means nothing it signs can act as a CA.
//! Basic constraints are critical, key usage is `keyCertSign + cRLSign`.
//!
//! # Why the intermediates carry no name constraints
//!
//! Name constraints only constrain the name *types* they list, and they do not
//! help here:
//!
//! * DNS/IP constraints would break leaf *server* certificates, which must carry
//!   whatever host the customer reaches the leaf at (any DNS name or IP).
//! * URI constraints (RFC 5280 §4.2.1.10) match only the URI's *host* — the
//!   trust domain — not the `/tenant/{id}` path, so they cannot express "only
//!   this tenant"; and verifier support for URI constraints is uneven.
//!
//! Tenant binding is enforced instead (a) when issuing: [`crate::issue`] refuses
//! to issue for a tenant other than the one in the CA's SPIFFE URI, and (b) when
//! verifying: [`crate::identity::PeerIdentity::from_der_with_issuer`] checks that
//! the tenant in the end-entity SPIFFE id equals the issuing intermediate's.
//!
//! Validity periods nest: a certificate never outlives its issuer (the
//! requested validity is clamped), and `notBefore` is backdated a few minutes to
//! tolerate clock skew at the edge.

use std::fmt;

use ::time::{Duration, OffsetDateTime};
use rand::RngCore as _;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyUsagePurpose, SanType, SerialNumber,
};
use uuid::Uuid;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

use crate::identity::{IdentityError, TenantSpiffeId, single_common_name};
use crate::inspect::{CertificateError, der_to_pem, parse_der, pem_chain_to_der, pem_to_der};
use crate::keys::SecretKeyPair;
use crate::names::{NameError, check_common_name, check_slug, check_trust_domain};
use crate::seal::{Keyring, SealError};

/// Organization written into CA subjects.
pub const ORGANIZATION: &str = "ServiceRadar";
/// How far `notBefore` is backdated to tolerate clock skew.
pub const BACKDATE: Duration = Duration::minutes(5);
/// Path length of the platform root: one level of intermediates.
pub const ROOT_PATH_LEN: u8 = 1;
/// Default validity of a platform root CA.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::days(10 * 365);
/// Default validity of a tenant intermediate CA.
pub const DEFAULT_INTERMEDIATE_VALIDITY: Duration = Duration::days(5 * 365);

/// Failure to create, load or use a CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A slug, trust domain or common name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The requested validity is zero or negative.
    #[error("validity must be positive")]
    InvalidValidity,
    /// The CA has expired and cannot issue.
    #[error("the CA certificate has expired")]
    Expired,
    /// The CA's validity starts after the requested certificate would end.
    #[error("the CA certificate is not valid yet")]
    NotYetValid,
    /// The operation needs the platform CA, but a tenant CA was given.
    #[error("a platform (root) CA is required")]
    NotPlatformCa,
    /// The certificate could not be decoded.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The certificate is not a CA (basicConstraints CA:TRUE, keyCertSign).
    #[error("certificate is not a CA certificate")]
    NotACa,
    /// The private key could not be decoded (details withheld: it is secret).
    #[error("invalid CA private key")]
    InvalidKey,
    /// The private key does not belong to the certificate.
    #[error("private key does not match the CA certificate")]
    KeyMismatch,
    /// The CA certificate's URI SAN is not a tenant SPIFFE id.
    #[error("CA certificate has an invalid tenant SPIFFE id")]
    TenantUri(#[source] IdentityError),
    /// The issuer chain does not chain up from this CA.
    #[error("issuer chain does not match the CA certificate")]
    IssuerMismatch,
    /// A CA in the issuer chain has a path length constraint that forbids
    /// this CA (e.g. a CA below a tenant intermediate).
    #[error("a path length constraint in the issuer chain forbids this CA")]
    PathLenExceeded,
    /// The sealed private key could not be opened.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Certificate generation failed.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
}

/// Which CA this is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaKind {
    /// The platform CA (the root, or any CA without a tenant SPIFFE id).
    Platform,
    /// A tenant's intermediate CA.
    Tenant {
        /// The tenant it issues for.
        tenant_id: Uuid,
        /// Trust domain of its SPIFFE id.
        trust_domain: String,
    },
}

/// A CA certificate together with its private key.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: SecretKeyPair,
    issuer_chain_pem: String,
    kind: CaKind,
    common_name: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl CertificateAuthority {
    /// Generates a self-signed platform root CA (pathlen 1).
    pub fn generate_root(common_name: &str, validity: Duration) -> Result<Self, CaError> {
        check_common_name(common_name)?;
        let (not_before, not_after) = fresh_window(validity)?;
        let mut params = ca_params(common_name, ROOT_PATH_LEN, not_before, not_after);
        params.use_authority_key_identifier_extension = false;
        let key = SecretKeyPair::generate()?;
        let cert = params.self_signed(key.key_pair())?;
        Self::assemble(cert.der(), key, String::new())
    }

    /// Generates the intermediate CA of one tenant, signed by the platform root:
    /// CN `ServiceRadar Tenant CA {tenant_slug}`, URI SAN
    /// `spiffe://{trust_domain}/tenant/{tenant_id}`, pathlen 0.
    pub fn generate_tenant_intermediate(
        root: &Self,
        tenant_id: Uuid,
        tenant_slug: &str,
        trust_domain: &str,
        validity: Duration,
    ) -> Result<Self, CaError> {
        if root.kind != CaKind::Platform {
            return Err(CaError::NotPlatformCa);
        }
        check_slug("tenant", tenant_slug)?;
        let uri = TenantSpiffeId::new(trust_domain, tenant_id)?;
        let (not_before, not_after) = root.validity_window(validity)?;
        let cn = format!("ServiceRadar Tenant CA {tenant_slug}");
        let mut params = ca_params(&cn, 0, not_before, not_after);
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri.to_string())?)];
        let key = SecretKeyPair::generate()?;
        let cert = root.sign(&params, key.key_pair())?;
        Self::assemble(cert.der(), key, root.chain_pem())
    }

    /// Loads a CA from PEM. Checks that the certificate is a CA
    /// (basicConstraints CA:TRUE, keyCertSign if key usage is present) and that
    /// the key belongs to it. A tenant CA is recognised by its SPIFFE URI SAN.
    /// Call [`Self::with_issuer_chain`] to add the certificates above it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let der = pem_to_der(cert_pem)?;
        let key = SecretKeyPair::from_pem(key_pem).map_err(|_| CaError::InvalidKey)?;
        Self::assemble(&der, key, String::new())
    }

    /// Loads a CA whose private key is sealed (see [`crate::seal`]).
    pub fn from_sealed_key(
        cert_pem: &str,
        sealed_key: &[u8],
        keyring: &Keyring,
        aad: &[u8],
    ) -> Result<Self, CaError> {
        let key_pem = keyring.open(sealed_key, aad)?;
        let key_pem = std::str::from_utf8(&key_pem).map_err(|_| CaError::InvalidKey)?;
        Self::from_pem(cert_pem, key_pem)
    }

    /// Attaches the PEM chain above this CA (the root, for a tenant
    /// intermediate), checking each certificate signed the one before it and
    /// that no path length constraint forbids this CA from issuing.
    pub fn with_issuer_chain(mut self, chain_pem: &str) -> Result<Self, CaError> {
        let chain = pem_chain_to_der(chain_pem)?;
        let mut child = self.cert_der.as_slice();
        for (cas_below, parent) in (1u32..).zip(&chain) {
            let parent_cert = parse_der(parent)?;
            check_signed_by(&parse_der(child)?, &parent_cert)?;
            if path_len(&parent_cert).is_some_and(|max| cas_below > max) {
                return Err(CaError::PathLenExceeded);
            }
            child = parent;
        }
        self.issuer_chain_pem = chain.iter().map(|der| der_to_pem(der)).collect();
        Ok(self)
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key (PKCS#8 PEM). Seal it before storing it.
    pub fn key_pem(&self) -> Zeroizing<String> {
        self.key.key_pem()
    }

    /// The private key sealed under the keyring's current key, bound to `aad`.
    pub fn seal_key(&self, keyring: &Keyring, aad: &[u8]) -> Vec<u8> {
        keyring.seal(self.key_pem().as_bytes(), aad)
    }

    /// The certificates above this CA (empty for a root).
    pub fn issuer_chain_pem(&self) -> &str {
        &self.issuer_chain_pem
    }

    /// This CA's certificate followed by its issuer chain — what an issued
    /// certificate's `chain_pem` contains.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.issuer_chain_pem)
    }

    /// Platform or tenant CA.
    pub fn kind(&self) -> &CaKind {
        &self.kind
    }

    /// The tenant this CA issues for, if it is a tenant CA.
    pub fn tenant_id(&self) -> Option<Uuid> {
        match &self.kind {
            CaKind::Tenant { tenant_id, .. } => Some(*tenant_id),
            CaKind::Platform => None,
        }
    }

    /// The subject common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Signs `params` for `subject_key`: a key pair generated here, or the
    /// public key of a verified certificate signing request.
    pub(crate) fn sign(
        &self,
        params: &CertificateParams,
        subject_key: &impl rcgen::PublicKeyData,
    ) -> Result<Certificate, rcgen::Error> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, self.key.key_pair())?;
        params.signed_by(subject_key, &issuer)
    }

    /// `(notBefore, notAfter)` for a certificate of `validity` issued now,
    /// nested inside this CA's validity.
    pub(crate) fn validity_window(
        &self,
        validity: Duration,
    ) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
        let (not_before, not_after) = fresh_window(validity)?;
        if self.not_after <= OffsetDateTime::now_utc() {
            return Err(CaError::Expired);
        }
        let window = (
            not_before.max(self.not_before),
            not_after.min(self.not_after),
        );
        if window.1 <= window.0 {
            return Err(CaError::NotYetValid);
        }
        Ok(window)
    }

    fn assemble(der: &[u8], key: SecretKeyPair, issuer_chain_pem: String) -> Result<Self, CaError> {
        let cert = parse_der(der)?;
        check_is_ca(&cert)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.key_pair().public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let common_name = single_common_name(&cert).map_err(|_| CaError::NotACa)?;
        Ok(Self {
            cert_pem: der_to_pem(der),
            cert_der: der.to_vec(),
            kind: ca_kind(&cert)?,
            common_name,
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            key,
            issuer_chain_pem,
        })
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("common_name", &self.common_name)
            .field("kind", &self.kind)
            .field("not_after", &self.not_after)
            .field("key", &"...")
            .finish()
    }
}

/// A random, positive 16-byte serial number (high bit clear, first byte non-zero
/// so its hex form is always 32 digits).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

/// `(now - BACKDATE, now + validity)`, rejecting non-positive validity.
fn fresh_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    if !validity.is_positive() {
        return Err(CaError::InvalidValidity);
    }
    let now = OffsetDateTime::now_utc();
    Ok((now - BACKDATE, now + validity))
}

fn ca_params(
    common_name: &str,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    distinguished_name.push(DnType::CommonName, common_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

fn check_is_ca(cert: &X509Certificate<'_>) -> Result<(), CaError> {
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let can_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    if is_ca && can_sign {
        Ok(())
    } else {
        Err(CaError::NotACa)
    }
}

fn path_len(cert: &X509Certificate<'_>) -> Option<u32> {
    match cert.basic_constraints() {
        Ok(Some(bc)) => bc.value.path_len_constraint,
        _ => None,
    }
}

fn check_signed_by(
    child: &X509Certificate<'_>,
    parent: &X509Certificate<'_>,
) -> Result<(), CaError> {
    check_is_ca(parent).map_err(|_| CaError::IssuerMismatch)?;
    if child.issuer().as_raw() != parent.subject().as_raw()
        || child.verify_signature(Some(parent.public_key())).is_err()
    {
        return Err(CaError::IssuerMismatch);
    }
    Ok(())
}

/// Tenant CA if the certificate carries a URI SAN (which must then be a tenant
/// SPIFFE id), platform CA otherwise.
fn ca_kind(cert: &X509Certificate<'_>) -> Result<CaKind, CaError> {
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(CertificateError::Der.into()),
    };
    match uris.as_slice() {
        [] => Ok(CaKind::Platform),
        [uri] => {
            let id = TenantSpiffeId::parse(uri).map_err(CaError::TenantUri)?;
            check_trust_domain(id.trust_domain())?;
            Ok(CaKind::Tenant {
                tenant_id: id.tenant_id(),
                trust_domain: id.trust_domain().to_owned(),
            })
        }
        _ => Err(CaError::TenantUri(IdentityError::MultipleUris)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> CertificateAuthority {
        CertificateAuthority::generate_root("ServiceRadar Test Root", Duration::days(30))
            .expect("root")
    }

    #[test]
    fn root_is_a_platform_ca() {
        let root = root();
        assert_eq!(root.kind(), &CaKind::Platform);
        assert_eq!(root.common_name(), "ServiceRadar Test Root");
        assert!(root.issuer_chain_pem().is_empty());
        let der = root.cert_der().to_vec();
        let cert = parse_der(&der).expect("parse");
        let bc = cert.basic_constraints().expect("ok").expect("present");
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(1));
        assert_eq!(inspect_serial_len(&cert), 16);
    }

    fn inspect_serial_len(cert: &X509Certificate<'_>) -> usize {
        crate::inspect::serial_hex(cert).len() / 2
    }

    #[test]
    fn tenant_intermediate() {
        let root = root();
        let tenant = Uuid::now_v7();
        let ca = CertificateAuthority::generate_tenant_intermediate(
            &root,
            tenant,
            "acme",
            "serviceradar.io",
            Duration::days(3650),
        )
        .expect("intermediate");
        assert_eq!(ca.tenant_id(), Some(tenant));
        assert_eq!(ca.common_name(), "ServiceRadar Tenant CA acme");
        assert_eq!(ca.issuer_chain_pem(), root.cert_pem());
        // Clamped to the root's validity.
        assert_eq!(ca.not_after(), root.not_after());
        let der = ca.cert_der().to_vec();
        let cert = parse_der(&der).expect("parse");
        let bc = cert.basic_constraints().expect("ok").expect("present");
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().expect("ok").expect("present").value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert!(
            cert.verify_signature(Some(parse_der(root.cert_der()).expect("root").public_key()))
                .is_ok()
        );

        // A tenant CA cannot mint another CA.
        assert!(matches!(
            CertificateAuthority::generate_tenant_intermediate(
                &ca,
                tenant,
                "acme",
                "serviceradar.io",
                Duration::days(1)
            ),
            Err(CaError::NotPlatformCa)
        ));
    }

    #[test]
    fn intermediate_input_validation() {
        let root = root();
        let gen_ca = |slug: &str, td: &str, validity| {
            CertificateAuthority::generate_tenant_intermediate(
                &root,
                Uuid::nil(),
                slug,
                td,
                validity,
            )
        };
        assert!(matches!(
            gen_ca("Acme,O=x", "serviceradar.io", Duration::days(1)),
            Err(CaError::Name(_))
        ));
        assert!(matches!(
            gen_ca("acme", "bad/td", Duration::days(1)),
            Err(CaError::Name(_))
        ));
        assert!(matches!(
            gen_ca("acme", "serviceradar.io", Duration::ZERO),
            Err(CaError::InvalidValidity)
        ));
        assert!(matches!(
            CertificateAuthority::generate_root("", Duration::days(1)),
            Err(CaError::Name(_))
        ));
    }

    #[test]
    fn pem_roundtrip_and_checks() {
        let root = root();
        let tenant = Uuid::now_v7();
        let ca = CertificateAuthority::generate_tenant_intermediate(
            &root,
            tenant,
            "acme",
            "corp.internal",
            Duration::days(10),
        )
        .expect("intermediate");

        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem())
            .expect("load")
            .with_issuer_chain(root.cert_pem())
            .expect("chain");
        assert_eq!(
            loaded.kind(),
            &CaKind::Tenant {
                tenant_id: tenant,
                trust_domain: "corp.internal".into()
            }
        );
        assert_eq!(loaded.chain_pem(), ca.chain_pem());
        assert_eq!(loaded.not_after(), ca.not_after());

        // Key of another CA.
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), &root.key_pem()),
            Err(CaError::KeyMismatch)
        ));
        // Garbage key.
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), "not a key"),
            Err(CaError::InvalidKey)
        ));
        // Wrong chain: the intermediate is not signed by itself.
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem())
                .expect("load")
                .with_issuer_chain(ca.cert_pem()),
            Err(CaError::IssuerMismatch)
        ));
        let other_root = super::tests::root();
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem())
                .expect("load")
                .with_issuer_chain(other_root.cert_pem()),
            Err(CaError::IssuerMismatch)
        ));
    }

    #[test]
    fn from_pem_rejects_end_entity_certificates() {
        let key = SecretKeyPair::generate().expect("key");
        let params = CertificateParams::new(vec!["example.com".to_owned()]).expect("params");
        let cert = params.self_signed(key.key_pair()).expect("cert");
        assert!(matches!(
            CertificateAuthority::from_pem(&cert.pem(), &key.key_pem()),
            Err(CaError::NotACa)
        ));
        let mut explicit = params.clone();
        explicit.is_ca = IsCa::ExplicitNoCa;
        let cert = explicit.self_signed(key.key_pair()).expect("cert");
        assert!(matches!(
            CertificateAuthority::from_pem(&cert.pem(), &key.key_pem()),
            Err(CaError::NotACa)
        ));
    }

    #[test]
    fn sealed_key_roundtrip() {
        let root = root();
        let ring = Keyring::new(crate::seal::MasterKey::generate("k1").expect("id"));
        let sealed = root.seal_key(&ring, b"platform:root-ca");
        let loaded = CertificateAuthority::from_sealed_key(
            root.cert_pem(),
            &sealed,
            &ring,
            b"platform:root-ca",
        )
        .expect("load");
        assert_eq!(loaded.cert_der(), root.cert_der());
        assert!(matches!(
            CertificateAuthority::from_sealed_key(root.cert_pem(), &sealed, &ring, b"other"),
            Err(CaError::Seal(SealError::Authentication))
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let root = root();
        let debug = format!("{root:?}");
        let key_pem = root.key_pem();
        let body = key_pem.lines().nth(1).expect("pem body");
        assert!(!debug.contains(body));
        assert!(debug.contains("..."));
    }

    #[test]
    fn serials_are_positive_and_random() {
        let a = random_serial();
        let b = random_serial();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.as_ref()[0] & 0x80 == 0 && a.as_ref()[0] != 0);
    }
}
