//! `serviceradar-core`: the ServiceRadar Edge control plane.
//!
//! The binary (`main.rs`) is thin; everything lives here so tests can start a
//! real server in-process on port 0 ([`app::Application`]).
//!
//! * [`config`] — typed configuration from flags and `SERVICERADAR_*` env.
//! * [`app`] — building the HTTP application and running it until shutdown.
//! * [`api`] — the JSON API under `/api/v1` and its OpenAPI document.
//! * [`auth`] — passwords, API tokens, sessions; turning a request into an
//!   [`Actor`](serviceradar_domain::Actor) the policy can judge.
//! * [`bootstrap`] — the first tenant and admin on a fresh database.
//! * [`jobs`] — the worker loop that runs durable jobs.
//! * [`pki`] — the platform root CA, tenant CAs and NATS identities, sealed at rest.
//! * [`provisioning`] — the `provision_leaf` job and the site bundle it enables.
//! * [`hub`] — the hub's `nats-hub.conf` and server certificate (`admin hub-config`).
//! * [`gateway`] — the agent gateway (gRPC over mTLS) edge agents dial.
//! * [`health`] — site/leaf health from agent contact, the offline sweeper,
//!   the disconnect alert rule and live status events.
//! * [`alerts`] — signed webhook notifications of alerts (durable jobs).
//! * [`telemetry`] — tracing and Prometheus metrics.

#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod gateway;
pub mod health;
pub mod hub;
pub mod hub_client;
pub mod ingest;
pub mod jobs;
pub mod leaf_auth;
pub mod pki;
pub mod provisioning;
pub mod telemetry;
