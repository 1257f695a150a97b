//! `serviceradar-agent`: the edge agent.
//!
//! Dials out to the agent gateway (gRPC over mTLS, no listening port), runs
//! checkers on schedule and pushes their status; or, with `listen`
//! (gateway-initiated mode), listens for the platform gateway's polls. `--once` runs the local
//! checks one time without contacting the gateway, prints them as JSON lines
//! and exits (1 if a check did not pass). Exit status 2 is a configuration or
//! runtime failure, 3 a final refusal by the platform (site deleted, agent
//! revoked; see `runner::Retired`). Logs carry colour codes only when
//! stderr is a terminal.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use serviceradar_agent::config::{AgentCommand, Cli, DeviceAuthCommand, Settings};
use serviceradar_agent::runner;

fn main() -> ExitCode {
    let cli = Cli::parse();
    serviceradar_runtime::telemetry::init_tracing_with(
        serviceradar_runtime::telemetry::LogFilter::parse(&cli.log).unwrap_or_else(|_| {
            serviceradar_runtime::telemetry::LogFilter::level(tracing::Level::INFO)
        }),
        false,
        serviceradar_agent::logtail::LogTail::global().writer(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(AgentCommand::DeviceAuth(DeviceAuthCommand::Init { nats_dir })) = &cli.command {
        return match serviceradar_agent::device_auth::keys::init(nats_dir) {
            Ok(keys) => {
                println!(
                    "device authorization keys ready in {} (callout issuer {})",
                    nats_dir.display(),
                    keys.public().issuer
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("serviceradar-agent: device-auth init: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match Settings::load(&cli) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("serviceradar-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    // One thread: the agent is I/O bound and small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serviceradar-agent: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        if cli.once {
            runner::run_once(&settings).await
        } else if cli.renew_now {
            runner::renew_now(&settings).await.map(|()| true)
        } else {
            let run = async {
                match &settings.listen {
                    Some(target) => serviceradar_agent::listen::run(&settings, target).await,
                    None => runner::run(&settings).await,
                }
            };
            let stop = serviceradar_runtime::shutdown::signal()
                .map_err(|e| anyhow::Error::new(e).context("installing the signal handlers"))?;
            tokio::select! {
                r = run => r.map(|()| true),
                () = stop => {
                    tracing::info!("stopping");
                    Ok(true)
                }
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.downcast_ref::<runner::Retired>().is_some() => {
            eprintln!("serviceradar-agent: {e:#}; stopping (exit status 3: not restarted)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("serviceradar-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}
