//! The container image (`deploy/container/Dockerfile`, built by
//! `scripts/build-image`) runs the platform: the real script builds the
//! shipped Dockerfile with buildah (no Docker engine runs here) on a Debian
//! bookworm root file system made by debootstrap (what `debian:bookworm-slim`
//! is, without a registry), from the binaries under test. Then, inside the
//! image, as its own non-root user:
//!
//! * `serviceradar-core`, `serviceradar-cli`, `serviceradar-agent` and
//!   `nats-server` run, and the image's config is the one the Helm chart
//!   and docs/kubernetes.md rely on (user 10001, `serviceradar-core serve`,
//!   the data volume, the ports);
//! * `serve` with the image's defaults (and free ports: the test shares the
//!   host's network) answers `/readyz`, and `quickstart` brings the demo
//!   site to connected and active through the image's own embedded hub;
//!   `quickstart --stop` stops its leaf and agent in an image that has no
//!   `kill` binary (it ran one: in a slim image it stopped nothing).
//!
//! Needs root (buildah's vfs storage and chroot isolation: no user
//! namespaces or cgroups), buildah (Debian's package) and the base file
//! system: `SERVICERADAR_TEST_IMAGE_BASE` names a tar of it, default
//! `~/.cache/serviceradar-image-base/bookworm.tar`; `scripts/test` installs
//! buildah and makes the tar with debootstrap.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use serviceradar_testkit::{free_port, wait_for_port};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "container image password 123";

fn base_tar() -> PathBuf {
    let path = std::env::var_os("SERVICERADAR_TEST_IMAGE_BASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/serviceradar-image-base/bookworm.tar")
        });
    assert!(
        path.is_file(),
        "no base file system at {}: run scripts/test (it makes one with debootstrap), or \
         `debootstrap --variant=minbase --include=ca-certificates bookworm DIR` and \
         `tar -C DIR -cf {} .`",
        path.display(),
        path.display()
    );
    path
}

/// buildah with its own storage under `dir` (vfs: works on any file system,
/// in containers too), removed with it.
struct Buildah {
    root: PathBuf,
    run_root: PathBuf,
}

impl Buildah {
    fn new(dir: &Path) -> Self {
        serviceradar_testkit::binary_on_path(
            "buildah",
            "install Debian's buildah (scripts/test does)",
        )
        .expect("buildah");
        Self {
            root: dir.join("storage"),
            run_root: dir.join("run"),
        }
    }

