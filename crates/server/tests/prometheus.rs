//! The shipped Prometheus files (`deploy/prometheus/`) pass Prometheus's own
//! checks: `promtool check config` (the example scrape config and the rule
//! file it loads), `promtool check rules`, and `promtool test rules` (the
//! unit tests of the alerts in `alerts.test.yml`). `promtool` comes with
//! Debian's `prometheus` package; without it the test fails with that hint,
//! like the tests that need `nats-server`. That the rules use metric names
//! `serviceradar-core` really exports is checked by `tests/metrics.rs`.

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let binary = serviceradar_testkit::binary_on_path(
        "promtool",
        "install Debian's `prometheus` package (`apt-get install prometheus`; stop the daemon it starts)",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(binary)
        .args(args)
        .current_dir(deploy_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_example_scrape_config_and_its_rules_are_valid() {
    let text = promtool(&["check", "config", "prometheus.yml"]);
    assert!(text.contains("1 rule files found"), "{text}");
}

#[test]
fn the_alert_rules_are_valid() {
    let text = promtool(&["check", "rules", "alerts.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_alert_rules_fire_as_their_unit_tests_say() {
    let text = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}
