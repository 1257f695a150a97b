//! `serve`'s flags reach the settings they name: the configuration
//! surface of `serviceradar-core` (`config.rs`), parsed as the binary parses
//! it, without starting anything.

use clap::Parser;

use std::path::PathBuf;

use serviceradar_server::config::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

fn secure(args: &[&str]) -> bool {
    let mut all = vec!["serviceradar-core"];
    all.extend_from_slice(args);
    Cli::parse_from(all)
        .serve
        .settings()
        .sessions
        .secure_cookies
}

#[test]
fn operations_flags_reach_the_settings() {
    use std::time::Duration;
    let settings = |args: &[&str]| {
        let mut all = vec!["serviceradar-core"];
        all.extend_from_slice(args);
        Cli::parse_from(all).serve.settings()
    };
    let defaults = settings(&[]);
    assert_eq!(defaults.ingest_stall_unready, Duration::from_secs(60));
    assert_eq!(defaults.shutdown_grace, Duration::from_secs(20));
    assert_eq!(defaults.retention_sweep, Some(Duration::from_secs(3600)));
    assert_eq!(defaults.retention.telemetry_days, 30);
    let set = settings(&[
        "--ingest-unready-after-secs",
        "0",
        "--shutdown-grace-secs",
        "5",
        "--retention-sweep-secs",
        "0",
        "--telemetry-retention-days",
        "7",
    ]);
    assert!(
        set.ingest_stall_unready.is_zero(),
        "0 keeps ingestion out of readiness"
    );
    assert_eq!(set.shutdown_grace, Duration::from_secs(5));
    assert_eq!(set.retention_sweep, None);
    assert_eq!(set.retention.telemetry_days, 7);
}

/// Issue 11 finding 7: `--public-url https://...` did not make cookies
/// `Secure`. Secure is the default unless the URL is plain http on loopback.
#[test]
fn an_https_public_url_makes_session_cookies_secure() {
    assert!(secure(&["--public-url", "https://edge.example.com"]));
    assert!(secure(&["--public-url", "http://edge.example.com:8080"]));
    assert!(secure(&["--listen", "0.0.0.0:8080"]));
    assert!(
        !secure(&[]),
        "the default http://127.0.0.1:8080 is plain http on loopback"
    );
    assert!(!secure(&["--public-url", "http://localhost:8080/"]));
    assert!(!secure(&["--public-url", "http://[::1]:8080"]));
    // Explicit choices win.
    assert!(secure(&["--secure-cookies"]));
    assert!(!secure(&[
        "--public-url",
        "https://x.example.com",
        "--secure-cookies",
        "false"
    ]));
}

fn serve(args: &[&str]) -> ServeConfig {
    let mut all = vec!["serviceradar-core"];
    all.extend_from_slice(args);
    Cli::parse_from(all).serve
}

/// Issue 12: with no hub flags everything points at the embedded hub.
#[test]
fn without_hub_flags_everything_uses_the_embedded_hub() {
    let config = serve(&["--data-dir", "/srv/sr"]);
    let settings = config.settings();
    let hub = settings.embedded_hub.expect("an embedded hub");
    assert_eq!(hub.dir, PathBuf::from("/srv/sr/hub"));
    assert_eq!(hub.options.client_listen, "127.0.0.1:4322");
    assert_eq!(hub.options.leafnode_listen, "0.0.0.0:7422");
    assert_eq!(
        hub.options.monitoring_listen.as_deref(),
        Some("127.0.0.1:8322")
    );
    assert_eq!(
        settings.provisioning.hub_leafnode_url,
        "tls://127.0.0.1:7422"
    );
    assert_eq!(settings.provisioning.saas_nats_url, "nats://127.0.0.1:4322");
    let ingest = settings.ingest.expect("ingestion on");
    assert_eq!(ingest.hub.url, "nats://127.0.0.1:4322");
    assert_eq!(
        settings.leaf_auth.expect("callout on").hub.url,
        "nats://127.0.0.1:4322"
    );
}

