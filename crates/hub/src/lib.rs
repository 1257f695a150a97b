//! The hub side of the platform: everything `serviceradar-core` does with the
//! hub `nats-server`.
//!
//! * `cli` (feature `cli`) — `admin hub-config`'s flags and what it does.
//! * [`client`] — connecting to the hub with minted creds, pushing account JWTs.
//! * [`config`] — the hub's `nats-hub.conf` and server certificate
//!   (`serviceradar-core admin hub-config`).
//! * [`embedded`] — the hub `nats-server` that `serve` runs and supervises
//!   itself when no external hub is configured.
//! * [`leaf_auth`] — the leaf authorization callout: a leaf joins its tenant's
//!   account only when its certificate names the same tenant and site as its creds.
//! * [`leaf_events`] — which sites' leaves the hub holds, from its connect and
//!   disconnect advisories.
//!
//! Failures are [`HubError`]s; a leaf the callout refuses is a
//! [`leaf_auth::Refusal`].

#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod config;
pub mod embedded;
mod error;
pub mod leaf_auth;
pub mod leaf_events;
pub mod leaf_view;

pub use error::HubError;
