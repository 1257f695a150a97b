//! The `openssl` CLI as an independent verifier of what this crate issues:
//! chains verify (and only for the right tenant), extensions are what the
//! design says, path length 0 holds, keys are valid P-256 keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serviceradar_pki::{
    CaError, CertificateAuthority, DEFAULT_TRUST_DOMAIN, IssueOptions, IssuedCertificate, SiteRef,
    TenantRef, cert_not_after, fingerprint_sha256, issue_agent, issue_collector, issue_leaf_client,
    issue_leaf_server, issue_platform_server,
};
use tempfile::TempDir;
use time::Duration;
use uuid::Uuid;

/// Root, two tenant intermediates and a scratch directory.
struct Pki {
    dir: TempDir,
    root: CertificateAuthority,
    tenant_a: CertificateAuthority,
    tenant_a_id: Uuid,
    tenant_b: CertificateAuthority,
    site_id: Uuid,
}

impl Pki {
    fn new() -> Self {
        let root =
            CertificateAuthority::generate_root("ServiceRadar Test Root", Duration::days(30))
                .expect("root");
        let tenant_a_id = Uuid::now_v7();
        let tenant_a = CertificateAuthority::generate_tenant_intermediate(
            &root,
            tenant_a_id,
            "acme",
            DEFAULT_TRUST_DOMAIN,
            Duration::days(20),
        )
        .expect("tenant A");
        let tenant_b = CertificateAuthority::generate_tenant_intermediate(
            &root,
            Uuid::now_v7(),
            "globex",
            DEFAULT_TRUST_DOMAIN,
            Duration::days(20),
        )
        .expect("tenant B");
        let pki = Self {
            dir: TempDir::new().expect("tempdir"),
            root,
            tenant_a,
            tenant_a_id,
            tenant_b,
            site_id: Uuid::now_v7(),
        };
        pki.write("root.pem", pki.root.cert_pem());
        pki.write("tenant-a.pem", pki.tenant_a.cert_pem());
        pki.write("tenant-b.pem", pki.tenant_b.cert_pem());
        pki
    }

    fn tenant(&self) -> TenantRef<'static> {
        TenantRef {
            id: self.tenant_a_id,
            slug: "acme",
        }
    }

    fn site(&self) -> SiteRef<'static> {
        SiteRef {
            id: self.site_id,
            slug: "nyc-office",
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Every kind of tenant-A certificate, by file name, with the openssl
    /// purpose it must satisfy.
    fn tenant_certs(&self) -> Vec<(&'static str, IssuedCertificate, &'static str)> {
        let opts = IssueOptions::default();
        vec![
            (
                "leaf-client",
                issue_leaf_client(&self.tenant_a, self.tenant(), self.site(), &opts)
                    .expect("leaf client"),
                "sslclient",
            ),
            (
                "leaf-server",
                issue_leaf_server(
                    &self.tenant_a,
                    self.tenant(),
                    self.site(),
                    ["nats.acme.example", "10.1.2.3"],
                    &opts,
                )
                .expect("leaf server"),
                "sslserver",
            ),
            (
                "agent",
                issue_agent(
                    &self.tenant_a,
                    self.tenant(),
                    self.site(),
                    Uuid::now_v7(),
                    &opts,
                )
                .expect("agent"),
                "sslclient",
            ),
            (
                "collector",
                issue_collector(&self.tenant_a, self.tenant(), Uuid::now_v7(), &opts)
                    .expect("collector"),
                "sslclient",
            ),
        ]
    }
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be installed")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// `openssl verify -CAfile ca [-untrusted u] [extra...] cert`.
fn verify(ca_file: &Path, untrusted: Option<&Path>, extra: &[&str], cert: &Path) -> Output {
    let mut args = vec!["verify", "-CAfile", s(ca_file)];
    if let Some(untrusted) = untrusted {
        args.extend(["-untrusted", s(untrusted)]);
    }
    args.extend_from_slice(extra);
    args.push(s(cert));
    openssl(&args)
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} should succeed:\n{}",
        text(output)
    );
}

fn assert_fails(output: &Output, what: &str) {
    assert!(
        !output.status.success(),
        "{what} should fail:\n{}",
        text(output)
    );
}

fn x509_text(path: &Path) -> String {
    let out = openssl(&["x509", "-in", s(path), "-noout", "-text"]);
    assert_ok(&out, "openssl x509 -text");
    text(&out)
}

