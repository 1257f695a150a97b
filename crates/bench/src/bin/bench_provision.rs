//! `bench-provision`: site provisioning throughput (the `provision_leaf` job
//! end to end, on SQLite and on PostgreSQL), site bundle generation latency,
//! and our certificate issuance next to `openssl req` + `openssl x509 -req`
//! doing the same ECDSA P-256 signing, all in one run.
//!
//! What it does, per backend:
//!
//! 1. opens a fresh store (a SQLite file in a temp dir; a private, durable
//!    PostgreSQL cluster on loopback, or `--database-url`), creates
//!    `--tenants` tenants with their CA and NATS account;
//! 2. enqueues `--sites` sites the way the API does (site + pending leaf +
//!    `provision_leaf` job in one transaction), spread over the tenants,
//!    with no worker running;
//! 3. starts `--workers` job workers and measures the wall time until every
//!    job is `done` (claim, load tenant/site/leaf, open the tenant CA, issue
//!    two certificates, mint the leaf's NATS user, render and checksum the
//!    config, seal keys and creds, store, complete the job);
//! 4. builds `--bundles` site bundles (`build_site_bundle`, what
//!    `GET /api/v1/edge-sites/{id}/bundle` runs) one after another and reports
//!    p50/p99.
//!
//! Then, once: `--certs` leaf client certificates issued in-process vs. the
//! same number made with `openssl req -new -newkey ec` + `openssl x509 -req`
//! (same CA, same extensions), plus `openssl speed ecdsap256` as the raw
//! signing figure.
//!
//! ```text
//! cargo run --release -p serviceradar-bench --bin bench-provision -- --sites 2000
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{EdgeSiteId, TenantScope};
use serviceradar_identity::{MasterKeySource, Pki};
use serviceradar_jobs::Jobs;
use serviceradar_pki::{SiteRef, TenantRef, issue_leaf_client};
use serviceradar_provisioning::{build_site_bundle, register};
use serviceradar_server::app::Settings;
use serviceradar_server::telemetry;
use serviceradar_store::jobs::JobStatus;
use serviceradar_store::{NewSite, Store};

mod common;

use common::{Backends, multi_thread_runtime, on_backends, parse, percentile, psql, say, verdict};

/// Targets from the issue.
const TARGET_SITES_PER_SEC_PG: f64 = 200.0;
const TARGET_BUNDLE_P99_MS: f64 = 20.0;
const UPSTREAM_URL: &str = "tls://hub.example.net:7422";
const LOCAL_LISTEN: &str = "0.0.0.0:4222";

/// Provisioning, bundle and certificate issuance benchmark (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "bench-provision", about, long_about = None)]
struct Args {
    /// Sites to provision per backend.
    #[arg(long, default_value_t = 2000)]
    sites: usize,
    /// Tenants the sites are spread over.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Job worker loops.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Database pool size.
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Backends to measure.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    backend: Backends,
    /// Bundles to build for the latency figures.
    #[arg(long, default_value_t = 1000)]
    bundles: usize,
    /// Certificates to issue in each of the two issuance runs (ours, openssl).
    #[arg(long, default_value_t = 200)]
    certs: usize,
    /// Use this PostgreSQL database (empty) instead of a private cluster.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    fail_on_miss: bool,
    /// Sites already in the database before the run, PostgreSQL only:
    /// provisioned sites spread over the tenants, each with its leaf server
    /// and its finished `provision_leaf` job, bulk-loaded with `\copy` (the
    /// figure at size: 0, 100000, 1000000).
    #[arg(long, default_value_t = 0)]
    existing: usize,
}

/// Figures of one backend.
struct BackendResult {
    name: &'static str,
    sites: usize,
    provision: Duration,
    bundle_p50_ms: f64,
    bundle_p99_ms: f64,
    bundle_bytes: usize,
}

