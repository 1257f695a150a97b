//! The one error type of this crate.
//!
//! Bundles are built from data the control plane already validated, but a bundle
//! ends up as files and a shell script on a customer's machine, so every input is
//! checked again here (defence in depth). Each variant says which input was wrong
//! and why; none of them carries key material.

use thiserror::Error;

/// Why a bundle (or an archive) could not be built.
///
/// All variants except [`BundleError::Io`] are caller errors: an input did not pass
/// validation. They are safe to show to an administrator; none contains a private
/// key, a credential or other secret input.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// An archive entry path is empty, absolute, contains `..`/`.`/empty components,
    /// characters outside `[A-Za-z0-9._/-]`, or is too long for a ustar header.
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Two entries (or an entry and an implicit directory) have the same path.
    #[error("duplicate archive path {0:?}")]
    DuplicatePath(String),

    /// A file mode outside `0o000..=0o777` (no setuid/setgid/sticky bits).
    #[error("invalid mode {mode:#o} for {path:?}: only permission bits 0o777 are allowed")]
    InvalidMode {
        /// The entry the mode was given for.
        path: String,
        /// The rejected mode.
        mode: u32,
    },

    /// A tenant or site slug that is not `[a-z0-9]` / `-`, 1..=63 characters,
    /// starting and ending with a letter or digit.
    #[error(
        "invalid {field} {value:?}: a slug is 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
    )]
    InvalidSlug {
        /// Which input (`tenant_slug`, `site_slug`).
        field: &'static str,
        /// The rejected value.
        value: String,
    },

    /// A free-text input (such as the site's display name) is empty, too long or
    /// contains control characters such as a newline.
    #[error("invalid {field}: {reason}")]
    InvalidText {
        /// Which input.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A NATS URL is not `nats://`, `tls://`, `ws://` or `wss://` followed by a
    /// plain `host[:port]`.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidUrl {
        /// Which input.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An install path is not absolute, contains `..`, or has characters outside
    /// `[A-Za-z0-9._/-]`.
    #[error("invalid install path {field} {value:?}: {reason}")]
    InvalidInstallPath {
        /// Which path (`config_dir`, `certs_dir`, ...).
        field: &'static str,
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A PEM input does not look like the PEM block it should be.
    #[error("invalid PEM for {field}: {reason}")]
    InvalidPem {
        /// Which input.
        field: &'static str,
        /// What is wrong with it (never the PEM itself).
        reason: &'static str,
    },

    /// The NATS credentials text is not a `.creds` file (user JWT + nkey seed).
    #[error("invalid NATS credentials for {field}: {reason}")]
    InvalidCreds {
        /// Which input.
        field: &'static str,
        /// What is wrong with it (never the credentials themselves).
        reason: &'static str,
    },

    /// Two ports that must differ are equal, or a port is 0.
    #[error("invalid ports: {0}")]
    InvalidPorts(&'static str),

    /// The rendered `nats-leaf.conf` points at a file in the config or certs
    /// directory that the bundle does not install, so the leaf could never start.
    #[error("nats-leaf.conf references {path:?}, which this bundle does not install")]
    ConfigReferencesMissingFile {
        /// The absolute path found in the config.
        path: String,
    },

    /// Writing the archive failed (in memory, so practically never).
    #[error("writing archive: {0}")]
    Io(#[from] std::io::Error),
}
