//! Device authorization at the site leaf: the leaf's auth callout config and
//! the NATS user a registered device gets.
//!
//! Why this module exists: the leaf accepts every client certificate the
//! tenant CA issued (`verify: true`), and a device certificate is one. To
//! confine each device to its own subjects and limits, the leaf hands every
//! client connection to an authorization service running beside it (auth
//! callout of NATS 2.10 and later, in server config mode: the leaf has no
//! operator). That
//! service's keys are generated at the edge, where they are used, so the
//! control plane never holds them: the rendered `nats-leaf.conf` only says
//! `include "device-auth.conf"` (and stays a pure function of stored fields,
//! checksummed for drift), and the edge writes that file with
//! [`render_device_auth_conf`] from the public keys it generated.
//!
//! The included file declares:
//! * the callout (`authorization { auth_callout { issuer, auth_users } }`):
//!   the issuer is an account nkey whose seed only the edge service holds; it
//!   signs every user JWT the service returns, placed in the leaf's global
//!   account (`aud` = [`DEVICE_ACCOUNT`]), the one bound to the tenant's
//!   account on the hub;
//! * the service's own user (an nkey user in the global account, which
//!   subscribes to `$SYS.REQ.USER.AUTH`) and a system-account user (to close a
//!   revoked device's live connection with `$SYS.REQ.SERVER.{id}.KICK`), both
//!   listed as `auth_users` so they bypass the callout. Declaring only a
//!   system account beside `$G` keeps JetStream on the global account.

use serde_json::Value;
use uuid::Uuid;

use crate::jwt::{KeyKind, NO_LIMIT, Permission, UserClaims};
use crate::syntax::{ConfWriter, ConfigError};

/// The file `nats-leaf.conf` includes (beside it) when device authorization
/// is on.
pub const DEVICE_AUTH_INCLUDE: &str = "device-auth.conf";
/// Where callout-issued users are placed: the leaf's global account.
pub const DEVICE_ACCOUNT: &str = "$G";
/// The leaf's system account, declared by the include for the service's kicks.
pub const DEVICE_SYSTEM_ACCOUNT: &str = "SR_SYS";

/// Public keys of the edge authorization service (the seeds stay at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthKeys {
    /// The callout issuer (`A...`): signs the users the service returns.
    pub issuer: String,
    /// The service's user (`U...`) in the global account.
    pub service_user: String,
    /// The service's system-account user (`U...`).
    pub system_user: String,
}

fn check_key(field: &'static str, key: &str, kind: KeyKind) -> Result<(), ConfigError> {
    match nkeys::KeyPair::from_public_key(key) {
        Ok(pair) if KeyKind::from_nkeys(&pair.key_pair_type()) == Some(kind) => Ok(()),
        _ => Err(ConfigError::invalid(
            field,
            key,
            "not a public nkey of the right kind",
        )),
    }
}

/// Renders `device-auth.conf` for `keys` (each checked to be a public nkey of
/// its kind, so nothing else can reach the config).
pub fn render_device_auth_conf(keys: &DeviceAuthKeys) -> Result<String, ConfigError> {
    check_key("callout issuer", &keys.issuer, KeyKind::Account)?;
    check_key("service user", &keys.service_user, KeyKind::User)?;
    check_key("system user", &keys.system_user, KeyKind::User)?;
    if keys.service_user == keys.system_user {
        return Err(ConfigError::Inconsistent(
            "the service and system users must differ".into(),
        ));
    }
    let mut w = ConfWriter::new();
    w.comment(
        "device-auth.conf: generated at the edge by serviceradar-agent (device-auth init)\n\
         with keys it made itself; included by nats-leaf.conf. Every client connection\n\
         except the two service users below is sent to the authorization service.",
    );
    w.blank();
    w.open("accounts");
    w.open("SR_SYS");
    w.open_list("users");
    w.open_anon();
    w.string("nkey", &keys.system_user);
    w.close();
    w.close_list();
    w.close();
    w.close();
    w.string("system_account", DEVICE_SYSTEM_ACCOUNT);
    w.blank();
    w.open("authorization");
    w.open_list("users");
    w.open_anon();
    w.string("nkey", &keys.service_user);
    w.close();
    w.close_list();
    w.open("auth_callout");
    w.string("issuer", &keys.issuer);
    w.open_list("auth_users");
    w.line_string(&keys.service_user);
    w.line_string(&keys.system_user);
    w.close_list();
    w.close();
    w.close();
    Ok(w.finish())
}

/// The JetStream KV bucket, one per tenant in its account on the hub, that
/// holds the device registry for the edge: key [`device_registry_key`],
/// value a [`DeviceRegistryEntry`]. The control plane keeps it in sync; each
/// site's authorization service copies its site's keys into its leaf.
pub const DEVICE_REGISTRY_BUCKET: &str = "SR_DEVICES";

