//! The documentation's commands, run (issue 12: "every command in it is run
//! by a test", so the docs cannot rot). The rules are in `docs/README.md`:
//!
//! * every ```` ```sh ```` block of a page runs, in page order, in one bash
//!   (`set -euo pipefail`) in a fresh directory whose `target/release` holds
//!   the binaries under test, with `HOME` there too (so the data dir is new)
//!   and `PATH` = those binaries, `nats-server` and the base system;
//! * `cargo build` is a no-op there (the test suite built the binaries);
//! * ```` ```sh background wait="TEXT" ```` starts the block in the
//!   background (its own process group) and waits until its output shows
//!   TEXT; it is stopped when the page ends;
//! * ```` ```sh no-test="REASON" ```` is not run (root on this machine,
//!   systemd, Docker, Kubernetes, another machine); it must still pass
//!   `bash -n`, and the reason is required;
//! * `<!-- doc-test: platform -->` on a page starts `serve` and
//!   `quickstart` first and exports `API`, `TOKEN` (read, write, admin),
//!   `SITE` (the demo site's id) and `PASSWORD` (the owner's);
//!   `<!-- doc-test: platform serve-flags="..." -->` starts `serve` with
//!   those flags (the page says so, as a reader must start it).
//!
//! The README's first-run block runs the same way. Pages use the default
//! ports, so they run one at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

mod support;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A fenced block of a page.
#[derive(Debug)]
struct Block {
    info: String,
    body: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => {
                    current = Some(Block {
                        info: rest.trim().to_owned(),
                        body: String::new(),
                        line: n + 1,
                    });
                }
            }
        } else if let Some(block) = current.as_mut() {
            block.body.push_str(line);
            block.body.push('\n');
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    out
}

/// `key="value"` from a block's info string.
fn attr(info: &str, key: &str) -> Option<String> {
    let start = info.find(&format!("{key}=\""))? + key.len() + 2;
    let end = info[start..].find('"')? + start;
    Some(info[start..end].to_owned())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory of the binaries under test (`serviceradar-agent` included).
fn binaries() -> PathBuf {
    let agent = support::agent_beside_core();
    agent.parent().expect("bin dir").to_path_buf()
}

/// `cargo build` is a no-op in the pages' shells (the suite built them).
const CARGO_NOOP: &str = r#"cargo() { if [ "${1:-}" = build ]; then return 0; fi; echo "doc test: only 'cargo build' may appear in docs" >&2; return 1; }"#;

const PRELUDE: &str = r#"set -euo pipefail
__bg_pids=()
__cleanup() {
  serviceradar-core quickstart --stop >/dev/null 2>&1 || true
  for pid in "${__bg_pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${__bg_pids[@]}"; do
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}
trap __cleanup EXIT
# __background N TEXT: runs __bg_N.sh in its own process group, waits for TEXT.
__background() {
  setsid bash -euo pipefail "$__DOC_DIR/__bg_$1.sh" >"$__DOC_DIR/__bg_$1.log" 2>&1 &
  __bg_pids+=($!)
  for _ in $(seq 1 600); do
    if grep -qF -- "$2" "$__DOC_DIR/__bg_$1.log"; then return 0; fi
    if ! kill -0 "$!" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "doc test: background block $1 never printed '$2':" >&2
  cat "$__DOC_DIR/__bg_$1.log" >&2
  return 1
}
"#;

const PLATFORM: &str = r#"
export PASSWORD='doc test owner password'
cat >"$__DOC_DIR/__bg_platform.sh" <<'EOF'
SERVICERADAR_ADMIN_PASSWORD="$PASSWORD" exec serviceradar-core serve __SERVE_FLAGS__
EOF
__background platform 'listening on'
serviceradar-core quickstart >"$__DOC_DIR/quickstart.log"
export API=http://127.0.0.1:8080
TOKEN=$(serviceradar-core admin create-token --tenant default --email admin@example.com --scope read,write,admin)
export TOKEN
SITE=$(curl -sf -H "Authorization: Bearer $TOKEN" "$API/api/v1/edge-sites?limit=200" | jq -r '.items[] | select(.slug == "demo") | .id')
export SITE
"#;

/// Runs the page's `sh` blocks as the module docs say; returns the number
/// of blocks run and not run.
fn run_page(relative: &str) -> (usize, usize) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("target")).expect("mkdir");
    std::os::unix::fs::symlink(binaries(), dir.join("target/release")).expect("symlink");
    let nats_dir = dir.join(".nats-bin");
    std::fs::create_dir_all(&nats_dir).expect("mkdir");
    std::os::unix::fs::symlink(support::real_nats_server(), nats_dir.join("nats-server"))
        .expect("symlink");

    let mut script = format!("{PRELUDE}{CARGO_NOOP}\n");
    if let Some(marker) = text
        .lines()
        .find(|l| l.starts_with("<!-- doc-test: platform") && l.ends_with("-->"))
    {
        let flags = attr(marker, "serve-flags").unwrap_or_default();
        assert!(
            flags
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " -./:,=".contains(c)),
            "{relative}: serve-flags {flags:?}"
        );
        script.push_str(&PLATFORM.replace("__SERVE_FLAGS__", &flags));
    }
    let (mut run, mut skipped) = (0, 0);
    for (n, block) in blocks(&text).into_iter().enumerate() {
        let lang = block.info.split_whitespace().next().unwrap_or_default();
        if lang == "json"
            && let Some(kind) = attr(&block.info, "telemetry")
        {
            check_telemetry_example(relative, &block, &kind);
            continue;
        }
        if lang != "sh" {
            continue;
        }
        if let Some(reason) = attr(&block.info, "no-test") {
            assert!(
                !reason.trim().is_empty(),
                "{relative}:{}: no-test needs a reason",
                block.line
            );
            let out = Command::new("bash")
                .arg("-n")
                .arg("-c")
                .arg(&block.body)
                .output()
                .expect("bash -n");
            assert!(
                out.status.success(),
                "{relative}:{}: bash -n: {}",
                block.line,
                String::from_utf8_lossy(&out.stderr)
            );
            skipped += 1;
            continue;
        }
        assert!(
            block.info == "sh" || block.info.starts_with("sh background"),
            "{relative}:{}: unknown block attributes {:?}",
            block.line,
            block.info
        );
        run += 1;
        script.push_str(&format!("\n# ---- {relative}:{} ----\n", block.line));
        if block.info.contains("background") {
            let wait = attr(&block.info, "wait").unwrap_or_else(|| {
                panic!("{relative}:{}: background needs wait=\"...\"", block.line)
            });
            std::fs::write(
                dir.join(format!("__bg_{n}.sh")),
                format!("{CARGO_NOOP}\n{}", block.body),
            )
            .expect("write");
            script.push_str(&format!(
                "__background {n} '{}'\n",
                wait.replace('\'', "'\\''")
            ));
        } else {
            script.push_str(&block.body);
        }
    }
    let path_var = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        dir.join("target/release").display(),
        nats_dir.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("HOME", dir)
        .env("PATH", path_var)
        .env("LANG", "C.UTF-8")
        .env("__DOC_DIR", dir)
        .current_dir(dir)
        .output()
        .expect("bash runs");
    // What the page printed, for reading (the test asserts it ran).
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("doc-{}.out", relative.replace('/', "-")));
    let _ = std::fs::write(&saved, [&out.stdout[..], &out.stderr[..]].concat());
    if !out.status.success() {
        let logs: String = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| {
                format!(
                    "\n--- {} ---\n{}",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "{relative}: the page's commands failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}{logs}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serviceradar_testkit::report(&format!(
        "docs: {relative}: {run} command block(s) run, {skipped} not runnable here (bash -n only)"
    ));
    (run, skipped)
}