#[test]
fn every_tenant_cert_kind_verifies_against_root_and_its_intermediate() {
    let pki = Pki::new();
    let root = pki.path("root.pem");
    let tenant_a = pki.path("tenant-a.pem");
    for (name, cert, purpose) in pki.tenant_certs() {
        let cert_path = pki.write(&format!("{name}.pem"), &cert.cert_pem);
        assert_ok(
            &verify(&root, Some(&tenant_a), &[], &cert_path),
            &format!("verify {name}"),
        );
        assert_ok(
            &verify(&root, Some(&tenant_a), &["-purpose", purpose], &cert_path),
            &format!("verify {name} for {purpose}"),
        );
        // The chain we ship (intermediate then root) is enough as untrusted input.
        let chain = pki.write(&format!("{name}-chain.pem"), &cert.chain_pem);
        assert_ok(
            &verify(&root, Some(&chain), &[], &cert_path),
            &format!("verify {name} with its chain_pem"),
        );
        // Without the intermediate there is no path to the root.
        assert_fails(
            &verify(&root, None, &[], &cert_path),
            &format!("verify {name} without intermediate"),
        );
    }
}

#[test]
fn ekus_restrict_purpose() {
    let pki = Pki::new();
    let agent = issue_agent(
        &pki.tenant_a,
        pki.tenant(),
        pki.site(),
        Uuid::now_v7(),
        &IssueOptions::default(),
    )
    .expect("agent");
    let path = pki.write("agent.pem", &agent.cert_pem);
    assert_fails(
        &verify(
            &pki.path("root.pem"),
            Some(&pki.path("tenant-a.pem")),
            &["-purpose", "sslserver"],
            &path,
        ),
        "agent cert (clientAuth only) as a TLS server",
    );
}

#[test]
fn leaf_server_cert_matches_its_hosts() {
    let pki = Pki::new();
    let cert = issue_leaf_server(
        &pki.tenant_a,
        pki.tenant(),
        pki.site(),
        ["nats.acme.example", "10.1.2.3"],
        &IssueOptions::default(),
    )
    .expect("leaf server");
    let path = pki.write("leaf-server.pem", &cert.cert_pem);
    let root = pki.path("root.pem");
    let tenant_a = pki.path("tenant-a.pem");
    for (flag, value) in [
        ("-verify_hostname", "nats.acme.example"),
        ("-verify_hostname", "localhost"),
        ("-verify_ip", "10.1.2.3"),
        ("-verify_ip", "127.0.0.1"),
    ] {
        assert_ok(
            &verify(&root, Some(&tenant_a), &[flag, value], &path),
            &format!("{flag} {value}"),
        );
    }
    for (flag, value) in [
        ("-verify_hostname", "evil.example"),
        ("-verify_ip", "10.1.2.4"),
    ] {
        assert_fails(
            &verify(&root, Some(&tenant_a), &[flag, value], &path),
            &format!("{flag} {value}"),
        );
    }
}

#[test]
fn platform_server_cert_verifies_against_root_only() {
    let pki = Pki::new();
    let cert = issue_platform_server(
        &pki.root,
        "hub",
        ["hub.serviceradar.example", "192.0.2.10"],
        &IssueOptions::default(),
    )
    .expect("hub");
    let path = pki.write("hub.pem", &cert.cert_pem);
    assert_ok(
        &verify(
            &pki.path("root.pem"),
            None,
            &[
                "-purpose",
                "sslserver",
                "-verify_hostname",
                "hub.serviceradar.example",
            ],
            &path,
        ),
        "hub cert",
    );
    let dump = x509_text(&path);
    assert!(dump.contains("CN = hub.platform.serviceradar"), "{dump}");
    assert!(dump.contains("IP Address:192.0.2.10"), "{dump}");
}

#[test]
fn cross_tenant_chains_do_not_verify() {
    let pki = Pki::new();
    let root = pki.path("root.pem");
    let tenant_a = pki.path("tenant-a.pem");
    let tenant_b = pki.path("tenant-b.pem");
    for (name, cert, _) in pki.tenant_certs() {
        let path = pki.write(&format!("{name}.pem"), &cert.cert_pem);
        assert_fails(
            &verify(&root, Some(&tenant_b), &[], &path),
            &format!("tenant A {name} via tenant B's intermediate"),
        );
        assert_fails(
            &verify(&tenant_b, None, &["-partial_chain"], &path),
            &format!("tenant A {name} with tenant B's intermediate as the only CA"),
        );
        // Control: the same partial-chain check passes with the right tenant.
        assert_ok(
            &verify(&tenant_a, None, &["-partial_chain"], &path),
            &format!("tenant A {name} with tenant A's intermediate as the only CA"),
        );
    }
}

