//! The site bundle as an archive: deterministic bytes, the expected files with
//! the expected modes, read back with the `tar` crate and the system `tar`.

mod common;

use std::process::Command;

use common::{file, list, run, site};
use serviceradar_bundle::site_bundle;

const ROOT: &str = "serviceradar-site-acme-nyc-office";

fn expected() -> Vec<(String, u32)> {
    [
        ("", 0o755),
        ("README.md", 0o644),
        ("certs/", 0o755),
        ("certs/agent-key.pem", 0o600),
        ("certs/agent.pem", 0o644),
        ("certs/ca-chain.pem", 0o644),
        ("certs/leaf-client-key.pem", 0o600),
        ("certs/leaf-client.pem", 0o644),
        ("certs/leaf-server-key.pem", 0o600),
        ("certs/leaf-server.pem", 0o644),
        ("certs/root-ca.pem", 0o644),
        ("certs/tenant-ca.pem", 0o644),
        ("creds/", 0o755),
        ("creds/leaf.creds", 0o600),
        ("docker-compose.yml", 0o644),
        ("nats-leaf.conf", 0o644),
        ("run-foreground.sh", 0o755),
        ("serviceradar-nats-leaf.service", 0o644),
        ("setup.sh", 0o755),
        ("streams/", 0o755),
        ("streams/edge-buffer.json", 0o644),
    ]
    .iter()
    .map(|(p, m)| (format!("{ROOT}/{p}"), *m))
    .collect()
}

#[test]
fn same_input_gives_byte_identical_output() {
    let input = site("NYC Office");
    let a = site_bundle(&input).expect("bundle");
    let b = site_bundle(&input.clone()).expect("bundle");
    assert_eq!(a, b);
    assert_eq!(input.file_name(), format!("{ROOT}.tar.gz"));
}

#[test]
fn listing_and_modes_via_tar_crate() {
    let entries = list(&site_bundle(&site("NYC Office")).expect("bundle"));
    let got: Vec<(String, u32)> = entries.iter().map(|(p, m, ..)| (p.clone(), *m)).collect();
    assert_eq!(got, expected());
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "entries are sorted by path");
    for (path, _, is_dir, _) in &entries {
        assert_eq!(*is_dir, path.ends_with('/'), "{path}");
    }
}

#[test]
fn listing_and_modes_via_system_tar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = dir.path().join("site.tar.gz");
    std::fs::write(&tarball, site_bundle(&site("NYC Office")).expect("bundle")).expect("write");
    let out = run(Command::new("tar").arg("-tvzf").arg(&tarball));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    let expected = expected();
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (line, (path, mode)) in lines.iter().zip(&expected) {
        // e.g. "-rw------- 0/0   241 1970-01-01 00:00 root/certs/leaf-client-key.pem"
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.last().copied(), Some(path.as_str()), "{line}");
        assert_eq!(fields[0], perms(*mode, path.ends_with('/')), "{line}");
        assert_eq!(fields[1], "0/0", "{line}");
        assert_eq!(fields[3], "1970-01-01", "{line}");
    }
}

fn perms(mode: u32, dir: bool) -> String {
    let mut s = String::from(if dir { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[test]
fn contents_are_the_inputs() {
    let input = site("NYC Office");
    let entries = list(&site_bundle(&input).expect("bundle"));
    let text =
        |p: &str| String::from_utf8(file(&entries, &format!("{ROOT}/{p}")).to_vec()).expect("utf8");
    assert_eq!(text("nats-leaf.conf"), input.leaf_conf);
    assert_eq!(
        text("certs/leaf-client-key.pem"),
        input.pki.leaf_client_key_pem.expose()
    );
    assert_eq!(text("certs/ca-chain.pem"), input.pki.ca_chain_pem);
    assert_eq!(text("creds/leaf.creds"), input.leaf_creds.expose());
    let unit = text("serviceradar-nats-leaf.service");
    assert!(unit.contains("ExecStart=nats-server -c /etc/serviceradar/nats/nats-leaf.conf\n"));
    assert!(unit.contains("Restart=on-failure"));
    let compose = text("docker-compose.yml");
    assert!(compose.contains("image: nats:2.15-alpine\n"));
    assert!(compose.contains("/etc/serviceradar/nats/nats-leaf.conf:ro"));
    let fg = text("run-foreground.sh");
    assert!(fg.contains("exec nats-server -c \"$conf\""));
    let readme = text("README.md");
    for needle in [
        "sudo ./setup.sh",
        "docker compose up -d",
        "run-foreground.sh",
        "curl -s http://127.0.0.1:8222/leafz",
        "nats://10.0.1.50:4222",
        "tls://hub.example.com:7422",
    ] {
        assert!(readme.contains(needle), "README lacks {needle}");
    }
}

#[test]
fn optional_files_are_optional() {
    let mut input = common::site_with(common::pki(false), "NYC Office");
    input.edge_buffer_stream_json = None;
    let entries = list(&site_bundle(&input).expect("bundle"));
    let paths: Vec<&str> = entries.iter().map(|(p, ..)| p.as_str()).collect();
    assert!(!paths.iter().any(|p| p.contains("agent")));
    assert!(!paths.iter().any(|p| p.contains("streams")));
}

#[test]
fn long_slugs_still_unpack() {
    let mut input = site("NYC Office");
    input.tenant_slug = "t".repeat(63);
    input.site_slug = "s".repeat(63);
    let bytes = site_bundle(&input).expect("bundle");
    assert_eq!(bytes, site_bundle(&input).expect("bundle"));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = common::unpack(&bytes, dir.path(), &input.root_dir());
    assert_eq!(
        common::mode_of(&root.join("certs/leaf-client-key.pem")),
        0o600
    );
    assert_eq!(common::mode_of(&root.join("setup.sh")), 0o755);
}
