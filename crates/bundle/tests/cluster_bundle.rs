//! The bundle of a site whose leaf is a 3-node cluster: one config and
//! server certificate per node, `setup.sh --node N` installing node N (and
//! refusing to guess), per-node compose files, and the Kubernetes variant
//! as valid objects: a StatefulSet of 3 with pod anti-affinity, a zone
//! topology spread, a JetStream volume claim per pod and probes, a headless
//! service, a PodDisruptionBudget, and a kustomization whose Secret holds
//! every file the init container copies.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{leaf_conf, pki, run, site, unpack};
use serviceradar_bundle::site::{ClusterNode, SiteCluster};
use serviceradar_bundle::{SiteBundle, site_bundle};
use yaml_rust2::{Yaml, YamlLoader};

fn clustered() -> SiteBundle {
    let mut b = site("Plant");
    let nodes = (0..3)
        .map(|i| {
            let node_pki = pki(false);
            ClusterNode {
                leaf_conf: leaf_conf(&b.paths, "nyc-office").replace(
                    "server_name: \"nats-nyc-office\"",
                    &format!("server_name: \"n{i}\""),
                ),
                server_cert_pem: node_pki.leaf_server_cert_pem,
                server_key_pem: node_pki.leaf_server_key_pem,
                url: format!("tls://sr-leaf-nyc-office-{i}.sr-leaf-nyc-office:4222"),
                client_port: 4222,
                route_port: 6222,
                monitoring_port: 8222,
            }
        })
        .collect();
    b.cluster = Some(SiteCluster {
        nodes,
        kubernetes_name: "sr-leaf-nyc-office".into(),
    });
    b
}

