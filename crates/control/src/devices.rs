//! Devices at the edge (issue 16): register a device at a site (name and
//! NATS limits), list, read and revoke the site's devices, and issue a
//! device's certificate from a CSR it generated (the platform never holds
//! the device's key; the device renews over its own mTLS identity at the
//! agent gateway afterwards).
//!
//! Every use-case names the site in its path and the device must belong to
//! it: a device of another site (or tenant) is `NotFound`.

use serde::{Deserialize, Serialize};
use serviceradar_domain::device::{DeviceLimits, DeviceName};
use serviceradar_domain::validate::FieldErrors;
use serviceradar_domain::{Action, Actor, DeviceId, EdgeSiteId};
pub use serviceradar_identity::DeviceCertificate;
use serviceradar_identity::IdentityError;
use serviceradar_pki::CertificateRequest;
use serviceradar_store::{Device, Page};

use crate::error::finish;
use crate::params::parse_filter;
use crate::{Control, ControlError, PageParams};

/// A device to register.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Name, unique in the site: `[a-z0-9-]`, 1-63 characters.
    pub name: String,
    /// Largest message in bytes (1 to 1048576; default 65536).
    pub max_payload: Option<i64>,
    /// Most subscriptions at once (1 to 10000; default 100).
    pub max_subscriptions: Option<i64>,
    /// Data rate in bytes per second (1 to 104857600; default 1048576).
    pub data_rate: Option<i64>,
}

/// Filters for listing a site's devices.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct DeviceQuery {
    /// Only devices in this status (`active`, `revoked`).
    pub status: Option<String>,
}

/// A CSR for a device's certificate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceCsr {
    /// PKCS#10 request (PEM) signed with the device's own key. Its subject
    /// is ignored: the platform names the device.
    pub csr: String,
}

impl Control {
    /// Registers a device at `site`.
    pub async fn register_device(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        input: &RegisterDevice,
    ) -> Result<Device, ControlError> {
        let scoped = self.scoped(actor, Action::WriteDevices)?;
        let mut errors = FieldErrors::default();
        let name = errors.check("name", DeviceName::parse(&input.name));
        let limits = DeviceLimits::parse(
            input.max_payload,
            input.max_subscriptions,
            input.data_rate,
            &mut errors,
        );
        let (name, limits) = finish(errors, name.zip(limits))?;
        let device = scoped.create_device(site, &name, limits).await?;
        self.settings().device_changes.announce(actor.tenant_id);
        tracing::info!(tenant_id = %actor.tenant_id, site_id = %site, device_id = %device.id,
            "device registered");
        Ok(device)
    }

    /// A page of `site`'s devices.
    pub async fn list_devices(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        query: &DeviceQuery,
        page: &PageParams,
    ) -> Result<Page<Device>, ControlError> {
        let (scoped, page, status) = self.listing(actor, Action::ReadDevices, page, |errors| {
            parse_filter("status", query.status.as_deref(), errors)
        })?;
        Ok(scoped.list_devices(site, status, &page).await?)
    }

    /// One device of `site`.
    pub async fn device(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        id: DeviceId,
    ) -> Result<Device, ControlError> {
        let scoped = self.scoped(actor, Action::ReadDevices)?;
        let device = scoped.device(id).await?;
        if device.edge_site_id != site {
            return Err(ControlError::NotFound);
        }
        Ok(device)
    }

    /// Revokes a device of `site`: no certificate or renewal from then on.
    pub async fn revoke_device(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        id: DeviceId,
    ) -> Result<Device, ControlError> {
        let scoped = self.scoped(actor, Action::WriteDevices)?;
        if scoped.device(id).await?.edge_site_id != site {
            return Err(ControlError::NotFound);
        }
        let device = scoped.revoke_device(id).await?;
        self.settings().device_changes.announce(actor.tenant_id);
        tracing::info!(tenant_id = %actor.tenant_id, site_id = %site, device_id = %id,
            "device revoked");
        Ok(device)
    }

    /// Issues a certificate for an active device of `site` from the CSR it
    /// generated (valid for the edge certificate lifetime, 7 days by default).
    pub async fn issue_device_certificate(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        id: DeviceId,
        input: &DeviceCsr,
    ) -> Result<DeviceCertificate, ControlError> {
        let scoped = self.scoped(actor, Action::WriteDevices)?;
        let device = scoped.device(id).await?;
        if device.edge_site_id != site {
            return Err(ControlError::NotFound);
        }
        let request = CertificateRequest::from_pem(&input.csr)
            .map_err(|e| ControlError::field("csr", e.to_string()))?;
        let cert = self
            .pki()
            .issue_device_certificate(
                self.store(),
                &device,
                &request,
                self.settings().enrollment.cert_validity,
            )
            .await
            .map_err(|e| match e {
                IdentityError::DeviceRevoked => {
                    ControlError::Conflict("the device is revoked".into())
                }
                other => ControlError::internal("device_certificate", format!("{other:#}")),
            })?;
        self.settings().device_changes.announce(actor.tenant_id);
        tracing::info!(tenant_id = %actor.tenant_id, site_id = %site, device_id = %id,
            serial = %cert.serial_hex, not_after = cert.not_after_ms, "device certificate issued");
        Ok(cert)
    }
}
