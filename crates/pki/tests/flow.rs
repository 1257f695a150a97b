//! End-to-end use of the public API as the control plane uses it: create the
//! hierarchy, store CA keys sealed, reload them, issue, and derive a peer's
//! identity — including the cross-tenant cases that must fail.

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DnType, Issuer, KeyPair, SanType};
use serviceradar_pki::inspect::pem_to_der;
use serviceradar_pki::{
    CaKind, CertificateAuthority, DEFAULT_TRUST_DOMAIN, IdentityError, IdentityKind, IssueError,
    IssueOptions, Keyring, MasterKey, PeerIdentity, SiteRef, TenantRef, issue_agent,
    issue_leaf_client,
};
use time::Duration;
use uuid::Uuid;

fn aad(tenant: Uuid) -> Vec<u8> {
    format!("tenant:{tenant}:ca-key").into_bytes()
}

#[test]
fn sealed_hierarchy_survives_a_restart_and_a_key_rotation() {
    let old_key = MasterKey::generate("2025-01").expect("key id");
    let ring = Keyring::new(old_key.clone());

    let root = CertificateAuthority::generate_root("ServiceRadar Root", Duration::days(3650))
        .expect("root");
    let tenant_id = Uuid::now_v7();
    let tenant_ca = CertificateAuthority::generate_tenant_intermediate(
        &root,
        tenant_id,
        "acme",
        DEFAULT_TRUST_DOMAIN,
        Duration::days(1825),
    )
    .expect("intermediate");

    // What goes into the database: PEM certificates, sealed keys.
    let root_row = (
        root.cert_pem().to_owned(),
        root.seal_key(&ring, b"platform:root-ca"),
    );
    let tenant_row = (
        tenant_ca.cert_pem().to_owned(),
        tenant_ca.seal_key(&ring, &aad(tenant_id)),
    );
    let master_key_file = old_key.to_file_text();
    drop((root, tenant_ca, ring));

    // Restart: the master key is read back from its file; later it is rotated.
    let old_key = MasterKey::from_file_text(&master_key_file).expect("key file");
    let ring = Keyring::new(MasterKey::generate("2026-01").expect("key id"))
        .with_previous(old_key)
        .expect("distinct ids");
    let root =
        CertificateAuthority::from_sealed_key(&root_row.0, &root_row.1, &ring, b"platform:root-ca")
            .expect("root reloads");
    let tenant_ca =
        CertificateAuthority::from_sealed_key(&tenant_row.0, &tenant_row.1, &ring, &aad(tenant_id))
            .expect("tenant CA reloads")
            .with_issuer_chain(root.cert_pem())
            .expect("chain");
    assert_eq!(
        tenant_ca.kind(),
        &CaKind::Tenant {
            tenant_id,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned()
        }
    );

    // A sealed key moved to another tenant's row does not open.
    assert!(
        CertificateAuthority::from_sealed_key(
            &tenant_row.0,
            &tenant_row.1,
            &ring,
            &aad(Uuid::now_v7())
        )
        .is_err()
    );

    // Rotation: reseal under the new key id.
    assert!(ring.needs_reseal(&tenant_row.1).expect("header"));
    let resealed = ring.reseal(&tenant_row.1, &aad(tenant_id)).expect("reseal");
    assert!(!ring.needs_reseal(&resealed).expect("header"));

    // Issue after reload; the chain is intermediate then root.
    let site = SiteRef {
        id: Uuid::now_v7(),
        slug: "nyc-office",
    };
    let tenant = TenantRef {
        id: tenant_id,
        slug: "acme",
    };
    let leaf =
        issue_leaf_client(&tenant_ca, tenant, site, &IssueOptions::default()).expect("issue leaf");
    assert_eq!(
        leaf.chain_pem,
        format!("{}{}", tenant_ca.cert_pem(), root.cert_pem())
    );
    let der = pem_to_der(&leaf.cert_pem).expect("der");
    let identity =
        PeerIdentity::from_der_with_issuer(&der, tenant_ca.cert_der(), DEFAULT_TRUST_DOMAIN)
            .expect("identity");
    assert_eq!(identity.tenant_id, tenant_id);
    assert_eq!(identity.kind, IdentityKind::Leaf);
    assert_eq!(identity.id, site.id);

    // The issued key can be sealed the same way.
    let sealed_leaf_key = leaf.seal_key(&ring, b"site:leaf-key");
    assert_eq!(
        ring.open(&sealed_leaf_key, b"site:leaf-key")
            .expect("open")
            .as_slice(),
        leaf.key_pem.as_bytes()
    );
}

