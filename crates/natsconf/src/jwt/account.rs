//! Account claims: one NATS account per tenant, plus the system account.
//!
//! Why: the account is the unit of isolation nats-server enforces (a subject in
//! tenant A's account is invisible to tenant B), and its JWT is where the operator
//! sets the tenant's limits, turns JetStream on, and revokes users. Revoking a user
//! means re-issuing the account JWT with the user's key in `revocations` and pushing
//! it to the hub; JWTs of that user issued at or before the revocation time are then
//! refused and live connections of that user are closed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{JwtError, KeyKind, NKey, NO_LIMIT, check_public_key, encode, now};

/// Connection and message limits of an account. `-1` ([`NO_LIMIT`]) is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AccountLimits {
    /// Maximum subscriptions across the account's connections.
    pub subs: i64,
    /// Maximum bytes of message data (nats' `data` limit).
    pub data: i64,
    /// Maximum message payload in bytes.
    pub payload: i64,
    /// Maximum imports.
    pub imports: i64,
    /// Maximum exports.
    pub exports: i64,
    /// Whether exports may use wildcards.
    #[serde(rename = "wildcards")]
    pub wildcard_exports: bool,
    /// Maximum client connections.
    pub conn: i64,
    /// Maximum leaf node connections (one per edge site leaf, more for HA leaves).
    #[serde(rename = "leaf")]
    pub leaf_node_conn: i64,
}

impl Default for AccountLimits {
    /// Everything unlimited, wildcard exports allowed (what `nsc` writes).
    fn default() -> Self {
        Self {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            imports: NO_LIMIT,
            exports: NO_LIMIT,
            wildcard_exports: true,
            conn: NO_LIMIT,
            leaf_node_conn: NO_LIMIT,
        }
    }
}

/// JetStream limits of an account. JetStream is enabled for the account when
/// memory or disk storage is non-zero; `-1` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JetStreamLimits {
    /// Bytes of memory storage across all streams.
    #[serde(rename = "mem_storage")]
    pub memory_storage: i64,
    /// Bytes of file storage across all streams.
    pub disk_storage: i64,
    /// Number of streams.
    pub streams: i64,
    /// Number of consumers.
    #[serde(rename = "consumer")]
    pub consumers: i64,
    /// Maximum ack pending per consumer (`-1` or `0`: server default).
    pub max_ack_pending: i64,
    /// Whether every stream must declare `max_bytes`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub max_bytes_required: bool,
}

impl JetStreamLimits {
    /// JetStream enabled without limits.
    pub fn unlimited() -> Self {
        Self {
            memory_storage: NO_LIMIT,
            disk_storage: NO_LIMIT,
            streams: NO_LIMIT,
            consumers: NO_LIMIT,
            max_ack_pending: NO_LIMIT,
            max_bytes_required: false,
        }
    }

    /// Whether these limits enable JetStream at all.
    pub fn is_enabled(&self) -> bool {
        self.memory_storage != 0 || self.disk_storage != 0
    }
}

/// External authorization ("auth callout") of an account: connections of its
/// users, except `auth_users`, are authorized by a service that answers
/// `$SYS.REQ.USER.AUTH` in this account with a user JWT of one of
/// `allowed_accounts` (`*`: any account), signed by that account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExternalAuthorization {
    /// Users that bypass the callout: the authorization service itself.
    pub auth_users: Vec<String>,
    /// Accounts the service may place users in (account keys, or just `*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_accounts: Vec<String>,
}

/// Whether an export or import carries a service (request/reply) or a stream
/// (messages flowing one way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// Requests into the exporting account, replies back.
    Service,
    /// Messages published in the exporting account, delivered to importers.
    Stream,
}

/// Subjects an account offers to other accounts. Only accounts whose JWT
/// imports it (and we sign every account JWT) receive anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Export {
    /// A label.
    pub name: String,
    /// The exported subject (wildcards allowed).
    pub subject: String,
    /// Service or stream.
    #[serde(rename = "type")]
    pub kind: ExportKind,
}

