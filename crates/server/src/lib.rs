//! `serviceradar-core`: the ServiceRadar Edge control plane's composition root.
//!
//! The binary (`main.rs`) is thin; the composition lives here so tests and
//! benchmarks can start a real server in-process on port 0
//! ([`app::Application`]). Nothing here holds a rule of the product: the
//! services are their own crates (see ARCHITECTURE.md), and so are the
//! process plumbing (`serviceradar-runtime`), the HTTP layers and probes
//! (`serviceradar-http`) and the `quickstart` tool with the start-up report (`serviceradar-quickstart`).
//!
//! * [`config`] — typed configuration from flags and `SERVICERADAR_*` env;
//!   the only place that reads them, and builds every service's settings.
//! * [`app`] — wiring the services together, the HTTP router, running until
//!   shutdown.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;

/// Tracing and Prometheus set-up (re-exported for the tests and benchmarks
/// that start the server in-process).
pub use serviceradar_runtime::telemetry;
