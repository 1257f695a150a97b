//! Certificates for devices registered at edge sites (issue 16), issued for
//! a key the device generated and holds (a CSR): the platform never sees it.
//!
//! One function for both ways a device gets a certificate: an operator
//! signing its first CSR (`control::devices`) and the device renewing over
//! its own mTLS identity (`gateway::devices`). The certificate is recorded on
//! the device row only while the device is still active (compare-and-set), so
//! a revocation racing an issue wins and the certificate is not handed out.

use std::time::Duration;

use serviceradar_domain::TenantScope;
use serviceradar_domain::state::DeviceStatus;
use serviceradar_pki::{CertificateRequest, RequestProfile, SiteRef, TenantRef, issue_for_request};
use serviceradar_store::{Device, Store, StoreError};

use crate::{IdentityError, Pki, to_ms};

/// A device certificate and what verifies it.
#[derive(Debug, Clone)]
pub struct DeviceCertificate {
    /// The device certificate followed by its tenant CA: what the device
    /// presents over TLS.
    pub certificate_pem: String,
    /// The platform root CA (the trust anchor).
    pub root_ca_pem: String,
    /// Serial, lowercase hex.
    pub serial_hex: String,
    /// Expiry, Unix ms.
    pub not_after_ms: i64,
}

impl Pki {
    /// Issues a certificate for `device` (which must be active) for the key
    /// of `request`, valid for `validity` (clamped to the tenant CA's
    /// lifetime), and records its serial and expiry on the device row.
    /// A device revoked before or during the call is
    /// [`IdentityError::DeviceRevoked`].
    pub async fn issue_device_certificate(
        &self,
        store: &Store,
        device: &Device,
        request: &CertificateRequest,
        validity: Duration,
    ) -> Result<DeviceCertificate, IdentityError> {
        if device.status != DeviceStatus::Active {
            return Err(IdentityError::DeviceRevoked);
        }
        let tenant = store.tenant(device.tenant_id).await?;
        let ca = self.tenant_ca(store, &tenant).await?;
        let root = self.root_ca(store).await?;
        let opts = serviceradar_pki::IssueOptions {
            validity: ::time::Duration::try_from(validity).unwrap_or(::time::Duration::days(7)),
            ..self.issue_options()
        };
        let cert = issue_for_request(
            &ca,
            TenantRef::of(&tenant),
            SiteRef {
                id: device.edge_site_id.as_uuid(),
                slug: device.site_slug.as_str(),
            },
            RequestProfile::Device {
                device_id: device.id.as_uuid(),
            },
            request,
            &opts,
        )
        .map_err(|source| IdentityError::Issue {
            what: "issuing a device certificate",
            source,
        })?;
        let not_after_ms = to_ms(cert.not_after);
        match store
            .scoped(TenantScope::for_system_task(device.tenant_id))
            .record_device_certificate(device.id, &cert.serial_hex, not_after_ms)
            .await
        {
            Ok(()) => {}
            Err(StoreError::InvalidState(_)) => return Err(IdentityError::DeviceRevoked),
            Err(e) => return Err(e.into()),
        }
        Ok(DeviceCertificate {
            certificate_pem: format!("{}{}", cert.cert_pem, ca.cert_pem()),
            root_ca_pem: root.cert_pem().to_owned(),
            serial_hex: cert.serial_hex,
            not_after_ms,
        })
    }
}
