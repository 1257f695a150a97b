//! Validated values ("parse, don't validate").
//!
//! Everything a user types that the system later renders somewhere dangerous is
//! parsed here into a type that can only hold safe text:
//!
//! * [`Slug`] ends up in certificate common names, NATS server names, JetStream
//!   domains, file names and subjects: `[a-z0-9-]`, 1–63 characters.
//! * [`DisplayName`] is free-form text for people ("NYC Office"). It never goes
//!   into config or scripts unescaped, but control characters (newlines!) are
//!   rejected anyway, and the length is bounded.
//! * [`NatsUrl`] is a `nats://` or `tls://` URL with a DNS host name or IP
//!   literal and a port; no credentials, path, query or fragment.
//! * [`Email`], [`Password`], [`TokenName`].
//!
//! Errors are [`FieldError`]s naming the field, so the API can return them as
//! `400` with per-field messages.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A validation failure for one input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The input field that was rejected (API field name).
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects field errors so one response can report all of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Runs `parse`, remembering its error (renamed to `field`) if it fails.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, FieldError>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(mut err) => {
                err.field = field.to_string();
                self.0.push(err);
                None
            }
        }
    }

    /// `Ok(())` if nothing was collected.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    };
}

/// A URL- and config-safe identifier: `[a-z0-9-]`, 1–63 characters, starting
/// and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Slug(String);
string_newtype!(Slug);

impl Slug {
    /// Maximum length (a DNS label).
    pub const MAX_LEN: usize = 63;

    /// Parses a slug exactly as given (no normalisation).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| Err(FieldError::new("slug", m));
        if raw.is_empty() {
            return err("must not be empty");
        }
        if raw.len() > Self::MAX_LEN {
            return err("must be at most 63 characters");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return err("may contain only lowercase letters a-z, digits and '-'");
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return err("must start and end with a letter or digit");
        }
        Ok(Self(raw.to_string()))
    }

    /// Derives a slug from a display name: lowercase ASCII letters and digits
    /// are kept, every other run of characters becomes one `-`. Fails if
    /// nothing usable is left.
    pub fn derive_from(name: &str) -> Result<Self, FieldError> {
        let mut out = String::new();
        for ch in name.chars() {
            let c = ch.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(Self::MAX_LEN);
        let trimmed = out.trim_matches('-');
        Self::parse(trimmed).map_err(|_| {
            FieldError::new(
                "slug",
                "could not derive a slug from the name; give one explicitly",
            )
        })
    }
}

/// Free-form text shown to people: 1–100 characters after trimming, no
/// control characters (so no newlines or terminal escapes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);
string_newtype!(DisplayName);

impl DisplayName {
    /// Maximum length in characters.
    pub const MAX_LEN: usize = 100;

    /// Parses a display name, trimming surrounding whitespace.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        if trimmed.chars().count() > Self::MAX_LEN {
            return Err(FieldError::new("name", "must be at most 100 characters"));
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
        {
            return Err(FieldError::new(
                "name",
                "must not contain control characters or line breaks",
            ));
        }
        Ok(Self(trimmed.to_string()))
    }
}

/// A short label for an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TokenName(String);
string_newtype!(TokenName);

impl TokenName {
    /// Parses a token name: like a display name, at most 64 characters.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = DisplayName::parse(raw)?;
        if name.as_str().chars().count() > 64 {
            return Err(FieldError::new("name", "must be at most 64 characters"));
        }
        Ok(Self(name.0))
    }
}

/// An e-mail address used as login name: lowercased, bounded, one `@`, no
/// whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);
string_newtype!(Email);

impl Email {
    /// Parses and lowercases an e-mail address.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_ascii_lowercase();
        let bad = || Err(FieldError::new("email", "must be a valid e-mail address"));
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad();
        }
        let Some((local, domain)) = email.split_once('@') else {
            return bad();
        };
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return bad();
        }
        Ok(Self(email))
    }
}

/// A password as typed by a user, checked for length. Never logged: its
/// `Debug` prints nothing of the text.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Minimum length in characters.
    pub const MIN_LEN: usize = 12;

    /// Checks the length bounds (12–1024 characters).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(FieldError::new(
                "password",
                "must be at least 12 characters",
            ));
        }
        if len > 1024 {
            return Err(FieldError::new(
                "password",
                "must be at most 1024 characters",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// The password text, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(...)")
    }
}

/// The scheme of a [`NatsUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatsScheme {
    /// Plain `nats://` (TLS may still be required by the server).
    Nats,
    /// `tls://`: TLS from the first byte.
    Tls,
}