struct TwoTenants {
    tenant_a: CertificateAuthority,
    tenant_a_id: Uuid,
    tenant_b: CertificateAuthority,
    tenant_b_id: Uuid,
}

fn two_tenants() -> TwoTenants {
    let root = CertificateAuthority::generate_root("Root", Duration::days(30)).expect("root");
    let tenant_a_id = Uuid::now_v7();
    let tenant_b_id = Uuid::now_v7();
    let make = |id, slug| {
        CertificateAuthority::generate_tenant_intermediate(
            &root,
            id,
            slug,
            DEFAULT_TRUST_DOMAIN,
            Duration::days(10),
        )
        .expect("intermediate")
    };
    TwoTenants {
        tenant_a: make(tenant_a_id, "acme"),
        tenant_a_id,
        tenant_b: make(tenant_b_id, "globex"),
        tenant_b_id,
    }
}

#[test]
fn a_tenant_ca_refuses_to_issue_for_another_tenant() {
    let t = two_tenants();
    let site = SiteRef {
        id: Uuid::now_v7(),
        slug: "s",
    };
    let result = issue_agent(
        &t.tenant_a,
        TenantRef {
            id: t.tenant_b_id,
            slug: "globex",
        },
        site,
        Uuid::now_v7(),
        &IssueOptions::default(),
    );
    assert!(
        matches!(result, Err(IssueError::TenantMismatch)),
        "{result:?}"
    );
}

#[test]
fn identity_rejects_wrong_issuer_and_forged_tenant() {
    let t = two_tenants();
    let site = SiteRef {
        id: Uuid::now_v7(),
        slug: "s",
    };
    let agent = issue_agent(
        &t.tenant_a,
        TenantRef {
            id: t.tenant_a_id,
            slug: "acme",
        },
        site,
        Uuid::now_v7(),
        &IssueOptions::default(),
    )
    .expect("agent");
    let der = pem_to_der(&agent.cert_pem).expect("der");

    // Presented with the other tenant's intermediate: not its issuer.
    assert_eq!(
        PeerIdentity::from_der_with_issuer(&der, t.tenant_b.cert_der(), DEFAULT_TRUST_DOMAIN),
        Err(IdentityError::IssuerMismatch)
    );
    // Wrong trust domain.
    assert!(matches!(
        PeerIdentity::from_der(&der, "other.example"),
        Err(IdentityError::TrustDomainMismatch { .. })
    ));
    // The intermediate itself is not a peer identity.
    assert_eq!(
        PeerIdentity::from_der(t.tenant_a.cert_der(), DEFAULT_TRUST_DOMAIN),
        Err(IdentityError::NotEndEntity)
    );

    // A certificate claiming tenant B, signed (by mistake or compromise) with
    // tenant A's intermediate: the chain is valid, the tenant binding is not.
    let forged = forge_agent_cert(&t.tenant_a, t.tenant_b_id);
    assert!(PeerIdentity::from_der(&forged, DEFAULT_TRUST_DOMAIN).is_ok());
    assert_eq!(
        PeerIdentity::from_der_with_issuer(&forged, t.tenant_a.cert_der(), DEFAULT_TRUST_DOMAIN),
        Err(IdentityError::TenantMismatch)
    );
}

/// Signs an agent certificate for `claimed_tenant` with `ca`, bypassing the
/// tenant check of the issuing API.
fn forge_agent_cert(ca: &CertificateAuthority, claimed_tenant: Uuid) -> Vec<u8> {
    let ca_key = KeyPair::from_pem(&ca.key_pem()).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(ca.cert_pem(), &ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "agent.s.globex.serviceradar");
    let uri = format!(
        "spiffe://{DEFAULT_TRUST_DOMAIN}/tenant/{claimed_tenant}/agent/{}",
        Uuid::now_v7()
    );
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri).expect("ia5"))];
    params
        .signed_by(&key, &issuer)
        .expect("sign")
        .der()
        .to_vec()
}
