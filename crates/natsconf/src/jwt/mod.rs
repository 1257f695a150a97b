//! NATS decentralized authentication ("operator mode"): operator, account and user
//! JWTs signed with ed25519 nkeys, plus `.creds` files.
//!
//! Why this module exists: tenants are isolated on the hub by NATS *accounts*, and
//! with JWTs a new tenant (or a revoked user) is pushed to a running hub instead of
//! restarting it. The `nats-io-jwt` crate's build script breaks with a read-only
//! registry, so the small part of the format we need is implemented here on top of
//! the `nkeys` crate and checked against a real `nats-server` in the tests.
//!
//! The trust chain is operator -> account -> user:
//! * [`Operator`] self-signs its JWT and names the system account;
//! * [`AccountClaims`] (one account per tenant, plus the system account) are signed
//!   by the operator; they carry limits, JetStream limits and user revocations;
//! * [`UserClaims`] are signed by their account's key; a user JWT plus the user's
//!   seed make a [`creds_file`].
//!
//! Format (as nats-server and the Go `jwt/v2` library read it): `header.claims.sig`,
//! each part base64url without padding; header `{"typ":"JWT","alg":"ed25519-nkey"}`;
//! claims with `jti` (base32 of a SHA-512/256 hash of the claims with an empty
//! `jti`, as Go's library computes its repeatable id), `iat`, `iss`, `sub`, `name`,
//! optional `exp`, and a `nats` object with `type` and `version: 2`. Numeric limits
//! are always written out: nats-server reads a missing limit as 0 ("none allowed"),
//! so "unlimited" must be an explicit `-1` ([`NO_LIMIT`]).

mod account;
mod callout;
mod creds;
mod keys;
mod operator;
mod user;

pub use account::{
    ANY_ACCOUNT, AccountClaims, AccountLimits, Export, ExportKind, ExternalAuthorization, Import,
    JetStreamLimits,
};
pub use callout::{
    AUTH_CALLOUT_SUBJECT, AuthorizationRequest, ClientTls, authorization_response,
    verify_signed_nonce,
};
pub use creds::{CredsFile, creds_file};
pub use keys::{KeyKind, NKey};
pub use operator::Operator;
pub use user::{CONNECTION_LEAFNODE, CONNECTION_STANDARD, Permission, UserClaims};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::Digest;

/// The value nats uses for "no limit" in numeric limits.
pub const NO_LIMIT: i64 = -1;

