//! Validation of the names that are written into certificates.
//!
//! Slugs, trust domains and host names end up in common names, SPIFFE URIs and
//! subject alternative names, where a stray `.`, `/` or `,` changes what a
//! certificate means to its verifier (the auth callout derives identity from the
//! CN, the gateway from the SPIFFE id). Callers usually hand us values that were
//! validated already (the domain crate's `Slug`), but this crate re-checks them
//! because it is the last line before they are signed. The checks are the
//! domain's own rules ([`serviceradar_domain::validate::rule`]); only the common
//! name of a CA we are given has a rule of its own here.

pub use serviceradar_domain::validate::Host;
use serviceradar_domain::validate::{Slug, rule};

/// Longest slug accepted (one DNS label).
pub const MAX_SLUG_LEN: usize = Slug::MAX_LEN;

/// Longest DNS name (and trust domain) accepted.
pub const MAX_DNS_NAME_LEN: usize = rule::MAX_DNS_NAME_LEN;

/// Longest part of a rejected value echoed back in an error message.
const MAX_ECHO_LEN: usize = 64;

/// A name that cannot be put into a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// A tenant, site or service slug is not `[a-z0-9-]{1,63}` with an
    /// alphanumeric first and last character.
    #[error("invalid {field} slug: {reason}")]
    Slug {
        /// Which slug (`tenant`, `site`, `service`).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A trust domain is not a lowercase DNS-style name.
    #[error("invalid trust domain: {reason}")]
    TrustDomain {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host is neither an IP address literal nor a valid DNS name.
    #[error("invalid host {host:?}: {reason}")]
    Host {
        /// The rejected host (truncated).
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A common name is empty, too long or contains control characters.
    #[error("invalid common name: {reason}")]
    CommonName {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks that `value` is a slug by the domain's rule ([`rule::slug`]):
/// `[a-z0-9-]{1,63}`, not starting or ending with `-` (so it is also a valid DNS
/// label). `field` names it in the error.
pub fn check_slug(field: &'static str, value: &str) -> Result<(), NameError> {
    rule::slug(value).map_err(|reason| NameError::Slug { field, reason })
}

/// Checks a SPIFFE trust domain: a lowercase DNS name such as
/// `serviceradar.io` (no scheme, port, path or upper case), by the domain's
/// [`rule::dns_name`].
pub fn check_trust_domain(value: &str) -> Result<(), NameError> {
    rule::dns_name(value).map_err(|reason| NameError::TrustDomain { reason })
}

/// Checks a common name we were given (e.g. the root CA's): 1 to 64 printable
/// characters.
pub fn check_common_name(value: &str) -> Result<(), NameError> {
    let fail = |reason| Err(NameError::CommonName { reason });
    if value.trim().is_empty() {
        return fail("must not be empty");
    }
    if value.chars().count() > 64 {
        return fail("must be at most 64 characters");
    }
    if value.chars().any(char::is_control) {
        return fail("must not contain control characters");
    }
    Ok(())
}

/// Parses a host for a server certificate's SAN by the domain's rule
/// ([`rule::host`]), after trimming surrounding whitespace: an IP literal (IPv6
/// may be bracketed) becomes [`Host::Ip`]; anything else must be a valid DNS
/// name (lowercased, LDH labels, no wildcard, no trailing dot).
pub fn parse_host(raw: &str) -> Result<Host, NameError> {
    rule::host(raw.trim()).map_err(|reason| NameError::Host {
        host: raw.chars().take(MAX_ECHO_LEN).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        for ok in ["a", "nyc-office", "site-01", "0abc", &"a".repeat(63)] {
            assert!(check_slug("site", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "a b",
            "ä",
            "a,o=x",
            &"a".repeat(64),
        ] {
            assert!(check_slug("site", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("10.0.0.5").expect("ip"),
            Host::Ip("10.0.0.5".parse().expect("ip"))
        );
        assert_eq!(
            parse_host("[fd00::1]").expect("ip6"),
            Host::Ip("fd00::1".parse().expect("ip"))
        );
        assert_eq!(
            parse_host("::1").expect("ip6"),
            Host::Ip("::1".parse().expect("ip"))
        );
        assert_eq!(
            parse_host("NATS.Example.com").expect("dns"),
            Host::Dns("nats.example.com".into())
        );
        assert_eq!(
            parse_host("localhost").expect("dns"),
            Host::Dns("localhost".into())
        );
        for bad in [
            "",
            " ",
            "*.example.com",
            "example.com.",
            "a..b",
            "-a.com",
            "a_b.com",
            "nats://host:4222",
            "host:4222",
            "10.0.0.256",
            "1.2.3",
            "[example.com]",
            "exa mple.com",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trust_domains() {
        assert!(check_trust_domain("serviceradar.io").is_ok());
        assert!(check_trust_domain("corp.internal").is_ok());
        for bad in ["", "Serviceradar.io", "spiffe://x", "a/b", "x:443", "a..b"] {
            assert!(check_trust_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn common_names() {
        assert!(check_common_name("ServiceRadar Root CA").is_ok());
        assert!(check_common_name("").is_err());
        assert!(check_common_name("a\nb").is_err());
        assert!(check_common_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn host_errors_do_not_echo_unbounded_input() {
        let long = "x".repeat(10_000);
        let err = parse_host(&format!("{long}_")).expect_err("invalid");
        assert!(err.to_string().len() < 200);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_host(&s);
            let _ = check_slug("x", &s);
            let _ = check_trust_domain(&s);
            let _ = check_common_name(&s);
        }

        #[test]
        fn accepted_dns_hosts_are_ldh(s in "[a-zA-Z0-9.*_-]{0,80}") {
            if let Ok(Host::Dns(name)) = parse_host(&s) {
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
            }
        }
    }
}
