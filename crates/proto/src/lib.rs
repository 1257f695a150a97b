//! The agent gateway protocol: `proto/serviceradar/agent/v1/gateway.proto`
//! and the tonic/prost code generated from it at build time (with protox, so
//! no `protoc` is needed).
//!
//! The `.proto` file is the contract: other languages generate their clients
//! from it (the test suite calls `Hello` from Python `grpcio`).

#![forbid(unsafe_code)]

/// `serviceradar.agent.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("serviceradar.agent.v1");
}

/// The `.proto` source, for tools that want to ship or inspect it.
pub const GATEWAY_PROTO: &str = include_str!("../proto/serviceradar/agent/v1/gateway.proto");

/// Most bytes in one `ResultsChunk.data`.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// Most bytes in one `PushResults` upload.
pub const MAX_UPLOAD_BYTES: u64 = 16 * 1024 * 1024;
/// Default config poll interval (seconds).
pub const DEFAULT_CONFIG_POLL_SECS: u32 = 30;
/// Most bytes in one `CommandUpdate.result_json`.
pub const MAX_COMMAND_RESULT_BYTES: usize = 1024 * 1024;
