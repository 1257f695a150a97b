//! `bench-ingest-tenants`: ingestion across many tenants (issue 15).
//!
//! Platform mode (`serve --ingest-mode platform`: one platform stream
//! sourcing every tenant's `INGEST` stream, one hub connection, one
//! consumer, one pipeline) at 1, 100 and 1,000 tenants, against the
//! per-tenant pipeline with one tenant (the single-tenant figure), in the
//! same run: hub connections held by `serviceradar-core` (the hub's
//! `/connz`, connections named `serviceradar-*`), database connections
//! (`pg_stat_activity`), the process's peak resident memory, and msgs/s.
//!
//! 1. A private, durable PostgreSQL cluster and a hub `nats-server`
//!    (operator mode, the config `admin hub-config` writes) on loopback.
//! 2. **Single tenant**: tenant `t0000`, the per-tenant pipeline; `--messages`
//!    200-byte events are published into its `INGEST` stream, then the
//!    pipeline drains them (timed from its first acknowledgement to its
//!    last, on its consumer's ack floor).
//! 3. **Each tier** (tenants created up to the tier's count): platform mode
//!    starts and sets every tenant up (streams, source consumer, the platform
//!    stream's sources), is stopped, `--messages` events are published spread
//!    over the tier's tenants (the hub sources them into the platform
//!    stream meanwhile; the bench waits until it holds them all), then
//!    platform mode starts again and drains them: timed from the platform
//!    consumer's first acknowledgement to its last. Connections and memory
//!    are sampled during the drain.
//!
//! 4. **Rounds**: steps 1-3 run `--rounds` times (3 by default), each in a
//!    fresh database and hub; each tier's verdict is the round with its
//!    median ratio, printed with every round's ratio (one run's ratio moves
//!    by 20 points between runs on a shared 2-core VM).
//!
//! The supervisor passes every `--tenant-refresh-ms` (by default `serve`'s
//! 30 s).
//!
//! Every drain starts on empty telemetry tables (emptied after the setup's
//! catch-up; `--keep-rows` does not), so each tier writes into the same
//! tables the baseline wrote into, and each drain's row count is checked
//! against what it published: exactly once, per phase.
//!
//! ```text
//! cargo run --release -p serviceradar-bench --bin bench-ingest-tenants
//! cargo run --release -p serviceradar-bench --bin bench-ingest-tenants -- --quick
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_identity::Pki;
use serviceradar_ingest::{self as ingest, IngestMode, IngestSettings};
use serviceradar_natsconf::platform::PLATFORM_STREAM;
use serviceradar_store::Store;
use serviceradar_testkit::PgCluster;

mod common;

use common::{
    HubPorts, connect_with_creds, ephemeral_pki, parse, publish_events, run_to_verdict, say,
    start_bench, start_hub, tenant_client, verdict,
};

/// Aggregate throughput target: at least this share of the single-tenant figure.
const TARGET_RATIO: f64 = 0.80;
/// Memory target: peak resident memory below 1 GiB.
const TARGET_RSS_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;

/// Ingestion across many tenants (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "bench-ingest-tenants", about, long_about = None)]
struct Args {
    /// Messages per phase (spread over the tier's tenants).
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Tenant counts of the tiers, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100, 1000])]
    tenants: Vec<usize>,
    /// Whole runs (the baseline, then every tier) in fresh databases and
    /// hubs; each tier's verdict is its median round's ratio, shown with
    /// every round's (one run's ratio can move by 20 points on a shared
    /// machine).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A smoke run: one round of 10,000 messages, tiers of 1 and 10 tenants.
    #[arg(long)]
    quick: bool,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    fail_on_miss: bool,
    /// Leave the earlier phases' rows in the telemetry tables before each
    /// drain (before session 23 every run did: the tiers then wrote into up
    /// to 900,000 rows and the single-tenant baseline into none).
    #[arg(long)]
    keep_rows: bool,
    /// How often, in milliseconds, the ingest supervisor looks at the
    /// tenants again (its set-up pass); by default as often as `serve` does
    /// (`TENANT_REFRESH`, 30 s), so the drains pay for the passes
    /// production pays for.
    #[arg(long, default_value_t = TENANT_REFRESH_MS)]
    tenant_refresh_ms: u64,
}

