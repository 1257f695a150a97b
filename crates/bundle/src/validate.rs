//! Input checks done again at the point where values become files and scripts.
//!
//! The domain crate validates slugs, names and URLs when they enter the system;
//! this crate does not trust that: a bundle is executed as root on a customer's
//! machine, so every value that reaches a path, a script, a unit file or a config
//! is checked here again. Slugs, display names and NATS URLs are checked with the
//! domain's own rules ([`serviceradar_domain::validate::rule`]), so a value the
//! API accepted is never refused here (a bundle that cannot be built answers
//! `500`). Only two bounds are looser than the API's: display text may be up to
//! [`MAX_TEXT_CHARS`] long, and URLs may also be `ws://`/`wss://` (the
//! operator-configured hub and SaaS endpoints). Install paths, PEM and creds
//! inputs and generated file texts have rules of their own below.
//! The shell and unit-file escaping in [`crate::shell`] applies on top.

use serviceradar_domain::validate::rule;

use crate::BundleError;

/// Longest accepted free-text value (site display name), in characters. Looser
/// than the domain's `DisplayName::MAX_LEN` (100), which the API enforces: here it
/// only bounds what a bundle renders.
pub const MAX_TEXT_CHARS: usize = 200;

/// A slug by the domain's rule ([`rule::slug`]): 1..=63 of `[a-z0-9-]`,
/// starting and ending with a letter or digit.
pub fn slug(field: &'static str, value: &str) -> Result<(), BundleError> {
    rule::slug(value).map_err(|_| BundleError::InvalidSlug {
        field,
        value: value.to_owned(),
    })
}

/// Free text shown to people (a site's display name): the domain's character
/// rule ([`rule::display_text`]: non-blank, no control characters (newlines
/// included), line separators or Unicode bidirectional overrides, which can make
/// text read differently than it is), and at most [`MAX_TEXT_CHARS`].
pub fn display_text(field: &'static str, value: &str) -> Result<(), BundleError> {
    let bad = |reason| Err(BundleError::InvalidText { field, reason });
    if let Err(reason) = rule::display_text(value) {
        return bad(reason);
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return bad("too long (at most 200 characters)");
    }
    Ok(())
}

/// Text of a generated config file: anything printable plus `\n`, `\r`, `\t`.
pub fn file_text(field: &'static str, value: &str) -> Result<(), BundleError> {
    if value.trim().is_empty() {
        return Err(BundleError::InvalidText {
            field,
            reason: "must not be empty",
        });
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(BundleError::InvalidText {
            field,
            reason: "control characters other than newline and tab are not allowed",
        });
    }
    Ok(())
}

/// A NATS URL by the domain's endpoint rule ([`rule::nats_endpoint`]):
/// `nats://`, `tls://`, `ws://` or `wss://`, then `host[:port]` where host is a
/// DNS name, an IPv4 address or a bracketed IPv6 address. No user info, path,
/// query or whitespace: credentials travel in files, never in URLs.
pub fn nats_url(field: &'static str, value: &str) -> Result<(), BundleError> {
    rule::nats_endpoint(value)
        .map(|_| ())
        .map_err(|reason| BundleError::InvalidUrl {
            field,
            value: value.to_owned(),
            reason,
        })
}

/// An absolute install path on the edge box: starts with `/`, only
/// `[A-Za-z0-9._/-]`, no empty, `.` or `..` components, not `/` itself, no
/// trailing `/`.
pub fn install_path(field: &'static str, value: &str) -> Result<(), BundleError> {
    let bad = |reason| {
        Err(BundleError::InvalidInstallPath {
            field,
            value: value.to_owned(),
            reason,
        })
    };
    let Some(rest) = value.strip_prefix('/') else {
        return bad("must be absolute");
    };
    if rest.is_empty() {
        return bad("must not be the root directory");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return bad("only characters A-Z a-z 0-9 . _ / - are allowed");
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("empty, '.' and '..' components are not allowed");
    }
    if value.len() > 200 {
        return bad("too long");
    }
    Ok(())
}

/// What a PEM input must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more `CERTIFICATE` blocks.
    Certificate,
    /// A private key block (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`).
    PrivateKey,
}

/// A PEM text of the given kind: ASCII, begins with a `-----BEGIN` line of the
/// right type and has a matching `-----END` line. This is a shape check (the PKI
/// crate produced and parsed these); it catches a key passed as a cert and junk.
pub fn pem(field: &'static str, value: &str, kind: PemKind) -> Result<(), BundleError> {
    let bad = |reason| Err(BundleError::InvalidPem { field, reason });
    if !value.is_ascii()
        || value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r'))
    {
        return bad("must be ASCII text");
    }
    let text = value.trim_start();
    let Some(first) = text.lines().next() else {
        return bad("empty");
    };
    let label_ok = match kind {
        PemKind::Certificate => first == "-----BEGIN CERTIFICATE-----",
        PemKind::PrivateKey => {
            first.starts_with("-----BEGIN ") && first.ends_with("PRIVATE KEY-----")
        }
    };
    if !label_ok {
        return bad(match kind {
            PemKind::Certificate => "expected a -----BEGIN CERTIFICATE----- block",
            PemKind::PrivateKey => "expected a -----BEGIN ... PRIVATE KEY----- block",
        });
    }
    let end = first.replacen("BEGIN", "END", 1);
    if !text.lines().any(|l| l.trim_end() == end) {
        return bad("missing -----END line");
    }
    if kind == PemKind::Certificate && value.contains("PRIVATE KEY") {
        return bad("a certificate input must not contain a private key");
    }
    Ok(())
}

