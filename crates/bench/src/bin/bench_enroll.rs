//! `bench-enroll`: enrollment token redemption per second (what
//! `POST /api/v1/enroll` runs: verify the token's signature, count the use
//! and record the event in one transaction, check three CSRs, issue three
//! certificates for keys the platform never sees, sign the leaf user JWT),
//! next to its baseline in the same run: `provision_leaf` for the same sites
//! (the bundle path, where the platform generates the three keys itself,
//! signs, mints and seals). Both on PostgreSQL and SQLite, same concurrency.
//!
//! The CSRs are made before the clock starts: generating keys is the edge
//! box's work, not the control plane's.
//!
//! ```text
//! cargo run --release -p serviceradar-bench --bin bench-enroll -- --sites 500
//! ```

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use serviceradar_control::enrollment::CreateEnrollmentToken;
use serviceradar_control::{Control, ControlSettings};
use serviceradar_domain::enrollment::RedeemRequest;
use serviceradar_domain::policy::{Role, ScopeSet};
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{Actor, TenantScope, UserId};
use serviceradar_jobs::Jobs;
use serviceradar_provisioning::{ProvisioningSettings, provision_leaf};
use serviceradar_store::{NewSite, Store};

mod common;

use common::{
    Backends, ephemeral_pki, multi_thread_runtime, on_backends, parse, percentile,
    tenant_with_identity,
};

/// Enrollment redemption benchmark (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "bench-enroll", about, long_about = None)]
struct Args {
    /// Sites (one token each) per backend.
    #[arg(long, default_value_t = 500)]
    sites: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Backends to measure.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    backend: Backends,
    /// Use this PostgreSQL database (empty) instead of a private cluster.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
}

struct Figures {
    name: &'static str,
    provision_per_sec: f64,
    redeem_per_sec: f64,
    redeem_p50_ms: f64,
    redeem_p99_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.sites > 0 && args.concurrency > 0,
        "--sites and --concurrency must be at least 1"
    );
    serviceradar_server::telemetry::init_tracing(false, std::io::sink);
    println!("{}", serviceradar_testkit::machine_summary());
    let runtime = multi_thread_runtime()?;
    let tmp = tempfile::tempdir()?;
    let results = on_backends(
        args.backend,
        args.database_url.as_deref(),
        tmp.path(),
        |name, url| runtime.block_on(run(&args, name, url)),
    )?;
    println!();
    println!(
        "| backend | redemptions/s | baseline: provision_leaf/s | ratio | redemption p50 | p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} ms | {:.1} ms |",
            r.name,
            r.redeem_per_sec,
            r.provision_per_sec,
            r.redeem_per_sec / r.provision_per_sec,
            r.redeem_p50_ms,
            r.redeem_p99_ms
        );
    }
    println!("({} sites, {} in flight)", args.sites, args.concurrency);
    for r in &results {
        common::Figure::plain(
            format!("enrollment redemptions ({})", r.name),
            r.redeem_per_sec,
            "redemptions/s",
        )
        .against("provision_leaf/s", r.provision_per_sec)
        .emit();
    }
    Ok(())
}

async fn run(args: &Args, name: &'static str, url: &str) -> anyhow::Result<Figures> {
    println!("== {name}");
    let store = Store::connect(url, 16).await.context("connecting")?;
    store.migrate().await?;
    let pki = ephemeral_pki()?;
    let tenant = tenant_with_identity(&store, &pki, "bench", "Bench").await?;
    let provisioning = ProvisioningSettings::default();
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let listen = parse(ListenAddr::parse("0.0.0.0:4222"))?;
    let mut sites = Vec::with_capacity(args.sites);
    for i in 0..args.sites {
        let (site, leaf) = scoped
            .create_site(
                &NewSite {
                    name: parse(DisplayName::parse(&format!("Site {i}")))?,
                    slug: parse(Slug::parse(&format!("site-{i}")))?,
                    nats_leaf_url: parse(NatsUrl::parse(&format!(
                        "tls://edge-{i}.example.net:4222"
                    )))?,
                    upstream_url: provisioning.hub_leafnode_url.clone(),
                    local_listen: listen.clone(),
                },
                None,
            )
            .await?;
        sites.push((site, leaf));
    }

    // Baseline: provision every site the bundle way.
    let started = Instant::now();
    let mut provisioned = futures::stream::iter(sites.iter())
        .map(|(site, leaf)| provision_leaf(&store, &pki, &provisioning, &tenant, site, leaf))
        .buffer_unordered(args.concurrency);
    while let Some(result) = provisioned.next().await {
        result?;
    }
    drop(provisioned);
    let provision_per_sec = args.sites as f64 / started.elapsed().as_secs_f64();
    println!("provision_leaf: {provision_per_sec:.0}/s");

    // One token per site, and the edge's requests, made before the clock.
    let control = Control::new(
        store.clone(),
        pki.clone(),
        Arc::new(Jobs::default()),
        ControlSettings::default(),
    );
    let actor = Actor {
        tenant_id: tenant.id,
        user_id: UserId::new(),
        role: Role::Owner,
        scopes: ScopeSet::ALL,
    };
    let mut requests = Vec::with_capacity(args.sites);
    for (i, (site, _)) in sites.iter().enumerate() {
        let created = control
            .create_enrollment_token(&actor, site.id, &CreateEnrollmentToken::default())
            .await?;
        let csr = |cn: &str| serviceradar_pki::new_key_and_request(cn).map(|(_, csr)| csr);
        requests.push(RedeemRequest {
            token: created.secret.expose().to_string(),
            scope: Some("site".into()),
            host_fingerprint: format!("{i:064x}"),
            hostname: format!("edge-{i}"),
            leaf_client_csr: Some(csr("leaf")?),
            leaf_server_csr: Some(csr("leaf-server")?),
            nats_user_public_key: Some(
                serviceradar_natsconf::jwt::NKey::generate(
                    serviceradar_natsconf::jwt::KeyKind::User,
                )
                .public_key(),
            ),
            agent_csr: Some(csr("agent")?),
            collector_csr: None,
        });
    }
    let started = Instant::now();
    let mut redeemed = futures::stream::iter(requests.iter())
        .map(|request| {
            let control = control.clone();
            async move {
                let t = Instant::now();
                control
                    .redeem_enrollment_token(request, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("redeeming: {e}"))?;
                anyhow::Ok(t.elapsed())
            }
        })
        .buffer_unordered(args.concurrency);
    let mut latencies = Vec::with_capacity(args.sites);
    while let Some(result) = redeemed.next().await {
        latencies.push(result?.as_secs_f64() * 1000.0);
    }
    let redeem_per_sec = args.sites as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!("redeem: {redeem_per_sec:.0}/s");
    store.close().await;
    Ok(Figures {
        name,
        provision_per_sec,
        redeem_per_sec,
        redeem_p50_ms: percentile(&latencies, 0.5),
        redeem_p99_ms: percentile(&latencies, 0.99),
    })
}
