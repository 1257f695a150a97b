//! `serviceradar-core`: the ServiceRadar Edge control plane binary.
//! Thin on purpose: parse flags, set up tracing, hand over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use serviceradar_domain::policy::Scope;
use serviceradar_quickstart::report::redact_url;
use serviceradar_server::app::Application;
use serviceradar_server::config::{DatabaseConfig, PkiConfig, ServeConfig};
use serviceradar_server::telemetry;
use serviceradar_store::Store;

/// mimalloc instead of the system allocator: a list API request allocates a
/// few hundred small objects (rows, strings, JSON), and glibc's malloc/free
/// cost 12% of the server's CPU per request; with mimalloc the server needs
/// about a fifth less CPU per list request (BENCHMARKS.md, issue 15).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ServiceRadar Edge control plane: HTTP API and web UI, job workers, the
/// agent gateway, ingestion and the embedded hub. Every flag can also be set
/// with the SERVICERADAR_* variable shown in its help.
#[derive(Parser)]
#[command(name = "serviceradar-core", version, about, long_about = None)]
struct Cli {
    /// On failure, print the error's full detail (with a backtrace when
    /// RUST_BACKTRACE is set) instead of one line.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane. On an empty database this first creates the
    /// bootstrap tenant and owner and prints the owner's password once.
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit (serve also does this on start).
    Migrate(DatabaseConfig),
    /// Operator commands on an existing installation (the data dir `serve`
    /// uses): tenants, tokens, the hub config.
    Admin(Box<AdminArgs>),
    /// A demo site on this machine, end to end: creates the site `demo`
    /// through the running server's API, installs its bundle with setup.sh
    /// under the data dir (no root), starts its leaf and agent in the
    /// background and waits until the site is connected.
    ///
    /// Run it while `serviceradar-core serve` runs (same data dir).
    ///
    /// Examples:
    ///   serviceradar-core quickstart
    ///   serviceradar-core quickstart --api http://127.0.0.1:9090 --leaf-port 4223
    ///   serviceradar-core quickstart --stop
    #[command(verbatim_doc_comment)]
    Quickstart(Box<QuickstartArgs>),
}

#[derive(clap::Args)]
struct QuickstartArgs {
    #[command(flatten)]
    db: DatabaseConfig,
    /// The running server's base URL.
    #[arg(
        long,
        env = "SERVICERADAR_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// Tenant of the demo site (serve's bootstrap tenant).
    #[arg(long, env = "SERVICERADAR_BOOTSTRAP_TENANT", default_value = "default")]
    tenant: String,
    /// Owner the API token is minted for (serve's bootstrap owner).
    #[arg(
        long,
        env = "SERVICERADAR_ADMIN_EMAIL",
        default_value = "admin@example.com"
    )]
    email: String,
    /// Slug of the demo site (created once, reused afterwards).
    #[arg(long, default_value = "demo")]
    slug: String,
    /// Client port of the demo site's leaf (used when the site is created).
    #[arg(long, default_value_t = 4222)]
    leaf_port: u16,
    /// Where the demo site is installed, with its logs and pid files
    /// (default: quickstart/ in the data dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The leaf's nats-server binary: a path, or a name looked up on PATH.
    #[arg(long, env = "SERVICERADAR_NATS_SERVER", default_value = "nats-server")]
    nats_server: std::path::PathBuf,
    /// Seconds to wait for provisioning, and again for the connection.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Stop the demo site's leaf and agent, and exit.
    #[arg(long)]
    stop: bool,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Create the database, master key and root CA when they do not exist.
    /// Without it an admin command refuses to start from nothing, so a wrong
    /// data dir is an error instead of a new, empty installation.
    #[arg(long, global = true)]
    init: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant with its intermediate CA, NATS account and first owner
    /// (prints a generated password once).
    CreateTenant {
        #[command(flatten)]
        db: DatabaseConfig,
        /// Tenant slug: [a-z0-9-], 1-63 characters.
        #[arg(long)]
        slug: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
        /// E-mail of the owner to create.
        #[arg(long)]
        owner_email: String,
        /// Owner password (12+ characters); generated if absent.
        #[arg(long, env = "SERVICERADAR_OWNER_PASSWORD", hide_env_values = true)]
        owner_password: Option<serviceradar_domain::Secret>,
        #[command(flatten)]
        pki: PkiConfig,
    },
    /// List tenants.
    ListTenants {
        #[command(flatten)]
        db: DatabaseConfig,
    },
    /// Set how many days of telemetry a tenant keeps (older events, metrics
    /// and logs are deleted by the retention sweep).
    ///
    /// Examples:
    ///   serviceradar-core admin set-retention --tenant acme --telemetry-days 90
    ///   serviceradar-core admin set-retention --tenant acme --server-default
    #[command(verbatim_doc_comment)]
    SetRetention {
        #[command(flatten)]
        db: DatabaseConfig,
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Days of telemetry to keep (1-36500).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500),
              required_unless_present = "server_default", conflicts_with = "server_default")]
        telemetry_days: Option<u32>,
        /// Use the server's --telemetry-retention-days instead.
        #[arg(long)]
        server_default: bool,
    },
    /// Mint an API token for an existing user (prints the secret once).
    CreateToken {
        #[command(flatten)]
        db: DatabaseConfig,
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// E-mail of the user the token acts for.
        #[arg(long)]
        email: String,
        /// Token label.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Scopes: read, write, admin (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scope: Vec<String>,
        /// Lifetime in days (1-365).
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Write the hub's nats-hub.conf, its server certificate and key (issued by
    /// the platform root) and the root CA into a directory, with the operator,
    /// system and every tenant's account JWT preloaded.
    HubConfig {
        #[command(flatten)]
        db: DatabaseConfig,
        #[command(flatten)]
        pki: PkiConfig,
        #[command(flatten)]
        hub: serviceradar_hub::cli::HubConfigArgs,
    },
}