const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Errors from creating, signing or decoding NATS JWTs and creds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The nkeys library rejected a key or seed (bad encoding, checksum, type).
    #[error("nkey error: {0}")]
    NKey(#[from] nkeys::error::Error),
    /// A key of one kind was given where another kind is required (for example a
    /// user key as the signer of an account JWT).
    #[error("expected {expected} key, got {found}")]
    WrongKeyKind {
        /// What the operation needs.
        expected: &'static str,
        /// What it was given.
        found: String,
    },
    /// A public key string is not a valid nkey of the required kind.
    #[error("{field} is not a valid {expected} public key")]
    InvalidPublicKey {
        /// Which field.
        field: &'static str,
        /// The required kind.
        expected: &'static str,
    },
    /// A claim value is not acceptable (empty name, bad subject, disabled JetStream).
    #[error("invalid claim {field}: {reason}")]
    InvalidClaim {
        /// Which claim.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The token is not three base64url parts with a JSON header and claims.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// The header does not announce an ed25519-nkey JWT.
    #[error("unsupported JWT header")]
    UnsupportedHeader,
    /// The signature does not verify against the issuer's public key.
    #[error("JWT signature does not verify against its issuer")]
    BadSignature,
    /// JSON (de)serialisation failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The registered claims plus the `nats` section, in the field order Go writes.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    jti: String,
    iat: i64,
    iss: String,
    name: &'a str,
    sub: &'a str,
    nats: &'a T,
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Signs `nats` claims for `subject` with `signer`, producing the JWT string.
pub(crate) fn encode<T: Serialize>(
    signer: &NKey,
    subject: &str,
    name: &str,
    issued_at: Option<i64>,
    expires: Option<i64>,
    nats: &T,
) -> Result<String, JwtError> {
    encode_for(signer, subject, None, name, issued_at, expires, nats)
}

/// [`encode`] with an audience (`aud`), as authorization responses need.
pub(crate) fn encode_for<T: Serialize>(
    signer: &NKey,
    subject: &str,
    audience: Option<&str>,
    name: &str,
    issued_at: Option<i64>,
    expires: Option<i64>,
    nats: &T,
) -> Result<String, JwtError> {
    let mut envelope = Envelope {
        aud: audience,
        exp: expires,
        jti: String::new(),
        iat: issued_at.unwrap_or_else(now),
        iss: signer.public_key(),
        name,
        sub: subject,
        nats,
    };
    let unhashed = serde_json::to_vec(&envelope)?;
    envelope.jti = data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(&unhashed));
    let claims = serde_json::to_vec(&envelope)?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER_JSON),
        URL_SAFE_NO_PAD.encode(&claims)
    );
    let signature = signer.sign(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Decodes a NATS JWT, verifies its signature against the key in its `iss` claim and
/// returns the claims as JSON.
///
/// This checks that the token is *self-consistent*, not that its issuer is trusted:
/// callers compare `iss` with the key they expect (nats-server does the same).
pub fn decode_claims(jwt: &str) -> Result<serde_json::Value, JwtError> {
    let token = Signed::split(jwt)?;
    let claims: serde_json::Value = serde_json::from_slice(&token.claims)?;
    let issuer = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .ok_or(JwtError::Malformed("no iss claim"))?;
    token.verify(issuer)?;
    Ok(claims)
}

/// Whether two JWTs' claims (each decoded and checked with
/// [`decode_claims`]) are the same but for when they were issued: equal
/// once `iat` and `jti` (a hash of the claims, so of `iat` too) are left
/// out. An account JWT the hub already holds can then be kept rather than
/// replaced by an equal one issued later (which the hub would decode,
/// verify, save and apply again).
pub fn same_claims_but_issue_time(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    fn without_issue_time(
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> impl Iterator<Item = (&String, &serde_json::Value)> {
        claims
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "iat" | "jti"))
    }
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => without_issue_time(a).eq(without_issue_time(b)),
        _ => false,
    }
}

/// A JWT split into its checked header, its decoded claims (JSON, not yet
/// parsed, so a caller can read them into its own type once) and its
/// signature; [`Signed::verify`] checks the signature against an issuer.
pub(crate) struct Signed<'a> {
    /// The claims' JSON.
    pub(crate) claims: Vec<u8>,
    /// `header.claims`, what the signature covers.
    signed: &'a str,
    signature: &'a str,
}

impl<'a> Signed<'a> {
    /// Splits `jwt`; its header must announce an ed25519-nkey JWT.
    pub(crate) fn split(jwt: &'a str) -> Result<Self, JwtError> {
        let mut parts = jwt.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three dot-separated parts"));
        };
        let header_json: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(header)
                .map_err(|_| JwtError::Malformed("header is not base64url"))?,
        )?;
        let typ = header_json.get("typ").and_then(|v| v.as_str());
        let alg = header_json.get("alg").and_then(|v| v.as_str());
        if !typ.is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
            || !alg.is_some_and(|a| a.eq_ignore_ascii_case("ed25519-nkey"))
        {
            return Err(JwtError::UnsupportedHeader);
        }
        let claims_json = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| JwtError::Malformed("claims are not base64url"))?;
        Ok(Self {
            claims: claims_json,
            signed: &jwt[..header.len() + 1 + claims.len()],
            signature,
        })
    }

    /// Whether the signature is `issuer`'s (a public nkey) over the token.
    pub(crate) fn verify(&self, issuer: &str) -> Result<(), JwtError> {
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        nkeys::KeyPair::from_public_key(issuer)?
            .verify(self.signed.as_bytes(), &signature)
            .map_err(|_| JwtError::BadSignature)
    }
}

