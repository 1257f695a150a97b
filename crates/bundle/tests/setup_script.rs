//! Runs the real `setup.sh` of a generated site bundle: syntax, `--prefix`
//! installs (modes, rewritten paths, idempotency), `--dry-run`, the root check
//! (as an unprivileged user), prefix validation, and the installed config
//! starting a real `nats-server` when one is on PATH.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, is_root, mode_of, run, site, unpack};
use serviceradar_bundle::{SiteBundle, site_bundle};
use serviceradar_testkit::free_port;

fn unpacked(input: &SiteBundle) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = unpack(
        &site_bundle(input).expect("bundle"),
        dir.path(),
        &input.root_dir(),
    );
    (dir, root)
}

fn setup(bundle_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = run(Command::new("bash")
        .arg(bundle_dir.join("setup.sh"))
        .args(args)
        .current_dir(bundle_dir)
        .stdin(Stdio::null()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scripts_pass_bash_n_and_shellcheck() {
    let (_dir, root) = unpacked(&site("NYC Office"));
    for script in ["setup.sh", "run-foreground.sh"] {
        let out = run(Command::new("bash").arg("-n").arg(root.join(script)));
        assert!(out.status.success(), "bash -n {script}");
    }
    if have("shellcheck") {
        let out = run(Command::new("shellcheck")
            .arg("--severity=info")
            .arg(root.join("setup.sh"))
            .arg(root.join("run-foreground.sh")));
        assert!(out.status.success(), "shellcheck found problems");
    } else {
        eprintln!("shellcheck not installed: skipped");
    }
}

#[test]
fn help_and_unknown_options() {
    let (_dir, root) = unpacked(&site("NYC Office"));
    let (ok, stdout, _) = setup(&root, &["--help"]);
    assert!(ok);
    assert!(
        stdout.contains(
            "Usage: setup.sh [--node N] [--prefix DIR] [--dry-run] [--no-start] [--help]"
        )
    );
    let (ok, _, stderr) = setup(&root, &["--bogus"]);
    assert!(!ok);
    assert!(stderr.contains("unknown option: --bogus"));
}

#[test]
fn prefix_install_modes_rewrite_and_idempotency() {
    let input = site("NYC Office");
    let (dir, root) = unpacked(&input);
    let prefix = dir.path().join("root");
    let p = prefix.to_str().expect("utf8 path").to_owned();

    let (ok, stdout, _) = setup(&root, &["--prefix", &p]);
    assert!(ok, "first run");
    assert!(stdout.contains("installed "));

    let at = |rel: &str| prefix.join(rel.trim_start_matches('/'));
    let expect_modes = [
        ("/etc/serviceradar/nats", 0o755),
        ("/etc/serviceradar/nats/certs", 0o750),
        ("/var/lib/serviceradar/nats/jetstream", 0o750),
        ("/etc/serviceradar/nats/nats-leaf.conf", 0o644),
        ("/etc/serviceradar/nats/leaf.creds", 0o600),
        ("/etc/serviceradar/nats/certs/leaf-client.pem", 0o644),
        ("/etc/serviceradar/nats/certs/leaf-client-key.pem", 0o600),
        ("/etc/serviceradar/nats/certs/leaf-server.pem", 0o644),
        ("/etc/serviceradar/nats/certs/leaf-server-key.pem", 0o600),
        ("/etc/serviceradar/nats/certs/tenant-ca.pem", 0o644),
        ("/etc/serviceradar/nats/certs/ca-chain.pem", 0o644),
        ("/etc/serviceradar/nats/certs/root-ca.pem", 0o644),
        ("/etc/serviceradar/nats/certs/agent.pem", 0o644),
        ("/etc/serviceradar/nats/certs/agent-key.pem", 0o600),
        ("/etc/serviceradar/nats/streams/edge-buffer.json", 0o644),
        ("/etc/systemd/system/serviceradar-nats-leaf.service", 0o644),
    ];
    for (path, mode) in expect_modes {
        assert_eq!(mode_of(&at(path)), mode, "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(at("/etc/serviceradar/nats/certs/leaf-client-key.pem"))
            .expect("read"),
        input.pki.leaf_client_key_pem.expose()
    );

    // Every known install path in the config and the unit now points below the prefix.
    let conf = std::fs::read_to_string(at("/etc/serviceradar/nats/nats-leaf.conf")).expect("conf");
    assert_eq!(
        conf,
        input
            .leaf_conf
            .replace(
                "/etc/serviceradar/nats",
                &format!("{p}/etc/serviceradar/nats")
            )
            .replace(
                "/var/lib/serviceradar/nats/jetstream",
                &format!("{p}/var/lib/serviceradar/nats/jetstream")
            )
    );
    assert!(conf.contains(&format!(
        "\"{p}/etc/serviceradar/nats/certs/leaf-client-key.pem\""
    )));
    assert!(conf.contains(&format!("\"{p}/var/lib/serviceradar/nats/jetstream\"")));
    assert!(!conf.contains(&format!("{p}{p}")), "rewritten twice");
    let unit = std::fs::read_to_string(at("/etc/systemd/system/serviceradar-nats-leaf.service"))
        .expect("unit");
    assert!(unit.contains(&format!(" -c {p}/etc/serviceradar/nats/nats-leaf.conf\n")));
    assert!(unit.contains(&format!(
        "ReadWritePaths={p}/var/lib/serviceradar/nats/jetstream\n"
    )));
    if have("nats-server") {
        assert!(stdout.contains("nats-server -t: valid"), "config checked");
    }

    // Second run: nothing to do.
    let (ok, stdout, _) = setup(&root, &["--prefix", &p]);
    assert!(ok, "second run");
    assert!(stdout.contains("unchanged  "));
    assert!(!stdout.contains("installed  ") && !stdout.contains("updated  "));
    assert!(stdout.contains("Done: 0 change(s)"));

    // A loosened key mode is repaired and reported.
    use std::os::unix::fs::PermissionsExt;
    let key = at("/etc/serviceradar/nats/certs/leaf-server-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, stdout, _) = setup(&root, &["--prefix", &format!("{p}/")]);
    assert!(ok, "third run");
    assert!(stdout.contains(&format!("updated    {}", key.display())));
    assert!(stdout.contains("Done: 1 change(s)"));
    assert_eq!(mode_of(&key), 0o600);
}

#[test]
fn dry_run_creates_nothing() {
    let (dir, root) = unpacked(&site("NYC Office"));
    let prefix = dir.path().join("fresh");
    let p = prefix.to_str().expect("utf8 path");
    let (ok, stdout, _) = setup(&root, &["--prefix", p, "--dry-run"]);
    assert!(ok);
    assert!(stdout.contains("[dry-run] would install "));
    assert!(stdout.contains("[dry-run] would create directory "));
    assert!(stdout.contains("Nothing was changed."));
    assert!(!prefix.exists(), "dry run created {}", prefix.display());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}"); // the tarball and the bundle dir
}

#[test]
fn dry_run_as_root_without_prefix_changes_nothing() {
    if !is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let (_dir, root) = unpacked(&site("NYC Office"));
    let existed = Path::new("/etc/serviceradar/nats").exists();
    let (ok, stdout, _) = setup(&root, &["--dry-run"]);
    assert!(ok);
    assert!(stdout.contains("install:   into /"));
    assert!(stdout.contains("/etc/serviceradar/nats/nats-leaf.conf"));
    assert!(stdout.contains("/etc/systemd/system/serviceradar-nats-leaf.service"));
    assert!(stdout.contains("Nothing was changed."));
    if !existed {
        assert!(!Path::new("/etc/serviceradar/nats").exists());
    }
}

#[test]
fn refuses_without_root_unless_prefix() {
    let (dir, root) = unpacked(&site("NYC Office"));
    let unprivileged = |args: &[&str]| {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", "bash"]);
            c
        } else {
            Command::new("bash")
        };
        let out = run(cmd
            .arg(root.join("setup.sh"))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null()));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    if is_root() {
        if !have("runuser") {
            eprintln!("runuser not available: skipped");
            return;
        }
        // nobody must be able to read the script and list the bundle.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let (code, _, stderr) = unprivileged(&[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("installing into / needs root"), "{stderr}");

    // With --prefix the root check does not apply (dry run: nobody cannot read
    // the 0600 keys unpacked by root, and need not).
    let target = dir.path().join("unprivileged");
    let (code, stdout, _) =
        unprivileged(&["--prefix", target.to_str().expect("utf8 path"), "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("Nothing was changed."));
    assert!(!target.exists());
}

#[test]
fn rejects_unsafe_prefixes() {
    let (dir, root) = unpacked(&site("NYC Office"));
    let marker = dir.path().join("pwned");
    let m = marker.to_str().expect("utf8 path");
    for bad in [
        "relative/dir".to_owned(),
        "/tmp/a b".to_owned(),
        "/tmp/../etc".to_owned(),
        "/tmp/./x".to_owned(),
        format!("/tmp/$(touch {m})"),
        format!("/tmp/`touch {m}`"),
        "/tmp/x;touch /tmp/y".to_owned(),
        "/".to_owned(),
        String::new(),
    ] {
        let (ok, _, stderr) = setup(&root, &["--prefix", &bad]);
        assert!(!ok, "accepted --prefix {bad:?}");
        assert!(stderr.contains("--prefix"), "{stderr}");
    }
    let (ok, _, _) = setup(&root, &["--prefix"]);
    assert!(!ok);
    assert!(!marker.exists());
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The layout setup.sh installs actually runs: a real nats-server starts from
/// the installed, prefix-rewritten config and serves /healthz and /leafz.
#[test]
fn installed_config_starts_a_real_nats_server() {
    if !have("nats-server") {
        eprintln!("nats-server not on PATH: skipped");
        return;
    }
    let (client, mon) = (free_port(), free_port());
    let mut input = site("NYC Office");
    input.client_port = client;
    input.monitoring_port = mon;
    input.leaf_conf = input
        .leaf_conf
        .replace("0.0.0.0:4222", &format!("127.0.0.1:{client}"))
        .replace("127.0.0.1:8222", &format!("127.0.0.1:{mon}"))
        // nothing listens here: the leaf keeps retrying, which is fine
        .replace(
            "tls://hub.example.com:7422",
            &format!("tls://127.0.0.1:{}", free_port()),
        );
    let (dir, root) = unpacked(&input);
    let prefix = dir.path().join("root");
    let (ok, stdout, _) = setup(&root, &["--prefix", prefix.to_str().expect("utf8")]);
    assert!(ok);
    assert!(stdout.contains(&format!("curl -s http://127.0.0.1:{mon}/leafz")));

    let conf = prefix.join("etc/serviceradar/nats/nats-leaf.conf");
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let _guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(body) = http_get(mon, "/healthz")
            && body.contains("200 OK")
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(health.contains("\"ok\""), "{health}");
    let leafz = http_get(mon, "/leafz").expect("leafz");
    assert!(leafz.contains("\"leafnodes\""), "{leafz}");
    // JetStream writes below the prefix, not into /var/lib.
    assert!(
        prefix
            .join("var/lib/serviceradar/nats/jetstream/jetstream")
            .exists()
    );
}

/// systemd itself accepts the installed unit (ExecStart made absolute by
/// setup.sh, since systemd only searches its own fixed PATH).
#[test]
fn installed_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") || !have("nats-server") {
        eprintln!("systemd-analyze or nats-server missing: skipped");
        return;
    }
    let (dir, root) = unpacked(&site("NYC Office"));
    let prefix = dir.path().join("root");
    let (ok, _, _) = setup(&root, &["--prefix", prefix.to_str().expect("utf8")]);
    assert!(ok);
    let unit = prefix.join("etc/systemd/system/serviceradar-nats-leaf.service");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(out.status.success(), "systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("serviceradar-nats-leaf"), "{stderr}");
}

/// A site bundle whose agent carries its `agent.toml` (as provisioning
/// ships it: certificate paths relative to the bundle).
fn site_with_agent_config() -> SiteBundle {
    let mut input = site("NYC Office");
    if let Some(agent) = input.pki.agent.as_mut() {
        agent.config_toml = Some(
            "gateway_url = \"https://127.0.0.1:50052\"\ncert = \"certs/agent.pem\"\n\
             key = \"certs/agent-key.pem\"\nca = \"certs/root-ca.pem\"\n\
             leaf_url = \"tls://127.0.0.1:4222\"\nleaf_ca = \"certs/ca-chain.pem\"\n\
             edge_buffer = \"streams/edge-buffer.json\"\n"
                .into(),
        );
    }
    input
}

#[test]
fn the_agent_beside_setup_sh_is_installed_with_its_paths_under_the_prefix() {
    let input = site_with_agent_config();
    let (dir, root) = unpacked(&input);
    // Any executable stands in for the agent binary: setup.sh only copies it.
    let fake_agent = root.join("serviceradar-agent");
    std::fs::write(&fake_agent, "#!/bin/sh\nexit 0\n").expect("write");
    let mut perms = std::fs::metadata(&fake_agent).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake_agent, perms).expect("chmod");
    let prefix = dir.path().join("root");
    let p = prefix.to_str().expect("utf8 path").to_owned();

    let (ok, stdout, stderr) = setup(&root, &["--prefix", &p]);
    assert!(ok, "setup failed: {stdout}\n{stderr}");
    let bin = prefix.join("usr/local/bin/serviceradar-agent");
    assert_eq!(mode_of(&bin), 0o755);
    let config = std::fs::read_to_string(prefix.join("etc/serviceradar/nats/agent.toml"))
        .expect("agent.toml");
    assert!(
        config.contains(&format!(
            "cert = \"{p}/etc/serviceradar/nats/certs/agent.pem\""
        )),
        "{config}"
    );
    assert!(config.contains(&format!(
        "ca = \"{p}/etc/serviceradar/nats/certs/root-ca.pem\""
    )));
    assert!(config.contains("gateway_url = \"https://127.0.0.1:50052\""));
    assert!(config.contains(&format!(
        "leaf_ca = \"{p}/etc/serviceradar/nats/certs/ca-chain.pem\""
    )));
    assert!(config.contains(&format!(
        "edge_buffer = \"{p}/etc/serviceradar/nats/streams/edge-buffer.json\""
    )));
    let unit =
        std::fs::read_to_string(prefix.join("etc/systemd/system/serviceradar-agent.service"))
            .expect("agent unit");
    assert!(
        unit.contains(&format!(
            "ExecStart={} --config {p}/etc/serviceradar/nats/agent.toml\n",
            bin.display()
        )),
        "{unit}"
    );
    assert!(
        stdout.contains("start the agent in the foreground:"),
        "{stdout}"
    );

    // Again: nothing changes.
    let (ok, stdout, _) = setup(&root, &["--prefix", &p]);
    assert!(ok);
    assert!(stdout.contains("Done: 0 change(s)"), "{stdout}");
}

#[test]
fn without_the_agent_binary_setup_installs_its_files_and_says_how_to_get_it() {
    let input = site_with_agent_config();
    let (dir, root) = unpacked(&input);
    let prefix = dir.path().join("root");
    let p = prefix.to_str().expect("utf8 path").to_owned();
    // A PATH without serviceradar-agent (but with the tools setup.sh uses).
    let out = run(Command::new("bash")
        .arg(root.join("setup.sh"))
        .args(["--prefix", &p])
        .env("PATH", "/usr/bin:/bin")
        .current_dir(&root)
        .stdin(Stdio::null()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("serviceradar-agent is neither beside setup.sh nor on PATH"),
        "{stderr}"
    );
    assert!(prefix.join("etc/serviceradar/nats/agent.toml").is_file());
    assert!(
        !prefix
            .join("etc/systemd/system/serviceradar-agent.service")
            .exists()
    );
}

/// A leaf config with device authorization cannot be installed without the
/// agent that serves it (the leaf would admit nobody, or, worse, someone
/// would "fix" it by removing the include): `setup.sh` refuses before
/// changing anything, and with the agent beside it, makes the keys with
/// `serviceradar-agent device-auth init` before `nats-server -t`.
#[test]
fn a_device_auth_site_needs_the_agent_and_setup_makes_its_keys_with_it() {
    let mut input = site_with_agent_config();
    input.leaf_conf = input
        .leaf_conf
        .replacen("\n", "\ninclude \"device-auth.conf\"\n", 1);
    let (dir, root) = unpacked(&input);
    let readme = std::fs::read_to_string(root.join("README.md")).expect("readme");
    assert!(readme.contains("## Device authorization"), "{readme}");
    let prefix = dir.path().join("root");
    let p = prefix.to_str().expect("utf8 path").to_owned();
    let (ok, _, stderr) = setup(&root, &["--prefix", &p]);
    assert!(!ok, "installed without the agent");
    assert!(
        stderr.contains("uses device authorization") && stderr.contains("serviceradar-agent"),
        "{stderr}"
    );
    assert!(
        !prefix.exists(),
        "nothing is installed when the agent is missing"
    );

    // A stand-in agent records how setup.sh calls it and writes the include.
    let calls = dir.path().join("calls");
    std::fs::write(
        root.join("serviceradar-agent"),
        format!(
            "#!/usr/bin/env bash\necho \"$*\" >>'{}'\n\
             [ \"$1 $2\" = \"device-auth init\" ] && echo '# keys' >\"$4/device-auth.conf\"\nexit 0\n",
            calls.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(
        root.join("serviceradar-agent"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (ok, stdout, stderr) = setup(&root, &["--prefix", &p]);
    assert!(ok, "{stdout}{stderr}");
    let conf_dir = prefix.join("etc/serviceradar/nats");
    assert_eq!(
        std::fs::read_to_string(&calls).expect("the agent was called"),
        format!("device-auth init --nats-dir {}\n", conf_dir.display())
    );
    assert!(conf_dir.join("device-auth.conf").is_file());
    assert!(
        stdout.contains("device authorization keys made here"),
        "{stdout}"
    );
}