/// `{site_id}.{device_id}`: a site watches `{site_id}.>`.
pub fn device_registry_key(site_id: Uuid, device_id: Uuid) -> String {
    format!("{site_id}.{device_id}")
}

/// One device as the edge sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRegistryEntry {
    /// The device.
    pub device_id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its site.
    pub site_id: Uuid,
    /// `active` or `revoked`.
    pub status: String,
    /// Serial (hex) of the last certificate issued, if any.
    pub cert_serial: Option<String>,
    /// Expiry (Unix ms) of the last certificate issued, if any.
    pub cert_not_after: Option<i64>,
    /// Largest payload in bytes.
    pub max_payload: i64,
    /// Most subscriptions.
    pub max_subscriptions: i64,
    /// Bytes per second.
    pub data_rate: i64,
}

impl DeviceRegistryEntry {
    /// Whether the device may connect (not revoked).
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// Where the leaf maps a device's data: `edge.{tenant}.{site}.device`, inside
/// the site's buffer (`edge.{tenant}.{site}.>`), so the data is buffered like
/// a collector's, and with the site in its subject, so no other site's
/// buffer can capture it.
pub fn device_data_prefix(tenant_slug: &str, site_slug: &str) -> Result<String, ConfigError> {
    Ok(format!(
        "{}.{DEVICE_TOKEN}",
        super::buffer::buffer_subject_prefix(tenant_slug, site_slug)?
    ))
}

/// The token after the site in a device's buffered subjects.
pub const DEVICE_TOKEN: &str = "device";

/// The leaf's subject mappings (`from`, `to`): a device publishes
/// `device.<id>.metrics.>` and `device.<id>.status` (the seed's subjects);
/// the leaf rewrites them into its buffer, under
/// [`device_data_prefix`]`.<id>`, before anything else sees them (nats-server
/// maps a client's subject while parsing, before the permission check and
/// routing). Unmapped, a device's subject would be the same at every site of
/// the tenant, and every site's buffer capturing it would store it.
pub fn device_subject_mappings(
    tenant_slug: &str,
    site_slug: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let prefix = device_data_prefix(tenant_slug, site_slug)?;
    Ok(vec![
        (
            "device.*.metrics.>".to_owned(),
            format!("{prefix}.{{{{wildcard(1)}}}}.metrics.>"),
        ),
        (
            "device.*.status".to_owned(),
            format!("{prefix}.{{{{wildcard(1)}}}}.status"),
        ),
    ])
}

/// Subjects a device may publish to: its metrics, its status (as the device
/// names them and as the leaf maps them under `data_prefix`, the subject the
/// permission is checked on), replies.
pub fn device_publish_subjects(device_id: Uuid, data_prefix: &str) -> Vec<String> {
    vec![
        format!("device.{device_id}.metrics.>"),
        format!("device.{device_id}.status"),
        format!("{data_prefix}.{device_id}.metrics.>"),
        format!("{data_prefix}.{device_id}.status"),
        "_INBOX.>".to_owned(),
    ]
}

/// Subjects a device may subscribe to: its commands, replies.
pub fn device_subscribe_subjects(device_id: Uuid) -> Vec<String> {
    vec![format!("device.{device_id}.cmd"), "_INBOX.>".to_owned()]
}

/// The NATS limits of a device user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceUserLimits {
    /// Largest message payload in bytes.
    pub max_payload: i64,
    /// Most subscriptions at once.
    pub max_subscriptions: i64,
    /// nats-server's `data` limit of the user, in bytes (the registry's rate).
    pub data: i64,
}

/// The user claims of `device_id`'s connection (key `user_nkey`, chosen by
/// the server): its own subjects only (`data_prefix`: see
/// [`device_publish_subjects`]), its limits, plain client connections,
/// placed in [`DEVICE_ACCOUNT`], expiring at `expires` (unix time).
pub fn device_user_claims(
    user_nkey: &str,
    device_id: Uuid,
    data_prefix: &str,
    limits: DeviceUserLimits,
    expires: i64,
) -> UserClaims {
    let mut claims = UserClaims::new(user_nkey, &format!("device-{device_id}"));
    claims.publish = Permission {
        allow: device_publish_subjects(device_id, data_prefix),
        deny: Vec::new(),
    };
    claims.subscribe = Permission {
        allow: device_subscribe_subjects(device_id),
        deny: Vec::new(),
    };
    claims.payload = limits.max_payload;
    claims.subs = limits.max_subscriptions;
    claims.data = if limits.data > 0 {
        limits.data
    } else {
        NO_LIMIT
    };
    claims.allowed_connection_types = vec![crate::jwt::CONNECTION_STANDARD.to_owned()];
    claims.tags = vec![format!("sr-device:{device_id}")];
    claims.expires = Some(expires);
    claims.audience = Some(DEVICE_ACCOUNT.to_owned());
    claims
}

