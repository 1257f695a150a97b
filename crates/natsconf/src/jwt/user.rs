//! User claims: the identities that connect (leaf nodes, collectors, services).
//!
//! Why: a user JWT binds a connection to an account and narrows what it may do
//! inside it (publish/subscribe allow and deny lists, limits, expiry). The leaf of
//! an edge site connects to the hub as a user of its tenant's account; that binding
//! is what puts everything the leaf forwards into the tenant's account on the hub.

use serde::Serialize;

use super::{JwtError, KeyKind, NKey, NO_LIMIT, check_public_key, encode_for};
use crate::syntax::validate_subject;

/// `allowed_connection_types` value of plain NATS client connections.
pub const CONNECTION_STANDARD: &str = "STANDARD";
/// `allowed_connection_types` value of leafnode connections.
pub const CONNECTION_LEAFNODE: &str = "LEAFNODE";

/// Allow and deny lists of subjects (wildcards allowed). Empty lists mean no
/// restriction from that list; a deny wins over an allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permission {
    /// Subjects allowed; empty means all (subject to `deny`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Subjects denied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Permission {
    fn validate(&self) -> Result<(), JwtError> {
        for subject in self.allow.iter().chain(&self.deny) {
            validate_subject("permission subject", subject).map_err(|e| {
                JwtError::InvalidClaim {
                    field: "permissions",
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(())
    }
}

/// The claims of a user JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    /// The user's public key (`U...`), the JWT's subject.
    pub user: String,
    /// Human-readable name (for example `leaf-acme-nyc`).
    pub name: String,
    /// What the user may publish to.
    pub publish: Permission,
    /// What the user may subscribe to.
    pub subscribe: Permission,
    /// Maximum subscriptions (`-1`: unlimited).
    pub subs: i64,
    /// Maximum message payload in bytes (`-1`: unlimited).
    pub payload: i64,
    /// Maximum bytes of message data (`-1`: unlimited).
    pub data: i64,
    /// When set, the JWT alone authenticates (no nonce signature with the seed).
    /// Off by default: a bearer token is only as safe as the channel carrying it.
    pub bearer_token: bool,
    /// Connection types the user may connect as ([`CONNECTION_STANDARD`],
    /// [`CONNECTION_LEAFNODE`], ...); empty allows every type.
    pub allowed_connection_types: Vec<String>,
    /// Tags (nats-server lowercases them), e.g. which site a leaf belongs to.
    pub tags: Vec<String>,
    /// Expiry (unix time), if any.
    pub expires: Option<i64>,
    /// Fixed issue time (unix time) for reproducible output; `None` means now.
    pub issued_at: Option<i64>,
    /// The JWT's `aud`: for users an auth callout issues to a server in
    /// config mode (no operator), the account the user is placed in.
    pub audience: Option<String>,
}

#[derive(Serialize)]
struct UserNats<'a> {
    #[serde(rename = "pub")]
    publish: &'a Permission,
    #[serde(rename = "sub")]
    subscribe: &'a Permission,
    subs: i64,
    data: i64,
    payload: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    bearer_token: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowed_connection_types: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

impl UserClaims {
    /// A user without restrictions inside its account.
    pub fn new(user_public_key: &str, name: &str) -> Self {
        Self {
            user: user_public_key.to_owned(),
            name: name.to_owned(),
            publish: Permission::default(),
            subscribe: Permission::default(),
            subs: NO_LIMIT,
            payload: NO_LIMIT,
            data: NO_LIMIT,
            bearer_token: false,
            allowed_connection_types: Vec::new(),
            tags: Vec::new(),
            expires: None,
            issued_at: None,
            audience: None,
        }
    }

    /// Signs the user JWT with the key of the account the user belongs to.
    pub fn sign(&self, account: &NKey) -> Result<String, JwtError> {
        account.expect_kind(KeyKind::Account)?;
        check_public_key("user", &self.user, KeyKind::User)?;
        if self.name.trim().is_empty() {
            return Err(JwtError::InvalidClaim {
                field: "name",
                reason: "user name must not be empty".into(),
            });
        }
        self.publish.validate()?;
        self.subscribe.validate()?;
        if let Some(tag) = self.tags.iter().find(|t| {
            t.is_empty()
                || t.chars()
                    .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
        }) {
            return Err(JwtError::InvalidClaim {
                field: "tags",
                reason: format!("tag {tag:?} must be non-empty lowercase without spaces"),
            });
        }
        let nats = UserNats {
            publish: &self.publish,
            subscribe: &self.subscribe,
            subs: self.subs,
            data: self.data,
            payload: self.payload,
            bearer_token: self.bearer_token,
            allowed_connection_types: &self.allowed_connection_types,
            tags: &self.tags,
            kind: "user",
            version: 2,
        };
        encode_for(
            account,
            &self.user,
            self.audience.as_deref(),
            &self.name,
            self.issued_at,
            self.expires,
            &nats,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{claim_type, decode_claims};

    #[test]
    fn user_jwt_carries_permissions_and_limits() {
        let acct = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let mut claims = UserClaims::new(&user.public_key(), "collector");
        claims.publish.allow = vec!["events.acme.>".into()];
        claims.subscribe.deny = vec!["$SYS.>".into()];
        claims.payload = 1 << 20;
        claims.expires = Some(4_000_000_000);
        let decoded = decode_claims(&claims.sign(&acct).unwrap()).unwrap();
        assert_eq!(claim_type(&decoded), Some("user"));
        assert_eq!(decoded["iss"], acct.public_key());
        assert_eq!(decoded["sub"], user.public_key());
        assert_eq!(decoded["exp"], 4_000_000_000i64);
        assert_eq!(decoded["nats"]["pub"]["allow"][0], "events.acme.>");
        assert_eq!(decoded["nats"]["sub"]["deny"][0], "$SYS.>");
        assert_eq!(decoded["nats"]["payload"], 1 << 20);
        assert_eq!(decoded["nats"]["subs"], -1);
        assert!(decoded["nats"].get("bearer_token").is_none());
        assert!(decoded["nats"].get("allowed_connection_types").is_none());
        assert!(decoded["nats"].get("tags").is_none());
    }

    #[test]
    fn connection_types_and_tags_are_written() {
        let acct = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let mut claims = UserClaims::new(&user.public_key(), "leaf");
        claims.allowed_connection_types = vec![CONNECTION_LEAFNODE.into()];
        claims.tags = vec!["sr-site:1234".into()];
        let decoded = decode_claims(&claims.sign(&acct).unwrap()).unwrap();
        assert_eq!(decoded["nats"]["allowed_connection_types"][0], "LEAFNODE");
        assert_eq!(decoded["nats"]["tags"][0], "sr-site:1234");
        claims.tags = vec!["Upper".into()];
        assert!(
            claims.sign(&acct).is_err(),
            "nats-server would lowercase it"
        );
    }

    #[test]
    fn misuse_is_rejected() {
        let acct = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let claims = UserClaims::new(&user.public_key(), "u");
        assert!(claims.sign(&user).is_err(), "a user key cannot sign users");
        assert!(
            UserClaims::new(&acct.public_key(), "u")
                .sign(&acct)
                .is_err()
        );
        let mut bad = claims.clone();
        bad.publish.allow = vec!["a b".into()];
        assert!(bad.sign(&acct).is_err());
    }
}