/// Sites dial the host of `--hub-leafnode-url`: the embedded hub's
/// certificate must name it, or their TLS check fails.
#[test]
fn the_sites_hub_host_is_in_the_embedded_hub_certificate() {
    let config = serve(&[
        "--hub-leafnode-url",
        "tls://hub.example.com:7422",
        "--hub-host",
        "10.0.0.5,hub.internal",
        "--hub-leafnode-listen",
        "0.0.0.0:7500",
    ]);
    let hub = config.embedded_hub().expect("embedded");
    assert_eq!(
        hub.options.hosts,
        [
            "localhost",
            "127.0.0.1",
            "hub.example.com",
            "10.0.0.5",
            "hub.internal"
        ]
    );
    // Without the URL, sites dial the embedded hub's leafnode port.
    let config = serve(&["--hub-leafnode-listen", "0.0.0.0:7500"]);
    assert_eq!(config.effective_hub_leafnode_url(), "tls://127.0.0.1:7500");
}

/// A hub cluster: every node's client URL (flag repeated or a comma
/// list) reaches ingestion and the callout, whose streams then keep 3
/// replicas; every node's leafnode URL reaches the leaves' remote.
#[test]
fn a_hub_cluster_is_every_node_url_for_services_and_leaves() {
    let config = serve(&[
        "--ingest-nats-url",
        "nats://hub-0:4322",
        "--ingest-nats-url",
        "nats://hub-1:4322,nats://hub-2:4322",
        "--hub-leafnode-url",
        "tls://hub-0:7422,tls://hub-1:7422,tls://hub-2:7422",
    ]);
    let settings = config.settings();
    assert!(settings.embedded_hub.is_none());
    let ingest = settings.ingest.expect("ingestion");
    assert_eq!(
        ingest.hub.urls(),
        [
            "nats://hub-0:4322",
            "nats://hub-1:4322",
            "nats://hub-2:4322"
        ]
    );
    assert_eq!(ingest.stream_replicas, 3);
    assert_eq!(settings.leaf_auth.expect("callout").hub.servers(), 3);
    assert_eq!(settings.provisioning.hub_leafnode_url, "tls://hub-0:7422");
    assert_eq!(
        settings.provisioning.extra_hub_leafnode_urls,
        ["tls://hub-1:7422", "tls://hub-2:7422"]
    );
    assert_eq!(settings.provisioning.saas_nats_url, "nats://hub-0:4322");
    // One URL keeps one replica unless asked.
    let one = serve(&["--ingest-nats-url", "nats://hub:4322"]).settings();
    assert_eq!(one.ingest.expect("ingestion").stream_replicas, 1);
    let asked = serve(&[
        "--ingest-nats-url",
        "nats://hub:4322",
        "--ingest-stream-replicas",
        "3",
    ]);
    assert_eq!(
        asked.settings().ingest.expect("ingestion").stream_replicas,
        3
    );
}

/// Pointing at an external hub stays one flag, and then no hub is started.
#[test]
fn an_external_hub_url_starts_no_embedded_hub() {
    let config = serve(&["--ingest-nats-url", "nats://hub.internal:4322"]);
    let settings = config.settings();
    assert!(settings.embedded_hub.is_none());
    assert_eq!(
        settings.ingest.expect("ingestion").hub.url,
        "nats://hub.internal:4322"
    );
    assert_eq!(
        settings.provisioning.saas_nats_url,
        "nats://hub.internal:4322"
    );
    assert_eq!(
        settings.provisioning.hub_leafnode_url,
        "tls://127.0.0.1:7422"
    );
}

