//! [`ProvisioningError`]: why provisioning a leaf, rendering its config or
//! building its bundle failed. The messages are for the operator's log; a
//! tenant only ever sees `provisioning_failed` and a reference
//! ([`crate::tenant_facing_error`]).

use serviceradar_store::StoreError;

/// Any error of a lower service, kept whole as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The platform identity (CAs, NATS accounts, sealed keys) failed.
    #[error("{context}: {source}")]
    Identity {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// Issuing a certificate failed.
    #[error("{context}: {source}")]
    Certificate {
        /// Which certificate.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// Rendering a NATS config or stream failed.
    #[error("{context}: {source}")]
    Render {
        /// What was rendered.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// Stored material is not what provisioning wrote.
    #[error("corrupt stored material: {0}")]
    Corrupt(&'static str),
    /// Assembling the bundle failed.
    #[error("building the site bundle: {0}")]
    Bundle(#[from] serviceradar_bundle::BundleError),
}

impl ProvisioningError {
    /// Maps an identity failure, naming what was being done.
    pub(crate) fn identity<E: Into<BoxError>>(context: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Identity {
            context,
            source: e.into(),
        }
    }

    /// Maps a certificate issuance failure.
    pub(crate) fn certificate<E: Into<BoxError>>(context: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Certificate {
            context,
            source: e.into(),
        }
    }

    /// Maps a rendering failure.
    pub(crate) fn render<E: Into<BoxError>>(context: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Render {
            context,
            source: e.into(),
        }
    }
}
