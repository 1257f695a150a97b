//! Device certificate renewal over the device's own mTLS identity (issue
//! 16), against the real gateway on loopback: `DeviceEnrollment.SimpleReenroll`
//! (EST `simplereenroll` shape) renews a registered device's certificate for
//! a new key (twice in a row, the second time with the renewed one); an
//! agent's certificate, a device certificate of another tenant naming this
//! device's id, and a revoked device are refused; a device certificate
//! cannot act as an agent.

mod support;

use std::path::Path;
use std::time::Duration;

use serviceradar_agent::config::GatewayTarget;
use serviceradar_agent::transport::{GrpcTransport, Transport};
use serviceradar_domain::TenantScope;
use serviceradar_domain::device::{DeviceLimits, DeviceName};
use serviceradar_pki::{
    CertificateRequest, IdentityKind, PeerIdentity, RequestProfile, SiteRef, TenantRef,
    issue_for_request, new_key_and_request,
};
use serviceradar_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use serviceradar_proto::v1::{HelloRequest, IdentityClaim, SimpleReenrollRequest};
use tonic::Code;

/// Writes `chain` and `key` under `dir` as `{name}.pem` / `{name}-key.pem`
/// and returns a target using them.
fn target_with(
    core: &support::Core,
    dir: &Path,
    name: &str,
    chain: &str,
    key: &str,
    ca: &Path,
) -> GatewayTarget {
    let cert = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, chain).expect("write");
    std::fs::write(&key_file, key).expect("write");
    GatewayTarget {
        url: format!("https://localhost:{}", core.gateway_port),
        cert,
        key: key_file,
        ca: ca.to_path_buf(),
        tls_name: None,
    }
}

