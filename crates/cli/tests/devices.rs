//! `serviceradar-cli devices` against the real `serviceradar-core serve` on
//! loopback (issue 16): an operator registers a device at a site, lists it,
//! gets its certificate for a CSR made by an independent tool (`openssl
//! req`: the key never leaves the "device") and for a key the CLI generates
//! itself (0600), each verifying with `openssl verify` against the tenant
//! chain; bad input exits 2 naming the field; a revoked device exits 3 and
//! gets no certificate; `--help` carries examples.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use serviceradar_testkit::{free_port, wait_for_port};

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-cli"))
}

fn core_binary() -> PathBuf {
    let path = cli().with_file_name("serviceradar-core");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p serviceradar-server)",
        path.display()
    );
    path
}

/// `serviceradar-core serve` on free loopback ports, stopped on drop.
struct Serve {
    child: std::process::Child,
    base: String,
    data_dir: PathBuf,
    database_url: String,
    dir: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

impl Serve {
    fn start(dir: &Path) -> Self {
        let api = free_port();
        let gateway = free_port();
        let data_dir = dir.join("data");
        let database_url = format!("sqlite://{}", data_dir.join("serviceradar.db").display());
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = |_| format!("127.0.0.1:{}", free_port());
        let child = Command::new(core_binary())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .args(["--metrics-listen", ""])
            .args(["--data-dir", &data_dir.display().to_string()])
            .args(["--database-url", &database_url])
            .args(["--hub-client-listen", &port(())])
            .args(["--hub-leafnode-listen", &port(())])
            .args(["--hub-monitoring-listen", &port(())])
            .args(["--leaf-monitoring-listen", &port(())])
            .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
            .args(["--gateway-url", &format!("https://localhost:{gateway}")])
            .env("SERVICERADAR_ADMIN_PASSWORD", "owner password 123")
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("serve.out")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.join("serve.err")).expect("stderr file"))
            .spawn()
            .expect("serve starts");
        wait_for_port(api, "serve", Duration::from_secs(60)).unwrap_or_else(|e| {
            panic!(
                "serve did not come up: {e}\n{}",
                std::fs::read_to_string(dir.join("serve.err")).unwrap_or_default()
            )
        });
        Self {
            child,
            base: format!("http://127.0.0.1:{api}"),
            data_dir,
            database_url,
            dir: dir.to_path_buf(),
        }
    }

    fn api_token(&self) -> String {
        let out = Command::new(core_binary())
            .args(["admin", "create-token", "--tenant", "default"])
            .args([
                "--email",
                "admin@example.com",
                "--scope",
                "read,write,admin",
            ])
            .args(["--data-dir", &self.data_dir.display().to_string()])
            .args(["--database-url", &self.database_url])
            .env("HOME", &self.dir)
            .output()
            .expect("admin runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(cli())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let (code, stdout, stderr) = run(args, env);
    assert_eq!(code, 0, "{args:?} failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// `openssl verify` of the first certificate of `chain` with the second as
/// the untrusted intermediate and `root` as the anchor.
fn verify(dir: &Path, chain: &Path, root: &Path) -> String {
    let text = std::fs::read_to_string(chain).expect("chain");
    let end = "-----END CERTIFICATE-----";
    let (leaf, ca) = text.split_once(end).expect("two certificates");
    let leaf_file = dir.join("leaf.pem");
    let ca_file = dir.join("tenant-ca.pem");
    std::fs::write(&leaf_file, format!("{leaf}{end}\n")).expect("write");
    std::fs::write(&ca_file, ca.trim_start()).expect("write");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(&ca_file)
        .arg(&leaf_file)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&leaf_file)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&subject.stdout).into_owned()
}

#[test]
fn operators_register_certify_and_revoke_devices() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let serve = Serve::start(dir);
    let config = dir.join("cli.json").display().to_string();
    let env = [("SERVICERADAR_CLI_CONFIG", config.as_str())];
    let token = serve.api_token();
    ok_json(
        &["login", "--url", &serve.base, "--token", &token, "--json"],
        &env,
    );
    let site = ok_json(
        &[
            "sites", "create", "--name", "Edge Lab", "--slug", "edge-lab", "--json",
        ],
        &env,
    );
    let site = site["id"].as_str().expect("site id").to_owned();

    let device = ok_json(
        &[
            "devices",
            "register",
            "--site",
            &site,
            "--name",
            "sensor-1",
            "--max-payload",
            "32768",
            "--json",
        ],
        &env,
    );
    let id = device["id"].as_str().expect("device id").to_owned();
    assert_eq!(device["max_payload"], 32768);
    assert_eq!(device["max_subscriptions"], 100);
    // Human output names the next step.
    let (code, out, err) = run(
        &["devices", "register", "--site", &site, "--name", "camera"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Registered device camera") && out.contains("devices cert"),
        "{out}"
    );
    // Bad input: exit 2, the field named, nothing written.
    let (code, _, err) = run(
        &[
            "devices",
            "register",
            "--site",
            &site,
            "--name",
            "Bad Name",
            "--data-rate",
            "0",
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("name:") && err.contains("data_rate:"), "{err}");
    let list = ok_json(&["devices", "list", "--site", &site, "--json"], &env);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    let (code, table, _) = run(&["devices", "list", "--site", &site], &env);
    assert_eq!(code, 0);
    assert!(
        table.contains("sensor-1") && table.contains("camera"),
        "{table}"
    );

    // A CSR made by another tool on the "device": the key stays there.
    let device_dir = dir.join("device");
    std::fs::create_dir_all(&device_dir).expect("dir");
    let made = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(device_dir.join("own-key.pem"))
        .arg("-out")
        .arg(device_dir.join("device.csr"))
        .args(["-subj", "/CN=whatever"])
        .output()
        .expect("openssl req");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let csr = device_dir.join("device.csr").display().to_string();
    let out_dir = dir.join("out-csr");
    let cert = ok_json(
        &[
            "devices",
            "cert",
            "--site",
            &site,
            &id,
            "--csr",
            &csr,
            "--out-dir",
            &out_dir.display().to_string(),
            "--json",
        ],
        &env,
    );
    assert_eq!(cert["key"], Value::Null);
    assert!(!out_dir.join("device-key.pem").exists());
    let subject = verify(
        dir,
        &out_dir.join("device.pem"),
        &out_dir.join("root-ca.pem"),
    );
    assert!(
        subject.contains(&format!("device-{id}.edge-lab.default.serviceradar")),
        "{subject}"
    );

    // Without --csr the key is generated here, private.
    let here = dir.join("out-here");
    let cert = ok_json(
        &[
            "devices",
            "cert",
            "--site",
            &site,
            &id,
            "--out-dir",
            &here.display().to_string(),
            "--json",
        ],
        &env,
    );
    let key = here.join("device-key.pem");
    assert_eq!(cert["key"], key.display().to_string());
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    verify(dir, &here.join("device.pem"), &here.join("root-ca.pem"));
    let listed = ok_json(&["devices", "list", "--site", &site, "--json"], &env);
    let row = listed["items"]
        .as_array()
        .and_then(|items| items.iter().find(|d| d["id"] == id.as_str()))
        .expect("listed");
    assert_eq!(row["cert_serial"], cert["serial"]);

    // Revoked: listed so, and no certificate (exit 3).
    let revoked = ok_json(&["devices", "revoke", "--site", &site, &id, "--json"], &env);
    assert_eq!(revoked["status"], "revoked");
    let active = ok_json(
        &[
            "devices", "list", "--site", &site, "--status", "active", "--json",
        ],
        &env,
    );
    assert_eq!(active["items"].as_array().map(Vec::len), Some(1));
    let (code, _, err) = run(
        &[
            "devices",
            "cert",
            "--site",
            &site,
            &id,
            "--csr",
            &csr,
            "--out-dir",
            &dir.join("no").display().to_string(),
        ],
        &env,
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("revoked"), "{err}");
    assert!(!dir.join("no").join("device.pem").exists());

    // The manual: every subcommand has an example.
    for sub in ["register", "list", "revoke", "cert"] {
        let (code, help, _) = run(&["devices", sub, "--help"], &[]);
        assert_eq!(code, 0);
        assert!(help.contains("Example"), "{sub}: {help}");
    }
}
