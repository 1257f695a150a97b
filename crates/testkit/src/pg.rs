//! A private PostgreSQL cluster for tests and benchmarks.
//!
//! The cluster lives in a temporary directory, listens only on 127.0.0.1 on a free
//! port, and is shut down (and its directory removed) by a small watchdog shell
//! loop as soon as the process that started it exits. That matters because the
//! cluster is shared by every test of a test binary through a `static`, and statics
//! are never dropped.
//!
//! PostgreSQL refuses to run as root; when the harness runs as root (CI here does)
//! it runs the server as the `postgres` system user created by Debian's packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{HarnessError, free_port, wait_for_port};

/// A running PostgreSQL cluster owned by this process.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    /// The cluster's directory (data, socket, log, the restart flag).
    dir: PathBuf,
}

/// The PostgreSQL cluster shared by all tests of this process, started on first use.
///
/// If `SERVICERADAR_TEST_DATABASE_URL` is set, no cluster is started and tests
/// use that server instead (databases are still created per test).
pub fn postgres() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        PgCluster::start(false)
            .unwrap_or_else(|err| panic!("could not start a test PostgreSQL cluster: {err}"))
    })
}

impl PgCluster {
    /// Starts a new cluster. `durable = false` turns off fsync and friends (fine
    /// for tests, wrong for benchmarks that want production-like numbers).
    pub fn start(durable: bool) -> Result<Self, HarnessError> {
        let bin_dir = find_bin_dir()?;
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("serviceradar-pg-")
            .tempdir()?
            .keep();
        let data = dir.join("data");
        if run_as_postgres {
            run(
                "chown",
                Command::new("chown").arg("-R").arg("postgres:").arg(&dir),
            )?;
        }
        let mut initdb = command_as(run_as_postgres, &bin_dir.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run("initdb", &mut initdb)?;

        let port = free_port();
        let mut settings = format!(
            "-c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB -k {}",
            dir.display()
        );
        if !durable {
            settings.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        // The watchdog: start postgres, then poll for the parent test process; when
        // it is gone (or postgres died) stop postgres and remove the directory.
        // While the `restart` flag file exists (see `PgCluster::restart`), a
        // postgres that stopped is started again once the flag is removed.
        let script = format!(
            "start() {{ {postgres} -D {data} -p {port} {settings} >>{dir}/postgres.log 2>&1 & pg=$!; }}; \
             start; \
             while [ -d /proc/{parent} ]; do \
               if ! kill -0 $pg 2>/dev/null; then \
                 [ -f {dir}/restart ] || break; \
                 while [ -f {dir}/restart ] && [ -d /proc/{parent} ]; do sleep 0.1; done; \
                 start; \
               fi; \
               sleep 0.2; \
             done; \
             kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
            postgres = bin_dir.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            parent = std::process::id(),
        );
        let mut watchdog = command_as(run_as_postgres, Path::new("sh"));
        watchdog
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        watchdog.spawn()?;
        wait_for_port(port, "postgres", Duration::from_secs(30)).map_err(|err| {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            HarnessError::Process {
                what: "postgres".into(),
                detail: format!("{err}; log:\n{log}"),
            }
        })?;
        wait_until_accepting(&bin_dir, port)?;
        Ok(Self {
            port,
            bin_dir,
            run_as_postgres,
            dir,
        })
    }

    /// Stops the cluster (fast shutdown: open connections are cut), keeps it
    /// down for `down`, starts it again and waits until it accepts
    /// connections. For fault tests: use a private cluster
    /// ([`PgCluster::start`]), not the shared one.
    pub fn restart(&self, down: Duration) -> Result<(), HarnessError> {
        let flag = self.dir.join("restart");
        std::fs::write(&flag, b"")?;
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        run("kill", Command::new("kill").args(["-INT", &pid]))?;
        let stopped = std::time::Instant::now();
        while pid_file.exists() && stopped.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down.saturating_sub(stopped.elapsed()));
        std::fs::remove_file(&flag)?;
        wait_for_port(self.port, "postgres", Duration::from_secs(30))?;
        wait_until_accepting(&self.bin_dir, self.port)
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for database `name` as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        if let Ok(base) = std::env::var("SERVICERADAR_TEST_DATABASE_URL") {
            return base;
        }
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut createdb = command_as(self.run_as_postgres, &self.bin_dir.join("createdb"));
        createdb.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            &name,
        ]);
        run("createdb", &mut createdb).expect("createdb on the test cluster");
        self.url(&name)
    }

    /// Runs `psql -c sql` against database `name` (used by benchmarks for `\copy`).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, HarnessError> {
        let mut psql = Command::new("psql");
        psql.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        run("psql", &mut psql)
    }
}

/// The port opens before PostgreSQL accepts connections ("the database system
/// is starting up"): poll `pg_isready` until it answers.
fn wait_until_accepting(bin_dir: &Path, port: u16) -> Result<(), HarnessError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin_dir.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(HarnessError::Timeout {
                what: "postgres accepting connections".into(),
                timeout: Duration::from_secs(30),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn command_as(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<String, HarnessError> {
    let output = cmd.output().map_err(|err| HarnessError::Process {
        what: what.into(),
        detail: err.to_string(),
    })?;
    if !output.status.success() {
        return Err(HarnessError::Process {
            what: what.into(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn find_bin_dir() -> Result<PathBuf, HarnessError> {
    if let Ok(dir) = std::env::var("SERVICERADAR_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("postgres").is_file())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().ok_or_else(|| HarnessError::MissingBinary {
        binary: "postgres".into(),
        hint: "install Debian's `postgresql` package (or set SERVICERADAR_PG_BIN)".into(),
    })
}
