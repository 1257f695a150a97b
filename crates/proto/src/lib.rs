//! The agent gateway protocol: `proto/serviceradar/agent/v1/gateway.proto`
//! and the tonic/prost code generated from it at build time (with protox, so
//! no `protoc` is needed).
//!
//! `proto/monitoring.proto` is ServiceRadar's `monitoring.AgentGatewayService`
//! (for ServiceRadar's own agents), written from its published interface.
//!
//! The `.proto` file is the contract: other languages generate their clients
//! from it (the test suite calls `Hello` from Python `grpcio`).

#![forbid(unsafe_code)]

/// `serviceradar.agent.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("serviceradar.agent.v1");
}

/// `monitoring`: ServiceRadar's `AgentGatewayService` (`proto/monitoring.proto`),
/// which the gateway serves beside its own service so that ServiceRadar's
/// agents can connect.
pub mod monitoring {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("monitoring");
}

/// The `.proto` source, for tools that want to ship or inspect it.
pub const GATEWAY_PROTO: &str = include_str!("../proto/serviceradar/agent/v1/gateway.proto");
/// The ServiceRadar-compatible `.proto` source.
pub const MONITORING_PROTO: &str = include_str!("../proto/monitoring.proto");

/// Most bytes in one `ResultsChunk.data`.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// Most bytes in one `PushResults` upload.
pub const MAX_UPLOAD_BYTES: u64 = 16 * 1024 * 1024;
/// Default config poll interval (seconds).
pub const DEFAULT_CONFIG_POLL_SECS: u32 = 30;
/// Most bytes in one `CommandUpdate.result_json`.
pub const MAX_COMMAND_RESULT_BYTES: usize = 1024 * 1024;