#[test]
fn x509_text_shows_names_and_constraints() {
    let pki = Pki::new();
    let td = DEFAULT_TRUST_DOMAIN;
    let tenant = pki.tenant_a_id;
    let site = pki.site_id;

    let root = x509_text(&pki.path("root.pem"));
    assert!(root.contains("CN = ServiceRadar Test Root"), "{root}");
    assert!(root.contains("CA:TRUE, pathlen:1"), "{root}");

    let inter = x509_text(&pki.path("tenant-a.pem"));
    assert!(
        inter.contains("CN = ServiceRadar Tenant CA acme"),
        "{inter}"
    );
    assert!(
        inter.contains("X509v3 Basic Constraints: critical"),
        "{inter}"
    );
    assert!(inter.contains("CA:TRUE, pathlen:0"), "{inter}");
    assert!(inter.contains("Certificate Sign, CRL Sign"), "{inter}");
    assert!(
        inter.contains(&format!("URI:spiffe://{td}/tenant/{tenant}")),
        "{inter}"
    );
    assert!(inter.contains("X509v3 Authority Key Identifier"), "{inter}");
    assert!(inter.contains("ecdsa-with-SHA256"), "{inter}");

    let certs = pki.tenant_certs();
    let expect: [(&str, &str, Vec<String>); 4] = [
        (
            "leaf-client",
            "CN = leaf.nyc-office.acme.serviceradar",
            vec![
                format!("URI:spiffe://{td}/tenant/{tenant}/leaf/{site}"),
                "DNS:leaf.nyc-office.acme.serviceradar".to_owned(),
                "TLS Web Client Authentication".to_owned(),
            ],
        ),
        (
            "leaf-server",
            "CN = nats.nyc-office.acme.serviceradar",
            vec![
                format!("URI:spiffe://{td}/tenant/{tenant}/leaf-server/{site}"),
                "DNS:nats.acme.example".to_owned(),
                "IP Address:10.1.2.3".to_owned(),
                "DNS:localhost".to_owned(),
                "IP Address:127.0.0.1".to_owned(),
                "TLS Web Server Authentication, TLS Web Client Authentication".to_owned(),
            ],
        ),
        (
            "agent",
            "CN = agent.nyc-office.acme.serviceradar",
            vec![
                format!("URI:spiffe://{td}/tenant/{tenant}/agent/"),
                "TLS Web Client Authentication".to_owned(),
            ],
        ),
        (
            "collector",
            "CN = collector.",
            vec![
                format!("URI:spiffe://{td}/tenant/{tenant}/collector/"),
                "TLS Web Client Authentication".to_owned(),
            ],
        ),
    ];
    for ((name, cert, _), (expected_name, cn, needles)) in certs.iter().zip(expect) {
        assert_eq!(*name, expected_name);
        let path = pki.write(&format!("{name}.pem"), &cert.cert_pem);
        let dump = x509_text(&path);
        assert!(dump.contains(&format!("Subject: {cn}")), "{name}: {dump}");
        assert!(dump.contains("CA:FALSE"), "{name}: {dump}");
        assert!(dump.contains("Digital Signature"), "{name}: {dump}");
        assert!(
            dump.contains("X509v3 Authority Key Identifier"),
            "{name}: {dump}"
        );
        assert!(dump.contains("NIST CURVE: P-256"), "{name}: {dump}");
        for needle in needles {
            assert!(
                dump.contains(&needle),
                "{name}: missing {needle:?} in\n{dump}"
            );
        }
    }
    let collector = &certs[3].1;
    assert!(x509_text(&pki.write("c.pem", &collector.cert_pem)).contains(".acme.serviceradar"));
}