/// Subjects an account takes from another account's export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Import {
    /// A label.
    pub name: String,
    /// The exporting account's public key.
    pub account: String,
    /// The subject as the exporting account names it.
    pub subject: String,
    /// The subject in this account, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_subject: Option<String>,
    /// Service or stream.
    #[serde(rename = "type")]
    pub kind: ExportKind,
}

/// `allowed_accounts` value meaning "any account".
pub const ANY_ACCOUNT: &str = "*";

impl ExternalAuthorization {
    fn validate(&self) -> Result<(), JwtError> {
        if self.auth_users.is_empty() {
            return Err(JwtError::InvalidClaim {
                field: "authorization",
                reason: "external authorization needs at least one auth user".into(),
            });
        }
        for user in &self.auth_users {
            check_public_key("auth user", user, KeyKind::User)?;
        }
        if self.allowed_accounts.iter().any(|a| a == ANY_ACCOUNT) {
            if self.allowed_accounts.len() > 1 {
                return Err(JwtError::InvalidClaim {
                    field: "authorization",
                    reason: "`*` must be the only allowed account".into(),
                });
            }
        } else {
            for account in &self.allowed_accounts {
                check_public_key("allowed account", account, KeyKind::Account)?;
            }
        }
        Ok(())
    }
}

/// The claims of an account JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountClaims {
    /// The account's public key (`A...`), the JWT's subject.
    pub account: String,
    /// Human-readable name (the tenant slug, `SYS` for the system account).
    pub name: String,
    /// Connection and message limits.
    pub limits: AccountLimits,
    /// JetStream limits; `None` leaves JetStream disabled for the account.
    pub jetstream: Option<JetStreamLimits>,
    /// Revoked users: user public key -> unix time. User JWTs of that key issued
    /// at or before that time are rejected.
    pub revocations: BTreeMap<String, i64>,
    /// External authorization (auth callout), if any.
    pub external_authorization: Option<ExternalAuthorization>,
    /// Subjects offered to other accounts.
    pub exports: Vec<Export>,
    /// Subjects taken from other accounts' exports.
    pub imports: Vec<Import>,
    /// Expiry (unix time), if any.
    pub expires: Option<i64>,
    /// Fixed issue time (unix time) for reproducible output; `None` means now.
    pub issued_at: Option<i64>,
}

#[derive(Serialize)]
struct AccountNats<'a> {
    limits: Limits<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    revocations: &'a BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization: Option<&'a ExternalAuthorization>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    exports: &'a [Export],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    imports: &'a [Import],
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

/// nats flattens the NATS, account and JetStream limits into one object.
#[derive(Serialize)]
struct Limits<'a> {
    #[serde(flatten)]
    account: &'a AccountLimits,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    jetstream: Option<&'a JetStreamLimits>,
}

impl AccountClaims {
    /// A tenant account: NATS limits unlimited, JetStream enabled without limits
    /// (the leaf's buffered data is sourced into streams in this account). Tighten
    /// the fields afterwards as the tenant's plan requires.
    pub fn tenant(account_public_key: &str, name: &str) -> Self {
        Self {
            account: account_public_key.to_owned(),
            name: name.to_owned(),
            limits: AccountLimits::default(),
            jetstream: Some(JetStreamLimits::unlimited()),
            revocations: BTreeMap::new(),
            external_authorization: None,
            exports: Vec::new(),
            imports: Vec::new(),
            expires: None,
            issued_at: None,
        }
    }

    /// The system account (`SYS`): no JetStream (nats-server does not allow it there).
    pub fn system(account_public_key: &str) -> Self {
        Self {
            jetstream: None,
            ..Self::tenant(account_public_key, "SYS")
        }
    }

