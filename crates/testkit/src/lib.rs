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
/// Never returns the same port twice in one process: the kernel may hand the
/// same ephemeral port to two consecutive binds once the first is closed, and
/// a test asking for two ports must get two.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on loopback");
        let port = listener
            .local_addr()
            .expect("ephemeral listener has a local address")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
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
