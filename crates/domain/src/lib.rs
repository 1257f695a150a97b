//! The pure core of ServiceRadar Edge: identifiers, validated values, roles and
//! the authorization policy, and the state machines of the resources the control
//! plane manages (edge sites, NATS leaf servers, collector packages, alerts).
//!
//! Nothing in this crate does I/O. Every other crate depends on it, and it
//! depends on nothing of ours, so the rules here can be tested exhaustively and
//! reused by the server, the CLI and the agent alike.
//!
//! * [`ids`] — typed UUID identifiers, so a site id can never be passed as a tenant id.
//! * [`validate`] — "parse, don't validate": slugs, names, URLs, e-mails. Values
//!   that will later be rendered into NATS config or shell scripts are restricted
//!   here, at the boundary.
//! * [`policy`] — who may do what: one function decides, for every role, token
//!   scope and action.
//! * [`scope`] — [`scope::TenantScope`], the value every tenant-scoped query needs.
//! * [`state`] — the state machines; an illegal transition is an error.
//! * [`net`] — which addresses the platform may connect to for a tenant (SSRF rule).
//! * [`secret`] — [`secret::Secret`], text that never prints.
//! * [`agent`] — [`agent::AgentIdentity`], an edge agent as verified from its certificate.
//! * [`agent_control`] — commands for an agent and the checks configured for it.
//! * [`device`] — a device's name and NATS limits, as registered at a site.
//! * [`leaf_cluster`] — a site's leaf as one server or a 3-node cluster.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod agent_control;
pub mod agent_poll;
pub mod device;
pub mod duration;
pub mod enrollment;
pub mod ids;
pub mod leaf_cluster;
pub mod net;
pub mod policy;
pub mod resources;
pub mod scope;
pub mod secret;
pub mod state;
pub mod telemetry;
pub mod validate;

pub use agent::AgentIdentity;
pub use ids::*;
pub use policy::{Action, Actor, Denied, Role, Scope, ScopeSet};
pub use scope::TenantScope;
pub use secret::Secret;