/// Earlier versions wrote the services' NATS credentials, which never
/// expired, to `DATA_DIR/ingest-creds`; they are minted with an expiry and
/// held in memory now, so the old files are only a liability: removed.
fn remove_stale_service_creds(data_dir: &std::path::Path) {
    let stale = data_dir.join("ingest-creds");
    if stale.exists() {
        match std::fs::remove_dir_all(&stale) {
            Ok(()) => {
                tracing::info!(path = %stale.display(), "removed service credentials an earlier version wrote to disk")
            }
            Err(e) => {
                tracing::warn!(path = %stale.display(), error = %e, "could not remove service credentials an earlier version wrote to disk; delete them")
            }
        }
    }
}

async fn open(db: &DatabaseConfig) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&db.data_dir)
        .with_context(|| format!("creating data dir {}", db.data_dir.display()))?;
    let store = Store::connect(&db.url(), db.database_max_connections)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// Opens the database of an existing installation for an admin command:
/// refuses (unless `init`) when the SQLite file, the generated master key
/// (when `pki` uses one) or a set-up database is missing, instead of
/// creating a new installation wherever the command happens to run.
async fn open_existing(
    db: &DatabaseConfig,
    pki: Option<&PkiConfig>,
    init: bool,
) -> anyhow::Result<Store> {
    if init {
        return open(db).await;
    }
    let refuse = |what: String| {
        anyhow::anyhow!(
            "{what}; point --data-dir (or SERVICERADAR_DATA_DIR) at the data dir `serve` uses, or pass --init to create a new installation"
        )
    };
    if let Some(file) = db.sqlite_file()
        && !file.exists()
    {
        return Err(refuse(format!(
            "no database at {} (data dir {})",
            file.display(),
            db.data_dir.display()
        )));
    }
    if let Some(key) = pki.and_then(|p| p.dev_key_file(&db.data_dir))
        && !key.exists()
    {
        return Err(refuse(format!("no master key at {}", key.display())));
    }
    let store = Store::connect(&db.url(), db.database_max_connections)
        .await
        .context("connecting to the database")?;
    // `serve` creates the first tenant; a database without any was never set up.
    if !store.list_tenants().await.is_ok_and(|t| !t.is_empty()) {
        store.close().await;
        return Err(refuse(format!(
            "the database {} has no tenants (`serve` never set it up)",
            redact_url(&db.url())
        )));
    }
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// [`open_existing`] with the installation's platform PKI (its master key
/// loaded).
async fn open_with_pki(
    db: &DatabaseConfig,
    pki: &PkiConfig,
    init: bool,
) -> anyhow::Result<(Store, serviceradar_identity::Pki)> {
    let store = open_existing(db, Some(pki), init).await?;
    let keyring = pki.source(&db.data_dir).load()?;
    Ok((
        store,
        serviceradar_identity::Pki::new(keyring, &pki.trust_domain),
    ))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line (the cause chain) unless -v: no backtrace even with
            // RUST_BACKTRACE=1.
            if verbose {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => serve(*config).await,
        Command::Migrate(db) => {
            telemetry::init_tracing(false, std::io::stderr);
            open(&db).await?;
            println!("migrations applied to {}", redact_url(&db.url()));
            Ok(())
        }
        Command::Admin(args) => run_admin(args.command, args.init).await,
        Command::Quickstart(args) => quickstart(*args).await,
    }
}

async fn quickstart(args: QuickstartArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| args.db.data_dir.join("quickstart"));
    if args.stop {
        let stopped = serviceradar_quickstart::stop_processes(&dir);
        println!(
            "stopped {stopped} quickstart process(es) ({})",
            dir.display()
        );
        return Ok(());
    }
    let store = open_existing(&args.db, None, false).await?;
    let options = serviceradar_quickstart::QuickstartOptions {
        api: args.api,
        dir,
        tenant: args.tenant,
        email: args.email,
        slug: args.slug,
        leaf_port: args.leaf_port,
        nats_server: args.nats_server,
        timeout: std::time::Duration::from_secs(args.timeout_secs.max(1)),
    };
    let result = serviceradar_quickstart::run(&store, &options, &mut std::io::stdout()).await;
    store.close().await;
    result
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    telemetry::init_tracing(
        config.log_format == serviceradar_server::config::LogFormat::Json,
        std::io::stderr,
    );
    let shutdown =
        serviceradar_runtime::shutdown::signal().context("installing the signal handlers")?;
    std::fs::create_dir_all(&config.db.data_dir)
        .with_context(|| format!("creating data dir {}", config.db.data_dir.display()))?;
    remove_stale_service_creds(&config.db.data_dir);
    let settings = config.settings();
    let app = Application::build(settings).await?;
    let base = config.public_url.as_ref().map_or_else(
        || format!("http://{}:{}", config.listen.ip(), app.port()),
        ToString::to_string,
    );
    use serviceradar_quickstart::report::{FirstOwner, HubReport, ServeReport};
    let sites_dial = config.effective_hub_leafnode_url();
    let database = redact_url(&config.db.url());
    let hub = match app.embedded_hub() {
        Some(hub) => HubReport::Embedded {
            dir: &hub.dir,
            client: hub.client_url(),
            leafnode: &hub.options.leafnode_listen,
            monitoring: hub.options.monitoring_listen.as_deref(),
        },
        None => HubReport::External(config.hub_client_url()),
    };
    let metrics = app.metrics_port().map(|port| {
        let ip = config.metrics_listen.0.map(|a| a.ip().to_string());
        format!("http://{}:{port}/metrics", ip.unwrap_or_default())
    });
    let created = app.bootstrap.created.as_ref();
    let (tenant, email) = created.map_or_else(
        || (config.bootstrap_tenant.clone(), config.admin_email.clone()),
        |a| (a.tenant.to_string(), a.email.to_string()),
    );
    let report = ServeReport {
        base: &base,
        data_dir: &config.db.data_dir,
        data_dir_is_default: config.db.data_dir == serviceradar_server::config::default_data_dir(),
        database: &database,
        hub,
        sites_dial: &sites_dial,
        gateway: config
            .gateway
            .gateway_listen
            .0
            .map(|listen| (config.gateway.gateway_url.as_str(), listen)),
        metrics,
        first_owner: created.map(|a| FirstOwner {
            tenant: a.tenant.as_str(),
            email: a.email.as_str(),
            password: a.generated_password.as_ref().map(|p| p.expose()),
        }),
        tenant: &tenant,
        email: &email,
    };
    print!("{report}");
    app.run_until_stopped(shutdown).await
}

