//! The edge agent (`serviceradar-agent`) as a library, so tests and the
//! benchmark drive the same code as the binary.
//!
//! * [`config`] — config file (TOML) + flags + `SERVICERADAR_AGENT_*` env.
//! * [`checks`] — the checkers: NATS leaf monitoring, TCP, HTTP(S), DNS, ICMP.
//! * [`transport`] — the one interface to the gateway ([`transport::Transport`]),
//!   implemented by dialing out over gRPC + mTLS ([`transport::GrpcTransport`]).
//!   A gateway-initiated mode would be a second implementation.
//! * [`runner`] — the loop: connect with backoff and jitter, `Hello`, run
//!   checks on schedule, buffer results (bounded) while the gateway is
//!   unreachable, push, poll config, renew enrolled certificates; hold the
//!   control stream (config pushes, commands) open.
//! * [`listen`] — gateway-initiated mode (seed 004): the agent listens with
//!   mTLS, accepts only the platform gateway's certificate and is polled.
//! * [`renew`] — certificate renewal of a box enrolled with a token.
//! * [`diagnostics`] — the `collect_diagnostics` command's bundle;
//!   [`logtail`] — the recent log lines it includes.
//! * [`device_auth`] — the auth callout beside the site leaf: devices get
//!   their own subjects and limits from the site's copy of the registry.
//! * [`uploads`] — command outputs uploaded with `PushResults`, chunked and
//!   resumable.
//! * [`status_file`] — last gateway contact and renewal, for the box's CLI.

#![forbid(unsafe_code)]

pub mod buffer;
pub mod checks;
pub mod config;
pub mod device_auth;
pub mod diagnostics;
pub mod listen;
pub mod logtail;
pub mod renew;
pub mod runner;
pub mod status_file;
pub mod transport;
pub mod uploads;

/// Now, in Unix milliseconds (0 before the epoch): the clock of results,
/// command expiries and the status file.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
