//! Test harness for ServiceRadar Edge: starts the *real* dependencies the product
//! talks to (PostgreSQL, `nats-server`) on loopback, on free ports, in private
//! temporary directories, and cleans them up afterwards.
//!
//! Nothing here is mocked. Tests and benchmarks use these helpers instead of
//! assuming a server is already running, so `cargo test` works on a fresh machine
//! that has the binaries installed (see `.ci/run`).
//!
//! * [`free_port`] — a currently unused TCP port on 127.0.0.1.
//! * [`postgres`] — one PostgreSQL cluster per test process, started on first use;
//!   [`PgCluster::create_database`] gives each test its own empty database.
//! * [`NatsServer`] — a `nats-server` child process from a config text, killed on drop.
//! * [`http_get`], [`leafz`] — read a server's monitoring endpoint.
//! * [`binary_on_path`] — a tool a test runs (`promtool`, ...), or the install hint.

#![forbid(unsafe_code)]

mod kubernetes;
mod nats;
mod pg;

pub use kubernetes::{KUBERNETES_VALIDATE_HINT, KUBERNETES_VERSIONS, validate_kubernetes_objects};
pub use nats::{NatsServer, check_nats_config, nats_server_binary};
pub use pg::{PgCluster, postgres};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Errors from starting or talking to a test dependency.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A binary the harness needs is not installed.
    #[error("`{binary}` not found: {hint}")]
    MissingBinary {
        /// The binary that was looked for.
        binary: String,
        /// How to install it.
        hint: String,
    },
    /// A process could not be started or exited with an error.
    #[error("{what} failed: {detail}")]
    Process {
        /// What was being run.
        what: String,
        /// Its stderr/stdout or the OS error.
        detail: String,
    },
    /// A server did not become ready in time.
    #[error("{what} did not become ready within {timeout:?}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Filesystem error while preparing a server.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// The executable `name` found on `PATH`, or [`HarnessError::MissingBinary`]
/// with `hint` (how to install it): tests that need a tool fail with the
/// install step rather than skip.
pub fn binary_on_path(name: &str, hint: &str) -> Result<std::path::PathBuf, HarnessError> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| HarnessError::MissingBinary {
            binary: name.into(),
            hint: hint.into(),
        })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports come from below the kernel's ephemeral range: a port asked of the
/// kernel (`bind` to port 0) is one it also hands to outgoing connections, so
/// between this call and the server binding it, any client socket on the
/// machine (the test's own connections to PostgreSQL or a hub) could take it
/// (seen in CI: a leaf's monitoring port "address already in use"). Below the
/// range only listeners compete, and a port bound by one is skipped here.
///
/// Never returns the same port twice in one process, and processes start at
/// different places in the range.
pub fn free_port() -> u16 {
    consecutive_free_ports(1)
}

/// The first of `n` consecutive TCP ports on 127.0.0.1, all free a moment ago
/// (nodes of a cluster on one host listen on `base + i`); none of them is
/// handed out again by this process. See [`free_port`].
pub fn consecutive_free_ports(n: u16) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let n = n.max(1);
    let (low, high) = listener_port_range();
    let span = u32::from(high - low) + 1;
    let start = start_offset(span);
    for step in 0..span {
        let offset = (start + step) % span;
        let Ok(base) = u16::try_from(u32::from(low) + offset) else {
            continue;
        };
        if u32::from(base) + u32::from(n) - 1 > u32::from(high) {
            continue;
        }
        let ports: Vec<u16> = (base..base + n).collect();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if ports.iter().any(|port| handed_out.contains(port)) {
            continue;
        }
        // Bound all at once, so a port is checked while its neighbours are held.
        let bound: Result<Vec<TcpListener>, _> = ports
            .iter()
            .map(|port| TcpListener::bind(("127.0.0.1", *port)))
            .collect();
        if bound.is_ok() {
            handed_out.extend(&ports);
            return base;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1 between {low} and {high}")
}

/// The ports tests listen on: from 10000 up to just below the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`; 32768 when unreadable, Linux's
/// default), or 10000-29999 if that range starts too low to leave room.
fn listener_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOW + 1_000 {
        (LOW, ephemeral_low - 1)
    } else {
        (LOW, 29_999)
    }
}

/// Where a search starts in a range of `span` ports: the pid and the clock,
/// so test binaries run one after another (or side by side) do not walk the
/// same ports.
fn start_offset(span: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::process::id().wrapping_mul(7_919).wrapping_add(nanos) % span
}

/// Prints a suite's figure line (counts of the fault, security and property
/// suites) and, when `SR_TEST_REPORT` names a file, appends it there, so the
/// test command can show every figure after the run (cargo hides the output
/// of tests that pass).
pub fn report(line: &str) {
    println!("{line}");
    if let Some(path) = std::env::var_os("SR_TEST_REPORT") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(e) = appended {
            eprintln!("could not append to SR_TEST_REPORT: {e}");
        }
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) -> Result<(), HarnessError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(HarnessError::Timeout {
        what: what.to_string(),
        timeout,
    })
}

/// One line describing this machine for benchmark output: cores, CPU model, RAM.
pub fn machine_summary() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: f64 = info
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("machine: {cores} cores ({cpu}), {mem} RAM")
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0, 5 s read timeout): the response
/// body, or `None` if nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The leaf connections a `nats-server`'s monitoring endpoint (`/leafz` on
/// 127.0.0.1:`monitor_port`) reports, as (name, account) pairs; empty when it
/// does not answer.
pub fn leafz(monitor_port: u16) -> Vec<(String, String)> {
    http_get(monitor_port, "/leafz")
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["leafs"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|leaf| {
            (
                leaf["name"].as_str().unwrap_or_default().to_owned(),
                leaf["account"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a port the kernel picked for `bind(0)` is one it also gives
    /// outgoing connections, so a test's server could find it taken.
    #[test]
    fn test_ports_never_come_from_the_ephemeral_range_clients_use() {
        let (low, high) = listener_port_range();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let port = free_port();
            assert!((low..=high).contains(&port), "{port} outside {low}-{high}");
            assert!(seen.insert(port), "{port} handed out twice");
        }
        let base = consecutive_free_ports(3);
        for port in base..base + 3 {
            assert!(seen.insert(port), "{port} handed out twice");
            TcpListener::bind(("127.0.0.1", port)).expect("a handed-out port is free");
        }
        let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(u16::MAX);
        assert!(high < ephemeral_low || ephemeral_low <= 11_000);
    }
}