/// A NATS `.creds` file: a user JWT block and a user nkey seed block.
pub fn creds(field: &'static str, value: &str) -> Result<(), BundleError> {
    let bad = |reason| Err(BundleError::InvalidCreds { field, reason });
    if !value.is_ascii()
        || value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r'))
    {
        return bad("must be ASCII text");
    }
    if !value.contains("-----BEGIN NATS USER JWT-----") {
        return bad("missing the NATS USER JWT block");
    }
    if !value.contains("-----BEGIN USER NKEY SEED-----") {
        return bad("missing the USER NKEY SEED block");
    }
    Ok(())
}

/// Makes sure text files end with exactly one trailing newline.
pub(crate) fn with_newline(text: &str) -> String {
    let mut s = text.trim_end_matches(['\n', '\r']).to_owned();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule is the domain's ([`rule::slug`], whose tests hold the
    /// verdicts); here the refusal is the bundle's, naming field and value.
    #[test]
    fn slugs() {
        for ok in ["a", "nyc-office", &"a".repeat(63)] {
            assert!(slug("s", ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a'b", "$(x)", "a/b", "..", &"a".repeat(64)] {
            assert!(
                matches!(slug("site", bad), Err(BundleError::InvalidSlug { field: "site", value }) if value == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_texts() {
        assert!(display_text("n", "NYC Office").is_ok());
        assert!(display_text("n", r#"O'Brien "HQ" $(x) `y` ${HOME} \"#).is_ok());
        assert!(display_text("n", "Zürich Büro").is_ok());
        for bad in ["", "  ", "a\nb", "a\rb", "a\0b", "a\tb", "a\u{202E}b"] {
            assert!(display_text("n", bad).is_err(), "{bad:?}");
        }
        assert!(display_text("n", &"x".repeat(201)).is_err());
        // Every bidi override and isolate, with the domain's reason.
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert!(
                matches!(
                    display_text("site_name", &format!("a{c}b")),
                    Err(BundleError::InvalidText { field: "site_name", reason }) if reason.contains("bidirectional")
                ),
                "{c:?}"
            );
        }
    }

    /// The rule is the domain's ([`rule::nats_endpoint`], whose tests hold
    /// the verdicts), with `ws://` and `wss://` allowed; here the refusal is
    /// the bundle's, with the domain's reason.
    #[test]
    fn nats_urls() {
        for ok in [
            "tls://nats.serviceradar.cloud:7422",
            "wss://hub.example.com:443",
            "nats://[::1]:4222",
        ] {
            assert!(nats_url("u", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://x:1",
            "nats://user:pw@x:4222",
            "nats://$(touch /tmp/p):4222",
            "nats://x';rm -rf /;':1",
        ] {
            assert!(
                matches!(nats_url("hub_url", bad), Err(BundleError::InvalidUrl { field: "hub_url", value, .. }) if value == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn install_paths() {
        for ok in ["/etc/serviceradar/nats", "/var/lib/sr_x/nats-1.0", "/a"] {
            assert!(install_path("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/",
            "etc/x",
            "/etc/",
            "/etc//x",
            "/etc/../x",
            "/etc/./x",
            "/etc/x y",
            "/etc/$(x)",
            "/etc/'x",
        ] {
            assert!(install_path("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pems() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
        let ec = "-----BEGIN EC PRIVATE KEY-----\nMIIB\n-----END EC PRIVATE KEY-----\n";
        assert!(pem("c", cert, PemKind::Certificate).is_ok());
        assert!(pem("k", key, PemKind::PrivateKey).is_ok());
        assert!(pem("k", ec, PemKind::PrivateKey).is_ok());
        assert!(pem("c", key, PemKind::Certificate).is_err());
        assert!(pem("k", cert, PemKind::PrivateKey).is_err());
        assert!(pem("c", &format!("{cert}{key}"), PemKind::Certificate).is_err());
        assert!(
            pem(
                "c",
                "-----BEGIN CERTIFICATE-----\nMIIB\n",
                PemKind::Certificate
            )
            .is_err()
        );
        assert!(pem("c", "", PemKind::Certificate).is_err());
    }

    #[test]
    fn creds_files() {
        let ok = "-----BEGIN NATS USER JWT-----\neyJ\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUA\n------END USER NKEY SEED------\n";
        assert!(creds("c", ok).is_ok());
        assert!(creds("c", "garbage").is_err());
    }

    #[test]
    fn file_texts() {
        assert!(file_text("f", "a: 1\n\tb: 2\r\n").is_ok());
        assert!(file_text("f", "a\u{1}b").is_err());
        assert!(file_text("f", "\n").is_err());
    }

    #[test]
    fn newline_normalisation() {
        assert_eq!(with_newline("a"), "a\n");
        assert_eq!(with_newline("a\n\n"), "a\n");
    }
}
