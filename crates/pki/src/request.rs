//! Certificate signing requests: how an edge box gets a certificate without
//! its private key ever leaving it.
//!
//! The edge side ([`new_key_and_request`]) generates an ECDSA P-256 key and a
//! PKCS#10 request signed with it; the control plane parses the request
//! ([`CertificateRequest::from_pem`], which verifies that signature, so the
//! requester holds the key) and issues a certificate for its public key with
//! [`crate::issue::issue_for_request`]. What the request asks for (subject,
//! names) is ignored: the platform decides the identity.

use rcgen::{CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType};
use zeroize::Zeroizing;

use crate::issue::IssueError;
use crate::keys::SecretKeyPair;

/// Largest request accepted, in bytes of PEM (a P-256 request is ~500).
pub const MAX_REQUEST_PEM: usize = 16 * 1024;

/// A parsed certificate signing request whose signature verified.
#[derive(Debug, Clone)]
pub struct CertificateRequest(CertificateSigningRequestParams);

impl CertificateRequest {
    /// Parses a PEM request and verifies its self-signature.
    pub fn from_pem(pem: &str) -> Result<Self, IssueError> {
        if pem.len() > MAX_REQUEST_PEM {
            return Err(IssueError::Request("longer than 16 KiB"));
        }
        if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
            return Err(IssueError::Request("not a PEM CERTIFICATE REQUEST"));
        }
        CertificateSigningRequestParams::from_pem(pem)
            .map(Self)
            .map_err(|e| {
                IssueError::Request(match e {
                    rcgen::Error::InvalidCertificationRequestSignature => {
                        "its signature does not verify"
                    }
                    rcgen::Error::UnsupportedSignatureAlgorithm => "unsupported key algorithm",
                    _ => "unreadable",
                })
            })
    }

    pub(crate) fn public_key(&self) -> &rcgen::PublicKey {
        &self.0.public_key
    }
}

/// A fresh private key (PKCS#8 PEM, keep it on this machine) and a request
/// for it (PEM, send it) whose subject is `common_name` (informational only).
pub fn new_key_and_request(common_name: &str) -> Result<(Zeroizing<String>, String), IssueError> {
    let key = SecretKeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    let request = params.serialize_request(key.key_pair())?;
    Ok((key.key_pem(), request.pem()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::identity::{IdentityKind, PeerIdentity};
    use crate::inspect::pem_to_der;
    use crate::issue::{IssueOptions, RequestProfile, SiteRef, TenantRef, issue_for_request};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use uuid::Uuid;

    /// Tenant `acme`'s intermediate CA under a fresh root, and its id.
    fn acme_ca() -> (CertificateAuthority, Uuid) {
        let root = CertificateAuthority::generate_root("root", ::time::Duration::days(30)).unwrap();
        let tenant_id = Uuid::now_v7();
        let ca = CertificateAuthority::generate_tenant_intermediate(
            &root,
            tenant_id,
            "acme",
            "serviceradar.io",
            ::time::Duration::days(20),
        )
        .unwrap();
        (ca, tenant_id)
    }

    /// Issues `profile` for `request` at tenant `acme`'s site `lab`.
    fn issue_at_lab(
        ca: &CertificateAuthority,
        tenant_id: Uuid,
        site_id: Uuid,
        profile: RequestProfile<'_>,
        request: &CertificateRequest,
    ) -> crate::issue::SignedCertificate {
        issue_for_request(
            ca,
            TenantRef {
                id: tenant_id,
                slug: "acme",
            },
            SiteRef {
                id: site_id,
                slug: "lab",
            },
            profile,
            request,
            &IssueOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_certificate_for_a_request_carries_the_platform_identity_and_the_requesters_key() {
        let (ca, tenant_id) = acme_ca();
        let (key, pem) = new_key_and_request("whatever-the-edge-asks").unwrap();
        let request = CertificateRequest::from_pem(&pem).unwrap();
        let site = Uuid::now_v7();
        let cert = issue_at_lab(&ca, tenant_id, site, RequestProfile::LeafClient, &request);
        let peer = PeerIdentity::from_der(&pem_to_der(&cert.cert_pem).unwrap(), "serviceradar.io")
            .unwrap();
        assert_eq!(peer.kind, IdentityKind::Leaf);
        assert_eq!(peer.id, site);
        // The certificate is for the requester's key.
        let key = rcgen::KeyPair::from_pem(&key).unwrap();
        let parsed = crate::inspect::parse_der(&pem_to_der(&cert.cert_pem).unwrap())
            .unwrap()
            .public_key()
            .subject_public_key
            .data
            .to_vec();
        assert_eq!(parsed, rcgen::PublicKeyData::der_bytes(&key).to_vec());
    }

    #[test]
    fn a_device_certificate_names_the_device_in_its_spiffe_id_and_common_name() {
        let (ca, tenant_id) = acme_ca();
        let (_key, pem) = new_key_and_request("anything").unwrap();
        let request = CertificateRequest::from_pem(&pem).unwrap();
        let device = Uuid::now_v7();
        let cert = issue_at_lab(
            &ca,
            tenant_id,
            Uuid::now_v7(),
            RequestProfile::Device { device_id: device },
            &request,
        );
        let der = pem_to_der(&cert.cert_pem).unwrap();
        let ca_der = pem_to_der(ca.cert_pem()).unwrap();
        let peer = PeerIdentity::from_der_with_issuer(&der, &ca_der, "serviceradar.io").unwrap();
        assert_eq!((peer.kind, peer.id), (IdentityKind::Device, device));
        assert_eq!(
            peer.spiffe_id.to_string(),
            format!("spiffe://serviceradar.io/tenant/{tenant_id}/device/{device}")
        );
        assert_eq!(
            peer.common_name,
            format!("device-{device}.lab.acme.serviceradar")
        );
        assert_eq!(peer.scope, "lab");
    }

    #[test]
    fn a_request_whose_signature_does_not_verify_is_refused() {
        let (_, pem) = new_key_and_request("x").unwrap();
        let mut der = pem_to_der_request(&pem);
        // Flip a bit in the signature (the last bytes).
        let last = der.len() - 2;
        der[last] ^= 0x01;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            STANDARD.encode(der)
        );
        assert!(matches!(
            CertificateRequest::from_pem(&pem),
            Err(IssueError::Request(_))
        ));
        assert!(matches!(
            CertificateRequest::from_pem("-----BEGIN CERTIFICATE-----\n"),
            Err(IssueError::Request("not a PEM CERTIFICATE REQUEST"))
        ));
    }

    fn pem_to_der_request(text: &str) -> Vec<u8> {
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }
}
