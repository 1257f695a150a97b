//! `DeviceEnrollment.SimpleReenroll`: a device registered at an edge site
//! renews its certificate over its own mTLS identity (issue 16), in the
//! shape of EST `simplereenroll` (RFC 7030, 4.2.2).
//!
//! The identity comes only from the verified client certificate
//! ([`verified_peer`]: SPIFFE kind `device`, issued by the presented tenant
//! intermediate of the same tenant) and the stored device row, read now (a
//! revocation stops renewal at once); the common name's site and tenant
//! slugs must be the device's. What the CSR's subject says is ignored. The
//! certificate is issued by the same code as an operator's first one
//! ([`Pki::issue_device_certificate`]), which records it only while the
//! device is active. Agents' and collectors' certificates are refused.

use std::sync::Arc;

use serviceradar_domain::state::DeviceStatus;
use serviceradar_domain::{DeviceId, TenantId, TenantScope};
use serviceradar_identity::{IdentityError, Pki};
use serviceradar_pki::{CertificateRequest, IdentityKind};
use serviceradar_proto::v1::device_enrollment_server::DeviceEnrollment;
use serviceradar_proto::v1::{SimpleReenrollRequest, SimpleReenrollResponse};
use serviceradar_store::{Store, StoreError};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::GatewaySettings;
use crate::identity::verified_peer;
use crate::service::internal_status;

/// The device side of the gateway.
pub struct DeviceEnrollmentService {
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<GatewaySettings>,
}

impl DeviceEnrollmentService {
    /// A service over the store and PKI.
    pub fn new(store: Store, pki: Arc<Pki>, settings: Arc<GatewaySettings>) -> Self {
        Self {
            store,
            pki,
            settings,
        }
    }
}

fn refuse(why: &'static str) -> Status {
    tracing::warn!(reason = why, "device certificate renewal refused");
    Status::permission_denied(why)
}

#[tonic::async_trait]
impl DeviceEnrollment for DeviceEnrollmentService {
    async fn simple_reenroll(
        &self,
        request: Request<SimpleReenrollRequest>,
    ) -> Result<Response<SimpleReenrollResponse>, Status> {
        let certs = request.peer_certs();
        let peer = verified_peer(
            self.pki.trust_domain(),
            certs.as_ref().map(|c| c.as_slice()),
        )?;
        let span = tracing::info_span!("gateway", rpc = "SimpleReenroll",
            tenant_id = %peer.tenant_id, site_id = tracing::field::Empty, device_id = %peer.id,
            peer = %peer.common_name);
        async {
            if peer.kind != IdentityKind::Device {
                return Err(refuse("not a device certificate"));
            }
            let tenant_id = TenantId(peer.tenant_id);
            let scoped = self.store.scoped(TenantScope::for_system_task(tenant_id));
            let device = match scoped.device(DeviceId(peer.id)).await {
                Ok(device) => device,
                Err(StoreError::NotFound) => {
                    return Err(refuse("no such device (deleted with its site?)"));
                }
                Err(e) => return Err(internal_status("device lookup", &e)),
            };
            tracing::Span::current()
                .record("site_id", tracing::field::display(device.edge_site_id));
            let tenant = self
                .store
                .tenant(tenant_id)
                .await
                .map_err(|e| internal_status("tenant lookup", &e))?;
            if device.site_slug.as_str() != peer.scope || tenant.slug.as_str() != peer.tenant_slug {
                return Err(refuse(
                    "the certificate's common name does not match the device's site",
                ));
            }
            if device.status != DeviceStatus::Active {
                return Err(refuse("the device was revoked"));
            }
            let csr = CertificateRequest::from_pem(&request.get_ref().csr_pem)
                .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
            let cert = self
                .pki
                .issue_device_certificate(
                    &self.store,
                    &device,
                    &csr,
                    self.settings.edge_cert_validity,
                )
                .await
                .map_err(|e| match e {
                    IdentityError::DeviceRevoked => refuse("the device was revoked"),
                    other => internal_status(
                        "issuing a renewed device certificate",
                        &format!("{other:#}"),
                    ),
                })?;
            tracing::info!(serial = %cert.serial_hex,
                not_after = cert.not_after_ms, "device certificate renewed");
            Ok(Response::new(SimpleReenrollResponse {
                certificate_pem: cert.certificate_pem,
                root_ca_pem: cert.root_ca_pem,
                serial: cert.serial_hex,
                not_after_ms: cert.not_after_ms,
            }))
        }
        .instrument(span)
        .await
    }
}