fn setup(root: &Path, args: &[&str]) -> (bool, String) {
    let out = run(Command::new("bash")
        .arg(root.join("setup.sh"))
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn setup_installs_the_chosen_node_and_refuses_to_guess() {
    let b = clustered();
    let dir = tempfile::tempdir().unwrap();
    let root = unpack(&site_bundle(&b).unwrap(), dir.path(), &b.root_dir());
    assert!(!root.join("nats-leaf.conf").exists());
    assert!(!root.join("certs/leaf-server.pem").exists());
    assert_eq!(
        common::mode_of(&root.join("nodes/node-2/leaf-server-key.pem")),
        0o600
    );

    let prefix = dir.path().join("p0");
    let prefix_arg = prefix.to_str().unwrap();
    let (ok, out) = setup(&root, &["--prefix", prefix_arg, "--no-start"]);
    assert!(!ok && out.contains("pass --node N"), "{out}");
    let (ok, out) = setup(
        &root,
        &["--node", "3", "--prefix", prefix_arg, "--no-start"],
    );
    assert!(!ok && out.contains("--node must be"), "{out}");
    let (ok, out) = setup(
        &root,
        &["--node", "1;x", "--prefix", prefix_arg, "--no-start"],
    );
    assert!(!ok, "{out}");

    let (ok, out) = setup(
        &root,
        &["--node", "1", "--prefix", prefix_arg, "--no-start"],
    );
    assert!(ok, "{out}");
    let installed = |rel: &str| std::fs::read_to_string(prefix.join(rel)).unwrap();
    assert!(installed("etc/serviceradar/nats/nats-leaf.conf").contains("server_name: \"n1\""));
    let node1 = b.cluster.as_ref().unwrap().nodes[1].server_cert_pem.clone();
    assert_eq!(
        installed("etc/serviceradar/nats/certs/leaf-server.pem"),
        node1
    );
    assert_eq!(
        common::mode_of(&prefix.join("etc/serviceradar/nats/certs/leaf-server-key.pem")),
        0o600
    );

    // A single-server site has no nodes to choose from.
    let single = site("Plant");
    let dir2 = tempfile::tempdir().unwrap();
    let root2 = unpack(
        &site_bundle(&single).unwrap(),
        dir2.path(),
        &single.root_dir(),
    );
    let p = dir2.path().join("p");
    let (ok, out) = setup(
        &root2,
        &["--node", "0", "--prefix", p.to_str().unwrap(), "--no-start"],
    );
    assert!(!ok && out.contains("one leaf server"), "{out}");
}

fn docs(text: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text).expect("valid YAML")
}

fn kind<'a>(objects: &'a [Yaml], kind: &str) -> &'a Yaml {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_kubernetes_variant_holds_valid_objects() {
    let b = clustered();
    let dir = tempfile::tempdir().unwrap();
    let root = unpack(&site_bundle(&b).unwrap(), dir.path(), &b.root_dir());
    let text = std::fs::read_to_string(root.join("kubernetes/leaf-cluster.yaml")).unwrap();
    // Valid against the API schemas (strict: no unknown field) of the
    // releases the platform supports.
    let unknown =
        serviceradar_testkit::validate_kubernetes_objects(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(unknown.is_empty(), "kinds without a schema: {unknown:?}");
    let objects = docs(&text);
    for o in &objects {
        assert!(o["apiVersion"].as_str().is_some(), "{o:?}");
        assert!(o["metadata"]["name"].as_str().is_some(), "{o:?}");
    }
    let sts = kind(&objects, "StatefulSet");
    assert_eq!(sts["apiVersion"].as_str(), Some("apps/v1"));
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(3));
    assert_eq!(spec["serviceName"].as_str(), Some("sr-leaf-nyc-office"));
    let labels = &spec["template"]["metadata"]["labels"];
    // The selector picks the pods the template labels.
    for (k, v) in spec["selector"]["matchLabels"].as_hash().unwrap() {
        assert_eq!(&labels[k.as_str().unwrap()], v);
    }
    let pod = &spec["template"]["spec"];
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"].as_str(), Some("kubernetes.io/hostname"));
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"].as_str(),
        Some("topology.kubernetes.io/zone")
    );
    let container = &pod["containers"][0];
    assert!(
        container["readinessProbe"]["exec"]["command"]
            .as_vec()
            .is_some()
    );
    assert!(
        container["livenessProbe"]["exec"]["command"]
            .as_vec()
            .is_some()
    );
    assert!(
        container["resources"]["requests"]["memory"]
            .as_str()
            .is_some()
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(mounts.contains(&"jetstream"));
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"].as_str(), Some("jetstream"));
    assert!(
        claim["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .is_some()
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"].as_str(),
        Some("sr-leaf-nyc-office-files")
    );
    let headless = objects
        .iter()
        .find(|o| {
            o["kind"].as_str() == Some("Service") && o["spec"]["clusterIP"].as_str() == Some("None")
        })
        .expect("a headless service");
    assert_eq!(
        headless["metadata"]["name"].as_str(),
        Some("sr-leaf-nyc-office")
    );
    assert_eq!(
        kind(&objects, "PodDisruptionBudget")["spec"]["minAvailable"].as_i64(),
        Some(2)
    );

    // Every file the init container copies from /bundle is in the Secret,
    // and every Secret file exists in the bundle.
    let kustomization = docs(&std::fs::read_to_string(root.join("kustomization.yaml")).unwrap());
    let files: Vec<(String, String)> = kustomization[0]["secretGenerator"][0]["files"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|f| {
            let (k, v) = f.as_str().unwrap().split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    for (_, path) in &files {
        assert!(root.join(path).is_file(), "{path} not in the bundle");
    }
    let script = pod["initContainers"][0]["command"][2].as_str().unwrap();
    for word in script.split_whitespace() {
        if let Some(key) = word.strip_prefix("/bundle/") {
            let key = key.replace("$n", "0");
            assert!(
                files.iter().any(|(k, _)| *k == key),
                "{key} not in the Secret"
            );
        }
    }
    // Each node's compose file mounts its own config and certificate.
    let compose =
        docs(&std::fs::read_to_string(root.join("nodes/node-2/docker-compose.yml")).unwrap());
    let volumes = compose[0]["services"]["nats-leaf"]["volumes"]
        .as_vec()
        .unwrap();
    assert!(
        volumes.iter().any(|v| v.as_str()
            == Some("./leaf-server.pem:/etc/serviceradar/nats/certs/leaf-server.pem:ro"))
    );
}
