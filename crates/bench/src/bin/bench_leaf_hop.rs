//! `bench-leaf-hop`: the latency a site's NATS leaf adds. A collector at the
//! site publishes to its local leaf, which forwards over the mTLS leafnode link
//! to the hub, where a subscriber receives it; compared in the same run with
//! the same collector publishing to the hub directly.
//!
//! Everything is the product's own path: a tenant and site provisioned by the
//! `provision_leaf` code, the site bundle built and installed with `setup.sh
//! --prefix`, the hub config from `admin hub-config`'s code, two real
//! `nats-server` processes on loopback. The collector on the leaf side
//! authenticates with a collector certificate from the tenant CA (as a
//! collector bundle does); the direct path uses a user of the tenant's account.
//!
//! Messages are sent one at a time (publish, flush, wait for the subscriber),
//! alternating between the two paths so both see the same machine load. The
//! payload is a 200-byte JSON event; the figure is publish-to-receive time in
//! one process (one clock).
//!
//! ```text
//! cargo run --release -p serviceradar-server --bin bench-leaf-hop -- --messages 5000
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serviceradar_identity::write_secret_file;
use serviceradar_server::app::Settings;
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, free_port};

mod common;

use common::{
    HubPorts, collector_client, ephemeral_pki, install_site, multi_thread_runtime, percentile, say,
    start_bench, start_hub, tenant_with_identity,
};

const SUBJECT: &str = "events.acme.bench";
const WAIT: Duration = Duration::from_secs(30);

/// Leaf-hop latency benchmark (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "bench-leaf-hop", about, long_about = None)]
struct Args {
    /// Messages per path.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Unmeasured messages per path first.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Payload size in bytes (a JSON event padded to this size).
    #[arg(long, default_value_t = 200)]
    payload: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.messages == 0 || args.payload < 32 {
        bail!("--messages must be at least 1 and --payload at least 32");
    }
    start_bench(None);
    let runtime = multi_thread_runtime()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let ports = HubPorts::free();
    let leaf_client = free_port();

    // Control plane state: tenant, site, provisioned leaf.
    let url = format!("sqlite://{}", dir.join("core.db").display());
    let store = Store::connect(&url, 4).await?;
    store.migrate().await?;
    let pki = ephemeral_pki()?;
    let mut settings = Settings::new(&url);
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", ports.hub_leaf);
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    let tenant = tenant_with_identity(&store, &pki, "acme", "Acme").await?;
    // The site: provisioned, bundled, installed with setup.sh --prefix.
    let installed =
        install_site(dir, &store, &pki, &settings, &tenant, "bench", leaf_client).await?;
    let (bundle_root, leaf_conf) = (installed.root, installed.config);
    let prefix = leaf_conf
        .parent()
        .context("installed config in a directory")?
        .to_path_buf();

    // The hub.
    let (hub, files, _) = start_hub(&store, &pki, dir, &ports).await?;
    // Leaves join the hub through the leaf authorization callout.
    let _leaf_auth = common::start_leaf_auth(&store, &pki, ports.hub_client).await?;
    let leaf_server = NatsServer::start_file(&prefix, "leaf", &leaf_conf, leaf_client)
        .context("starting the leaf nats-server")?;
    wait_for_leaf(ports.hub_monitor)
        .with_context(|| format!("hub log:\n{}\nleaf log:\n{}", hub.log(), leaf_server.log()))?;
    say(format!(
        "hub and leaf up; leaf joined the hub over mTLS ({})",
        files.config_checksum
    ));

