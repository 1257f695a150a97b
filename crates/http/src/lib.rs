//! Shared axum plumbing for the HTTP front ends (the JSON API today, the web
//! UI beside it): who the caller is ([`Authenticated`], with the CSRF rule for
//! sessions), the one mapping from failures to responses ([`ApiError`]), and
//! extractors and list shapes every route uses, and bundle downloads; the
//! layers around every request ([`stack`]) and the probes and metrics page
//! ([`ops`]).
//!
//! Handlers take `State<Control>`: the use-cases are the only state they need.

pub mod auth;
pub mod download;
pub mod error;
pub mod extract;
pub mod ops;
pub mod stack;

pub use auth::{Authenticated, Caller, Credential, session_cookie};
pub use download::gzip_download;
pub use error::{ApiError, ErrorBody};
pub use extract::{ApiJson, ApiQuery, ListResponse, json_body, path_id};
