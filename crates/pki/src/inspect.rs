//! Reading certificates back: PEM/DER decoding, expiry and fingerprints.
//!
//! The control plane tracks every certificate it issued (expiry alerts,
//! renewal, the fingerprint shown to an admin comparing files on an edge box).
//! These helpers parse strictly: exactly one `CERTIFICATE` block where one
//! certificate is expected, and no trailing bytes after the DER.

use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

/// Failure to decode a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The text is not valid PEM.
    #[error("invalid PEM")]
    Pem,
    /// A PEM block has another label than `CERTIFICATE`.
    #[error("expected a CERTIFICATE PEM block, found {0:?}")]
    UnexpectedLabel(String),
    /// No certificate in the input.
    #[error("no certificate found")]
    Empty,
    /// More than one certificate where exactly one was expected.
    #[error("expected exactly one certificate, found {0}")]
    NotSingle(usize),
    /// The DER is not a valid X.509 certificate (or has trailing bytes).
    #[error("invalid X.509 certificate")]
    Der,
    /// The certificate is not for the given private key (or the key does
    /// not parse).
    #[error("the certificate is not for this private key")]
    KeyMismatch,
}

/// Decodes every `CERTIFICATE` block of a PEM bundle to DER, in order.
pub fn pem_chain_to_der(pem: &str) -> Result<Vec<Vec<u8>>, CertificateError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| CertificateError::Pem)?;
        if block.label != "CERTIFICATE" {
            return Err(CertificateError::UnexpectedLabel(
                block.label.chars().take(40).collect(),
            ));
        }
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(CertificateError::Empty);
    }
    Ok(out)
}

/// Decodes a PEM text holding exactly one certificate to DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, CertificateError> {
    let mut chain = pem_chain_to_der(pem)?;
    match chain.len() {
        1 => Ok(chain.remove(0)),
        n => Err(CertificateError::NotSingle(n)),
    }
}

/// Encodes certificate DER as PEM (64-character lines, `\n` endings).
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(encoded.len() + encoded.len() / 64 + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Parses DER into a certificate, rejecting trailing bytes.
pub fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(CertificateError::Der),
    }
}

/// The end of a certificate's validity (`notAfter`).
pub fn cert_not_after(pem: &str) -> Result<::time::OffsetDateTime, CertificateError> {
    let der = pem_to_der(pem)?;
    Ok(parse_der(&der)?.validity().not_after.to_datetime())
}

/// The start of a certificate's validity (`notBefore`).
pub fn cert_not_before(pem: &str) -> Result<::time::OffsetDateTime, CertificateError> {
    let der = pem_to_der(pem)?;
    Ok(parse_der(&der)?.validity().not_before.to_datetime())
}

/// SHA-256 over the certificate's DER, lowercase hex without separators (the
/// value `openssl x509 -noout -fingerprint -sha256` prints, minus colons).
pub fn fingerprint_sha256(pem: &str) -> Result<String, CertificateError> {
    let der = pem_to_der(pem)?;
    parse_der(&der)?;
    Ok(fingerprint_sha256_der(&der))
}

/// SHA-256 over the certificate's SubjectPublicKeyInfo, lowercase hex: the
/// pin nats-server's `pinned_certs` compares a peer's certificate with (a
/// hub cluster's route listener admits only its nodes' certificates).
pub fn spki_sha256(pem: &str) -> Result<String, CertificateError> {
    let der = pem_to_der(pem)?;
    let cert = parse_der(&der)?;
    Ok(fingerprint_sha256_der(cert.public_key().raw))
}

/// The end of validity of the first certificate of a chain (a certificate
/// file followed by its issuer, as edge boxes keep them).
pub fn chain_not_after(chain_pem: &str) -> Result<::time::OffsetDateTime, CertificateError> {
    let ders = pem_chain_to_der(chain_pem)?;
    let der = ders.first().ok_or(CertificateError::Empty)?;
    Ok(parse_der(der)?.validity().not_after.to_datetime())
}

/// When a certificate written (received) at `written_ms` and expiring at
/// `not_after_ms` (Unix ms) is due for renewal: two thirds of the way. The
/// edge agent renews then (less some jitter); `serviceradar-cli status`
/// shows it. Counted from when it was written, not from `notBefore`, which
/// the CA backdates for clock skew.
pub fn renewal_point(written_ms: i64, not_after_ms: i64) -> i64 {
    let written = written_ms.min(not_after_ms);
    written + (not_after_ms - written) * 2 / 3
}