/// The user claims of a collector's connection: the rights every verified
/// client of the leaf had before the callout (the whole global account),
/// except publishing device data (a device's data comes from the device
/// alone; commands to devices, `device.<id>.cmd`, stay allowed), placed in
/// [`DEVICE_ACCOUNT`].
pub fn collector_user_claims(user_nkey: &str, name: &str, expires: i64) -> UserClaims {
    let mut claims = UserClaims::new(user_nkey, name);
    claims.publish = Permission {
        allow: Vec::new(),
        deny: COLLECTOR_DENIED_PUBLISH
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    claims.allowed_connection_types = vec![crate::jwt::CONNECTION_STANDARD.to_owned()];
    claims.expires = Some(expires);
    claims.audience = Some(DEVICE_ACCOUNT.to_owned());
    claims
}

/// What a collector may not publish: device data, as a device names it and
/// as the leaf maps it (the check sees the mapped subject).
const COLLECTOR_DENIED_PUBLISH: [&str; 3] =
    ["device.*.metrics.>", "device.*.status", "edge.*.*.device.>"];

/// The body of `$SYS.REQ.SERVER.{server_id}.KICK` closing connection `cid`.
pub fn kick_request(cid: u64) -> Value {
    serde_json::json!({ "cid": cid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{NKey, decode_claims};

    fn keys() -> DeviceAuthKeys {
        DeviceAuthKeys {
            issuer: NKey::generate(KeyKind::Account).public_key(),
            service_user: NKey::generate(KeyKind::User).public_key(),
            system_user: NKey::generate(KeyKind::User).public_key(),
        }
    }

    #[test]
    fn the_include_names_the_issuer_and_both_service_users() {
        let k = keys();
        let text = render_device_auth_conf(&k).unwrap();
        assert!(text.contains(&format!("issuer: \"{}\"", k.issuer)));
        assert_eq!(text.matches(&k.service_user).count(), 2, "{text}");
        assert_eq!(text.matches(&k.system_user).count(), 2, "{text}");
        assert!(text.contains("system_account: \"SR_SYS\""));
    }

    #[test]
    fn device_data_is_mapped_into_the_site_buffer_and_denied_to_collectors() {
        let maps = device_subject_mappings("acme", "nyc").unwrap();
        assert_eq!(
            maps,
            vec![
                (
                    "device.*.metrics.>".to_owned(),
                    "edge.acme.nyc.device.{{wildcard(1)}}.metrics.>".to_owned()
                ),
                (
                    "device.*.status".to_owned(),
                    "edge.acme.nyc.device.{{wildcard(1)}}.status".to_owned()
                ),
            ]
        );
        assert!(device_subject_mappings("acme", "n.>").is_err());
        let issuer = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User).public_key();
        let jwt = collector_user_claims(&user, "collector-x", 4_000_000_000)
            .sign(&issuer)
            .unwrap();
        let c = decode_claims(&jwt).unwrap();
        assert_eq!(
            c["nats"]["pub"]["deny"],
            serde_json::json!(["device.*.metrics.>", "device.*.status", "edge.*.*.device.>"])
        );
        assert!(c["nats"]["pub"].get("allow").is_none());
    }

    #[test]
    fn keys_of_the_wrong_kind_or_text_are_refused() {
        let mut k = keys();
        k.issuer = k.service_user.clone();
        assert!(render_device_auth_conf(&k).is_err());
        let mut k = keys();
        k.service_user = "U\" }\nauthorization {".into();
        assert!(render_device_auth_conf(&k).is_err());
        let mut k = keys();
        k.system_user = k.service_user.clone();
        assert!(render_device_auth_conf(&k).is_err());
    }

    #[test]
    fn a_device_user_is_confined_to_its_subjects_and_limits() {
        let issuer = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User).public_key();
        let id = Uuid::new_v4();
        let limits = DeviceUserLimits {
            max_payload: 1024,
            max_subscriptions: 5,
            data: 4096,
        };
        let jwt = device_user_claims(&user, id, "edge.acme.nyc.device", limits, 4_000_000_000)
            .sign(&issuer)
            .unwrap();
        let c = decode_claims(&jwt).unwrap();
        assert_eq!(c["aud"], "$G");
        assert_eq!(c["sub"], user);
        assert_eq!(c["nats"]["payload"], 1024);
        assert_eq!(c["nats"]["subs"], 5);
        assert_eq!(c["nats"]["data"], 4096);
        assert_eq!(
            c["nats"]["pub"]["allow"],
            serde_json::json!([
                format!("device.{id}.metrics.>"),
                format!("device.{id}.status"),
                format!("edge.acme.nyc.device.{id}.metrics.>"),
                format!("edge.acme.nyc.device.{id}.status"),
                "_INBOX.>"
            ])
        );
        assert_eq!(
            c["nats"]["sub"]["allow"],
            serde_json::json!([format!("device.{id}.cmd"), "_INBOX.>"])
        );
    }
}
