//! Retention end to end (issue 11, finding 12): the server enqueues the
//! retention sweep on its interval and a job worker runs it, on both
//! databases; `admin set-retention` sets a tenant's telemetry days, with a
//! clear error for an unknown tenant or an out-of-range value.

use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::telemetry::{IncomingMessage, TelemetryKind, decode};
use support::{Db, spawn_app_with};

mod support;

const DAY: i64 = 24 * 3600 * 1000;

async fn the_sweep_runs_as_a_job(db: Db) {
    let app = spawn_app_with(db, |settings| {
        settings.job_workers = 1;
        settings.retention_sweep = Some(Duration::from_millis(200));
        settings.bootstrap.tenant = "acme".into();
    })
    .await;
    let acme = app.store.tenant_by_slug("acme").await.unwrap();
    let scoped = app.store.scoped(TenantScope::for_system_task(acme.id));
    let now = serviceradar_store::now_ms();
    let records: Vec<_> = [(1, now - 45 * DAY), (2, now - DAY)]
        .into_iter()
        .map(|(seq, ts)| {
            let payload = format!(r#"{{"message":"m{seq}","ts":{ts}}}"#);
            decode(
                "acme",
                IncomingMessage {
                    subject: "events.acme.nyc",
                    payload: payload.as_bytes(),
                    stream_seq: seq,
                    stored_at_ms: 0,
                },
            )
            .unwrap()
            .into_owned()
        })
        .collect();
    scoped.insert_telemetry(&records).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = scoped.count_telemetry(TelemetryKind::Event).await.unwrap();
        if left == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} events: the sweep never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_telemetry_is_swept_by_the_retention_job_on_sqlite() {
    the_sweep_runs_as_a_job(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_telemetry_is_swept_by_the_retention_job_on_postgres() {
    the_sweep_runs_as_a_job(Db::Postgres).await;
}

/// `admin set-retention` through the real binary.
#[test]
fn admin_set_retention_sets_a_tenants_telemetry_days() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let core = env!("CARGO_BIN_EXE_serviceradar-core");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(core)
            .args(args)
            .args(["--data-dir", &data])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    // A new installation: `--init` (admin commands never create one silently).
    let (ok, out) = run(&[
        "admin",
        "create-tenant",
        "--init",
        "--slug",
        "acme",
        "--owner-email",
        "owner@acme.example.com",
        "--owner-password",
        "a long enough password",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "admin",
        "set-retention",
        "--tenant",
        "acme",
        "--telemetry-days",
        "90",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("tenant acme keeps 90 days of telemetry"),
        "{out}"
    );
    let (ok, out) = run(&[
        "admin",
        "set-retention",
        "--tenant",
        "acme",
        "--server-default",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("server's default"), "{out}");
    let (ok, out) = run(&[
        "admin",
        "set-retention",
        "--tenant",
        "nope",
        "--telemetry-days",
        "9",
    ]);
    assert!(!ok);
    assert!(out.contains("no tenant \"nope\""), "{out}");
    let (ok, out) = run(&[
        "admin",
        "set-retention",
        "--tenant",
        "acme",
        "--telemetry-days",
        "0",
    ]);
    assert!(!ok);
    assert!(out.contains("--telemetry-days"), "{out}");
    let (ok, out) = run(&["admin", "set-retention", "--tenant", "acme"]);
    assert!(!ok, "neither a number of days nor --server-default: {out}");
}
