//! `serviceradar-agent --once` ("check and print") changes no state.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Issue 12: `--once` registered with the gateway and pushed its results,
/// which marked the site `active`. It must not contact the gateway at all.
#[test]
fn once_does_not_contact_the_gateway() {
    // A "gateway" that counts connections, and a target for a TCP check.
    let gateway = TcpListener::bind("127.0.0.1:0").expect("bind");
    let gateway_port = gateway.local_addr().expect("addr").port();
    let contacts = Arc::new(AtomicUsize::new(0));
    let counted = contacts.clone();
    std::thread::spawn(move || {
        for conn in gateway.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut c) = conn {
                let _ = c.read(&mut [0u8; 64]);
            }
        }
    });
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target_port = target.local_addr().expect("addr").port();

    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "gateway_url = \"https://127.0.0.1:{gateway_port}\"\ncert = \"agent.pem\"\n\
             key = \"agent-key.pem\"\nca = \"root-ca.pem\"\n\
             tenant_id = \"01a223f9-098e-7451-b290-3a68ca0c9e8b\"\n\
             site_id = \"01a223f9-1cdb-7748-a8cf-523a35d8fbfb\"\n\
             agent_id = \"01a223f9-1cdb-7748-a8cf-523a35d8fbfc\"\n"
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .arg("--check")
        .arg(format!("tcp=127.0.0.1:{target_port}"))
        .env_remove("SERVICERADAR_AGENT_GATEWAY_URL")
        .output()
        .expect("agent runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("\"kind\":\"tcp\""), "{stdout}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in redirected logs: {stderr}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        contacts.load(Ordering::SeqCst),
        0,
        "--once dialled the gateway"
    );

    // Without a local check it says so in one line instead of doing nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .env_remove("SERVICERADAR_AGENT_CHECKS")
        .output()
        .expect("agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--check kind=target"), "{stderr}");
    assert_eq!(
        contacts.load(Ordering::SeqCst),
        0,
        "--once dialled the gateway"
    );
}
