//! Public key infrastructure of ServiceRadar Edge.
//!
//! Every edge component (NATS leaf server, edge agent, collectors) proves who it
//! is — and which tenant it belongs to — with an X.509 certificate. This crate owns
//! everything about those certificates, as a pure library (no network, no
//! database, no filesystem):
//!
//! * [`ca`] — the CA hierarchy: one platform root CA, one intermediate CA per
//!   tenant (path length 0), loaded from or exported to PEM.
//! * [`issue`] — end-entity certificates for leaf servers (client and server
//!   side), agents, collectors and platform servers (hub, agent gateway).
//! * [`identity`] — SPIFFE ids (`spiffe://{trust_domain}/tenant/{tenant_id}/{kind}/{id}`),
//!   common-name formats, and the identity of a peer from the certificate it
//!   presented over TLS.
//! * [`seal`] — private keys at rest, sealed with XChaCha20-Poly1305 under a
//!   rotatable master key and bound to their row with associated data.
//! * [`inspect`] — small helpers to track certificates (expiry, fingerprint).
//! * [`request`] — certificate signing requests: keys generated at the edge,
//!   certificates issued for them without the platform seeing the key.
//! * [`token`] — enrollment tokens signed by the control plane (Ed25519).
//! * [`names`] — validation of the slugs, hosts and trust domains that end up
//!   inside certificates.
//!
//! All keys are ECDSA P-256. Private key material never appears in `Debug`
//! output or error messages and is zeroized when dropped (best effort: the
//! underlying `ring` key objects keep their own copy until they are freed).

#![forbid(unsafe_code)]

pub mod ca;
pub mod identity;
pub mod inspect;
pub mod issue;
mod keys;
pub mod names;
pub mod request;
pub mod seal;
pub mod token;

pub use ca::{CaError, CaKind, CertificateAuthority};
pub use identity::{
    IdentityError, IdentityKind, ParsedCommonName, PeerIdentity, SpiffeId, TenantSpiffeId,
    device_common_name_label, parse_common_name,
};
pub use inspect::{
    CertificateError, cert_not_after, chain_not_after, check_key_matches, fingerprint_sha256,
    renewal_point, spki_sha256,
};
pub use issue::{
    DEFAULT_TRUST_DOMAIN, DEFAULT_VALIDITY, IssueError, IssueOptions, IssuedCertificate,
    RequestProfile, SignedCertificate, SiteRef, TenantRef, issue_agent, issue_collector,
    issue_for_request, issue_leaf_client, issue_leaf_server, issue_leaf_server_for_key,
    issue_platform_server, issue_platform_server_for_key, new_server_key,
};
pub use names::NameError;
pub use request::{CertificateRequest, new_key_and_request};
pub use seal::{Keyring, MasterKey, SealError};
