//! Schema validation of Kubernetes objects without a cluster: the Helm
//! chart's rendered objects and a site bundle's Kubernetes variant are
//! checked against the Kubernetes API's own OpenAPI schemas by
//! `kubernetes-validate` (PyPI, which ships those schemas for each
//! Kubernetes release; `scripts/test` installs it), strictly: an unknown
//! or misspelt field is an error, as `kubectl apply --validate=strict`
//! would make it.

use std::process::Command;

use crate::{HarnessError, binary_on_path};

/// How to install the validator.
pub const KUBERNETES_VALIDATE_HINT: &str =
    "install it with `pip install kubernetes-validate==1.37.0` (scripts/test does)";

/// The Kubernetes releases objects are validated against: the oldest the
/// Helm chart supports (its `kubeVersion`; the hub pods read the
/// `apps.kubernetes.io/pod-index` label) and the newest the validator ships.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];

/// Validates every object in `yaml` (one or more YAML documents) against
/// the schemas of each of [`KUBERNETES_VERSIONS`]. Returns the kinds it has
/// no schema for (custom resources such as the Prometheus operator's
/// `ServiceMonitor`), which the caller must check itself; every object of a
/// built-in kind must validate.
pub fn validate_kubernetes_objects(yaml: &str) -> Result<Vec<String>, HarnessError> {
    let validator = binary_on_path("kubernetes-validate", KUBERNETES_VALIDATE_HINT)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml)?;
    let mut unknown = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&validator)
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .map_err(|e| HarnessError::Process {
                what: "kubernetes-validate".into(),
                detail: e.to_string(),
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || text.lines().any(|l| l.starts_with("ERROR")) {
            return Err(HarnessError::Process {
                what: format!("kubernetes-validate against Kubernetes {version}"),
                detail: text,
            });
        }
        unknown.extend(text.lines().filter_map(|l| {
            let rest = l.split("Couldn't find schema for kind ").nth(1)?;
            Some(rest.split_whitespace().next()?.to_owned())
        }));
    }
    unknown.sort();
    unknown.dedup();
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_or_a_wrong_type_is_refused_and_custom_kinds_are_named() {
        let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n";
        let e = validate_kubernetes_objects(bad).expect_err("unknown field");
        assert!(e.to_string().contains("'portz' was unexpected"), "{e}");
        let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: y\nspec:\n  replicas: \"3\"\n";
        let e = validate_kubernetes_objects(bad).expect_err("string replicas");
        assert!(e.to_string().contains("spec.replicas"), "{e}");
        let custom =
            "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: z\n";
        assert_eq!(
            validate_kubernetes_objects(custom).expect("no schema is not an error"),
            vec!["ServiceMonitor".to_owned()]
        );
    }
}