    /// Revokes every JWT of `user_public_key` issued at or before `at` (unix time).
    /// Takes effect when the re-signed account JWT reaches the hub.
    pub fn revoke_user(&mut self, user_public_key: &str, at: i64) -> Result<(), JwtError> {
        check_public_key("revoked user", user_public_key, KeyKind::User)?;
        self.revocations.insert(user_public_key.to_owned(), at);
        Ok(())
    }

    /// Revokes every JWT of `user_public_key` issued up to now.
    pub fn revoke_user_now(&mut self, user_public_key: &str) -> Result<(), JwtError> {
        self.revoke_user(user_public_key, now())
    }

    /// Signs the account JWT with the operator's key.
    pub fn sign(&self, operator: &NKey) -> Result<String, JwtError> {
        operator.expect_kind(KeyKind::Operator)?;
        check_public_key("account", &self.account, KeyKind::Account)?;
        if self.name.trim().is_empty() {
            return Err(JwtError::InvalidClaim {
                field: "name",
                reason: "account name must not be empty".into(),
            });
        }
        if let Some(js) = &self.jetstream
            && !js.is_enabled()
        {
            return Err(JwtError::InvalidClaim {
                field: "jetstream",
                reason: "limits with neither memory nor disk storage disable JetStream; \
                         use `jetstream: None` to say so"
                    .into(),
            });
        }
        if let Some(auth) = &self.external_authorization {
            auth.validate()?;
        }
        for import in &self.imports {
            check_public_key("imported account", &import.account, KeyKind::Account)?;
        }
        let nats = AccountNats {
            limits: Limits {
                account: &self.limits,
                jetstream: self.jetstream.as_ref(),
            },
            revocations: &self.revocations,
            authorization: self.external_authorization.as_ref(),
            exports: &self.exports,
            imports: &self.imports,
            kind: "account",
            version: 2,
        };
        encode(
            operator,
            &self.account,
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
    fn tenant_account_has_explicit_limits_and_jetstream() {
        let op = NKey::generate(KeyKind::Operator);
        let acct = NKey::generate(KeyKind::Account);
        let claims = AccountClaims::tenant(&acct.public_key(), "acme");
        let token = claims.sign(&op).unwrap();
        let decoded = decode_claims(&token).unwrap();
        assert_eq!(claim_type(&decoded), Some("account"));
        assert_eq!(decoded["iss"], op.public_key());
        assert_eq!(decoded["sub"], acct.public_key());
        let limits = &decoded["nats"]["limits"];
        for key in [
            "subs", "data", "payload", "conn", "leaf", "imports", "exports",
        ] {
            assert_eq!(limits[key], -1, "{key}");
        }
        assert_eq!(limits["wildcards"], true);
        assert_eq!(limits["mem_storage"], -1);
        assert_eq!(limits["disk_storage"], -1);
        assert_eq!(limits["streams"], -1);
        assert_eq!(limits["consumer"], -1);
        assert!(decoded["nats"].get("revocations").is_none());
    }

    #[test]
    fn exports_and_imports_are_written_and_checked() {
        let op = NKey::generate(KeyKind::Operator);
        let acct = NKey::generate(KeyKind::Account);
        let other = NKey::generate(KeyKind::Account);
        let mut claims = AccountClaims::tenant(&acct.public_key(), "acme");
        claims.exports.push(Export {
            name: "deliver".into(),
            subject: "sr.deliver.acme.>".into(),
            kind: ExportKind::Stream,
        });
        claims.imports.push(Import {
            name: "api".into(),
            account: other.public_key(),
            subject: "$JS.API.CONSUMER.RESET.INGEST.c".into(),
            local_subject: Some("$JS.x.API.CONSUMER.RESET.INGEST.c".into()),
            kind: ExportKind::Service,
        });
        let decoded = decode_claims(&claims.sign(&op).unwrap()).unwrap();
        assert_eq!(decoded["nats"]["exports"][0]["type"], "stream");
        assert_eq!(
            decoded["nats"]["exports"][0]["subject"],
            "sr.deliver.acme.>"
        );
        assert_eq!(decoded["nats"]["imports"][0]["type"], "service");
        assert_eq!(decoded["nats"]["imports"][0]["account"], other.public_key());
        assert_eq!(
            decoded["nats"]["imports"][0]["local_subject"],
            "$JS.x.API.CONSUMER.RESET.INGEST.c"
        );
        claims.imports[0].account = "not a key".into();
        assert!(claims.sign(&op).is_err(), "an import names an account key");
        let plain = AccountClaims::tenant(&acct.public_key(), "acme");
        let decoded = decode_claims(&plain.sign(&op).unwrap()).unwrap();
        assert!(decoded["nats"].get("exports").is_none());
        assert!(decoded["nats"].get("imports").is_none());
    }

    #[test]
    fn system_account_has_no_jetstream() {
        let op = NKey::generate(KeyKind::Operator);
        let sys = NKey::generate(KeyKind::Account);
        let decoded =
            decode_claims(&AccountClaims::system(&sys.public_key()).sign(&op).unwrap()).unwrap();
        assert_eq!(decoded["name"], "SYS");
        assert!(decoded["nats"]["limits"].get("mem_storage").is_none());
        assert!(decoded["nats"]["limits"].get("disk_storage").is_none());
    }

    #[test]
    fn revocations_are_written() {
        let op = NKey::generate(KeyKind::Operator);
        let acct = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let mut claims = AccountClaims::tenant(&acct.public_key(), "acme");
        claims.revoke_user(&user.public_key(), 1234).unwrap();
        assert!(claims.revoke_user(&acct.public_key(), 1).is_err());
        let decoded = decode_claims(&claims.sign(&op).unwrap()).unwrap();
        assert_eq!(decoded["nats"]["revocations"][user.public_key()], 1234);
    }

    #[test]
    fn external_authorization_is_written_and_checked() {
        let op = NKey::generate(KeyKind::Operator);
        let acct = NKey::generate(KeyKind::Account);
        let service = NKey::generate(KeyKind::User);
        let mut claims = AccountClaims::tenant(&acct.public_key(), "LEAVES");
        claims.external_authorization = Some(ExternalAuthorization {
            auth_users: vec![service.public_key()],
            allowed_accounts: vec![ANY_ACCOUNT.into()],
        });
        let decoded = decode_claims(&claims.sign(&op).unwrap()).unwrap();
        let auth = &decoded["nats"]["authorization"];
        assert_eq!(auth["auth_users"][0], service.public_key());
        assert_eq!(auth["allowed_accounts"][0], "*");

        let mut bad = claims.clone();
        bad.external_authorization = Some(ExternalAuthorization::default());
        assert!(bad.sign(&op).is_err(), "no auth users");
        bad.external_authorization = Some(ExternalAuthorization {
            auth_users: vec![acct.public_key()],
            allowed_accounts: vec![],
        });
        assert!(bad.sign(&op).is_err(), "an account key is not a user");
        bad.external_authorization = Some(ExternalAuthorization {
            auth_users: vec![service.public_key()],
            allowed_accounts: vec![ANY_ACCOUNT.into(), acct.public_key()],
        });
        assert!(bad.sign(&op).is_err(), "`*` must stand alone");
    }

    #[test]
    fn misuse_is_rejected() {
        let op = NKey::generate(KeyKind::Operator);
        let acct = NKey::generate(KeyKind::Account);
        let claims = AccountClaims::tenant(&acct.public_key(), "acme");
        assert!(
            claims.sign(&acct).is_err(),
            "an account key cannot sign an account"
        );
        let bad_subject = AccountClaims::tenant(&op.public_key(), "acme");
        assert!(bad_subject.sign(&op).is_err());
        let mut disabled = claims.clone();
        disabled.jetstream = Some(JetStreamLimits {
            memory_storage: 0,
            disk_storage: 0,
            ..JetStreamLimits::unlimited()
        });
        assert!(disabled.sign(&op).is_err());
    }
}