/// The `nats.type` of decoded claims (`operator`, `account`, `user`, ...).
pub fn claim_type(claims: &serde_json::Value) -> Option<&str> {
    claims.pointer("/nats/type").and_then(|v| v.as_str())
}

/// Checks that `key` is a valid public nkey of `kind`.
///
/// Like nats-server (Go's `nkeys.FromPublicKey`), this checks the encoding,
/// checksum and prefix, not that the 32 bytes are a point of the curve:
/// decompressing one costs about as much as a signature, and a key that is
/// not a point fails where it is used, when a signature is verified with it.
pub(crate) fn check_public_key(
    field: &'static str,
    key: &str,
    kind: KeyKind,
) -> Result<(), JwtError> {
    match nkeys::from_public_key(key) {
        Ok((prefix, _)) if KeyKind::from_nkeys(&nkeys::KeyPairType::from(prefix)) == Some(kind) => {
            Ok(())
        }
        _ => Err(JwtError::InvalidPublicKey {
            field,
            expected: kind.as_str(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_checked_for_their_kind_encoding_and_checksum() {
        let user = NKey::generate(KeyKind::User).public_key();
        assert!(check_public_key("k", &user, KeyKind::User).is_ok());
        assert!(check_public_key("k", &user, KeyKind::Server).is_err());
        // One character changed: the CRC no longer matches.
        let mut altered = user.clone().into_bytes();
        altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(check_public_key("k", &altered, KeyKind::User).is_err());
        assert!(check_public_key("k", &user[..user.len() - 1], KeyKind::User).is_err());
        assert!(check_public_key("k", "", KeyKind::User).is_err());
        // A seed is not a public key.
        let seed = NKey::generate(KeyKind::User).seed().unwrap().to_string();
        assert!(check_public_key("k", &seed, KeyKind::User).is_err());
    }

    #[test]
    fn a_tampered_token_does_not_verify() {
        let account = NKey::generate(KeyKind::Account);
        let token = encode(
            &account,
            &account.public_key(),
            "a",
            None,
            None,
            &serde_json::json!({"type": "account", "version": 2}),
        )
        .unwrap();
        assert!(decode_claims(&token).is_ok());
        let other = NKey::generate(KeyKind::Account);
        let signed = Signed::split(&token).unwrap();
        assert!(signed.verify(&account.public_key()).is_ok());
        assert!(matches!(
            signed.verify(&other.public_key()),
            Err(JwtError::BadSignature)
        ));
        let (head, sig) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}x.{sig}");
        assert!(decode_claims(&forged).is_err());
    }

    #[test]
    fn encode_then_decode_roundtrip() {
        let op = NKey::generate(KeyKind::Operator);
        let payload = serde_json::json!({"type": "operator", "version": 2});
        let token = encode(&op, &op.public_key(), "op", Some(1000), None, &payload).unwrap();
        assert!(
            token.starts_with("eyJ"),
            "nats-server recognises inline JWTs by eyJ"
        );
        let claims = decode_claims(&token).unwrap();
        assert_eq!(claims["iss"], op.public_key());
        assert_eq!(claims["sub"], op.public_key());
        assert_eq!(claims["iat"], 1000);
        assert_eq!(claim_type(&claims), Some("operator"));
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 52, "base32 of 32 bytes without padding");
        // Same inputs, same token: ed25519 is deterministic and the id is a hash.
        let again = encode(&op, &op.public_key(), "op", Some(1000), None, &payload).unwrap();
        assert_eq!(token, again);
    }

    #[test]
    fn tampering_is_detected() {
        let op = NKey::generate(KeyKind::Operator);
        let payload = serde_json::json!({"type": "operator", "version": 2});
        let token = encode(&op, &op.public_key(), "op", None, None, &payload).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("\"op\"", "\"xx\""),
        );
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert!(matches!(
            decode_claims(&forged),
            Err(JwtError::BadSignature)
        ));
        assert!(matches!(decode_claims("a.b"), Err(JwtError::Malformed(_))));
        assert!(decode_claims("not-a-jwt").is_err());
    }
}
