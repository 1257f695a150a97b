//! Process plumbing every long-running part of the platform shares.
//!
//! It exists so that the binaries stay composition roots and the services
//! run their own background loops without each writing its own: how logs are
//! set up ([`telemetry`]), the one Prometheus recorder, a loop that runs a
//! tick every interval until the process stops, and the orderly stop that
//! waits for named tasks and aborts the ones that overstay ([`tasks`]),
//! and the stop signal ([`shutdown`]).
//! It depends on no crate of ours.

#![forbid(unsafe_code)]

pub mod shutdown;
pub mod tasks;
pub mod telemetry;