async fn run_admin(command: AdminCommand, init: bool) -> anyhow::Result<()> {
    telemetry::init_tracing(false, std::io::stderr);
    match command {
        AdminCommand::CreateTenant {
            db,
            slug,
            name,
            owner_email,
            owner_password,
            pki,
        } => {
            let (store, pki) = open_with_pki(&db, &pki, init).await?;
            let created = serviceradar_provisioning::tenants::create_tenant(
                &store,
                &pki,
                serviceradar_provisioning::tenants::NewTenant {
                    slug: &slug,
                    name: name.as_deref(),
                    owner_email: &owner_email,
                    owner_password: owner_password
                        .as_ref()
                        .map(serviceradar_domain::Secret::expose),
                },
            )
            .await
            .map_err(|e| match e {
                serviceradar_provisioning::tenants::TenantError::Invalid { field, message } => {
                    anyhow::anyhow!("--{} {message}", field.replace('_', "-"))
                }
                other => other.into(),
            })?;
            println!(
                "created tenant {slug} ({}) with owner {}",
                created.tenant.id, created.owner_email
            );
            if let Some(password) = created.generated_password {
                println!("owner password (shown once): {}", password.expose());
            }
        }
        AdminCommand::HubConfig { db, pki, hub } => {
            let (store, pki) = open_with_pki(&db, &pki, init).await?;
            print!("{}", hub.write(&store, &pki).await?);
        }
        AdminCommand::ListTenants { db } => {
            let store = open_existing(&db, None, init).await?;
            for tenant in store.list_tenants().await? {
                println!("{}\t{}\t{}", tenant.id, tenant.slug, tenant.name);
            }
        }
        AdminCommand::SetRetention {
            db,
            tenant,
            telemetry_days,
            server_default: _,
        } => {
            let store = open_existing(&db, None, init).await?;
            let found = store
                .tenant_by_slug(&tenant)
                .await
                .with_context(|| format!("no tenant {tenant:?}"))?;
            store
                .set_telemetry_retention(found.id, telemetry_days)
                .await?;
            match telemetry_days {
                Some(days) => println!("tenant {tenant} keeps {days} days of telemetry"),
                None => println!("tenant {tenant} keeps the server's default days of telemetry"),
            }
        }
        AdminCommand::CreateToken {
            db,
            tenant,
            email,
            name,
            scope,
            days,
        } => {
            let scopes = scope
                .iter()
                .map(|s| s.parse::<Scope>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = open_existing(&db, None, init).await?;
            let token = serviceradar_control::tokens::create_token_for(
                &store, &tenant, &email, &name, &scopes, days,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{token}");
        }
    }
    Ok(())
}
