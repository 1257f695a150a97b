//! `serviceradar-core`: the ServiceRadar Edge control plane's composition root.
//!
//! The binary (`main.rs`) is thin; the composition lives here so tests and
//! benchmarks can start a real server in-process on port 0
//! ([`app::Application`]). Nothing here holds a rule of the product: the
//! services are their own crates (see ARCHITECTURE.md).
//!
//! * [`config`] — typed configuration from flags and `SERVICERADAR_*` env;
//!   the only place that reads them, and builds every service's settings.
//! * [`app`] — wiring the services together, the HTTP router, running until
//!   shutdown.
//! * [`telemetry`] — tracing and Prometheus metrics.
//! * [`quickstart`] — the demo site on this machine, end to end, through the
//!   running server's API.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod fleet_metrics;
pub mod quickstart;
pub mod telemetry;