/// `serve`'s interval between set-up passes, in milliseconds.
const TENANT_REFRESH_MS: u64 = ingest::TENANT_REFRESH.as_millis() as u64;

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.messages = 10_000;
        args.tenants = vec![1, 10];
        args.rounds = 1;
    }
    if args.messages == 0 || args.tenants.contains(&0) || args.rounds == 0 {
        bail!("--messages, --rounds and every tier must be at least 1");
    }
    start_bench(Some("BENCH_INGEST_LOGS"));
    // The Prometheus recorder `serve` installs: ingestion pays for its
    // per-tenant metrics here as it does in production.
    serviceradar_server::telemetry::metrics_handle();
    let cluster = PgCluster::start(true).context("starting PostgreSQL")?;
    run_to_verdict(args.fail_on_miss, async {
        let mut rounds = Vec::with_capacity(args.rounds);
        for round in 1..=args.rounds {
            say(format!("round {round} of {}", args.rounds));
            rounds.push(run(&args, &cluster.create_database()).await?);
        }
        Ok(verdicts(&args, &rounds))
    })
}

/// What one round measured: the single-tenant baseline and each tier.
struct Round {
    baseline: Measured,
    tiers: Vec<Measured>,
}

impl Round {
    /// Tier `i`'s rate as a share of this round's baseline.
    fn ratio(&self, i: usize) -> f64 {
        self.tiers[i].rate / self.baseline.rate
    }
}

/// Each tier's figures from its median round (by ratio), the memory and
/// connections as the most of any round, and the verdicts; `true` when
/// every target passed.
fn verdicts(args: &Args, rounds: &[Round]) -> bool {
    let mut passed = true;
    for (i, tier) in args.tenants.iter().enumerate() {
        let mut by_ratio: Vec<&Round> = rounds.iter().collect();
        by_ratio.sort_by(|a, b| a.ratio(i).total_cmp(&b.ratio(i)));
        let median = by_ratio[by_ratio.len() / 2];
        let ratio = median.ratio(i);
        let all = by_ratio
            .iter()
            .map(|r| format!("{:.0}", r.ratio(i) * 100.0))
            .collect::<Vec<_>>()
            .join(" / ");
        let peak_rss = rounds
            .iter()
            .map(|r| r.tiers[i].peak_rss)
            .max()
            .unwrap_or(0);
        let hub = rounds
            .iter()
            .map(|r| r.tiers[i].hub_connections)
            .max()
            .unwrap_or(0);
        let db = rounds
            .iter()
            .map(|r| r.tiers[i].db_connections)
            .max()
            .unwrap_or(0);
        let fast = ratio >= TARGET_RATIO;
        let small = (peak_rss as f64) < TARGET_RSS_BYTES;
        passed &= fast && small;
        common::Figure::plain(
            format!("ingestion, platform mode, {tier} tenants"),
            median.tiers[i].rate,
            "msgs/s",
        )
        .against("per-tenant pipeline, 1 tenant", median.baseline.rate)
        .target(
            format!(">= {:.0}% of one tenant", TARGET_RATIO * 100.0),
            fast,
        )
        .emit();
        common::Figure::plain(
            format!("ingestion, platform mode, {tier} tenants: peak RSS"),
            peak_rss as f64 / 1024.0 / 1024.0,
            "MiB",
        )
        .target("< 1024 MiB", small)
        .emit();
        common::Figure::plain(
            format!("ingestion, platform mode, {tier} tenants: hub connections"),
            hub as f64,
            "connections",
        )
        .emit();
        common::Figure::plain(
            format!("ingestion, platform mode, {tier} tenants: database connections"),
            db as f64,
            "connections",
        )
        .emit();
        println!(
            "target: {tier} tenants >= {:.0}% of one tenant: {} ({:.0}%, the median of {} rounds: {all}%); \
             RSS < 1 GiB: {} ({:.0} MiB); hub connections {hub}, database connections {db}",
            TARGET_RATIO * 100.0,
            verdict(fast),
            ratio * 100.0,
            rounds.len(),
            verdict(small),
            peak_rss as f64 / 1024.0 / 1024.0,
        );
    }
    passed
}

/// What one phase measured.
struct Measured {
    rate: f64,
    hub_connections: usize,
    db_connections: i64,
    peak_rss: u64,
}