/// The host part of a [`NatsUrl`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name: labels of `[A-Za-z0-9-]`, lowercased.
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

impl Host {
    /// Parses a bare host: an IP literal (IPv6 with or without brackets) or a DNS name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let inner = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(raw);
        if let Ok(ip) = inner.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = raw.to_ascii_lowercase();
        let bad = || {
            Err(FieldError::new(
                "host",
                "must be a DNS name or an IP address",
            ))
        };
        if name.is_empty() || name.len() > 253 {
            return bad();
        }
        for label in name.split('.') {
            if label.is_empty()
                || label.len() > 63
                || label.starts_with('-')
                || label.ends_with('-')
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return bad();
            }
        }
        Ok(Host::Dns(name))
    }
}

/// A NATS server URL: `nats://host:port` or `tls://host:port`.
///
/// Canonical form has an explicit port (default 4222). Credentials, paths,
/// queries and fragments are rejected: the value is rendered into leaf
/// configuration and collector bundles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct NatsUrl {
    scheme: NatsScheme,
    host: Host,
    port: u16,
}

impl From<NatsUrl> for String {
    fn from(url: NatsUrl) -> String {
        url.to_string()
    }
}

impl<'de> Deserialize<'de> for NatsUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl NatsUrl {
    /// Default NATS client port.
    pub const DEFAULT_PORT: u16 = 4222;

    /// Parses and canonicalises a NATS URL.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bad = |m: &str| Err(FieldError::new("nats_leaf_url", m));
        if raw.len() > 300 {
            return bad("must be at most 300 characters");
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain whitespace or control characters");
        }
        let Ok(url) = url::Url::parse(raw) else {
            return bad("must be a URL like nats://10.0.1.50:4222 or tls://nats.example.com:4222");
        };
        let scheme = match url.scheme() {
            "nats" => NatsScheme::Nats,
            "tls" => NatsScheme::Tls,
            _ => return bad("scheme must be nats:// or tls://"),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return bad("must not contain credentials");
        }
        if !(url.path().is_empty() || url.path() == "/")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return bad("must not have a path, query or fragment");
        }
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => Host::parse(name).map_err(|_| {
                FieldError::new("nats_leaf_url", "host must be a DNS name or an IP address")
            })?,
            None => return bad("must name a host"),
        };
        let port = url.port().unwrap_or(Self::DEFAULT_PORT);
        if port == 0 {
            return bad("port must not be 0");
        }
        Ok(Self { scheme, host, port })
    }

    /// The scheme.
    pub fn scheme(&self) -> NatsScheme {
        self.scheme
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            NatsScheme::Nats => "nats",
            NatsScheme::Tls => "tls",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// A `host:port` listen address for the leaf's client port (e.g. `0.0.0.0:4222`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ListenAddr {
    host: Host,
    port: u16,
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> String {
        addr.to_string()
    }
}

impl ListenAddr {
    /// Parses `host:port` (IPv6 in brackets).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bad = || {
            Err(FieldError::new(
                "local_listen",
                "must be host:port, e.g. 0.0.0.0:4222",
            ))
        };
        let Some((host, port)) = raw.rsplit_once(':') else {
            return bad();
        };
        let Ok(port) = port.parse::<u16>() else {
            return bad();
        };
        if port == 0 {
            return bad();
        }
        match Host::parse(host) {
            Ok(host) => Ok(Self { host, port }),
            Err(_) => bad(),
        }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where alert notifications are posted: an absolute `http`/`https` URL with a
/// host, at most 2,048 characters, without credentials or a fragment.
///
/// This is the syntax rule only; whether the host may be reached (internal
/// addresses) is decided when delivering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);
string_newtype!(WebhookUrl);

impl WebhookUrl {
    /// Longest accepted URL.
    pub const MAX_LEN: usize = 2048;