    /// The global options `scripts/build-image` passes on (BUILDAH_GLOBAL_ARGS).
    fn global_args(&self) -> String {
        format!(
            "--storage-driver vfs --root {} --runroot {}",
            self.root.display(),
            self.run_root.display()
        )
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .args(["--storage-driver", "vfs", "--root"])
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.run_root);
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("buildah {args:?}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "buildah {args:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `command` in container `container` (chroot isolation, the host's
    /// network), as the image's user, with `env`.
    fn exec(&self, container: &str, env: &[(String, String)], command: &[&str]) -> Command {
        let mut run = self.command();
        run.args(["run", "--isolation", "chroot"]);
        for (key, value) in env {
            run.args(["--env", &format!("{key}={value}")]);
        }
        run.arg(container).arg("--").args(command);
        run
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        // Processes left in a container (a failed test's serve, the demo's
        // leaf and agent) run from its root: stop them before its storage goes.
        kill_processes_under(&self.root);
        let _ = self.command().args(["rm", "--all"]).output();
        let _ = self.command().args(["rmi", "--all", "--force"]).output();
    }
}

/// SIGKILLs every process running in a container of the storage at `root`:
/// buildah's chroot isolation runs it in its own mount namespace, whose
/// root is mounted from a directory under `root` (`/proc/PID/root` names
/// buildah's own mount point instead).
fn kill_processes_under(root: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let root = root.to_string_lossy().into_owned();
    let me = std::process::id();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mounts = std::fs::read_to_string(entry.path().join("mountinfo")).unwrap_or_default();
        let in_container = mounts
            .lines()
            .next()
            .is_some_and(|first| first.contains(&root));
        if pid != me && in_container {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The binaries under test, in one directory as `scripts/build-image
/// --bin-dir` takes them, without their debug sections (the image's size).
fn stage_binaries(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let core = PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-core"));
    let sources = [
        core.clone(),
        support::workspace_binary("serviceradar-cli", "serviceradar-cli"),
        support::agent_beside_core(),
    ];
    for source in sources {
        let name = source.file_name().expect("name").to_owned();
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&source)
            .arg(bin.join(&name))
            .status()
            .expect("objcopy");
        assert!(status.success(), "objcopy {}", source.display());
    }
    bin
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The image's OCI config (`buildah inspect`).
fn image_config(buildah: &Buildah, image: &str) -> Value {
    let inspect: Value = serde_json::from_str(&buildah.run(&["inspect", "--type", "image", image]))
        .expect("inspect json");
    inspect["OCIv1"]["config"].clone()
}

/// `serve` in the container, stopped (with everything else in it) on drop.
struct ServeInContainer {
    child: Child,
    log: PathBuf,
}

impl ServeInContainer {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeInContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_container_image_runs_serve_and_quickstart_as_its_own_user() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let buildah = Buildah::new(dir);

    // The base: a Debian bookworm root file system (debootstrap), as an image.
    let base_container = buildah.run(&["from", "scratch"]);
    let base_container = base_container.trim();
    buildah.run(&[
        "add",
        base_container,
        &base_tar().display().to_string(),
        "/",
    ]);
    buildah.run(&[
        "commit",
        "--quiet",
        base_container,
        "localhost/sr-test-base",
    ]);

    // The image, by the script users run (which shellcheck passes).
    let shellcheck = Command::new("shellcheck")
        .arg(repo_root().join("scripts/build-image"))
        .output()
        .expect("shellcheck (scripts/test installs it)");
    assert!(
        shellcheck.status.success(),
        "{}",
        String::from_utf8_lossy(&shellcheck.stdout)
    );
    let bin = stage_binaries(dir);
    let image = "localhost/serviceradar-core:test";
    let started = Instant::now();
    let built = Command::new(repo_root().join("scripts/build-image"))
        .args([
            "--builder",
            "buildah",
            "--base",
            "localhost/sr-test-base",
            "--tag",
            image,
        ])
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--nats-server")
        .arg(support::real_nats_server())
        .env("BUILDAH_GLOBAL_ARGS", buildah.global_args())
        .output()
        .expect("scripts/build-image");
    assert!(
        built.status.success(),
        "scripts/build-image failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    serviceradar_testkit::report(&format!(
        "container image: built in {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    // What the chart and the docs rely on.
    let config = image_config(&buildah, image);
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["serviceradar-core"]),
        "{config}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]), "{config}");
    assert!(
        config["Volumes"].get("/var/lib/serviceradar").is_some(),
        "{config}"
    );
    for port in ["8080/tcp", "9464/tcp", "50051/tcp", "7422/tcp"] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "{port}: {config}"
        );
    }
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for wanted in [
        "SERVICERADAR_DATA_DIR=/var/lib/serviceradar",
        "SERVICERADAR_LISTEN=0.0.0.0:8080",
    ] {
        assert!(env.contains(&wanted), "{wanted}: {env:?}");
    }

    let container = buildah.run(&["from", image]);
    let container = container.trim();
    let output = |command: &[&str]| {
        let out = buildah
            .exec(container, &[], command)
            .output()
            .expect("buildah run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{command:?} in the image failed:\n{text}"
        );
        text
    };
    assert_eq!(output(&["id", "-u"]).trim(), "10001");
    assert!(output(&["serviceradar-core", "--version"]).contains("serviceradar-core"));
    assert!(output(&["serviceradar-cli", "--version"]).contains("serviceradar-cli"));
    assert!(output(&["serviceradar-agent", "--version"]).contains("serviceradar-agent"));
    assert!(output(&["nats-server", "--version"]).contains("v2."));
    assert!(
        output(&[
            "sh",
            "-c",
            "test -s /etc/ssl/certs/ca-certificates.crt && echo ok"
        ])
        .contains("ok")
    );

    // serve with the image's defaults; the ports are free ones of this
    // machine, as the container shares its network.
    let api = free_port();
    let gateway = free_port();
    let env: Vec<(String, String)> = [
        ("SERVICERADAR_LISTEN", format!("127.0.0.1:{api}")),
        ("SERVICERADAR_METRICS_LISTEN", String::new()),
        (
            "SERVICERADAR_GATEWAY_LISTEN",
            format!("127.0.0.1:{gateway}"),
        ),
        (
            "SERVICERADAR_GATEWAY_URL",
            format!("https://localhost:{gateway}"),
        ),
        (
            "SERVICERADAR_HUB_CLIENT_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "SERVICERADAR_HUB_LEAFNODE_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "SERVICERADAR_HUB_MONITORING_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "SERVICERADAR_LEAF_MONITORING_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("SERVICERADAR_ADMIN_PASSWORD", PASSWORD.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let log = dir.join("serve.log");
    let serve = ServeInContainer {
        child: buildah
            .exec(container, &env, &["serviceradar-core", "serve"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
            .spawn()
            .expect("serve in the image"),
        log: log.clone(),
    };
    if wait_for_port(api, "serve in the image", WAIT).is_err() {
        panic!(
            "serve in the image did not listen:\n{}\n{}",
            serve.log(),
            std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
        );
    }
    let deadline = Instant::now() + WAIT;
    while serviceradar_testkit::http_get(api, "/readyz").is_none() {
        assert!(
            Instant::now() < deadline,
            "/readyz never answered:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // quickstart and its --stop in one `buildah run`: processes it leaves
    // running end with the run (a container's exec would keep them).
    let quickstart = output(&[
        "sh",
        "-c",
        &format!(
            "serviceradar-core quickstart --api http://127.0.0.1:{api} --leaf-port {} \
             && serviceradar-core quickstart --stop",
            free_port()
        ),
    ]);
    assert!(
        quickstart.contains("[5/5] demo site connected: leaf connected, site active"),
        "{quickstart}\nserve:\n{}",
        serve.log()
    );
    assert!(
        quickstart.contains("stopped 2 quickstart process(es)"),
        "{quickstart}"
    );
    // Everything serve wrote is in the image's data volume, owned by its user.
    let owner = output(&["stat", "-c", "%u", "/var/lib/serviceradar/serviceradar.db"]);
    assert_eq!(owner.trim(), "10001");
    drop(serve);
}