    // Clients: subscriber and direct publisher on the hub (tenant users), the
    // site collector on the leaf (collector certificate).
    let creds = |name: &str| {
        let pki = pki.clone();
        let store = store.clone();
        let tenant = tenant.clone();
        let path = dir.join(format!("{name}.creds"));
        let name = name.to_owned();
        async move {
            let creds = pki
                .user_creds(
                    &store,
                    &tenant,
                    &name,
                    serviceradar_identity::ServiceUserLifetime::default().expires_at(),
                )
                .await?;
            write_secret_file(&path, creds.as_str().as_bytes())?;
            anyhow::Ok(path)
        }
    };
    let hub_url = format!("nats://127.0.0.1:{}", ports.hub_client);
    let subscriber = async_nats::ConnectOptions::with_credentials_file(creds("sub").await?)
        .await?
        .connect(&hub_url)
        .await
        .context("subscriber connects to the hub")?;
    let direct = async_nats::ConnectOptions::with_credentials_file(creds("direct").await?)
        .await?
        .connect(&hub_url)
        .await
        .context("direct publisher connects to the hub")?;
    let collector = collector_client(dir, &store, &pki, &tenant, &bundle_root, leaf_client)
        .await
        .with_context(|| {
            format!(
                "collector connects to the leaf; leaf log:\n{}",
                leaf_server.log()
            )
        })?;
    let mut sub = subscriber.subscribe(SUBJECT).await?;
    subscriber.flush().await?;

    // Interest crosses the leafnode link asynchronously: wait for it.
    let deadline = Instant::now() + WAIT;
    loop {
        collector.publish(SUBJECT, "probe".into()).await?;
        collector.flush().await?;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            break;
        }
        if Instant::now() > deadline {
            bail!("no message crossed the leaf into the hub");
        }
    }
    // Drain late probes.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {}

    let paths = [
        ("collector -> leaf -> hub", &collector),
        ("collector -> hub", &direct),
    ];
    let mut samples = [Vec::new(), Vec::new()];
    let total = args.warmup + args.messages;
    for i in 0..total {
        for (n, (_, client)) in paths.iter().enumerate() {
            let payload = event_payload(i, n, args.payload);
            let started = Instant::now();
            client.publish(SUBJECT, payload.clone().into()).await?;
            client.flush().await?;
            let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .context("a message did not arrive within 5 s")?
                .context("subscription closed")?;
            let elapsed = started.elapsed();
            if msg.payload.as_ref() != payload.as_bytes() {
                bail!("received a different message than sent (out of order?)");
            }
            if i >= args.warmup {
                samples[n].push(elapsed.as_secs_f64() * 1e6);
            }
        }
        if (i + 1) % 1000 == 0 {
            say(format!("{}/{total} rounds", i + 1));
        }
    }

    println!("\n| path | messages | median | p99 |\n|---|---:|---:|---:|");
    let mut medians = [0.0; 2];
    let mut p99s = [0.0; 2];
    for (n, (name, _)) in paths.iter().enumerate() {
        samples[n].sort_by(f64::total_cmp);
        medians[n] = percentile(&samples[n], 0.50);
        p99s[n] = percentile(&samples[n], 0.99);
        println!(
            "| {name} | {} | {:.0} µs | {:.0} µs |",
            samples[n].len(),
            medians[n],
            p99s[n]
        );
    }
    println!(
        "\nadded by the leaf hop: median {:+.0} µs ({:.2}x), p99 {:+.0} µs ({:.2}x); {}-byte payloads",
        medians[0] - medians[1],
        medians[0] / medians[1],
        p99s[0] - p99s[1],
        p99s[0] / p99s[1],
        args.payload
    );
    common::Figure::plain("message via the site leaf: p99", p99s[0], "µs")
        .against("straight to the hub p99", p99s[1])
        .emit();
    drop(leaf_server);
    drop(hub);
    Ok(())
}

/// A JSON event of exactly `size` bytes (padded).
fn event_payload(i: usize, path: usize, size: usize) -> String {
    let head = format!("{{\"seq\":{i},\"path\":{path},\"severity\":\"info\",\"pad\":\"");
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// Waits until the hub's `/leafz` lists a leaf.
fn wait_for_leaf(monitor_port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if !serviceradar_testkit::leafz(monitor_port).is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the leaf never joined the hub");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_are_json() {
        for size in [64, 200, 1024] {
            let p = event_payload(12345, 1, size);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            assert_eq!(v["seq"], 12345);
        }
    }
}
