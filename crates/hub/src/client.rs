//! Connections of the control plane to the hub `nats-server`, and the one
//! system request they share (pushing an account JWT).
//!
//! Ingestion (one user per tenant account, plus a system-account user that
//! pushes tenant accounts) and the leaf authorization service (its own user,
//! plus a system user that pushes the `LEAVES` account) all connect the same
//! way: a freshly minted `.creds` file written 0600 under the service's creds
//! directory, the hub URL, and a CA when the hub speaks TLS.

use std::path::PathBuf;
use std::time::Duration;

use serviceradar_identity::write_secret_file;

use crate::HubError;
use crate::error::identity;

/// How long a connection attempt to the hub may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how the control plane reaches the hub: its client URL, the CA
/// to verify a `tls://` hub with, and the directory its minted `.creds`
/// files are written to (0600). Ingestion and the leaf authorization service
/// share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEndpoint {
    /// Client URL of the hub (`nats://host:4222` or `tls://...`).
    pub url: String,
    /// CA file for a `tls://` hub URL.
    pub ca_file: Option<PathBuf>,
    /// Directory for the service's creds files.
    pub creds_dir: PathBuf,
}

impl HubEndpoint {
    /// The hub at `url`, creds written under `creds_dir`, no CA.
    pub fn new(url: impl Into<String>, creds_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            creds_dir: creds_dir.into(),
        }
    }

    /// Connects as the user of `creds`, written to `file` in the creds
    /// directory first; `name` is the connection name the hub shows.
    pub async fn connect(
        &self,
        file: &str,
        creds: &str,
        name: &str,
    ) -> Result<async_nats::Client, HubError> {
        let (hub_url, ca_file, creds_dir) = (&self.url, self.ca_file.as_deref(), &self.creds_dir);
        std::fs::create_dir_all(creds_dir).map_err(|source| HubError::Io {
            action: "creating",
            path: creds_dir.to_owned(),
            source,
        })?;
        let path = creds_dir.join(file);
        write_secret_file(&path, creds.as_bytes()).map_err(identity("writing the creds file"))?;
        let mut options = async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .map_err(|source| HubError::Io {
                action: "reading",
                path: path.clone(),
                source,
            })?
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = ca_file {
            options = options
                .require_tls(true)
                .add_root_certificates(ca.to_path_buf());
        }
        options
            .connect(hub_url)
            .await
            .map_err(|source| HubError::Connect {
                url: hub_url.to_owned(),
                name: name.to_owned(),
                source,
            })
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
