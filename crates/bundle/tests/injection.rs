//! Hostile input: a site display name full of shell syntax must never execute
//! anything when setup.sh runs and must show up literally in the README; slugs
//! and URLs carrying such syntax are rejected outright.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{file, list, run, site, unpack};
use serviceradar_bundle::{BundleError, CollectorBundle, CollectorType, NatsTarget, site_bundle};

fn hostile_name(marker: &Path) -> String {
    let m = marker.display();
    format!(
        r#"O'Brien "HQ" $(touch {m}) `touch {m}` ${{HOME}} $HOME \ \' '; touch {m}; ' | touch {m} & $((1+1))"#
    )
}

#[test]
fn hostile_site_name_never_executes_and_is_literal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("pwned");
    let name = hostile_name(&marker);
    let input = site(&name);
    let bytes = site_bundle(&input).expect("bundle");

    let entries = list(&bytes);
    let readme =
        String::from_utf8(file(&entries, &format!("{}/README.md", input.root_dir())).to_vec())
            .expect("utf8");
    assert!(
        readme.contains(&format!("Site: {name}\n")),
        "README shows the name literally"
    );
    // In setup.sh the name exists only as one single-quoted assignment.
    let setup =
        String::from_utf8(file(&entries, &format!("{}/setup.sh", input.root_dir())).to_vec())
            .expect("utf8");
    let quoted = serviceradar_bundle::shell::quote(&name).expect("quote");
    let lines: Vec<&str> = setup.lines().filter(|l| l.contains("touch ")).collect();
    assert_eq!(lines, vec![format!("SR_SITE_NAME={quoted}")]);
    for other in [
        "run-foreground.sh",
        "serviceradar-nats-leaf.service",
        "docker-compose.yml",
        "nats-leaf.conf",
    ] {
        let text =
            String::from_utf8_lossy(file(&entries, &format!("{}/{other}", input.root_dir())))
                .into_owned();
        assert!(
            !text.contains("touch "),
            "{other} must not carry the display name unquoted"
        );
    }

    let root = unpack(&bytes, dir.path(), &input.root_dir());
    let prefix = dir.path().join("root");
    let p = prefix.to_str().expect("utf8 path");
    for args in [
        vec!["--help"],
        vec!["--prefix", p, "--dry-run"],
        vec!["--prefix", p],
        vec!["--prefix", p],
    ] {
        let out = run(Command::new("bash")
            .arg(root.join("setup.sh"))
            .args(&args)
            .current_dir(&root)
            .stdin(Stdio::null()));
        assert!(out.status.success(), "setup.sh {args:?}");
        if args.len() > 1 {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("site:      {name} (nyc-office")),
                "banner prints the name literally"
            );
        }
        assert!(!marker.exists(), "setup.sh {args:?} executed the site name");
    }
    let out = run(Command::new("bash").arg("-n").arg(root.join("setup.sh")));
    assert!(out.status.success());
    assert!(!marker.exists());
}

#[test]
fn site_name_with_newline_or_control_chars_is_rejected() {
    for bad in [
        "NYC\nOffice",
        "NYC\rOffice",
        "a\u{0}b",
        "a\u{1b}[31mred",
        "   ",
    ] {
        assert!(
            matches!(
                site_bundle(&site(bad)),
                Err(BundleError::InvalidText {
                    field: "site_name",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn invalid_slugs_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("pwned");
    let m = m.display();
    for bad in [
        format!("acme$(touch {m})"),
        format!("acme`touch {m}`"),
        "acme'x".to_owned(),
        "acme\"x".to_owned(),
        "${HOME}".to_owned(),
        "a\\b".to_owned(),
        "../etc".to_owned(),
        "a/b".to_owned(),
        "Acme".to_owned(),
        String::new(),
    ] {
        let mut input = site("NYC Office");
        input.tenant_slug = bad.clone();
        assert!(
            matches!(
                site_bundle(&input),
                Err(BundleError::InvalidSlug {
                    field: "tenant_slug",
                    ..
                })
            ),
            "tenant slug {bad:?} accepted"
        );
        let mut input = site("NYC Office");
        input.site_slug = bad.clone();
        assert!(
            matches!(
                site_bundle(&input),
                Err(BundleError::InvalidSlug {
                    field: "site_slug",
                    ..
                })
            ),
            "site slug {bad:?} accepted"
        );
        let collector = CollectorBundle {
            collector_type: CollectorType::Trapd,
            package_id: uuid::Uuid::nil(),
            tenant_slug: "acme".into(),
            target: NatsTarget::EdgeSite {
                site_name: "NYC".into(),
                site_slug: bad.clone(),
                nats_leaf_url: "nats://10.0.1.50:4222".into(),
                other_node_urls: Vec::new(),
            },
            creds: common::CREDS.into(),
            client_cert_pem: input.pki.leaf_client_cert_pem.clone(),
            client_key_pem: input.pki.leaf_client_key_pem.clone(),
            ca_pem: input.pki.ca_chain_pem.clone(),
        };
        assert!(
            serviceradar_bundle::collector_bundle(&collector).is_err(),
            "collector site slug {bad:?} accepted"
        );
    }
}

#[test]
fn urls_with_shell_syntax_are_rejected() {
    for bad in [
        "nats://$(id):4222",
        "nats://`id`:4222",
        "nats://10.0.1.50:4222';id;'",
        "nats://10.0.1.50:4222\nExecStartPre=/bin/id",
    ] {
        let mut input = site("NYC Office");
        input.nats_leaf_url = bad.into();
        assert!(
            matches!(site_bundle(&input), Err(BundleError::InvalidUrl { .. })),
            "{bad:?} accepted"
        );
    }
}
