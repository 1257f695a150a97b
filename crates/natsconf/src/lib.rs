//! NATS configuration and credentials for ServiceRadar Edge.
//!
//! The control plane provisions a NATS *leaf* server at every customer edge site;
//! the leaf dials out to the SaaS *hub* over the leafnode protocol (mutual TLS plus
//! a NATS user JWT). This crate produces everything that takes, with no I/O of its
//! own:
//!
//! * [`jwt`]: operator, account (one per tenant) and user JWTs signed with nkeys,
//!   account revocations, and `.creds` files;
//! * [`leaf`]: `nats-leaf.conf` for one site, and the JetStream stream the leaf
//!   keeps for store-and-forward;
//! * [`hub`]: `nats-hub.conf` in operator mode with a full account resolver;
//! * [`platform`]: the exports, imports, consumer and stream source through
//!   which one platform account's stream sources every tenant's telemetry;
//! * [`checksum`]: `sha256:<hex>` of a rendered config, for drift detection.
//!
//! Every value rendered into a config is validated and quoted (see [`syntax`]): a
//! site slug or hostname cannot inject config. Every rendered config is checked by
//! a real `nats-server` in this crate's tests, and the end-to-end test runs a hub
//! and a leaf with generated certificates and credentials.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod hub;
pub mod jwt;
pub mod leaf;
pub mod platform;
pub mod syntax;
pub mod tls;

pub use checksum::{checksum_matches, config_checksum};
pub use hub::{HubClusterInput, HubConfigInput, render_hub_config};
pub use leaf::{
    BufferStreamInput, LeafConfigInput, buffer_stream_config, buffer_stream_source,
    render_leaf_config,
};
pub use syntax::{ConfigError, JetStreamDomain};
pub use tls::TlsFiles;