impl BackendResult {
    fn sites_per_sec(&self) -> f64 {
        self.sites as f64 / self.provision.as_secs_f64()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tenants == 0 || args.sites == 0 || args.workers == 0 {
        bail!("--tenants, --sites and --workers must be at least 1");
    }
    telemetry::init_tracing(false, std::io::sink);
    say(serviceradar_testkit::machine_summary());
    let runtime = multi_thread_runtime()?;
    let tmp = tempfile::tempdir()?;

    let results = on_backends(
        args.backend,
        args.database_url.as_deref(),
        tmp.path(),
        |name, url| runtime.block_on(run_backend(&args, name, url)),
    )?;
    let certs = runtime.block_on(compare_issuance(&args, tmp.path()))?;
    let passed = report(&args, &results, &certs);
    if args.fail_on_miss && !passed {
        std::process::exit(1);
    }
    Ok(())
}

async fn run_backend(args: &Args, name: &'static str, url: &str) -> anyhow::Result<BackendResult> {
    say(format!("== {name}"));
    let store = Store::connect(url, args.pool)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    let pki = Arc::new(Pki::new(
        MasterKeySource::Ephemeral.load()?,
        serviceradar_pki::DEFAULT_TRUST_DOMAIN,
    ));
    let mut settings = Settings::new(url);
    settings.provision_leaves = true;
    settings.provisioning.hub_leafnode_url = UPSTREAM_URL.into();
    settings.provisioning.leaf_monitoring_listen = Some("127.0.0.1:8222".into());
    let settings = Arc::new(settings);
    let mut jobs = Jobs::default();
    register(
        &mut jobs,
        store.clone(),
        pki.clone(),
        std::sync::Arc::new(settings.provisioning.clone()),
    );

    let tenants = create_tenants(args, &store, &pki).await?;
    if args.existing > 0 && store.backend() == serviceradar_store::Backend::Postgres {
        load_existing(args, url, &tenants).await?;
    }
    let site_ids = enqueue_sites(args, &store, &jobs, &tenants).await?;

    // Provision: workers start now; done when every job is done.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let workers = jobs.spawn_workers(store.clone(), args.workers, stop_rx);
    let mut last_report = Instant::now();
    // Counts only unfinished and failed jobs: index lookups of a few rows,
    // whatever the number of finished jobs already in the table.
    loop {
        let failed = store.count_jobs(JobStatus::Failed).await?;
        if failed > 0 {
            bail!("{failed} provisioning jobs failed");
        }
        let left = store.count_jobs(JobStatus::Queued).await?
            + store.count_jobs(JobStatus::Running).await?;
        if left == 0 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            let done = args
                .sites
                .saturating_sub(usize::try_from(left).unwrap_or(0));
            say(format!(
                "provisioned {done}/{} ({:.0}/s)",
                args.sites,
                done as f64 / started.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let provision = started.elapsed();
    let _ = stop_tx.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    say(format!(
        "provisioned {} sites in {:.2}s: {:.0} sites/s ({} workers)",
        args.sites,
        provision.as_secs_f64(),
        args.sites as f64 / provision.as_secs_f64(),
        args.workers
    ));

    // Bundles: sequential, cycling over the provisioned sites.
    let mut latencies = Vec::with_capacity(args.bundles);
    let mut bundle_bytes = 0;
    for i in 0..args.bundles {
        let (tenant, site) = &site_ids[i % site_ids.len()];
        let started = Instant::now();
        let bundle = build_site_bundle(
            &store,
            &pki,
            &settings.provisioning,
            TenantScope::for_system_task(tenant.id),
            *site,
        )
        .await
        .map_err(|e| anyhow::anyhow!("building a bundle: {e}"))?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        bundle_bytes = bundle.bytes.len();
    }
    latencies.sort_by(f64::total_cmp);
    store.close().await;
    Ok(BackendResult {
        name,
        sites: args.sites,
        provision,
        bundle_p50_ms: percentile(&latencies, 0.50),
        bundle_p99_ms: percentile(&latencies, 0.99),
        bundle_bytes,
    })
}

/// Bulk-loads `--existing` provisioned sites (site, leaf server, finished
/// job) with psql's `\copy`, then `VACUUM (ANALYZE)`.
async fn load_existing(args: &Args, url: &str, tenants: &[Tenant]) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let now = serviceradar_store::now_ms() - i64::try_from(args.existing)? - 1;
    let files = ["edge_sites", "nats_leaf_servers", "jobs"].map(|t| dir.path().join(t));
    {
        let mut out = files
            .iter()
            .map(|f| std::fs::File::create(f).map(std::io::BufWriter::new))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..args.existing {
            let tenant = tenants[i % tenants.len()].id;
            let at = now + i64::try_from(i)?;
            let (site, leaf, job) = (
                uuid::Uuid::now_v7(),
                uuid::Uuid::now_v7(),
                uuid::Uuid::now_v7(),
            );
            writeln!(
                out[0],
                "{site},{tenant},Old site {i:07},old-{i:07},active,tls://old-{i}.example.net:4222,{at},{at}"
            )?;
            writeln!(
                out[1],
                "{leaf},{tenant},{site},provisioned,{UPSTREAM_URL},{LOCAL_LISTEN},{at},{at}"
            )?;
            writeln!(
                out[2],
                "{job},{tenant},provision_leaf,{{}},done,1,5,{at},{at},{at}"
            )?;
        }
        for f in &mut out {
            f.flush()?;
        }
    }
    let targets = [
        "edge_sites (id, tenant_id, name, slug, status, nats_leaf_url, created_at, updated_at)",
        "nats_leaf_servers (id, tenant_id, edge_site_id, status, upstream_url, local_listen, \
         created_at, updated_at)",
        "jobs (id, tenant_id, kind, payload, status, attempts, max_attempts, run_at, created_at, \
         updated_at)",
    ];
    for (target, file) in targets.iter().zip(&files) {
        let path = file.display().to_string();
        if path.contains('\'') {
            bail!("temporary path {path:?} contains a quote");
        }
        psql(
            url,
            &format!("\\copy {target} FROM '{path}' WITH (FORMAT csv, QUOTE '\"')"),
        )?;
    }
    psql(url, common::AFTER_SITE_COPY)?;
    for table in ["edge_sites", "nats_leaf_servers", "jobs"] {
        psql(url, &format!("VACUUM (ANALYZE) {table}"))?;
    }
    say(format!(
        "loaded {} existing provisioned sites (site, leaf, finished job) in {:.1}s",
        args.existing,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn create_tenants(args: &Args, store: &Store, pki: &Pki) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = Vec::with_capacity(args.tenants);
    for i in 0..args.tenants {
        let slug = parse(Slug::parse(&format!("bench-{i:03}")))?;
        let name = parse(DisplayName::parse(&format!("Bench tenant {i}")))?;
        let tenant = store.create_tenant(&slug, &name).await?;
        pki.ensure_tenant_identity(store, &tenant).await?;
        tenants.push(tenant);
    }
    Ok(tenants)
}

/// Creates the sites with their jobs, 16 transactions in flight.
async fn enqueue_sites(
    args: &Args,
    store: &Store,
    jobs: &Jobs,
    tenants: &[Tenant],
) -> anyhow::Result<Vec<(Tenant, EdgeSiteId)>> {
    let started = Instant::now();
    let local_listen = parse(ListenAddr::parse(LOCAL_LISTEN))?;
    let mut created = futures::stream::iter(0..args.sites)
        .map(|i| {
            let tenant = tenants[i % tenants.len()].clone();
            let local_listen = local_listen.clone();
            let job = jobs
                .provisioning_job_for_new_site()
                .context("the provisioning handler is registered");
            async move {
                let site = NewSite {
                    name: parse(DisplayName::parse(&format!("Site {i:06}")))?,
                    slug: parse(Slug::parse(&format!("site-{i:06}")))?,
                    nats_leaf_url: parse(NatsUrl::parse(&format!(
                        "tls://edge-{i}.example.net:4222"
                    )))?,
                    upstream_url: UPSTREAM_URL.into(),
                    local_listen,
                };
                let (site, _) = store
                    .scoped(TenantScope::for_system_task(tenant.id))
                    .create_site(&site, Some(job?))
                    .await?;
                anyhow::Ok((tenant, site.id))
            }
        })
        .buffer_unordered(16);
    let mut ids = Vec::with_capacity(args.sites);
    while let Some(result) = created.next().await {
        ids.push(result?);
    }
    say(format!(
        "enqueued {} sites with their jobs in {:.1}s",
        args.sites,
        started.elapsed().as_secs_f64()
    ));
    Ok(ids)
}

/// Issuance figures: certificates per second.
struct IssuanceResult {
    ours_per_sec: f64,
    openssl_per_sec: f64,
    openssl_speed_sign_per_sec: Option<f64>,
}

/// Issues `--certs` leaf client certificates in-process and with the
/// openssl CLI from the same tenant CA.
async fn compare_issuance(args: &Args, dir: &Path) -> anyhow::Result<IssuanceResult> {
    say("== certificate issuance (ECDSA P-256 key + signature)");
    let store = Store::connect(&format!("sqlite://{}", dir.join("certs.db").display()), 2).await?;
    store.migrate().await?;
    let pki = Pki::new(
        MasterKeySource::Ephemeral.load()?,
        serviceradar_pki::DEFAULT_TRUST_DOMAIN,
    );
    let tenant = store
        .create_tenant(
            &parse(Slug::parse("certs"))?,
            &parse(DisplayName::parse("Certs"))?,
        )
        .await?;
    let ca = pki.tenant_ca(&store, &tenant).await?;
    let opts = pki.issue_options();

    let started = Instant::now();
    for i in 0..args.certs {
        let slug = format!("site-{i:06}");
        issue_leaf_client(
            &ca,
            TenantRef::of(&tenant),
            SiteRef {
                id: uuid::Uuid::now_v7(),
                slug: &slug,
            },
            &opts,
        )?;
    }
    let ours = started.elapsed();

    let ca_cert = dir.join("tenant-ca.pem");
    let ca_key = dir.join("tenant-ca-key.pem");
    std::fs::write(&ca_cert, ca.cert_pem())?;
    serviceradar_identity::write_secret_file(&ca_key, ca.key_pem().as_bytes())?;
    let started = Instant::now();
    for i in 0..args.certs {
        openssl_issue(dir, &ca_cert, &ca_key, tenant.id.as_uuid(), i)?;
    }
    let openssl = started.elapsed();
    let result = IssuanceResult {
        ours_per_sec: args.certs as f64 / ours.as_secs_f64(),
        openssl_per_sec: args.certs as f64 / openssl.as_secs_f64(),
        openssl_speed_sign_per_sec: openssl_speed(),
    };
    say(format!(
        "ours: {:.0} certs/s; openssl req + x509 -req: {:.0} certs/s",
        result.ours_per_sec, result.openssl_per_sec
    ));
    Ok(result)
}

/// One leaf client certificate the way an operator would script it.
fn openssl_issue(
    dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    tenant_id: uuid::Uuid,
    i: usize,
) -> anyhow::Result<()> {
    let cn = format!("leaf.site-{i:06}.certs.serviceradar");
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth,serverAuth\n\
             authorityKeyIdentifier=keyid\n\
             subjectAltName=DNS:{cn},URI:spiffe://serviceradar.io/tenant/{tenant_id}/leaf/{}\n",
            uuid::Uuid::now_v7()
        ),
    )?;
    let (key, csr, cert) = (
        dir.join("o-key.pem"),
        dir.join("o.csr"),
        dir.join("o-cert.pem"),
    );
    run_openssl(
        std::process::Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .args(["-nodes", "-subj"])
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    )?;
    let serial = format!("0x{}", uuid::Uuid::new_v4().simple());
    run_openssl(
        std::process::Command::new("openssl")
            .args(["x509", "-req", "-sha256", "-days", "365", "-set_serial"])
            .arg(serial)
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(ca_cert)
            .arg("-CAkey")
            .arg(ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    )
}

fn run_openssl(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let out = cmd.output().context("running openssl")?;
    if !out.status.success() {
        bail!("openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Signatures per second from `openssl speed -seconds 2 ecdsap256`.
fn openssl_speed() -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "2", "ecdsap256"])
        .output()
        .ok()?;
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// Parses the `256 bits ecdsa (nistp256)  0.0000s  0.0001s  41234.5  13456.7`
/// line: the next-to-last number is signatures per second.
fn parse_openssl_speed(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("ecdsa (nistp256)"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|word| word.parse::<f64>().ok())
        .collect();
    // "0.0000s" does not parse: [256, sign/s, verify/s].
    numbers.len().checked_sub(2).map(|i| numbers[i])
}

fn report(args: &Args, results: &[BackendResult], certs: &IssuanceResult) -> bool {
    let mut out = String::new();
    let mut passed = true;
    let _ = writeln!(
        out,
        "\n| backend | sites | workers | provisioning | bundle p50 | bundle p99 | bundle size |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} sites/s ({:.2} s) | {:.2} ms | {:.2} ms | {} B |",
            r.name,
            r.sites,
            args.workers,
            r.sites_per_sec(),
            r.provision.as_secs_f64(),
            r.bundle_p50_ms,
            r.bundle_p99_ms,
            r.bundle_bytes
        );
    }
    let _ = writeln!(
        out,
        "\ncertificate issuance, {} leaf client certs: ours {:.0}/s, openssl req + x509 -req {:.0}/s (ours / openssl = {:.1}x); openssl speed ecdsap256: {} signs/s",
        args.certs,
        certs.ours_per_sec,
        certs.openssl_per_sec,
        certs.ours_per_sec / certs.openssl_per_sec,
        certs
            .openssl_speed_sign_per_sec
            .map_or("n/a".into(), |s| format!("{s:.0}"))
    );
    let size = if args.existing > 0 {
        format!(", {} existing sites", args.existing)
    } else {
        String::new()
    };
    for r in results {
        common::Figure::plain(
            format!("{} provisioning{size}", r.name),
            r.sites_per_sec(),
            "sites/s",
        )
        .target(
            if r.name == "PostgreSQL" {
                format!(">= {TARGET_SITES_PER_SEC_PG:.0} sites/s")
            } else {
                String::new()
            },
            r.name != "PostgreSQL" || r.sites_per_sec() >= TARGET_SITES_PER_SEC_PG,
        )
        .emit();
        common::Figure::plain(format!("{} bundle p99", r.name), r.bundle_p99_ms, "ms")
            .target(
                format!("< {TARGET_BUNDLE_P99_MS:.0} ms"),
                r.bundle_p99_ms < TARGET_BUNDLE_P99_MS,
            )
            .emit();
        if r.name == "PostgreSQL" {
            let ok = r.sites_per_sec() >= TARGET_SITES_PER_SEC_PG;
            passed &= ok;
            let _ = writeln!(
                out,
                "target: PostgreSQL provisioning >= {TARGET_SITES_PER_SEC_PG:.0} sites/s: {} ({:.0})",
                verdict(ok),
                r.sites_per_sec()
            );
        }
        let ok = r.bundle_p99_ms < TARGET_BUNDLE_P99_MS;
        passed &= ok;
        let _ = writeln!(
            out,
            "target: {} bundle p99 < {TARGET_BUNDLE_P99_MS:.0} ms: {} ({:.2} ms)",
            r.name,
            verdict(ok),
            r.bundle_p99_ms
        );
    }
    common::Figure::plain("certificate issuance", certs.ours_per_sec, "certs/s")
        .against("openssl req + x509", certs.openssl_per_sec)
        .emit();
    println!("{out}");
    passed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_speed() {
        let text = "version: 3.0.17\n                              sign    verify    sign/s verify/s\n 256 bits ecdsa (nistp256)   0.0000s   0.0001s  41234.5  13456.7\n";
        assert_eq!(parse_openssl_speed(text), Some(41234.5));
        assert_eq!(parse_openssl_speed("nothing"), None);
    }
}
