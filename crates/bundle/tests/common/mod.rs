//! Shared fixtures for the integration tests: real certificates (rcgen), a
//! realistic `nats-leaf.conf`, and helpers to unpack and list archives with both
//! the `tar` crate and the system `tar`.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serviceradar_bundle::site::names;
use serviceradar_bundle::{AgentPki, InstallPaths, SiteBundle, SitePki};
use uuid::Uuid;

pub const CREDS: &str = "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\nSUAEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMP\n------END USER NKEY SEED------\n";

/// A root CA, a tenant intermediate and end-entity certificates, all real.
pub struct Pki {
    pub site: SitePki,
}

fn ca_params(cn: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(constraint);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p
}

pub fn pki(with_agent: bool) -> SitePki {
    let root = CertifiedIssuer::self_signed(
        ca_params("ServiceRadar Test Root", BasicConstraints::Unconstrained),
        KeyPair::generate().expect("key"),
    )
    .expect("root");
    let tenant = CertifiedIssuer::signed_by(
        ca_params("acme tenant CA", BasicConstraints::Constrained(0)),
        KeyPair::generate().expect("key"),
        &root,
    )
    .expect("intermediate");
    let issue = |cn: &str, sans: &[&str], usage| {
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(cn, sans, usage)
            .signed_by(&key, &tenant)
            .expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (client_cert, client_key) = issue(
        "leaf.nyc-office.acme.serviceradar",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (server_cert, server_key) = issue(
        "nats-leaf.nyc-office.acme",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let agent = with_agent.then(|| {
        let (cert_pem, key) = issue(
            "agent.nyc-office.acme.serviceradar",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        AgentPki {
            cert_pem,
            key_pem: key.into(),
            config_toml: None,
        }
    });
    SitePki {
        leaf_client_cert_pem: client_cert,
        leaf_client_key_pem: client_key.into(),
        leaf_server_cert_pem: server_cert,
        leaf_server_key_pem: server_key.into(),
        ca_chain_pem: format!("{}{}", tenant.pem(), root.pem()),
        root_ca_pem: root.pem(),
        agent,
    }
}

/// A leaf config in the shape of seed 000, referencing the bundle's files by
/// their canonical absolute paths.
pub fn leaf_conf(paths: &InstallPaths, site_slug: &str) -> String {
    format!(
        r#"# Generated NATS leaf configuration
server_name: "nats-{site_slug}"
listen: "0.0.0.0:4222"
http: "127.0.0.1:8222"

tls {{
  cert_file: "{server_cert}"
  key_file: "{server_key}"
  ca_file: "{chain}"
  verify: true
}}

jetstream {{
  store_dir: "{js}"
  domain: "acme-{site_slug}"
}}

leafnodes {{
  remotes = [{{
    url: "tls://hub.example.com:7422"
    credentials: "{creds}"
    tls {{
      cert_file: "{client_cert}"
      key_file: "{client_key}"
      ca_file: "{root}"
    }}
  }}]
}}
"#,
        server_cert = paths.cert_file(names::LEAF_SERVER_CERT),
        server_key = paths.cert_file(names::LEAF_SERVER_KEY),
        chain = paths.cert_file(names::TENANT_CA),
        js = paths.jetstream_dir,
        creds = paths.creds_file(),
        client_cert = paths.cert_file(names::LEAF_CLIENT_CERT),
        client_key = paths.cert_file(names::LEAF_CLIENT_KEY),
        root = paths.cert_file(names::ROOT_CA),
    )
}

pub fn site_with(pki: SitePki, site_name: &str) -> SiteBundle {
    let paths = InstallPaths::default();
    SiteBundle {
        tenant_slug: "acme".into(),
        site_slug: "nyc-office".into(),
        site_name: site_name.into(),
        site_id: Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001),
        leaf_conf: leaf_conf(&paths, "nyc-office"),
        paths,
        pki,
        leaf_creds: CREDS.into(),
        hub_leafnode_url: "tls://hub.example.com:7422".into(),
        nats_leaf_url: "nats://10.0.1.50:4222".into(),
        client_port: 4222,
        monitoring_port: 8222,
        edge_buffer_stream_json: Some(
            "{\n  \"name\": \"EDGE_BUFFER\",\n  \"subjects\": [\"edge.nyc-office.>\"],\n  \"max_age\": 604800000000000\n}\n"
                .into(),
        ),
        cluster: None,
    }
}

pub fn site(site_name: &str) -> SiteBundle {
    site_with(pki(true), site_name)
}

/// Entries as read back by the `tar` crate: (path, mode, is_dir, contents).
pub fn list(bytes: &[u8]) -> Vec<(String, u32, bool, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = String::from_utf8(entry.path_bytes().into_owned()).expect("utf8");
        let mode = entry.header().mode().expect("mode");
        let is_dir = entry.header().entry_type().is_dir();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        out.push((path, mode, is_dir, data));
    }
    out
}

pub fn file<'a>(entries: &'a [(String, u32, bool, Vec<u8>)], path: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|(p, ..)| p == path)
        .unwrap_or_else(|| panic!("{path} not in archive"))
        .3
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    eprintln!(
        "$ {cmd:?}\n--- stdout\n{}--- stderr\n{}--- {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// Writes `bytes` to `dir/bundle.tar.gz` and unpacks it there with the system tar.
pub fn unpack(bytes: &[u8], dir: &Path, root: &str) -> PathBuf {
    let tarball = dir.join("bundle.tar.gz");
    std::fs::write(&tarball, bytes).expect("write tarball");
    let out = run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir));
    assert!(out.status.success(), "tar -xzf failed");
    dir.join(root)
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
