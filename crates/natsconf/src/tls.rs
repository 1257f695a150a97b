//! The certificate, key and CA file paths of one TLS block.
//!
//! Why: leaf and hub configs have several TLS blocks (client listener, leafnode
//! listener, leafnode remote) that differ in which CA they trust and whether they
//! verify the peer. One type renders all of them, so the paths are validated the
//! same way everywhere.

use crate::syntax::{ConfWriter, ConfigError, validate_path};

/// TLS handshake timeout written into every TLS block, in seconds.
pub const TLS_TIMEOUT_SECS: u8 = 2;

/// Paths of a certificate (chain), its private key and the CA bundle to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate, followed by any intermediate CA certificates up to (not
    /// including) the root the peer trusts.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// PEM CA certificate(s) used to verify the peer.
    pub ca_file: String,
}

impl TlsFiles {
    /// Three paths.
    pub fn new(cert_file: &str, key_file: &str, ca_file: &str) -> Self {
        Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            ca_file: ca_file.to_owned(),
        }
    }

    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        validate_path(field, &self.cert_file)?;
        validate_path(field, &self.key_file)?;
        validate_path(field, &self.ca_file)?;
        Ok(())
    }

    /// Writes a cluster's `tls { ... }`: mutual TLS (`verify`) whose peer must
    /// also present one of `pinned_certs` (nats-server checks the SHA-256 of
    /// the peer certificate's public key, on the routes it accepts and on
    /// those it dials).
    pub(crate) fn write_pinned(&self, w: &mut ConfWriter, pinned_certs: &[String]) {
        w.open("tls");
        w.string("cert_file", &self.cert_file);
        w.string("key_file", &self.key_file);
        w.string("ca_file", &self.ca_file);
        w.bool("verify", true);
        w.int("timeout", TLS_TIMEOUT_SECS);
        w.open_list("pinned_certs");
        for pin in pinned_certs {
            w.list_string(pin);
        }
        w.close_list();
        w.close();
    }

    /// Writes `tls { ... }`; `verify` asks for (and checks) a peer certificate.
    pub(crate) fn write(&self, w: &mut ConfWriter, verify: bool) {
        w.open("tls");
        w.string("cert_file", &self.cert_file);
        w.string("key_file", &self.key_file);
        w.string("ca_file", &self.ca_file);
        if verify {
            w.bool("verify", true);
        }
        w.int("timeout", TLS_TIMEOUT_SECS);
        w.close();
    }
}
