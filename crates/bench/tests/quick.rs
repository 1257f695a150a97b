//! `serviceradar-bench all --quick` in the test suite, so CI runs every
//! benchmark of BENCHMARKS.md end to end (real PostgreSQL, nats-server, wrk
//! and pgbench on loopback) at its smallest size: a benchmark that no longer
//! runs is caught by the next CI run, not by the next person measuring.
//!
//! It fails only when a benchmark crashes (exits non-zero) or reports no
//! figure at all, never on a missed target: these are debug builds on a
//! shared 2-core machine, and a quick run's figures mean nothing there. The
//! figures themselves come from release builds (BENCHMARKS.md, "Issue 15").

use std::process::Command;
use std::time::Instant;

#[test]
fn every_benchmark_runs_end_to_end_at_its_quick_size() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = dir.path().join("bench.log");
    let started = Instant::now();
    // The benchmark binaries are this package's other binaries, which cargo
    // builds beside this one for its integration tests.
    let out = Command::new(env!("CARGO_BIN_EXE_serviceradar-bench"))
        .args(["all", "--quick", "--log"])
        .arg(&log)
        .output()
        .expect("run serviceradar-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let log_tail: Vec<&str> = log_text.lines().rev().take(80).collect();
    let log_tail: Vec<&str> = log_tail.into_iter().rev().collect();
    assert!(
        out.status.success(),
        "a benchmark crashed:\n{stdout}\n{}\n--- the end of its log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail.join("\n")
    );

    // Each run's line: "  <name> (<bin> <args>) ... done in N s, K figures".
    let runs: Vec<&str> = stdout.lines().filter(|l| l.contains(" ... ")).collect();
    assert!(runs.len() >= 10, "fewer runs than planned:\n{stdout}");
    for run in &runs {
        assert!(
            run.contains("done in") && !run.ends_with(" 0 figures"),
            "a benchmark reported no figures: {run}\n{stdout}"
        );
    }
    if let Ok(report) = std::env::var("SR_TEST_REPORT") {
        use std::io::Write as _;
        if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(report) {
            let _ = writeln!(
                file,
                "benchmarks, quick (debug build): {} runs, none crashed, in {:.0} s",
                runs.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}