/// Checks that the first certificate of `chain_pem` is for the private key
/// `key_pem` (PKCS#8 PEM): a renewed certificate must fit the key it was
/// requested with before it replaces anything.
pub fn check_key_matches(chain_pem: &str, key_pem: &str) -> Result<(), CertificateError> {
    let ders = pem_chain_to_der(chain_pem)?;
    let der = ders.first().ok_or(CertificateError::Empty)?;
    let cert = parse_der(der)?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|_| CertificateError::KeyMismatch)?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CertificateError::KeyMismatch);
    }
    Ok(())
}

/// SHA-256 over DER bytes, lowercase hex.
pub fn fingerprint_sha256_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The serial number of a parsed certificate as lowercase hex (no leading
/// zero byte, no separators).
pub(crate) fn serial_hex(cert: &X509Certificate<'_>) -> String {
    let raw = cert.raw_serial();
    let first_significant = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    hex::encode(&raw[first_significant..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn self_signed_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["example.com".to_owned()]).expect("params");
        params.self_signed(&key).expect("sign").pem()
    }

    #[test]
    fn expiry_and_fingerprint() {
        let pem = self_signed_pem();
        let not_after = cert_not_after(&pem).expect("parse");
        let not_before = cert_not_before(&pem).expect("parse");
        assert!(not_after > not_before);
        let fp = fingerprint_sha256(&pem).expect("fp");
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, fingerprint_sha256_der(&pem_to_der(&pem).expect("der")));
        let der = pem_to_der(&pem).expect("der");
        assert_eq!(der_to_pem(&der), pem.replace("\r\n", "\n"));
    }

    #[test]
    fn the_spki_pin_is_the_hash_of_the_public_key_not_of_the_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).expect("params");
        let first = params.self_signed(&key).expect("sign").pem();
        let params = rcgen::CertificateParams::new(vec!["b.example".to_owned()]).expect("params");
        let second = params.self_signed(&key).expect("sign").pem();
        let pin = spki_sha256(&first).expect("pin");
        assert_eq!(
            pin,
            fingerprint_sha256_der(&rcgen::PublicKeyData::subject_public_key_info(&key))
        );
        assert_eq!(
            pin,
            spki_sha256(&second).expect("pin"),
            "same key, same pin"
        );
        assert_ne!(pin, fingerprint_sha256(&first).expect("fp"));
    }

    #[test]
    fn a_certificate_is_checked_against_the_key_it_was_requested_with() {
        let key = rcgen::KeyPair::generate().expect("key");
        let other = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["example.com".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("sign").pem();
        // A chain (certificate, then its issuer) is read by its first certificate.
        let chain = format!("{cert}{}", self_signed_pem());
        assert_eq!(check_key_matches(&chain, &key.serialize_pem()), Ok(()));
        assert_eq!(
            check_key_matches(&chain, &other.serialize_pem()),
            Err(CertificateError::KeyMismatch)
        );
        assert_eq!(
            check_key_matches(&chain, "not a key"),
            Err(CertificateError::KeyMismatch)
        );
        assert_eq!(chain_not_after(&chain), cert_not_after(&cert));
    }

    #[test]
    fn renewal_is_due_two_thirds_of_the_way_from_when_it_was_written() {
        assert_eq!(renewal_point(0, 90_000), 60_000);
        assert_eq!(renewal_point(30_000, 120_000), 90_000);
        // Written after its expiry (a clock jump): due at once.
        assert_eq!(renewal_point(200_000, 120_000), 120_000);
    }

    #[test]
    fn strictness() {
        let pem = self_signed_pem();
        assert_eq!(pem_to_der(""), Err(CertificateError::Empty));
        assert_eq!(
            pem_to_der(&format!("{pem}{pem}")),
            Err(CertificateError::NotSingle(2))
        );
        assert_eq!(
            pem_chain_to_der(&format!("{pem}\n{pem}")).map(|c| c.len()),
            Ok(2)
        );
        let key_pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        assert!(matches!(
            pem_to_der(&key_pem),
            Err(CertificateError::UnexpectedLabel(_))
        ));
        let mut der = pem_to_der(&pem).expect("der");
        der.push(0);
        assert!(parse_der(&der).is_err());
        assert!(
            cert_not_after("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,400}") {
            let _ = cert_not_after(&s);
            let _ = fingerprint_sha256(&s);
            let wrapped = format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n");
            let _ = cert_not_after(&wrapped);
        }

        #[test]
        fn der_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_der(&bytes);
        }
    }
}