/// A ```` ```json telemetry="KIND" ```` block decodes as a message of that
/// kind; with `refused="TEXT"` it is refused with a reason containing TEXT
/// (exactly what the ingest pipeline would do with it).
fn check_telemetry_example(relative: &str, block: &Block, kind: &str) {
    use serviceradar_domain::telemetry::{IncomingMessage, decode};
    let subject = format!("{kind}.acme.nyc.switch1");
    let payload = block.body.trim_end_matches('\n');
    let decoded = decode(
        "acme",
        IncomingMessage {
            subject: &subject,
            payload: payload.as_bytes(),
            stream_seq: 1,
            stored_at_ms: 1,
        },
    );
    match (attr(&block.info, "refused"), decoded) {
        (None, Ok(record)) => assert_eq!(
            record.kind().subject_prefix(),
            kind,
            "{relative}:{}",
            block.line
        ),
        (None, Err(reason)) => panic!(
            "{relative}:{}: the example is refused: {reason}",
            block.line
        ),
        (Some(expected), Err(reason)) => assert!(
            reason.to_string().contains(&expected),
            "{relative}:{}: refused with {reason:?}, the page says {expected:?}",
            block.line
        ),
        (Some(expected), Ok(_)) => panic!(
            "{relative}:{}: the page says it is refused ({expected}), but it decodes",
            block.line
        ),
    }
}

/// The pages under `docs/` that this file runs; a new page must be added.
const PAGES: &[&str] = &[
    "docs/README.md",
    "docs/getting-started.md",
    "docs/deploying-a-site.md",
    "docs/enrollment.md",
    "docs/nats-architecture.md",
    "docs/certificates.md",
    "docs/regeneration-and-drift.md",
    "docs/monitoring.md",
    "docs/troubleshooting.md",
    "docs/api.md",
    "docs/agents.md",
    "docs/devices.md",
    "docs/telemetry.md",
    "docs/kubernetes.md",
    "docs/high-availability.md",
];

#[test]
fn every_page_under_docs_is_run() {
    let mut found: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .expect("docs dir")
        .filter_map(Result::ok)
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = PAGES.iter().map(|p| (*p).to_owned()).collect();
    listed.sort();
    assert_eq!(found, listed, "docs/ and PAGES disagree");
}

macro_rules! page {
    ($name:ident, $path:literal) => {
        #[test]
        fn $name() {
            run_page($path);
        }
    };
}

page!(readme_first_run, "README.md");
page!(docs_index, "docs/README.md");
page!(getting_started, "docs/getting-started.md");
page!(deploying_a_site, "docs/deploying-a-site.md");
page!(enrollment, "docs/enrollment.md");
page!(nats_architecture, "docs/nats-architecture.md");
page!(certificates, "docs/certificates.md");
page!(regeneration_and_drift, "docs/regeneration-and-drift.md");
page!(monitoring, "docs/monitoring.md");
page!(kubernetes, "docs/kubernetes.md");
page!(high_availability, "docs/high-availability.md");
page!(agents, "docs/agents.md");
page!(devices, "docs/devices.md");
page!(troubleshooting, "docs/troubleshooting.md");
page!(api, "docs/api.md");
page!(telemetry, "docs/telemetry.md");