/// Issue 15: `--ingest-mode platform` and its bounds reach ingestion; the
/// default stays one pipeline per tenant; an unknown mode is refused.
#[test]
fn the_ingest_mode_reaches_ingestion() {
    let settings = |args: &[&str]| {
        let mut all = vec!["serviceradar-core"];
        all.extend_from_slice(args);
        Cli::parse_from(all).serve.settings()
    };
    let defaults = settings(&[]).ingest.expect("ingestion on");
    assert_eq!(defaults.mode, serviceradar_ingest::IngestMode::Tenant);
    assert_eq!(
        defaults.tenant_connections,
        serviceradar_ingest::DEFAULT_TENANT_CONNECTIONS
    );
    let platform = settings(&[
        "--ingest-mode",
        "platform",
        "--ingest-tenant-connections",
        "8",
        "--ingest-tenant-in-flight",
        "500",
    ])
    .ingest
    .expect("ingestion on");
    assert_eq!(platform.mode, serviceradar_ingest::IngestMode::Platform);
    assert_eq!(platform.tenant_connections, 8);
    assert_eq!(platform.tenant_in_flight, 500);
    assert!(
        Cli::try_parse_from(["serviceradar-core", "--ingest-mode", "shared"]).is_err(),
        "an unknown mode is refused"
    );
    assert!(
        Cli::try_parse_from(["serviceradar-core", "--ingest-tenant-connections", "0"]).is_err(),
        "at least one tenant connection"
    );
}

/// A typo in a URL, host or listener flag is refused when the command line
/// is read, naming the flag and the rule, instead of surfacing deep in
/// start-up (after the bootstrap tenant was written) or in every bundle.
#[test]
fn bad_urls_hosts_and_listeners_are_refused_at_the_flags() {
    let refused = |args: &[&str], says: &str| {
        let mut all = vec!["serviceradar-core"];
        all.extend_from_slice(args);
        let error = match Cli::try_parse_from(all) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(args[0]) && error.contains(says),
            "{args:?}: {error}"
        );
    };
    refused(&["--hub-leafnode-url", "tls://bad host:7422"], "whitespace");
    refused(&["--hub-leafnode-url", "http://hub:7422"], "scheme");
    refused(&["--ingest-nats-url", "nats://hub:99999"], "port");
    refused(&["--saas-nats-url", "hub.example.com"], "URL like");
    refused(&["--public-url", "not a url"], "URL like");
    refused(&["--public-url", "https://edge.example.com/ui"], "path");
    refused(
        &["--gateway-url", "http://hub.example.com:50051"],
        "https://",
    );
    refused(&["--gateway-hosts", "hub_example"], "DNS name");
    refused(&["--hub-host", "a b"], "DNS name");
    refused(&["--hub-leafnode-listen", "7422"], "host:port");
    refused(&["--leaf-monitoring-listen", "localhost"], "host:port");
    refused(&["--log-format", "xml"], "pretty");
    // Blanks (an empty environment variable) still mean "none".
    let config = serve(&[
        "--ingest-nats-url",
        "",
        "--leaf-monitoring-listen",
        "",
        "--hub-monitoring-listen",
        "",
    ]);
    assert!(config.runs_embedded_hub());
    let settings = config.settings();
    assert_eq!(settings.provisioning.leaf_monitoring_listen, None);
    assert_eq!(
        settings
            .embedded_hub
            .expect("embedded")
            .options
            .monitoring_listen,
        None
    );
    // Good values are kept in their canonical form.
    let settings = serve(&[
        "--public-url",
        "HTTPS://Edge.Example.com/",
        "--gateway-url",
        "https://hub.example.com:50051/",
    ])
    .settings();
    assert_eq!(
        settings.public_url.as_deref(),
        Some("https://edge.example.com")
    );
    assert_eq!(
        settings.provisioning.gateway_url,
        "https://hub.example.com:50051"
    );
}

/// The same through the binary: exit status 2 and nothing written, not
/// even the data dir.
#[test]
fn serve_with_a_bad_flag_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--hub-leafnode-url", "tls://bad host:7422"])
        .env_remove("SERVICERADAR_HUB_LEAFNODE_URL")
        .output()
        .expect("running serviceradar-core");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--hub-leafnode-url"), "{stderr}");
    assert!(!data.exists(), "the data dir was created");
}
