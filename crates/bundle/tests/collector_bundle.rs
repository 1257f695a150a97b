//! Collector bundles read back: which NATS URL they use (edge leaf or SaaS),
//! file layout and modes (tar crate and system tar), determinism.

mod common;

use std::process::Command;

use common::{file, list, run};
use serviceradar_bundle::{
    CollectorBundle, CollectorType, EdgeSiteRef, NatsTarget, SitePki, collector_bundle,
};
use uuid::Uuid;

fn bundle(target: NatsTarget, kind: CollectorType) -> CollectorBundle {
    let pki: SitePki = common::pki(false);
    CollectorBundle {
        collector_type: kind,
        package_id: Uuid::from_u128(42),
        tenant_slug: "acme".into(),
        target,
        creds: common::CREDS.into(),
        client_cert_pem: pki.leaf_client_cert_pem.clone(),
        client_key_pem: pki.leaf_client_key_pem.clone(),
        ca_pem: pki.ca_chain_pem.clone(),
    }
}

fn edge() -> NatsTarget {
    NatsTarget::for_package(
        Some(EdgeSiteRef {
            name: "NYC Office",
            slug: "nyc-office",
            nats_leaf_url: "nats://10.0.1.50:4222",
            node_urls: &[],
        }),
        "tls://nats.serviceradar.cloud:4222",
    )
}

fn saas() -> NatsTarget {
    NatsTarget::for_package(None, "tls://nats.serviceradar.cloud:4222")
}

fn texts(b: &CollectorBundle) -> (serde_json::Value, String) {
    let entries = list(&collector_bundle(b).expect("bundle"));
    let root = b.root_dir();
    let json = serde_json::from_slice(file(&entries, &format!("{root}/collector.json")))
        .expect("collector.json");
    let readme =
        String::from_utf8(file(&entries, &format!("{root}/README.md")).to_vec()).expect("utf8");
    (json, readme)
}

#[test]
fn edge_site_target_uses_the_leaf_url() {
    let (json, readme) = texts(&bundle(edge(), CollectorType::Flowgger));
    assert_eq!(json["nats"]["url"], "nats://10.0.1.50:4222");
    assert_eq!(json["nats"]["target"], "edge_site");
    assert_eq!(json["nats"]["edge_site_slug"], "nyc-office");
    assert_eq!(json["subject_prefix"], "edge.acme.nyc-office.logs");
    assert_eq!(
        json["nats"]["creds_file"],
        "/etc/serviceradar/flowgger/creds/collector.creds"
    );
    assert!(readme.contains(
        "connects to the local NATS leaf of edge site NYC Office (`nyc-office`) at `nats://10.0.1.50:4222`"
    ));
    assert!(readme.contains("buffered there during WAN outages"));
    assert!(!readme.contains("nats.serviceradar.cloud"));
}

#[test]
fn saas_target_uses_the_saas_url() {
    let (json, readme) = texts(&bundle(saas(), CollectorType::Trapd));
    assert_eq!(json["nats"]["url"], "tls://nats.serviceradar.cloud:4222");
    assert_eq!(json["nats"]["target"], "saas");
    assert_eq!(json["subject_prefix"], "events.acme");
    assert!(readme.contains(
        "connects directly to the ServiceRadar SaaS NATS at `tls://nats.serviceradar.cloud:4222`"
    ));
    assert!(!readme.contains("10.0.1.50"));
}

#[test]
fn subject_prefixes_by_type() {
    for (kind, prefix) in [
        (CollectorType::Otel, "metrics.acme"),
        (CollectorType::Netflow, "metrics.acme"),
        (CollectorType::Syslog, "logs.acme"),
    ] {
        let (json, readme) = texts(&bundle(saas(), kind));
        assert_eq!(json["subject_prefix"], prefix);
        assert!(readme.contains(&format!("`{prefix}.>`")));
    }
}

#[test]
fn layout_modes_and_determinism() {
    let b = bundle(edge(), CollectorType::Netflow);
    let bytes = collector_bundle(&b).expect("bundle");
    assert_eq!(bytes, collector_bundle(&b).expect("bundle"));
    let root = "serviceradar-collector-acme-netflow";
    assert_eq!(b.root_dir(), root);
    let got: Vec<(String, u32)> = list(&bytes).into_iter().map(|(p, m, ..)| (p, m)).collect();
    let want: Vec<(String, u32)> = [
        ("", 0o755),
        ("README.md", 0o644),
        ("certs/", 0o755),
        ("certs/ca.pem", 0o644),
        ("certs/collector-key.pem", 0o600),
        ("certs/collector.pem", 0o644),
        ("collector.json", 0o644),
        ("creds/", 0o755),
        ("creds/collector.creds", 0o600),
    ]
    .iter()
    .map(|(p, m)| (format!("{root}/{p}"), *m))
    .collect();
    assert_eq!(got, want);

    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = dir.path().join("c.tar.gz");
    std::fs::write(&tarball, &bytes).expect("write");
    let out = run(Command::new("tar").arg("-tvzf").arg(&tarball));
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw------- 0/0") && l.ends_with("/certs/collector-key.pem"))
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw------- 0/0") && l.ends_with("/creds/collector.creds"))
    );
    assert_eq!(listing.lines().count(), want.len());
}

/// Issue 11, finding 13 / issue 12: the bundle tells a collector to publish
/// with JetStream acknowledgements (a missing buffer is then an error, not a
/// silent loss) and documents its message schema; its example is what the
/// ingestion decoder accepts, on the bundle's own subject, for every type
/// and target.
#[test]
fn the_readme_documents_the_telemetry_contract_with_an_example_that_decodes() {
    use serviceradar_domain::telemetry::{IncomingMessage, decode};
    for target in [edge(), saas()] {
        for kind in CollectorType::ALL {
            let b = bundle(target.clone(), kind);
            let (json, readme) = texts(&b);
            assert!(
                readme.contains("**Publish with JetStream acknowledgements**"),
                "{kind:?}"
            );
            assert!(readme.contains("must be retried"), "{kind:?}");
            assert!(readme.contains("U+0000"), "{kind:?}");
            let example = readme
                .split("```json\n")
                .nth(1)
                .and_then(|rest| rest.split("\n```").next())
                .expect("a JSON example");
            let subject = format!("{}.host1", json["subject_prefix"].as_str().unwrap());
            let record = decode(
                "acme",
                IncomingMessage {
                    subject: &subject,
                    payload: example.as_bytes(),
                    stream_seq: 1,
                    stored_at_ms: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{kind:?} {subject}: {e}: {example}"));
            assert_eq!(
                record.kind().subject_prefix(),
                kind.subject_family(),
                "{kind:?}"
            );
        }
    }
}
