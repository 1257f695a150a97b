//! The operator: root of trust of a hub running in operator mode.
//!
//! Why: the hub trusts exactly one operator JWT (inline in `nats-hub.conf`); every
//! account JWT it accepts must be signed by that operator's key. The operator JWT
//! also names the system account, whose users may push account updates
//! (`$SYS.REQ.CLAIMS.UPDATE`) to a running hub.

use std::fmt;

use serde::Serialize;

use super::{AccountClaims, JwtError, KeyKind, NKey, check_public_key, encode};

/// An operator identity: its key pair, name and optional system account.
#[derive(Clone)]
pub struct Operator {
    key: NKey,
    name: String,
    system_account: Option<String>,
}

#[derive(Serialize)]
struct OperatorNats<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_account: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

impl Operator {
    /// A new operator with a fresh key.
    pub fn generate(name: &str) -> Result<Self, JwtError> {
        Self::from_key(name, NKey::generate(KeyKind::Operator))
    }

    /// An operator from an existing key (for example restored with
    /// [`NKey::from_seed`]). The key must be an operator key.
    pub fn from_key(name: &str, key: NKey) -> Result<Self, JwtError> {
        key.expect_kind(KeyKind::Operator)?;
        if name.trim().is_empty() {
            return Err(JwtError::InvalidClaim {
                field: "name",
                reason: "operator name must not be empty".into(),
            });
        }
        Ok(Self {
            key,
            name: name.to_owned(),
            system_account: None,
        })
    }

    /// Names the system account (an account public key) in the operator JWT.
    pub fn with_system_account(mut self, account_public_key: &str) -> Result<Self, JwtError> {
        check_public_key("system account", account_public_key, KeyKind::Account)?;
        self.system_account = Some(account_public_key.to_owned());
        Ok(self)
    }

    /// The system account's public key, if one is set.
    pub fn system_account(&self) -> Option<&str> {
        self.system_account.as_deref()
    }

    /// The operator's key pair.
    pub fn key(&self) -> &NKey {
        &self.key
    }

    /// The operator's public key (`O...`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The self-signed operator JWT, issued now.
    pub fn operator_jwt(&self) -> Result<String, JwtError> {
        self.operator_jwt_issued_at(None)
    }

    /// The self-signed operator JWT with a fixed `iat` (reproducible output);
    /// `None` means now.
    pub fn operator_jwt_issued_at(&self, issued_at: Option<i64>) -> Result<String, JwtError> {
        let nats = OperatorNats {
            system_account: self.system_account.as_deref(),
            kind: "operator",
            version: 2,
        };
        encode(
            &self.key,
            &self.key.public_key(),
            &self.name,
            issued_at,
            None,
            &nats,
        )
    }

    /// Signs an account JWT with this operator's key.
    pub fn sign_account(&self, claims: &AccountClaims) -> Result<String, JwtError> {
        claims.sign(&self.key)
    }
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("public_key", &self.public_key())
            .field("system_account", &self.system_account)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{claim_type, decode_claims};

    #[test]
    fn operator_jwt_is_self_signed_and_names_the_system_account() {
        let sys = NKey::generate(KeyKind::Account);
        let op = Operator::generate("serviceradar")
            .unwrap()
            .with_system_account(&sys.public_key())
            .unwrap();
        let claims = decode_claims(&op.operator_jwt().unwrap()).unwrap();
        assert_eq!(claim_type(&claims), Some("operator"));
        assert_eq!(claims["iss"], op.public_key());
        assert_eq!(claims["sub"], op.public_key());
        assert_eq!(claims["name"], "serviceradar");
        assert_eq!(claims["nats"]["version"], 2);
        assert_eq!(claims["nats"]["system_account"], sys.public_key());
    }

    #[test]
    fn equal_account_claims_issued_apart_are_the_same_but_not_other_claims() {
        use crate::jwt::{AccountClaims, decode_claims, same_claims_but_issue_time};
        let op = Operator::generate("serviceradar").unwrap();
        let account = NKey::generate(KeyKind::Account).public_key();
        let mut claims = AccountClaims::tenant(&account, "acme");
        claims.issued_at = Some(1_000);
        let first = op.sign_account(&claims).unwrap();
        claims.issued_at = Some(2_000);
        let later = op.sign_account(&claims).unwrap();
        assert_ne!(first, later);
        let [first, later] = [&first, &later].map(|jwt| decode_claims(jwt).unwrap());
        assert_eq!(later["iat"], 2_000);
        assert!(same_claims_but_issue_time(&first, &later));
        // A revocation is a different claim.
        claims
            .revoke_user(&NKey::generate(KeyKind::User).public_key(), 5)
            .unwrap();
        let revoked = op.sign_account(&claims).unwrap();
        let revoked_claims = decode_claims(&revoked).unwrap();
        assert!(!same_claims_but_issue_time(&later, &revoked_claims));
        // The same claims signed by another operator are not the same JWT.
        let other = Operator::generate("serviceradar").unwrap();
        let foreign = decode_claims(&other.sign_account(&claims).unwrap()).unwrap();
        assert!(!same_claims_but_issue_time(&revoked_claims, &foreign));
        // A tampered JWT never gets as far as a comparison.
        let (head, sig) = revoked.rsplit_once('.').unwrap();
        assert!(decode_claims(&format!("{head}x.{sig}")).is_err());
    }

    #[test]
    fn rejects_wrong_keys() {
        assert!(Operator::from_key("x", NKey::generate(KeyKind::Account)).is_err());
        assert!(Operator::generate("").is_err());
        let op = Operator::generate("x").unwrap();
        assert!(op.clone().with_system_account(&op.public_key()).is_err());
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let op = Operator::generate("x").unwrap();
        let seed = op.key().seed().unwrap();
        assert!(!format!("{op:?}").contains(seed.as_str()));
    }
}
