//! Site and collector bundles of ServiceRadar Edge, as deterministic tar.gz bytes.
//!
//! An admin downloads a **site bundle** and runs its `setup.sh` on the edge box to
//! install the site's NATS leaf server (config, certificates, credentials,
//! systemd unit; docker compose and foreground variants). Collectors get a
//! **collector bundle** that points them at their edge site's leaf, or at the
//! SaaS NATS when they have no site.
//!
//! This crate is pure: it takes what the control plane provisioned (rendered
//! `nats-leaf.conf`, PEMs, `.creds`) and produces bytes. No network, no database,
//! no clock; the same input always gives byte-identical output.
//!
//! Everything here ends up executed as root on a customer machine, so every
//! input is validated again ([`validate`]), archive paths cannot escape the
//! bundle directory ([`archive`]), and generated scripts only contain
//! single-quoted values ([`shell::quote`]); the free-text site name never
//! appears anywhere else than README text and one quoted assignment.
//!
//! - [`site_bundle`] / [`SiteBundle`]: the edge site bundle.
//! - [`collector_bundle`] / [`CollectorBundle`]: a collector bundle.
//! - [`archive::ArchiveBuilder`]: the deterministic tar.gz writer under both.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent_config;
pub mod archive;
pub mod collector;
mod error;
mod secret;
pub mod shell;
pub mod site;
pub mod validate;

pub use agent_config::{AgentConfigInput, AgentRenewal, LeafRenewalFiles, agent_config_toml};
pub use collector::{CollectorBundle, CollectorType, EdgeSiteRef, NatsTarget, collector_bundle};
pub use error::BundleError;
pub use secret::SecretText;
pub use site::{
    AgentPki, ClusterNode, InstallPaths, SiteBundle, SiteCluster, SitePki, site_bundle,
};
