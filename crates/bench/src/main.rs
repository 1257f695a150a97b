//! `serviceradar-bench`: one command for every benchmark of BENCHMARKS.md.
//!
//! `serviceradar-bench all` runs each `bench-*` binary of this crate (the
//! siblings of this executable; built with `cargo build -p
//! serviceradar-bench --bins` in the same profile when one is missing) against
//! real servers on loopback, collects the `@figure` lines they print, and
//! prints one table: figure, value, baseline (from the same run), ratio,
//! target, PASS/MISS, with the machine (cores, CPU model, memory) and the git
//! revision. Every benchmark's own output goes to a log file whose path is
//! printed.
//!
//! `--quick` runs each benchmark at a small size for a smoke run (a few
//! minutes on 2 cores): it fails (exit status 1) only when a benchmark
//! crashes (exits non-zero), never on a missed target, because these
//! machines are too noisy for a smoke run's figures to judge. The full run
//! exits 1 when a benchmark crashes too; a missed target is reported in the
//! table (MISS), as the figures are for BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p serviceradar-bench -- all --quick
//! cargo run --release -p serviceradar-bench -- all
//! ```

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[path = "bin/common/mod.rs"]
mod common;

use common::{FIGURE_PREFIX, Figure};

/// Runs the benchmarks of BENCHMARKS.md and prints one table.
#[derive(Parser, Debug)]
#[command(name = "serviceradar-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every benchmark, one after the other, then the table.
    All {
        /// Small sizes, a few minutes in all; fails only on a crash.
        #[arg(long)]
        quick: bool,
        /// Only the benchmarks whose name contains this (e.g. `api`).
        #[arg(long)]
        only: Option<String>,
        /// Where the benchmarks' own output goes (default: a file under
        /// the system temp dir).
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

/// One benchmark run: a binary and its arguments.
struct Run {
    name: &'static str,
    bin: &'static str,
    args: Vec<&'static str>,
}

/// What `all` runs. Full sizes are the issues' targets; quick sizes only
/// prove each benchmark still runs end to end.
fn plan(quick: bool) -> Vec<Run> {
    let run = |name, bin, args: &[&'static str]| Run {
        name,
        bin,
        args: args.to_vec(),
    };
    if quick {
        vec![
            run(
                "list API 5k sites",
                "bench-api",
                &[
                    "--sites",
                    "5000",
                    "--tenants",
                    "10",
                    "--seed",
                    "copy",
                    "--duration",
                    "2s",
                    "--warmup",
                    "1s",
                    "--rounds",
                    "1",
                ],
            ),
            run(
                "provisioning",
                "bench-provision",
                &[
                    "--sites",
                    "100",
                    "--tenants",
                    "2",
                    "--bundles",
                    "50",
                    "--certs",
                    "20",
                    "--backend",
                    "postgres",
                ],
            ),
            run(
                "web UI 2k sites",
                "bench-web",
                &["--sites", "2000", "--seconds", "2"],
            ),
            run(
                "web UI live fan-out",
                "bench-sse",
                &["--clients", "200", "--sites", "20", "--rounds", "4"],
            ),
            run(
                "enrollment",
                "bench-enroll",
                &["--sites", "40", "--backend", "postgres"],
            ),
            run("ingestion", "bench-ingest", &["--messages", "5000"]),
            run(
                "ingestion across tenants",
                "bench-ingest-tenants",
                &["--quick"],
            ),
            run(
                "leaf hop",
                "bench-leaf-hop",
                &["--messages", "500", "--warmup", "50"],
            ),
            run(
                "device connects",
                "bench-device-auth",
                &["--connects", "200", "--warmup", "20", "--seconds", "2"],
            ),
            run(
                "gateway scale",
                "bench-gateway",
                &[
                    "scale",
                    "--agents",
                    "200",
                    "--interval-ms",
                    "1000",
                    "--duration-secs",
                    "3",
                ],
            ),
        ]
    } else {
        vec![
            run(
                "list API 100k sites",
                "bench-api",
                &["--sites", "100000", "--tenants", "100", "--seed", "copy"],
            ),
            run(
                "list API 1M sites",
                "bench-api",
                &["--sites", "1000000", "--tenants", "1000", "--seed", "copy"],
            ),
            run("provisioning", "bench-provision", &[]),
            run(
                "provisioning, 100k existing sites",
                "bench-provision",
                &["--backend", "postgres", "--existing", "100000"],
            ),
            run(
                "provisioning, 1M existing sites",
                "bench-provision",
                &["--backend", "postgres", "--existing", "1000000"],
            ),
            run("web UI", "bench-web", &[]),
            run("web UI live fan-out", "bench-sse", &[]),
            run("enrollment", "bench-enroll", &["--sites", "300"]),
            run("ingestion", "bench-ingest", &["--messages", "100000"]),
            run("ingestion across tenants", "bench-ingest-tenants", &[]),
            run("leaf hop", "bench-leaf-hop", &[]),
            run("device connects", "bench-device-auth", &[]),
            run("gateway scale", "bench-gateway", &["scale"]),
        ]
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Cmd::All { quick, only, log } = cli.command;
    let dir = std::env::current_exe()?
        .parent()
        .context("the executable's directory")?
        .to_path_buf();
    let runs: Vec<Run> = plan(quick)
        .into_iter()
        .filter(|r| {
            only.as_deref()
                .is_none_or(|o| r.name.contains(o) || r.bin.contains(o))
        })
        .collect();
    ensure_built(&dir, &runs)?;
    let log_path = log.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "serviceradar-bench-{}.log",
            serviceradar_store::now_ms()
        ))
    });
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    println!(
        "serviceradar-bench all{}: {} runs; each benchmark's output goes to {}",
        if quick { " --quick" } else { "" },
        runs.len(),
        log_path.display()
    );

    let mut figures: Vec<(String, Figure)> = Vec::new();
    let mut crashed = Vec::new();
    for run in &runs {
        let started = Instant::now();
        print!("  {} ({} {}) ... ", run.name, run.bin, run.args.join(" "));
        std::io::stdout().flush()?;
        writeln!(
            log,
            "\n===== {} {} {}",
            run.name,
            run.bin,
            run.args.join(" ")
        )?;
        match run_one(&dir, run, &mut log) {
            Ok((ok, found)) => {
                let secs = started.elapsed().as_secs_f64();
                if ok {
                    println!("done in {secs:.0} s, {} figures", found.len());
                } else {
                    println!("FAILED (exit status) after {secs:.0} s");
                    crashed.push(run.name);
                }
                figures.extend(found.into_iter().map(|f| (run.name.to_string(), f)));
            }
            Err(e) => {
                println!("FAILED: {e:#}");
                crashed.push(run.name);
            }
        }
    }

    print!("{}", table(&figures, quick));
    println!("\n{}", machine());
    println!("log: {}", log_path.display());
    if !crashed.is_empty() {
        bail!("benchmarks that crashed: {}", crashed.join(", "));
    }
    Ok(())
}

