//! Connections of the control plane to the hub `nats-server`, and the one
//! system request they share (pushing an account JWT).
//!
//! Ingestion (one user per tenant account, plus a system-account user that
//! pushes tenant accounts) and the leaf authorization service (its own user,
//! plus a system user that pushes the `LEAVES` account) all connect the same
//! way: freshly minted credentials that expire (see
//! [`ServiceUserLifetime`]), held in memory only — never written to disk —,
//! the hub URL, and a CA when the hub speaks TLS. Each service reconnects
//! with a new user before its current one expires.
//!
//! A hub cluster is reached the same way with every node's URL: the client
//! is given them all, connects to one, and when that node dies reconnects
//! to another (async-nats tries the list in turn), so the services go on.

use std::path::PathBuf;
use std::time::Duration;

pub use serviceradar_identity::ServiceUserLifetime;

use crate::HubError;

/// How long a connection attempt to the hub may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how the control plane reaches the hub: its client URL, the CA
/// to verify a `tls://` hub with, and how long the users it mints for itself
/// live. Ingestion and the leaf authorization service share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEndpoint {
    /// Client URL of the hub (`nats://host:4222` or `tls://...`); for a hub
    /// cluster every node's, comma-separated (see [`HubEndpoint::urls`]).
    pub url: String,
    /// CA file for a `tls://` hub URL.
    pub ca_file: Option<PathBuf>,
    /// Lifetime of the services' NATS users (renewed at three quarters).
    pub service_users: ServiceUserLifetime,
}

impl HubEndpoint {
    /// The hub at `url`, no CA, service users of the default lifetime.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            service_users: ServiceUserLifetime::default(),
        }
    }

    /// The hub's client URLs: `url` split at commas, blanks dropped.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// How many servers the hub has (the URLs given): a hub of three or more
    /// is a cluster whose streams can keep three replicas.
    pub fn servers(&self) -> usize {
        self.urls().len()
    }

    /// Connects as the user of `creds` (the text of a `.creds` file, kept in
    /// memory); `name` is the connection name the hub shows.
    pub async fn connect(&self, creds: &str, name: &str) -> Result<async_nats::Client, HubError> {
        let (hub_url, ca_file) = (&self.url, self.ca_file.as_deref());
        let mut options = async_nats::ConnectOptions::with_credentials(creds)
            .map_err(|source| HubError::Creds {
                name: name.to_owned(),
                source,
            })?
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(log_event(name, hub_url));
        if let Some(ca) = ca_file {
            options = options
                .require_tls(true)
                .add_root_certificates(ca.to_path_buf());
        }
        // Every node's URL: the client connects to one (in random order)
        // and, when it dies, to another.
        options
            .connect(self.urls())
            .await
            .map_err(|source| HubError::Connect {
                url: hub_url.to_owned(),
                name: name.to_owned(),
                source,
            })
    }
}

/// Logs a hub connection's events with which connection and which hub they
/// are about (the client's own default said only `event: client error: nats:
/// IO error`): losing the connection is a warning, getting it back news.
fn log_event(
    name: &str,
    hub_url: &str,
) -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let (name, hub) = (name.to_owned(), hub_url.to_owned());
    move |event| {
        use async_nats::Event;
        match &event {
            Event::Connected => tracing::info!(connection = %name, %hub, "hub connection up"),
            Event::Disconnected => {
                tracing::warn!(connection = %name, %hub, "hub connection lost; reconnecting")
            }
            Event::ClientError(e) => {
                tracing::warn!(connection = %name, %hub, error = %e, "hub connection error")
            }
            Event::ServerError(e) => {
                tracing::warn!(connection = %name, %hub, error = %e, "the hub reported an error")
            }
            other => {
                tracing::info!(connection = %name, %hub, event = %other, "hub connection event")
            }
        }
        std::future::ready(())
    }
}

/// Pushes an account JWT to the hub's account resolver
/// (`$SYS.REQ.CLAIMS.UPDATE`; `system` must be a system-account user) and
/// checks the hub accepted it, waiting at most `timeout` for the reply.
/// Errors name the account (from the JWT's claims).
pub async fn push_account_jwt(
    system: &async_nats::Client,
    jwt: &str,
    timeout: Duration,
) -> Result<(), HubError> {
    let reply = tokio::time::timeout(
        timeout,
        system.request("$SYS.REQ.CLAIMS.UPDATE", jwt.to_owned().into()),
    )
    .await
    .map_err(|_| HubError::PushTimeout {
        account: account_label(jwt),
    })?
    .map_err(|source| HubError::Push {
        account: account_label(jwt),
        source,
    })?;
    let reply: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(|source| HubError::PushReply {
            account: account_label(jwt),
            source,
        })?;
    if reply["data"]["code"] != 200 {
        return Err(HubError::PushRefused {
            account: account_label(jwt),
            reply: reply.to_string(),
        });
    }
    Ok(())
}

/// The account JWT the hub's account resolver holds for `account` (its
/// public key), or `None` if it holds none:
/// `$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP` (`system` must be a system-account
/// user), which a full resolver answers with the JWT, or with an empty
/// message for an account it does not know.
pub async fn account_jwt_on_hub(
    system: &async_nats::Client,
    account: &str,
    timeout: Duration,
) -> Result<Option<String>, HubError> {
    let subject = format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP");
    let reply = tokio::time::timeout(timeout, system.request(subject, Default::default()))
        .await
        .map_err(|_| HubError::LookupTimeout {
            account: account.to_owned(),
        })?
        .map_err(|source| HubError::Lookup {
            account: account.to_owned(),
            source,
        })?;
    let jwt = String::from_utf8_lossy(&reply.payload).trim().to_owned();
    Ok((!jwt.is_empty()).then_some(jwt))
}

/// The account an account JWT is about, for errors: its name and public
/// key, as far as the JWT can be read.
fn account_label(jwt: &str) -> String {
    let Ok(claims) = serviceradar_natsconf::jwt::decode_claims(jwt) else {
        return "an unreadable JWT".to_owned();
    };
    match (claims["name"].as_str(), claims["sub"].as_str()) {
        (Some(name), Some(key)) => format!("{name} ({key})"),
        (None, Some(key)) => key.to_owned(),
        (Some(name), None) => name.to_owned(),
        (None, None) => "an unnamed account".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_cluster_is_every_url_of_a_comma_list() {
        let one = HubEndpoint::new("nats://127.0.0.1:4322");
        assert_eq!(one.urls(), ["nats://127.0.0.1:4322"]);
        assert_eq!(one.servers(), 1);
        let three = HubEndpoint::new("tls://a:4322, tls://b:4322,,tls://c:4322 ");
        assert_eq!(
            three.urls(),
            ["tls://a:4322", "tls://b:4322", "tls://c:4322"]
        );
        assert_eq!(three.servers(), 3);
    }
    use serviceradar_natsconf::jwt::{AccountClaims, KeyKind, NKey, Operator};

    #[test]
    fn push_errors_name_the_account_not_its_jwt() {
        let operator = Operator::generate("op").unwrap();
        let account = NKey::generate(KeyKind::Account);
        let jwt = operator
            .sign_account(&AccountClaims::tenant(&account.public_key(), "acme"))
            .unwrap();
        assert_eq!(
            account_label(&jwt),
            format!("acme ({})", account.public_key())
        );
        assert_eq!(account_label("not a jwt"), "an unreadable JWT");
        let e = HubError::PushTimeout {
            account: account_label(&jwt),
        };
        assert!(!format!("{e:#}").contains(&jwt));
    }
}
