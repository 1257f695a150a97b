//! The crate layering holds: every crate depends only on crates of lower
//! layers (ARCHITECTURE.md, "Crates and layers"), nothing depends on a binary
//! crate, and the test kit (`serviceradar-testkit`, which starts servers) is
//! only ever a dev-dependency (the `bench` tool crate excepted).
//!
//! The facts come from `cargo metadata`, so the test sees what cargo builds.
//! To see it fail, give a lower crate a higher dependency, e.g. add
//! `serviceradar-api.workspace = true` under `[dependencies]` of
//! `crates/store/Cargo.toml`: the test then reports
//! `serviceradar-store (layer 2, data) depends on serviceradar-api (layer 8, edges)`.
//! A new crate must be given its layer in `LAYERS` before the test passes.

use std::collections::HashMap;
use std::process::Command;

/// Every workspace crate and its layer; a dependency must be on a lower layer.
const LAYERS: &[(&str, u8, &str)] = &[
    ("serviceradar-domain", 0, "pure"),
    ("serviceradar-runtime", 1, "runtime"),
    ("serviceradar-proto", 1, "pure"),
    ("serviceradar-pki", 1, "pure"),
    ("serviceradar-natsconf", 1, "pure"),
    ("serviceradar-bundle", 1, "pure"),
    ("serviceradar-store", 2, "data"),
    ("serviceradar-identity", 3, "services"),
    ("serviceradar-jobs", 3, "services"),
    ("serviceradar-auth", 3, "services"),
    ("serviceradar-hub", 4, "services"),
    ("serviceradar-provisioning", 4, "services"),
    ("serviceradar-health", 4, "services"),
    ("serviceradar-ingest", 5, "services"),
    ("serviceradar-gateway", 5, "services"),
    ("serviceradar-control", 6, "use-cases"),
    ("serviceradar-http", 7, "edges"),
    ("serviceradar-api", 8, "edges"),
    ("serviceradar-web", 8, "edges"),
    ("serviceradar-quickstart", 8, "tools"),
    ("serviceradar-server", 9, "binaries"),
    ("serviceradar-agent", 9, "binaries"),
    ("serviceradar-cli", 9, "binaries"),
    ("serviceradar-bench", 10, "tools"),
    ("serviceradar-testkit", 11, "dev"),
];

const TESTKIT: &str = "serviceradar-testkit";
const BENCH: &str = "serviceradar-bench";

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

/// Violations of the layering in a `cargo metadata` document.
fn violations(meta: &serde_json::Value) -> Vec<String> {
    let layers: HashMap<&str, (u8, &str)> = LAYERS
        .iter()
        .map(|(name, rank, label)| (*name, (*rank, *label)))
        .collect();
    let packages = meta["packages"].as_array().expect("packages");
    let ours: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut found = Vec::new();
    for package in packages {
        let name = package["name"].as_str().expect("name");
        let Some(&(rank, label)) = layers.get(name) else {
            found.push(format!("{name} has no layer in LAYERS"));
            continue;
        };
        let is_binary = |n: &str| layers.get(n).is_some_and(|(_, l)| *l == "binaries");
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            if !ours.contains(&dep_name) {
                continue;
            }
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let (dep_rank, dep_label) = layers.get(dep_name).copied().unwrap_or((u8::MAX, "?"));
            if kind == "dev" {
                // Tests may use anything below the tools, and the test kit.
                if dep_name == BENCH {
                    found.push(format!("{name} has a dev-dependency on {dep_name} (tools)"));
                }
                continue;
            }
            if dep_name == TESTKIT && name != BENCH {
                found.push(format!(
                    "{name} depends on {TESTKIT} outside [dev-dependencies]"
                ));
            } else if dep_name != TESTKIT && dep_rank >= rank {
                found.push(format!(
                    "{name} (layer {rank}, {label}) depends on {dep_name} (layer {dep_rank}, {dep_label})"
                ));
            } else if is_binary(dep_name) && name != BENCH {
                found.push(format!("{name} depends on the binary crate {dep_name}"));
            }
        }
    }
    found
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let found = violations(&metadata());
    assert!(
        found.is_empty(),
        "layering violations:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_check_catches_an_upward_dependency() {
    // The same check over a document in which the store depends on the API.
    let mut meta = metadata();
    let store = meta["packages"]
        .as_array_mut()
        .expect("packages")
        .iter_mut()
        .find(|p| p["name"] == "serviceradar-store")
        .expect("store package");
    store["dependencies"]
        .as_array_mut()
        .expect("dependencies")
        .push(serde_json::json!({"name": "serviceradar-api", "kind": null}));
    let found = violations(&meta);
    assert!(
        found
            .iter()
            .any(|v| v.contains("serviceradar-store (layer 2, data) depends on serviceradar-api")),
        "{found:?}"
    );
}

#[test]
fn production_binaries_do_not_link_the_test_kit() {
    // `cargo tree -p serviceradar-server -e normal` must not list testkit or tempfile.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "serviceradar-server",
            "-e",
            "normal",
            "--offline",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for forbidden in ["serviceradar-testkit", "tempfile"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{forbidden} "))),
            "serviceradar-server links {forbidden}"
        );
    }
}