/// Builds the benchmark binaries (same profile as this one) if any is missing.
fn ensure_built(dir: &Path, runs: &[Run]) -> anyhow::Result<()> {
    if runs.iter().all(|r| dir.join(r.bin).exists()) {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "serviceradar-bench", "--bins"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    println!("building the benchmark binaries: {cmd:?}");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the benchmark binaries failed");
    }
    Ok(())
}

/// Runs one benchmark, copying its output to `log`; returns whether it
/// exited successfully and the figures it printed.
fn run_one(dir: &Path, run: &Run, log: &mut std::fs::File) -> anyhow::Result<(bool, Vec<Figure>)> {
    let mut child = Command::new(dir.join(run.bin))
        .args(&run.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", run.bin))?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut err_log = log.try_clone()?;
    let errors = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(err_log, "{line}");
        }
    });
    let mut found = Vec::new();
    let stdout = child.stdout.take().context("stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        if let Some(json) = line.strip_prefix(FIGURE_PREFIX) {
            match serde_json::from_str::<Figure>(json) {
                Ok(figure) => found.push(figure),
                Err(e) => writeln!(log, "(unreadable figure line: {e})")?,
            }
        }
    }
    let status = child.wait()?;
    let _ = errors.join();
    Ok((status.success(), found))
}

/// The summary table (Markdown).
fn table(figures: &[(String, Figure)], quick: bool) -> String {
    let mut out = String::from(
        "\n| benchmark | figure | value | baseline | ratio | target | result |\n\
         |---|---|---:|---|---:|---|---|\n",
    );
    for (run, f) in figures {
        let baseline = match (&f.baseline_name, f.baseline) {
            (Some(name), Some(value)) => format!("{name} {}", number(value)),
            _ => "—".into(),
        };
        let ratio = f
            .ratio()
            .map_or("—".into(), |r| format!("{:.1}%", r * 100.0));
        let result = match f.pass {
            Some(true) => "PASS",
            Some(false) if quick => "(miss, quick)",
            Some(false) => "MISS",
            None => "—",
        };
        out.push_str(&format!(
            "| {run} | {} | {} {} | {baseline} | {ratio} | {} | {result} |\n",
            f.figure,
            number(f.value),
            f.unit,
            if f.target.is_empty() {
                "—"
            } else {
                &f.target
            },
        ));
    }
    if figures.is_empty() {
        out.push_str("| — | no figures were reported | | | | | |\n");
    }
    out
}

/// A figure with as many decimals as it needs.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Cores, CPU model, memory, git revision, date.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let revision = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    format!(
        "machine: {cores} cores, {model}, {mem_gib:.1} GiB memory; git revision {revision}{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}
