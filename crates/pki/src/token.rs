//! Enrollment tokens: self-describing, signed by the control plane.
//!
//! An edge box joins with nothing but a token, so the token carries what it
//! needs to find and trust the control plane (its URL and the SHA-256 of the
//! platform root CA) besides what it grants (tenant, site, scope, expiry, a
//! one-time id). The control plane signs it with Ed25519; anyone can read the
//! claims ([`read`]), only the control plane's public key verifies them
//! ([`verify`]). The token text is
//! `sr1.<base64url(claims JSON)>.<base64url(signature)>`, the signature over
//! `sr1.<base64url(claims JSON)>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

/// The token's version prefix.
pub const PREFIX: &str = "sr1";
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentClaims {
    /// The control plane's base URL (`https://sr.example.com`).
    pub url: String,
    /// Lowercase hex SHA-256 of the platform root CA certificate (DER).
    pub ca_sha256: String,
    /// The tenant.
    pub tenant: Uuid,
    /// The site.
    pub site: Uuid,
    /// `site`, `agent` or `collector:<type>`.
    pub scope: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The token's id (one row in the control plane).
    pub jti: Uuid,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the `sr1.<claims>.<signature>` shape, or unreadable claims.
    #[error("not an enrollment token (expected sr1.<claims>.<signature>)")]
    Malformed,
    /// The signature does not verify with the control plane's key.
    #[error(
        "the token's signature does not verify: it was altered, or issued by another control plane"
    )]
    BadSignature,
    /// Generating or loading the signing key failed.
    #[error("the enrollment signing key is unusable")]
    Key,
}

/// A new Ed25519 signing key as PKCS#8 (seal it before storing).
pub fn new_signing_key() -> Result<Zeroizing<Vec<u8>>, TokenError> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
        .map_err(|_| TokenError::Key)
}

/// The public key (32 bytes) of a PKCS#8 signing key.
pub fn public_key(pkcs8: &[u8]) -> Result<Vec<u8>, TokenError> {
    Ed25519KeyPair::from_pkcs8(pkcs8)
        .map(|pair| pair.public_key().as_ref().to_vec())
        .map_err(|_| TokenError::Key)
}

/// Signs `claims` into token text.
pub fn sign(claims: &EnrollmentClaims, pkcs8: &[u8]) -> Result<String, TokenError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::Key)?;
    let json = serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?;
    let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
    let signature = pair.sign(signed.as_bytes());
    Ok(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

/// The claims of a token, *unverified* (what the edge reads to find the
/// control plane; the control plane verifies on redemption).
pub fn read(token: &str) -> Result<EnrollmentClaims, TokenError> {
    split(token).map(|(claims, _, _)| claims)
}

/// The claims of a token whose signature verifies with `public_key`.
pub fn verify(token: &str, public_key: &[u8]) -> Result<EnrollmentClaims, TokenError> {
    let (claims, signed, signature) = split(token)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    Ok(claims)
}

fn split(token: &str) -> Result<(EnrollmentClaims, &str, Vec<u8>), TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (prefix, claims) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    if prefix != PREFIX {
        return Err(TokenError::Malformed);
    }
    let json = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| TokenError::Malformed)?;
    let claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    Ok((claims, signed, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> EnrollmentClaims {
        EnrollmentClaims {
            url: "http://127.0.0.1:8080".into(),
            ca_sha256: "ab".repeat(32),
            tenant: Uuid::now_v7(),
            site: Uuid::now_v7(),
            scope: "site".into(),
            exp: 2_000_000_000,
            jti: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_reads_back() {
        let key = new_signing_key().unwrap();
        let token = sign(&claims(), &key).unwrap();
        assert!(token.starts_with("sr1."));
        let public = public_key(&key).unwrap();
        assert_eq!(verify(&token, &public).unwrap(), read(&token).unwrap());
    }

    #[test]
    fn a_tampered_or_foreign_token_does_not_verify() {
        let key = new_signing_key().unwrap();
        let public = public_key(&key).unwrap();
        let token = sign(&claims(), &key).unwrap();
        // Another tenant's id in the claims, the signature kept.
        let (_, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut forged = claims();
        forged.scope = "collector:syslog".into();
        let json = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("sr1.{json}.{signature}");
        assert_eq!(verify(&tampered, &public), Err(TokenError::BadSignature));
        // Signed by another control plane.
        let other = sign(&claims(), &new_signing_key().unwrap()).unwrap();
        assert_eq!(verify(&other, &public), Err(TokenError::BadSignature));
        for junk in ["", "sr1", "sr1.x.y", "sr2.e30.AA", &"a".repeat(5000)] {
            assert_eq!(verify(junk, &public), Err(TokenError::Malformed), "{junk}");
        }
    }
}