    /// Parses a webhook URL (normalised as the URL standard writes it).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| FieldError::new("url", m);
        if raw.len() > Self::MAX_LEN {
            return Err(err("must be at most 2048 characters"));
        }
        let url = url::Url::parse(raw).map_err(|_| err("must be an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("must not carry credentials"));
        }
        if url.fragment().is_some() {
            return Err(err("must not have a fragment"));
        }
        Ok(Self(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn webhook_urls_are_validated() {
        assert!(WebhookUrl::parse("https://hooks.example.com/x?y=1").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/hook").is_ok());
        for bad in [
            "",
            "hooks.example.com",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// Inputs that try to break out of a config string or a shell command.
    const INJECTIONS: &[&str] = &[
        "a\"b",
        "a\nb",
        "${HOME}",
        "$(rm -rf /)",
        "`id`",
        "a}b",
        "a{b",
        "a'b",
        "a;b",
        "a b",
        "a\\b",
        "include /etc/passwd",
    ];

    #[test]
    fn slugs_accept_the_simple_form() {
        for ok in ["a", "nyc-office", "site-01", "0abc"] {
            assert_eq!(Slug::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn slugs_reject_injection_and_edge_cases() {
        for bad in INJECTIONS
            .iter()
            .copied()
            .chain(["", "-a", "a-", "A", "ä", "a.b", "a_b"])
        {
            assert!(Slug::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Slug::parse(&"a".repeat(64)).is_err());
        assert!(Slug::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn slugs_derive_from_names() {
        assert_eq!(
            Slug::derive_from("NYC Office").unwrap().as_str(),
            "nyc-office"
        );
        assert_eq!(
            Slug::derive_from("  Factory  Floor #3! ").unwrap().as_str(),
            "factory-floor-3"
        );
        assert_eq!(Slug::derive_from("$(rm -rf /)").unwrap().as_str(), "rm-rf");
        assert!(Slug::derive_from("!!!").is_err());
    }

    #[test]
    fn display_names_reject_control_characters() {
        assert_eq!(
            DisplayName::parse("  NYC Office ").unwrap().as_str(),
            "NYC Office"
        );
        assert!(DisplayName::parse("Joe's \"Shop\" ${x}").is_ok());
        for bad in [
            "",
            "   ",
            "a\nb",
            "a\rb",
            "a\u{1b}[31m",
            "a\u{2028}b",
            "a\0b",
        ] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
    }

    #[test]
    fn nats_urls_are_canonical_and_strict() {
        let url = NatsUrl::parse("nats://10.0.1.50:4222").unwrap();
        assert_eq!(url.to_string(), "nats://10.0.1.50:4222");
        assert_eq!(url.host(), &Host::Ip("10.0.1.50".parse().unwrap()));
        assert_eq!(
            NatsUrl::parse("tls://Nats.Example.com")
                .unwrap()
                .to_string(),
            "tls://nats.example.com:4222"
        );
        assert_eq!(
            NatsUrl::parse("nats://[::1]:4333").unwrap().to_string(),
            "nats://[::1]:4333"
        );
        for bad in [
            "http://x:1",
            "nats://user:pw@x:4222",
            "nats://x:4222/path",
            "nats://x:4222?q=1",
            "nats://x:4222#f",
            "nats://x:0",
            "nats://",
            "nats://a_b:4222",
            "nats://x:4222\n}",
            "nats://x\":4222",
            "nats://$(id):4222",
            "nats://${HOME}:4222",
            "nats://x y:4222",
            "not a url",
        ] {
            assert!(NatsUrl::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            ListenAddr::parse("0.0.0.0:4222").unwrap().to_string(),
            "0.0.0.0:4222"
        );
        assert_eq!(
            ListenAddr::parse("[::]:4222").unwrap().to_string(),
            "[::]:4222"
        );
        for bad in ["0.0.0.0", ":4222", "x:0", "x:99999", "a\"b:1", "$(id):1"] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_and_passwords() {
        assert_eq!(
            Email::parse(" Admin@Example.COM ").unwrap().as_str(),
            "admin@example.com"
        );
        for bad in ["", "a", "a@", "@b.c", "a@b", "a b@c.d", "a@b@c.d", "a@.c"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Password::parse("short").is_err());
        let pw = Password::parse("correct horse battery").unwrap();
        assert!(!format!("{pw:?}").contains("horse"));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,400}") {
            let _ = Slug::parse(&s);
            let _ = Slug::derive_from(&s);
            let _ = DisplayName::parse(&s);
            let _ = NatsUrl::parse(&s);
            let _ = ListenAddr::parse(&s);
            let _ = Email::parse(&s);
            let _ = Host::parse(&s);
        }

        #[test]
        fn accepted_slugs_are_config_safe(s in "[a-z0-9-]{0,70}") {
            if let Ok(slug) = Slug::parse(&s) {
                prop_assert!(slug.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            }
        }

        #[test]
        fn accepted_urls_render_only_safe_characters(s in ".{0,80}") {
            if let Ok(url) = NatsUrl::parse(&s) {
                let text = url.to_string();
                prop_assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || ":/.-[]".contains(c)), "{}", text);
                prop_assert_eq!(NatsUrl::parse(&text).unwrap(), url);
            }
        }
    }
}