/// One round: a fresh hub and database `url`, the baseline, every tier.
async fn run(args: &Args, url: &str) -> anyhow::Result<Round> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let ports = HubPorts::free();
    let store = Store::connect(url, 16).await?;
    store.migrate().await?;
    let mut db = DbSampler::open(url).await?;
    let pki = ephemeral_pki()?;
    let mut tenants = vec![];
    add_tenants(&store, &pki, &mut tenants, 1).await?;
    let (_hub, _, _) = start_hub(&store, &pki, dir, &ports).await?;
    let mut settings = IngestSettings::new(format!("nats://127.0.0.1:{}", ports.hub_client));
    settings.batch_timeout = Duration::from_millis(100);
    settings.tenant_refresh = Duration::from_millis(args.tenant_refresh_ms);

    // The single-tenant figure: the per-tenant pipeline, one tenant.
    let first = tenants[0].clone();
    let client = tenant_client(dir, &store, &pki, &first, ports.hub_client).await?;
    let mut tenant_mode = settings.clone();
    tenant_mode.mode = IngestMode::Tenant;
    ingest::open_consumer(&client, first.slug.as_str(), &tenant_mode).await?;
    let last = publish(&client, first.slug.as_str(), args.messages).await?;
    drop(client);
    let baseline = {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = ingest::spawn(
            store.clone(),
            pki.clone(),
            tenant_mode,
            ingest::IngestStatus::new(),
            stop_rx,
        );
        let watcher = tenant_client(dir, &store, &pki, &first, ports.hub_client).await?;
        let js = async_nats::jetstream::new(watcher);
        let stream = js.get_stream(ingest::STREAM).await?;
        let measured = drain(
            &mut db,
            ports.hub_monitor,
            || consumer_ack_floor(&stream),
            0,
            last,
        )
        .await?;
        stop_ingest(&settings, stop_tx, task).await;
        measured
    };
    report("per-tenant pipeline, 1 tenant", &baseline);
    let mut rows = args.messages as i64;
    db.check_rows(rows).await?;

    let mut platform_js: Option<async_nats::jetstream::Context> = None;
    let mut settings = settings;
    settings.mode = IngestMode::Platform;
    let mut measured_tiers = Vec::with_capacity(args.tenants.len());
    // The platform stream sources every tenant's `INGEST` stream from its
    // start, so the first tier's set-up also brings the single-tenant
    // phase's messages in: it is caught up only once it holds (and has
    // written) those too. Waiting for less let a first tier of 1,000
    // tenants stop its set-up while those messages were still being
    // sourced, and its drain wrote them after the tables were emptied.
    let mut sourced: u64 = args.messages as u64;
    for &tier in &args.tenants {
        add_tenants(&store, &pki, &mut tenants, tier).await?;
        // Set every tenant up, and let the platform stream catch up with
        // what is already in the tenants' streams (the single-tenant phase's
        // messages: written again, nothing twice).
        let started = Instant::now();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = ingest::spawn(
            store.clone(),
            pki.clone(),
            settings.clone(),
            ingest::IngestStatus::new(),
            stop_rx,
        );
        if platform_js.is_none() {
            // The platform account exists once platform mode pushed it.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match platform_client(dir, &store, &pki, ports.hub_client).await {
                    Ok(client) => {
                        platform_js = Some(async_nats::jetstream::new(client));
                        break;
                    }
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        let platform_js = platform_js.clone().context("a platform client")?;
        let floor = wait_platform(&platform_js, tier, sourced, Duration::from_secs(900)).await?;
        say(format!(
            "{tier} tenants set up and caught up in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        stop_ingest(&settings, stop_tx, task).await;
        if !args.keep_rows {
            db.empty_telemetry().await?;
            rows = 0;
        }

        // Publish the tier's messages, spread over its tenants.
        let published = Instant::now();
        let per = args.messages.div_ceil(tier);
        let mut total = 0;
        for chunk in tenants[..tier].chunks(50) {
            let mut publishers = tokio::task::JoinSet::new();
            for tenant in chunk {
                let n = per.min(args.messages - total);
                total += n;
                if n == 0 {
                    continue;
                }
                let client = tenant_client(dir, &store, &pki, tenant, ports.hub_client).await?;
                let slug = tenant.slug.to_string();
                publishers.spawn(async move { publish(&client, &slug, n).await });
            }
            while let Some(done) = publishers.join_next().await {
                done??;
            }
        }
        let expected = floor + total as u64;
        let last = wait_sourced(&platform_js, expected, Duration::from_secs(900)).await?;
        sourced = last;
        say(format!(
            "{total} messages published over {tier} tenants and sourced into the platform stream in {:.1}s",
            published.elapsed().as_secs_f64()
        ));

        // The drain.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = ingest::spawn(
            store.clone(),
            pki.clone(),
            settings.clone(),
            ingest::IngestStatus::new(),
            stop_rx,
        );
        let stream = platform_js.get_stream(PLATFORM_STREAM).await?;
        let measured = drain(
            &mut db,
            ports.hub_monitor,
            || consumer_ack_floor(&stream),
            floor,
            last,
        )
        .await?;
        stop_ingest(&settings, stop_tx, task).await;
        rows += total as i64;
        db.check_rows(rows).await?;
        report(&format!("platform mode, {tier} tenants"), &measured);
        say(format!(
            "{tier} tenants: {:.0}% of one tenant in this round",
            measured.rate / baseline.rate * 100.0
        ));
        measured_tiers.push(measured);
    }
    say("every phase's rows written exactly once");
    Ok(Round {
        baseline,
        tiers: measured_tiers,
    })
}

/// Stops an ingest service the way `serve` does at shutdown: the signal,
/// the wait, then the dead-letter registry lets go of the tenant connections
/// it still holds. Without that last step, every stopped phase left its
/// pool (platform mode) or its tenant's connection (tenant mode) open and
/// counted in the next phase's hub connections, retrying a finished round's
/// hub for the rest of the run.
async fn stop_ingest(
    settings: &IngestSettings,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
) {
    let _ = stop.send(true);
    let _ = task.await;
    settings.dead_letters.release();
}

/// Creates tenants `t0000`... until there are `n`.
async fn add_tenants(
    store: &Store,
    pki: &Pki,
    tenants: &mut Vec<Tenant>,
    n: usize,
) -> anyhow::Result<()> {
    while tenants.len() < n {
        let slug = format!("t{:04}", tenants.len());
        let tenant = store
            .create_tenant(
                &parse(Slug::parse(&slug))?,
                &parse(DisplayName::parse(&slug))?,
            )
            .await?;
        pki.ensure_tenant_identity(store, &tenant).await?;
        tenants.push(tenant);
    }
    Ok(())
}

/// Waits until the platform stream sources `tenants` tenants and its
/// consumer has acknowledged everything it holds (at least `at_least`
/// messages); returns its last sequence.
async fn wait_platform(
    js: &async_nats::jetstream::Context,
    tenants: usize,
    at_least: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut stream) = js.get_stream(PLATFORM_STREAM).await
            && let Ok(info) = stream.info().await
        {
            let sources = info.sources.len();
            let last = info.state.last_sequence;
            let lagging: u64 = info.sources.iter().map(|s| s.lag).sum();
            let floor = stream
                .consumer_info(ingest::CONSUMER)
                .await
                .map(|i| i.ack_floor.stream_sequence)
                .unwrap_or(0);
            if sources == tenants && lagging == 0 && last >= at_least && floor == last {
                return Ok(last);
            }
        }
        if Instant::now() > deadline {
            bail!("the platform stream never caught up with {tenants} tenants");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the platform stream holds `expected` messages; returns its
/// last sequence.
async fn wait_sourced(
    js: &async_nats::jetstream::Context,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    let mut stream = js.get_stream(PLATFORM_STREAM).await?;
    loop {
        let info = stream.info().await?;
        if info.state.last_sequence >= expected {
            return Ok(info.state.last_sequence);
        }
        if Instant::now() > deadline {
            bail!(
                "the platform stream holds {} of {expected}",
                info.state.last_sequence
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream sequence the ingest consumer on `stream` acknowledged
/// through (0 while it cannot be read).
async fn consumer_ack_floor(stream: &async_nats::jetstream::stream::Stream) -> anyhow::Result<u64> {
    Ok(stream
        .consumer_info(ingest::CONSUMER)
        .await
        .map(|i| i.ack_floor.stream_sequence)
        .unwrap_or(0))
}

/// Times a drain: from the first acknowledgement past `floor` to the ack
/// floor reaching `last` (polled every 5 ms from nats-server, which costs
/// the database nothing), sampling connections and memory meanwhile.
async fn drain<F, Fut>(
    db: &mut DbSampler,
    hub_monitor: u16,
    ack_floor: F,
    floor: u64,
    last: u64,
) -> anyhow::Result<Measured>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut first: Option<(Instant, u64)> = None;
    let mut hub_connections = 0;
    let mut db_connections = 0;
    let mut peak_rss = 0;
    let mut sampled = Instant::now() - Duration::from_secs(1);
    loop {
        let now_floor = ack_floor().await?;
        if first.is_none() && now_floor > floor {
            first = Some((Instant::now(), now_floor));
        }
        if sampled.elapsed() > Duration::from_millis(500) {
            sampled = Instant::now();
            hub_connections = hub_connections.max(core_connections(hub_monitor).await?);
            db_connections = db_connections.max(db.other_connections().await?);
            peak_rss = peak_rss.max(rss_bytes());
        }
        if now_floor >= last {
            break;
        }
        if Instant::now() > deadline {
            bail!("the pipeline acknowledged up to {now_floor} of {last}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    peak_rss = peak_rss.max(rss_bytes());
    let (started, at) = first.context("nothing was acknowledged")?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    Ok(Measured {
        rate: (last - at) as f64 / secs,
        hub_connections,
        db_connections,
        peak_rss,
    })
}

/// The hub's client connections named `serviceradar-*` (this process's).
async fn core_connections(monitor: u16) -> anyhow::Result<usize> {
    let connz: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{monitor}/connz?limit=100000"))
            .await?
            .json()
            .await?;
    Ok(connz["connections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("serviceradar-"))
                })
                .count()
        })
        .unwrap_or(0))
}

/// One connection of the benchmark's own to the database, held for the
/// run: it counts the database's other connections during the drains (a
/// `psql` spawned per sample cost ~3.5% of the machine inside the timed
/// drain, from a blocking call in the runtime) and the rows at the end.
struct DbSampler(sqlx::PgConnection);

impl DbSampler {
    async fn open(url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        Ok(Self(sqlx::PgConnection::connect(url).await?))
    }

    /// Connections to this database, other than this one.
    async fn other_connections(&mut self) -> anyhow::Result<i64> {
        Ok(self
            .number("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()")
            .await?
            - 1)
    }

    /// Fails unless the telemetry tables hold exactly `expected` rows (what
    /// was published since they were last emptied: each message once).
    async fn check_rows(&mut self, expected: i64) -> anyhow::Result<()> {
        let total = self
            .number(
                "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM metrics) \
                 + (SELECT COUNT(*) FROM logs)",
            )
            .await?;
        if total != expected {
            bail!("{total} rows in the database, {expected} published");
        }
        Ok(())
    }

    /// Empties the telemetry tables (between phases, so that every drain
    /// writes into the same empty tables as the baseline).
    async fn empty_telemetry(&mut self) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE events, metrics, logs")
            .execute(&mut self.0)
            .await?;
        Ok(())
    }

    /// The number `sql` answers.
    async fn number(&mut self, sql: &'static str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&mut self.0).await?)
    }
}

/// This process's resident memory (bytes), from `/proc/self/status`.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn report(what: &str, m: &Measured) {
    say(format!(
        "{what}: {:.0} msgs/s; hub connections {}; database connections {}; peak RSS {:.0} MiB",
        m.rate,
        m.hub_connections,
        m.db_connections,
        m.peak_rss as f64 / 1024.0 / 1024.0
    ));
}

/// Publishes `n` events of tenant `slug` (JetStream-acknowledged); returns
/// the stream sequence of the last one.
async fn publish(client: &async_nats::Client, slug: &str, n: usize) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Platform mode's setup creates the stream: wait for it.
    while js.get_stream(ingest::STREAM).await.is_err() {
        if Instant::now() > deadline {
            bail!("{slug}'s INGEST stream never appeared");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_events(&js, &format!("events.{slug}.bench"), n).await
}

/// A client of the platform ingest account, to watch its stream.
async fn platform_client(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    port: u16,
) -> anyhow::Result<async_nats::Client> {
    let creds = pki
        .platform_ingest_user_creds(
            store,
            "bench-watcher",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await?;
    connect_with_creds(&dir.join("bench-platform.creds"), creds.as_str(), port).await
}
