//! [`HubError`]: what failed on the way to or at the hub.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use serviceradar_identity::IdentityError;
use serviceradar_natsconf::ConfigError;
use serviceradar_natsconf::jwt::JwtError;
use serviceradar_pki::IssueError;
use serviceradar_store::StoreError;

/// What failed while connecting to the hub, pushing an account to it,
/// writing its config, or running the leaf authorization service. (A leaf
/// that is *refused* is not an error of the service: see
/// [`crate::leaf_auth::Refusal`].)
///
/// Each variant names what failed and carries the cause as its
/// [`source`](std::error::Error::source). `{e}` prints this error's own
/// message; `{e:#}` appends the causes (`message: cause: cause`), as `anyhow`
/// does, so callers that log `format!("{e:#}")` keep the whole story. No
/// message holds key material or creds: paths, URLs, names and the hub's
/// replies only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A file or directory could not be created, read, resolved or written.
    Io {
        /// What was being done (`"creating"`, `"writing"`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path that goes into the hub config is not UTF-8.
    NonUtf8Path {
        /// The path.
        path: PathBuf,
    },
    /// The keyring, a CA or a NATS identity failed.
    Identity {
        /// What was being done (`"loading the platform root CA"`, ...).
        what: &'static str,
        /// The cause.
        source: IdentityError,
    },
    /// The store failed.
    Store {
        /// What was being done (`"listing tenants"`, ...).
        what: &'static str,
        /// The cause.
        source: StoreError,
    },
    /// The hub's server certificate could not be issued.
    IssueCertificate(#[source] IssueError),
    /// A NATS JWT could not be produced.
    Jwt {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: JwtError,
    },
    /// `nats-hub.conf` could not be rendered.
    RenderConfig(#[source] ConfigError),
    /// A hub cluster's options are not usable (fewer than three nodes, ...).
    Cluster(String),
    /// A hub node's certificate could not be read back to pin it (a bug: it
    /// was issued by this process).
    PinCertificate(#[source] serviceradar_pki::CertificateError),
    /// Minted credentials could not be read back (a bug: they are built
    /// by this process).
    Creds {
        /// The connection name they were for.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection to the hub failed.
    Connect {
        /// The hub's URL.
        url: String,
        /// The connection name.
        name: String,
        /// The cause.
        source: async_nats::ConnectError,
    },
    /// A request on an open hub connection failed.
    Nats {
        /// What was being done (`"subscribing to authorization requests"`, ...).
        what: &'static str,
        /// The cause.
        source: async_nats::Error,
    },
    /// The hub ended a subscription the service depends on.
    SubscriptionClosed {
        /// The subscription.
        what: &'static str,
    },
    /// The hub did not answer an account push in time.
    PushTimeout {
        /// The account (its name, else its public key).
        account: String,
    },
    /// Sending an account push failed.
    Push {
        /// The account.
        account: String,
        /// The cause.
        source: async_nats::RequestError,
    },
    /// The hub did not answer a look-up of the account JWT it holds in time.
    LookupTimeout {
        /// The account's public key.
        account: String,
    },
    /// Asking the hub for the account JWT it holds failed.
    Lookup {
        /// The account's public key.
        account: String,
        /// The cause.
        source: async_nats::RequestError,
    },
    /// The hub's answer to an account push is not JSON.
    PushReply {
        /// The account.
        account: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The hub refused an account JWT.
    PushRefused {
        /// The account.
        account: String,
        /// The hub's reply.
        reply: String,
    },
    /// The `nats-server` binary of the embedded hub was not found.
    NatsServerMissing {
        /// The path or name looked for.
        binary: PathBuf,
    },
    /// The embedded hub's `nats-server` could not be started.
    HubSpawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process listens on a port of the embedded hub.
    HubPortInUse {
        /// Which listener (`client`, `leafnode`, `monitoring`).
        listener: &'static str,
        /// The address dialled.
        addr: String,
    },
    /// The embedded hub exited while starting.
    HubExited {
        /// Its exit status.
        status: String,
        /// The end of its log (one line).
        log: String,
    },
    /// The embedded hub did not accept client connections in time.
    HubNotReady {
        /// The client address dialled.
        addr: String,
        /// How long it was given.
        timeout: std::time::Duration,
        /// The end of its log (one line).
        log: String,
    },
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { action, path, .. } => write!(f, "{action} {}", path.display()),
            Self::NonUtf8Path { path } => write!(f, "the path {} is not UTF-8", path.display()),
            Self::Identity { what, .. } | Self::Store { what, .. } | Self::Jwt { what, .. } => {
                f.write_str(what)
            }
            Self::IssueCertificate(_) => f.write_str("issuing the hub server certificate"),
            Self::RenderConfig(_) => f.write_str("rendering nats-hub.conf"),
            Self::Cluster(why) => write!(f, "hub cluster: {why}"),
            Self::PinCertificate(_) => f.write_str("pinning a hub node's certificate"),
            Self::Creds { name, .. } => write!(f, "reading the minted credentials of {name}"),
            Self::Connect { url, name, .. } => {
                write!(f, "connecting to the hub at {url} as {name}")
            }
            Self::Nats { what, .. } => f.write_str(what),
            Self::SubscriptionClosed { what } => write!(f, "the hub closed the {what}"),
            Self::PushTimeout { account } => {
                write!(f, "no reply to the push of the account {account}")
            }
            Self::Push { account, .. } => write!(f, "pushing the account JWT of {account}"),
            Self::LookupTimeout { account } => {
                write!(f, "no reply to the look-up of the account {account}")
            }
            Self::Lookup { account, .. } => {
                write!(f, "looking up the account JWT the hub holds for {account}")
            }
            Self::PushReply { account, .. } => {
                write!(f, "reading the hub's reply to the push of {account}")
            }
            Self::PushRefused { account, reply } => {
                write!(f, "the hub refused the account JWT of {account}: {reply}")
            }
            Self::NatsServerMissing { binary } => {
                let name = binary.display();
                if binary.components().count() > 1 {
                    write!(f, "nats-server not found at {name}: ")?;
                } else {
                    write!(f, "`{name}` not found on PATH: ")?;
                }
                f.write_str(crate::embedded::INSTALL_HINT)
            }
            Self::HubSpawn { binary, .. } => write!(f, "starting {}", binary.display()),
            Self::HubPortInUse { listener, addr } => write!(
                f,
                "the embedded hub's {listener} port {addr} is already in use (another hub or leaf?); choose another with --hub-{listener}-listen"
            ),
            Self::HubExited { status, log } => {
                write!(
                    f,
                    "the embedded hub exited while starting ({status}): {log}"
                )
            }
            Self::HubNotReady { addr, timeout, log } => write!(
                f,
                "the embedded hub did not accept connections on {addr} within {timeout:?}: {log}"
            ),
        }?;
        if f.alternate() {
            write_causes(self.source(), f)?;
        }
        Ok(())
    }
}

/// Writes `: cause` for `first` and each of its sources.
fn write_causes(
    first: Option<&(dyn StdError + 'static)>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let mut cause = first;
    while let Some(error) = cause {
        write!(f, ": {error}")?;
        cause = error.source();
    }
    Ok(())
}

/// Formats an error with its causes (`error: cause: cause`), for log lines
/// about errors of other crates.
pub(crate) struct WithCauses<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for WithCauses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        write_causes(self.0.source(), f)
    }
}

/// Maps an identity failure while `what`.
pub(crate) fn identity(what: &'static str) -> impl FnOnce(IdentityError) -> HubError {
    move |source| HubError::Identity { what, source }
}

/// Maps a store failure while `what`.
pub(crate) fn store(what: &'static str) -> impl FnOnce(StoreError) -> HubError {
    move |source| HubError::Store { what, source }
}

/// Maps a failure of a request on a hub connection while `what`.
pub(crate) fn nats<E>(what: &'static str) -> impl FnOnce(E) -> HubError
where
    E: StdError + Send + Sync + 'static,
{
    move |source| HubError::Nats {
        what,
        source: Box::new(source),
    }
}

/// A [`HubError::Io`] of `action` on `path`, for `map_err`.
pub(crate) fn io_error(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.to_owned();
    move |source| HubError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_display_appends_each_cause_once() {
        let e = HubError::Identity {
            what: "writing the creds file",
            source: IdentityError::Io {
                action: "creating",
                path: "/nowhere/x.creds".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
        };
        assert_eq!(e.to_string(), "writing the creds file");
        assert_eq!(
            format!("{e:#}"),
            "writing the creds file: creating /nowhere/x.creds: permission denied"
        );
        assert_eq!(WithCauses(&e).to_string(), format!("{e:#}"));
    }
}