#[test]
fn intermediate_cannot_issue_a_further_ca() {
    let pki = Pki::new();
    // Craft a sub-CA under tenant A's intermediate, bypassing this crate's API.
    let inter_key = KeyPair::from_pem(&pki.tenant_a.key_pem()).expect("intermediate key");
    let inter = Issuer::from_ca_cert_pem(pki.tenant_a.cert_pem(), &inter_key).expect("issuer");
    let sub_key = KeyPair::generate().expect("key");
    let mut sub_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    sub_params
        .distinguished_name
        .push(DnType::CommonName, "Rogue Sub CA");
    sub_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    sub_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    sub_params.use_authority_key_identifier_extension = true;
    let sub = sub_params.signed_by(&sub_key, &inter).expect("sub CA");

    let sub_issuer = Issuer::new(sub_params, &sub_key);
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf_params = CertificateParams::new(vec!["rogue.example".to_owned()]).expect("params");
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &sub_issuer).expect("leaf");

    let untrusted = pki.write(
        "untrusted.pem",
        &format!("{}{}", pki.tenant_a.cert_pem(), sub.pem()),
    );
    let leaf_path = pki.write("rogue-leaf.pem", &leaf.pem());
    let out = verify(&pki.path("root.pem"), Some(&untrusted), &[], &leaf_path);
    assert_fails(&out, "leaf under a sub-CA of a pathlen-0 intermediate");
    assert!(text(&out).contains("path length"), "{}", text(&out));

    // This crate refuses to load the rogue sub-CA with its chain as well.
    let loaded = CertificateAuthority::from_pem(&sub.pem(), &sub_key.serialize_pem())
        .expect("it is a CA certificate")
        .with_issuer_chain(&pki.tenant_a.chain_pem());
    assert!(
        matches!(loaded, Err(CaError::PathLenExceeded)),
        "{loaded:?}"
    );
    // Control: the tenant intermediate itself loads with its chain.
    CertificateAuthority::from_pem(pki.tenant_a.cert_pem(), &pki.tenant_a.key_pem())
        .expect("load")
        .with_issuer_chain(pki.root.cert_pem())
        .expect("root pathlen 1 allows one intermediate");
}

#[test]
fn keys_are_valid_p256_keys_matching_their_certs() {
    let pki = Pki::new();
    let mut keys: Vec<(String, String, String)> = pki
        .tenant_certs()
        .into_iter()
        .map(|(name, cert, _)| (name.to_owned(), cert.cert_pem, cert.key_pem.to_string()))
        .collect();
    keys.push((
        "root".to_owned(),
        pki.root.cert_pem().to_owned(),
        pki.root.key_pem().to_string(),
    ));
    keys.push((
        "tenant-a".to_owned(),
        pki.tenant_a.cert_pem().to_owned(),
        pki.tenant_a.key_pem().to_string(),
    ));
    for (name, cert_pem, key_pem) in keys {
        let key = pki.write(&format!("{name}.key"), &key_pem);
        let out = openssl(&["ec", "-in", s(&key), "-check", "-noout"]);
        assert_ok(&out, &format!("openssl ec -check {name}"));
        assert!(text(&out).contains("EC Key valid"), "{}", text(&out));

        let out = openssl(&["ec", "-in", s(&key), "-text", "-noout"]);
        assert!(text(&out).contains("NIST CURVE: P-256"), "{}", text(&out));

        let cert = pki.write(&format!("{name}.crt"), &cert_pem);
        let from_key = openssl(&["pkey", "-in", s(&key), "-pubout"]);
        let from_cert = openssl(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
        assert_ok(&from_key, "pkey -pubout");
        assert_ok(&from_cert, "x509 -pubkey");
        assert_eq!(
            from_key.stdout, from_cert.stdout,
            "{name}: key matches cert"
        );
    }
}

#[test]
fn inspection_helpers_agree_with_openssl() {
    let pki = Pki::new();
    let cert = issue_collector(
        &pki.tenant_a,
        pki.tenant(),
        Uuid::now_v7(),
        &IssueOptions::default(),
    )
    .expect("collector");
    let path = pki.write("collector.pem", &cert.cert_pem);

    let out = openssl(&["x509", "-in", s(&path), "-noout", "-fingerprint", "-sha256"]);
    assert_ok(&out, "fingerprint");
    let openssl_fp = String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .expect("value")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(fingerprint_sha256(&cert.cert_pem).expect("fp"), openssl_fp);

    let out = openssl(&["x509", "-in", s(&path), "-noout", "-serial"]);
    let serial = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase();
    assert_eq!(cert.serial_hex, serial);

    let out = openssl(&[
        "x509",
        "-in",
        s(&path),
        "-noout",
        "-enddate",
        "-dateopt",
        "iso_8601",
    ]);
    assert_ok(&out, "enddate");
    let end = String::from_utf8_lossy(&out.stdout);
    let not_after = cert_not_after(&cert.cert_pem).expect("not after");
    assert_eq!(not_after, cert.not_after);
    let expected = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        not_after.year(),
        u8::from(not_after.month()),
        not_after.day(),
        not_after.hour(),
        not_after.minute(),
        not_after.second()
    );
    assert!(end.contains(&expected), "{end} vs {expected}");
}
