//! `serviceradar-cli`: the edge box's side of joining a site, and the
//! operator's command line for the control plane's API.
//!
//! At the edge, one token is enough: `site init --token T` generates every
//! private key and the NATS user key on this machine, sends only certificate
//! signing requests and the public key, and writes what comes back under the
//! state dir; `nats setup` and `agent setup` start the leaf and the agent;
//! `status` shows it all on one screen. Operators use `login`, `sites`,
//! `tokens`, `bundle` and `devices` against the JSON API with an API token.

mod api;
mod devices;
mod edge;
mod exit;
mod files;
mod gateway;
mod leaf;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::exit::Failure;

/// Command line of `serviceradar-cli`.
#[derive(Debug, Parser)]
#[command(
    name = "serviceradar-cli",
    version,
    about = "ServiceRadar Edge: join an edge box to a site, and drive the control plane",
    after_help = "At the edge (as root, or with --state-dir):\n  \
serviceradar-cli site init --token 'sr1.…'\n  \
serviceradar-cli nats setup\n  \
serviceradar-cli agent setup\n  \
serviceradar-cli status\n\n\
As an operator:\n  \
serviceradar-cli login --url https://sr.example.com --token srt_…\n  \
serviceradar-cli sites create --name 'Edge Lab' --slug edge-lab\n  \
serviceradar-cli tokens create --site <site-id>\n  \
serviceradar-cli devices register --site <site-id> --name sensor-1\n\n\
Exit status: 0 done; 1 failed (the message says why); 2 bad command line or input;\n\
3 refused by the control plane (token expired, revoked, used, wrong scope;\n\
permission); 4 could not reach it, or the leaf/agent did not come up in time;\n\
5 this box already has an identity (use --force to replace it)."
)]
struct Cli {
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// This box's site identity.
    #[command(subcommand)]
    Site(SiteCommand),
    /// The site's NATS leaf server on this box.
    #[command(subcommand)]
    Nats(NatsCommand),
    /// The site's edge agent on this box.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Collectors at this site, on this box.
    #[command(subcommand)]
    Collector(CollectorCommand),
    /// Identity, certificates, leaf and agent of this box, on one screen.
    Status(StateDir),
    /// Save the control plane URL and an API token for the operator commands.
    Login(api::LoginArgs),
    /// Edge sites (operator).
    #[command(subcommand)]
    Sites(api::SitesCommand),
    /// Enrollment tokens (operator).
    #[command(subcommand)]
    Tokens(api::TokensCommand),
    /// Site bundles (operator).
    #[command(subcommand)]
    Bundle(api::BundleCommand),
    /// Devices registered at a site, and their certificates (operator).
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Join a site: redeem an enrollment token with keys generated here.
    #[command(
        after_help = "Example:\n  sudo serviceradar-cli site init --token 'sr1.eyJ…'\n\n\
The token carries the control plane's URL and a pin of its root CA; nothing\n\
else is needed. Private keys and the NATS seed are generated on this box and\n\
never sent. Running it again on the same box (a reinstall) resumes the same\n\
identity; another box presenting a used token is refused."
    )]
    Init(edge::InitArgs),
}

#[derive(Debug, Subcommand)]
enum CollectorCommand {
    /// Enroll a collector with a `collector:<type>` token and write its config.
    #[command(
        after_help = "Example:\n  serviceradar-cli collector add syslog --token 'sr1.…'\n\n\
Writes <state-dir>/collectors/<type>/: collector.json (the site leaf's URL, the\n\
subject prefix, the file paths), certs/ (key generated here, 0600) and\n\
creds/collector.creds (0600). Point the collector's configuration at them."
    )]
    Add(edge::CollectorArgs),
}

#[derive(Debug, Subcommand)]
enum NatsCommand {
    /// Write and check the leaf's config, start it, wait for the hub link.
    #[command(after_help = "Examples:\n  sudo serviceradar-cli nats setup\n  \
serviceradar-cli nats setup --state-dir ./edge --foreground\n\n\
With systemd it installs and starts serviceradar-nats-leaf.service; without it\n\
(or with --foreground) it runs nats-server itself until stopped. If the leaf\n\
does not link to the hub in time, it says which layer failed (DNS, TCP, TLS,\n\
authorization) and how to fix it.")]
    Setup(leaf::SetupArgs),
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Write the agent's config, start it, wait for its first contact.
    #[command(after_help = "Examples:\n  sudo serviceradar-cli agent setup\n  \
serviceradar-cli agent setup --state-dir ./edge --foreground")]
    Setup(leaf::AgentSetupArgs),
    /// Send a command to a site's agent over its control stream (operator).
    Command(api::AgentCommandArgs),
    /// The checks a site's agent runs (operator).
    #[command(subcommand)]
    Checks(api::ChecksCommand),
    /// The results a site's agent uploaded, in a time range.
    Results(api::AgentResultsArgs),
}

/// Where this box's identity and configs live.
#[derive(Debug, Clone, Args)]
pub struct StateDir {
    /// State directory.
    #[arg(
        long,
        env = "SERVICERADAR_STATE_DIR",
        default_value = "/etc/serviceradar"
    )]
    pub state_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Site(SiteCommand::Init(args)) => edge::init(&args, json).await,
            Command::Nats(NatsCommand::Setup(args)) => leaf::setup(&args, json).await,
            Command::Agent(AgentCommand::Setup(args)) => leaf::agent_setup(&args, json).await,
            Command::Agent(AgentCommand::Command(args)) => api::agent_command(args, json).await,
            Command::Agent(AgentCommand::Checks(command)) => api::agent_checks(command, json).await,
            Command::Agent(AgentCommand::Results(args)) => api::agent_results(args, json).await,
            Command::Collector(CollectorCommand::Add(args)) => {
                edge::collector_add(&args, json).await
            }
            Command::Status(dir) => status::show(&dir, json).await,
            Command::Login(args) => api::login(&args, json).await,
            Command::Sites(command) => api::sites(command, json).await,
            Command::Tokens(command) => api::tokens(command, json).await,
            Command::Bundle(command) => api::bundle(command, json).await,
            Command::Devices(command) => devices::devices(command, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