async fn reenroll(
    target: &GatewayTarget,
    csr: &str,
) -> Result<serviceradar_proto::v1::SimpleReenrollResponse, tonic::Status> {
    let channel = GrpcTransport::endpoint(target)
        .expect("endpoint")
        .connect()
        .await
        .expect("TLS handshake");
    DeviceEnrollmentClient::new(channel)
        .simple_reenroll(SimpleReenrollRequest {
            csr_pem: csr.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn pem_der(pem: &str) -> Vec<u8> {
    serviceradar_pki::inspect::pem_to_der(pem).expect("pem")
}

/// The end-entity certificate and the tenant CA of a chain.
fn split(chain: &str) -> (String, String) {
    let end = "-----END CERTIFICATE-----";
    let (first, rest) = chain.split_once(end).expect("two certificates");
    (format!("{first}{end}\n"), rest.trim_start().to_owned())
}

#[tokio::test]
async fn a_device_renews_over_its_own_identity_and_others_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = support::settings(&dir);
    let core = support::spawn(dir, settings).await;
    let tenant = core.tenant("acme").await;
    let agent = core.site(&tenant, "edge").await;
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let device = scoped
        .create_device(
            agent.site.id,
            &DeviceName::parse("sensor-1").expect("name"),
            DeviceLimits::DEFAULT,
        )
        .await
        .expect("register");
    let week = Duration::from_secs(7 * 86_400);
    let files = agent.files.path();

    // First certificate, as an operator gets it (the same code path).
    let (key, csr) = new_key_and_request("sensor-1").expect("csr");
    let first = core
        .pki
        .issue_device_certificate(
            &core.store,
            &device,
            &CertificateRequest::from_pem(&csr).expect("csr"),
            week,
        )
        .await
        .expect("first certificate");
    let target = target_with(
        &core,
        files,
        "device",
        &first.certificate_pem,
        &key,
        &agent.ca(),
    );

    // Renewal: a new key, a new certificate for the same identity.
    let (key2, csr2) = new_key_and_request("ignored-subject").expect("csr");
    let renewed = reenroll(&target, &csr2).await.expect("renewed");
    assert_ne!(renewed.serial, first.serial_hex);
    let (leaf, ca) = split(&renewed.certificate_pem);
    let peer =
        PeerIdentity::from_der_with_issuer(&pem_der(&leaf), &pem_der(&ca), core.pki.trust_domain())
            .expect("device identity");
    assert_eq!(
        (peer.kind, peer.id),
        (IdentityKind::Device, device.id.as_uuid())
    );
    assert_eq!(
        peer.common_name,
        format!("device-{}.edge.acme.serviceradar", device.id)
    );
    let now = serviceradar_store::now_ms();
    assert!((renewed.not_after_ms - now - 7 * 86_400_000).abs() < 120_000);
    let row = scoped.device(device.id).await.expect("device");
    assert_eq!(row.cert_serial.as_deref(), Some(renewed.serial.as_str()));
    // For the new key.
    assert!(serviceradar_pki::check_key_matches(&leaf, &key2).is_ok());
    // And the renewed certificate renews again.
    let target2 = target_with(
        &core,
        files,
        "device2",
        &renewed.certificate_pem,
        &key2,
        &agent.ca(),
    );
    let (_key3, csr3) = new_key_and_request("x").expect("csr");
    reenroll(&target2, &csr3).await.expect("second renewal");
    // A garbage CSR is the caller's error.
    let bad = reenroll(&target2, "not a csr").await.expect_err("bad csr");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // A device certificate is not an agent's.
    let channel = GrpcTransport::endpoint(&target2)
        .expect("endpoint")
        .connect()
        .await
        .expect("tls");
    let hello = GrpcTransport::from_channel(channel)
        .hello(HelloRequest {
            claim: Some(IdentityClaim::default()),
            agent_version: "test".into(),
            capabilities: vec![],
            hostname: "sensor".into(),
        })
        .await
        .expect_err("a device is not an agent");
    assert_eq!(hello.code(), Code::PermissionDenied, "{hello:?}");

    // An agent's certificate cannot renew as a device.
    let as_agent = reenroll(&core.target(&agent), &csr3)
        .await
        .expect_err("agent refused");
    assert_eq!(as_agent.code(), Code::PermissionDenied, "{as_agent:?}");
    assert!(
        as_agent.message().contains("not a device certificate"),
        "{as_agent:?}"
    );

    // Another tenant's CA issuing a device certificate with this device's id:
    // the id names no device of that tenant.
    let beta = core.tenant("beta").await;
    let beta_ca = core
        .pki
        .tenant_ca(&core.store, &beta)
        .await
        .expect("beta ca");
    let (beta_key, beta_csr) = new_key_and_request("x").expect("csr");
    let forged = issue_for_request(
        &beta_ca,
        TenantRef {
            id: beta.id.as_uuid(),
            slug: beta.slug.as_str(),
        },
        SiteRef {
            id: agent.site.id.as_uuid(),
            slug: "edge",
        },
        RequestProfile::Device {
            device_id: device.id.as_uuid(),
        },
        &CertificateRequest::from_pem(&beta_csr).expect("csr"),
        &core.pki.issue_options(),
    )
    .expect("issue");
    let forged_target = target_with(
        &core,
        files,
        "forged",
        &format!("{}{}", forged.cert_pem, beta_ca.cert_pem()),
        &beta_key,
        &agent.ca(),
    );
    let other = reenroll(&forged_target, &csr3)
        .await
        .expect_err("other tenant refused");
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(other.message().contains("no such device"), "{other:?}");

    // Revoked: refused at once, and nothing recorded.
    scoped.revoke_device(device.id).await.expect("revoke");
    let revoked = reenroll(&target2, &csr3)
        .await
        .expect_err("revoked refused");
    assert_eq!(revoked.code(), Code::PermissionDenied, "{revoked:?}");
    assert!(revoked.message().contains("revoked"), "{revoked:?}");
    let (_, csr4) = new_key_and_request("x").expect("csr");
    assert!(reenroll(&target, &csr4).await.is_err());
}
