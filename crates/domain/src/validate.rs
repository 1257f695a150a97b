//! Validated values ("parse, don't validate").
//!
//! Everything a user types that the system later renders somewhere dangerous is
//! parsed here into a type that can only hold safe text:
//!
//! * [`Slug`] ends up in certificate common names, NATS server names, JetStream
//!   domains, file names and subjects: `[a-z0-9-]`, 1–63 characters.
//! * [`DisplayName`] is free-form text for people ("NYC Office"). It never goes
//!   into config or scripts unescaped, but control characters (newlines!) and
//!   bidirectional override/isolate characters (which make text read
//!   differently than it is) are rejected anyway, and the length is bounded.
//! * [`Host`], [`ListenAddr`]: a DNS name or IP literal, and `host:port`.
//! * [`NatsUrl`] is a `nats://` or `tls://` URL with a DNS host name or IP
//!   literal and a port; no credentials, path, query or fragment.
//!   [`NatsUrl::parse_endpoint`] also accepts `ws://` and `wss://`, for the
//!   operator-configured upstream URLs.
//! * [`Email`], [`Password`], [`TokenName`].
//!
//! Errors are [`FieldError`]s naming the field, so the API can return them as
//! `400` with per-field messages.
//!
//! Each rule is written once, in [`rule`]. The renderers (`bundle`,
//! `natsconf`, `pki`) receive values as text, re-check them with the same
//! functions (their errors carry the rule's static reason), and keep only
//! their own escaping and quoting on top as defence in depth.

use std::borrow::Cow;
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

    /// Parses a slug exactly as given (no normalisation); the rule is
    /// [`rule::slug`].
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        rule::slug(raw).map_err(|m| FieldError::new("slug", m))?;
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
/// control characters (so no newlines or terminal escapes), no line or
/// paragraph separators or byte-order marks, and no bidirectional override or
/// isolate characters (see [`rule::display_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);
string_newtype!(DisplayName);

impl DisplayName {
    /// Maximum length in characters.
    pub const MAX_LEN: usize = 100;

    /// Parses a display name, trimming surrounding whitespace.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        rule::display_name(raw)
            .map(|trimmed| Self(trimmed.to_string()))
            .map_err(|m| FieldError::new("name", m))
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
    /// `ws://`: NATS over WebSocket. Only [`NatsUrl::parse_endpoint`] accepts it.
    Ws,
    /// `wss://`: NATS over WebSocket with TLS. Only [`NatsUrl::parse_endpoint`]
    /// accepts it.
    Wss,
}

impl NatsScheme {
    /// The scheme as written in a URL, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            NatsScheme::Nats => "nats",
            NatsScheme::Tls => "tls",
            NatsScheme::Ws => "ws",
            NatsScheme::Wss => "wss",
        }
    }

    /// The port a URL of this scheme means when it names none: the NATS client
    /// port for `nats`/`tls`, the HTTP(S) port for `ws`/`wss`.
    pub fn default_port(self) -> u16 {
        match self {
            NatsScheme::Nats | NatsScheme::Tls => NatsUrl::DEFAULT_PORT,
            NatsScheme::Ws => 80,
            NatsScheme::Wss => 443,
        }
    }
}

/// A host: a DNS name or an IP literal (see [`rule::host`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name: labels of `[a-z0-9-]`, lowercased; the last label is not
    /// all digits.
    Dns(String),
}

impl fmt::Display for Host {
    /// The host as written in a URL or `host:port` (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => f.write_str(dotted_quad(ip).as_str()),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

/// An IPv4 address in dotted-quad text, written without the formatting
/// machinery: the edge-site list writes one per site (`Ipv4Addr`'s own
/// `Display` goes through `fmt` four times and took ~100 ns).
fn dotted_quad(ip: &std::net::Ipv4Addr) -> DottedQuad {
    let mut out = DottedQuad {
        bytes: [0; 15],
        len: 0,
    };
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
    out
}

/// A port in decimal, written without the formatting machinery (see
/// [`dotted_quad`]).
fn decimal(n: u16) -> DottedQuad {
    let mut out = DottedQuad {
        bytes: [0; 15],
        len: 0,
    };
    let mut divisor = 10_000;
    while divisor > 1 && n < divisor {
        divisor /= 10;
    }
    while divisor > 0 {
        // A single decimal digit: the cast cannot truncate.
        out.push(b'0' + (n / divisor % 10) as u8);
        divisor /= 10;
    }
    out
}

/// The text [`dotted_quad`] or [`decimal`] wrote (at most
/// `255.255.255.255`).
struct DottedQuad {
    bytes: [u8; 15],
    len: usize,
}

impl DottedQuad {
    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and dots were written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Host {
    /// Parses a bare host: an IP literal (IPv6 with or without brackets) or a
    /// DNS name; the rule is [`rule::host`].
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        rule::host(raw).map_err(|m| FieldError::new("host", m))
    }

    /// The host without brackets (IPv6 bare), as a config `host:` key or a
    /// certificate's subject alternative name wants it.
    pub fn to_bare(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Dns(name) => name.clone(),
        }
    }
}

/// A NATS server URL: `nats://host[:port]` or `tls://host[:port]` from
/// [`NatsUrl::parse`]; `ws://` and `wss://` too from
/// [`NatsUrl::parse_endpoint`].
///
/// Canonical form has an explicit port (default 4222 for `nats`/`tls`, 80 for
/// `ws`, 443 for `wss`). Credentials, paths, queries and fragments are
/// rejected: the value is rendered into leaf configuration and collector
/// bundles. The rule is [`rule::nats_url`] / [`rule::nats_endpoint`].
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
    /// Deserialises with [`NatsUrl::parse`] (`nats`/`tls` only): the stored
    /// and requested URLs are those of sites, which people type.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl NatsUrl {
    /// Default NATS client port.
    pub const DEFAULT_PORT: u16 = 4222;

    /// Longest accepted URL text.
    pub const MAX_LEN: usize = 300;

    /// Parses and canonicalises a NATS URL typed by a person (a site's
    /// `nats_leaf_url`): `nats://` or `tls://` only.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        rule::nats_url(raw).map_err(|m| FieldError::new("nats_leaf_url", m))
    }

    /// Parses and canonicalises an operator-configured endpoint (the hub's
    /// leafnode URL, the SaaS NATS URL): like [`NatsUrl::parse`], and also
    /// `ws://` and `wss://`, since an upstream may be reached over WebSocket.
    /// Not for request fields: sites' URLs go through [`NatsUrl::parse`].
    pub fn parse_endpoint(raw: &str) -> Result<Self, FieldError> {
        rule::nats_endpoint(raw).map_err(|m| FieldError::new("url", m))
    }

    /// The text [`NatsUrl::parse`] makes of `raw`, as `Display` writes it,
    /// for reads that only show a URL (the edge-site list): `raw` itself,
    /// borrowed, when it already is that text (a stored URL always is;
    /// checked in one pass), else parsed by the full rule and written.
    pub fn written_text(raw: &str) -> Result<Cow<'_, str>, FieldError> {
        if rule::is_written_url(raw) {
            Ok(Cow::Borrowed(raw))
        } else {
            Self::parse(raw).map(|url| Cow::Owned(url.to_string()))
        }
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
    /// `scheme://host:port`, written piece by piece rather than through
    /// `write!`'s arguments: the edge-site list writes one per site.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme.as_str())?;
        f.write_str("://")?;
        fmt::Display::fmt(&self.host, f)?;
        f.write_str(":")?;
        f.write_str(decimal(self.port).as_str())
    }
}

/// A `host:port` listen address (e.g. `0.0.0.0:4222`, `[::]:4222`): the
/// leaf's client port, and the listeners of rendered NATS configs.
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
    /// Parses `host:port` (IPv6 in brackets); the rule is [`rule::listen_addr`].
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        rule::listen_addr(raw).map_err(|m| FieldError::new("local_listen", m))
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

pub mod rule {
    //! Every validation rule of this module, written once: a function of the
    //! raw text that says, on failure, what is wrong in a static sentence.
    //!
    //! The newtypes' `parse` functions call these and name the field. The
    //! renderers (`bundle`, `natsconf`, `pki`), which are handed values as
    //! text, call them too and wrap the [`Reason`] in their own error type, so
    //! a value the API accepted is never refused later by a stricter copy of
    //! the rule.

    use std::net::{IpAddr, Ipv6Addr};

    use super::{DisplayName, Host, ListenAddr, NatsScheme, NatsUrl, Slug};

    /// Why a value breaks a rule, in words a user can act on.
    pub type Reason = &'static str;

    /// A slug: 1–63 bytes of `[a-z0-9-]`, starting and ending with a letter or
    /// digit (so also a DNS label).
    pub fn slug(raw: &str) -> Result<(), Reason> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > Slug::MAX_LEN {
            return Err("must be at most 63 characters");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("may contain only lowercase letters a-z, digits and '-'");
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err("must start and end with a letter or digit");
        }
        Ok(())
    }

    /// Unicode bidirectional embedding, override and isolate characters
    /// (U+202A–U+202E, U+2066–U+2069): they make text display in another
    /// order than it is stored ("Trojan Source").
    pub fn is_bidi_control(c: char) -> bool {
        matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }

    /// Text shown to people, of any length: after trimming surrounding
    /// whitespace not empty, no control characters (newlines, tabs, escapes),
    /// no line or paragraph separators or byte-order marks, no bidirectional
    /// override/isolate characters ([`is_bidi_control`]). Returns the trimmed
    /// text. [`display_name`] adds the length bound of names.
    pub fn display_text(raw: &str) -> Result<&str, Reason> {
        const CONTROL: Reason = "must not contain control characters or line breaks";
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty");
        }
        // ASCII text holds none of the separators, marks and bidirectional
        // characters below: only its control characters need a look (the
        // common case, a byte at a time instead of decoding characters).
        if trimmed.is_ascii() {
            if trimmed.bytes().any(|b| b.is_ascii_control()) {
                return Err(CONTROL);
            }
            return Ok(trimmed);
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
        {
            return Err(CONTROL);
        }
        if trimmed.chars().any(is_bidi_control) {
            return Err(
                "must not contain bidirectional override or isolate characters (U+202A-U+202E, U+2066-U+2069)",
            );
        }
        Ok(trimmed)
    }

    /// A display name: [`display_text`] of at most
    /// [`DisplayName::MAX_LEN`] (100) characters after trimming.
    pub fn display_name(raw: &str) -> Result<&str, Reason> {
        let trimmed = display_text(raw)?;
        // No more characters than bytes: only a long name needs counting.
        if trimmed.len() > DisplayName::MAX_LEN && trimmed.chars().count() > DisplayName::MAX_LEN {
            return Err("must be at most 100 characters");
        }
        Ok(trimmed)
    }

    /// Longest DNS name accepted, in bytes.
    pub const MAX_DNS_NAME_LEN: usize = 253;

    const EMPTY: Reason = "must not be empty";
    const DNS_ALPHABET: Reason = "may contain only a-z, 0-9, '-' and '.'";
    const NOT_A_HOST: Reason = "must be a DNS name or an IP address";

    /// A lowercase DNS name: at most 253 bytes of labels joined by `.`; each
    /// label 1–63 bytes of `[a-z0-9-]`, not starting or ending with `-`; the
    /// last label not all digits (that would be a malformed IP address). No
    /// trailing dot, no wildcard.
    pub fn dns_name(name: &str) -> Result<(), Reason> {
        if name.is_empty() {
            return Err(EMPTY);
        }
        if name.len() > MAX_DNS_NAME_LEN {
            return Err("must be at most 253 characters");
        }
        let mut last = "";
        for label in name.split('.') {
            if label.is_empty() {
                return Err("must not have an empty label (leading, trailing or double dot)");
            }
            if label.len() > 63 {
                return Err("each label must be at most 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(DNS_ALPHABET);
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("each label must start and end with a letter or digit");
            }
            last = label;
        }
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "the last label must not be numeric (it looks like a malformed IP address)",
            );
        }
        Ok(())
    }

    /// A host: an IPv4 literal, an IPv6 literal (bare or in brackets; only
    /// IPv6 may be bracketed) or a DNS name, which is lowercased and must
    /// pass [`dns_name`].
    pub fn host(raw: &str) -> Result<Host, Reason> {
        if let Some(inner) = raw.strip_prefix('[') {
            return inner
                .strip_suffix(']')
                .and_then(|v6| v6.parse::<Ipv6Addr>().ok())
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .ok_or("brackets are only allowed around an IPv6 address");
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = raw.to_ascii_lowercase();
        match dns_name(&name) {
            Ok(()) => Ok(Host::Dns(name)),
            Err(DNS_ALPHABET) => Err(NOT_A_HOST),
            Err(reason) => Err(reason),
        }
    }

    /// A listen address: `host:port`, IPv6 in brackets, the port 1–65535 in
    /// digits.
    pub fn listen_addr(raw: &str) -> Result<ListenAddr, Reason> {
        const BARE: Reason = "must be host:port, e.g. 0.0.0.0:4222";
        if !raw.contains(':') {
            return Err(BARE);
        }
        match host_and_port(raw)? {
            (host, Some(port)) => Ok(ListenAddr { host, port }),
            (_, None) => Err(BARE),
        }
    }

    /// A NATS URL people type: `nats://` or `tls://`, then `host[:port]`
    /// (IPv6 in brackets), optionally one trailing `/`. No credentials, path,
    /// query, fragment, whitespace or control characters; at most 300
    /// characters; the scheme's letters in any case.
    pub fn nats_url(raw: &str) -> Result<NatsUrl, Reason> {
        url(raw, false)
    }

    /// An operator-configured NATS endpoint: [`nats_url`], and also `ws://`
    /// and `wss://`.
    pub fn nats_endpoint(raw: &str) -> Result<NatsUrl, Reason> {
        url(raw, true)
    }

    fn url(raw: &str, websocket: bool) -> Result<NatsUrl, Reason> {
        match canonical_url(raw, websocket) {
            Some(url) => Ok(url),
            None => url_in_full(raw, websocket),
        }
    }

    /// The same rule as [`url_in_full`] for the text [`NatsUrl`]'s `Display`
    /// writes (`scheme://host:port`, lowercase, an IPv4 or DNS host), read
    /// in one pass: every site row the store reads back is in this form, and
    /// the full rule's searches and IP-literal attempts were 15% of the
    /// edge-site list's work (BENCHMARKS.md, issue 15). `None` for anything
    /// else, which then goes through the full rule: this path only ever
    /// accepts, never refuses, and what it accepts the full rule accepts as
    /// the same value (the test
    /// `the_canonical_url_path_accepts_only_what_the_full_rule_accepts_alike`).
    pub(super) fn canonical_url(raw: &str, websocket: bool) -> Option<NatsUrl> {
        let (scheme, host, port) = canonical_parts(raw, websocket)?;
        let host = match host {
            CanonicalHost::V4(ip) => Host::Ip(IpAddr::V4(ip)),
            CanonicalHost::Dns(name) => Host::Dns(name.to_owned()),
        };
        Some(NatsUrl { scheme, host, port })
    }

    /// Whether `raw` is exactly the text [`NatsUrl`]'s `Display` writes for
    /// a URL [`nats_url`] accepts (the one-pass path of [`canonical_url`],
    /// building nothing): a site's stored URL always is.
    pub(super) fn is_written_url(raw: &str) -> bool {
        canonical_parts(raw, false).is_some()
    }

    /// A host as the one-pass path reads it: an IPv4 literal or a DNS name
    /// (borrowed from the text).
    enum CanonicalHost<'a> {
        V4(std::net::Ipv4Addr),
        Dns(&'a str),
    }

    /// The pieces of a URL in the form `Display` writes, or `None`. A port
    /// with a leading zero is left to the full rule: it reads it as the
    /// same number, which `Display` writes without the zero, and what this
    /// path accepts must be exactly what `Display` writes.
    fn canonical_parts(raw: &str, websocket: bool) -> Option<(NatsScheme, CanonicalHost<'_>, u16)> {
        if raw.len() > NatsUrl::MAX_LEN {
            return None;
        }
        let (scheme, rest) = schemes(websocket).find_map(|s| {
            raw.strip_prefix(s.as_str())
                .and_then(|rest| rest.strip_prefix("://"))
                .map(|rest| (s, rest))
        })?;
        let (host, port) = rest.rsplit_once(':')?;
        Some((scheme, canonical_host(host)?, canonical_port(port)?))
    }

    /// A host as `Display` writes it, its bytes read once: only `[a-z0-9.-]`;
    /// digits and dots alone are an IPv4 literal as `Ipv4Addr` writes it,
    /// anything else a name that passes [`dns_name`].
    fn canonical_host(host: &str) -> Option<CanonicalHost<'_>> {
        let mut numeric = true;
        for &b in host.as_bytes() {
            match b {
                b'0'..=b'9' | b'.' => {}
                b'a'..=b'z' | b'-' => numeric = false,
                _ => return None,
            }
        }
        if numeric {
            ipv4_as_written(host).map(CanonicalHost::V4)
        } else {
            dns_name(host).ok()?;
            Some(CanonicalHost::Dns(host))
        }
    }

    /// Four dot-separated decimal octets of at most 255, none with a leading
    /// zero: what `Ipv4Addr`'s parser accepts and its `Display` writes, for
    /// text already known to hold only digits and dots.
    fn ipv4_as_written(text: &str) -> Option<std::net::Ipv4Addr> {
        let mut octets = [0u8; 4];
        let mut at = 0;
        let mut value: u16 = 0;
        let mut digits = 0;
        for &b in text.as_bytes() {
            if b == b'.' {
                if digits == 0 || at == 3 {
                    return None;
                }
                octets[at] = u8::try_from(value).ok()?;
                at += 1;
                value = 0;
                digits = 0;
            } else {
                if digits > 0 && value == 0 {
                    return None;
                }
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
        }
        if digits == 0 || at != 3 {
            return None;
        }
        octets[3] = u8::try_from(value).ok()?;
        Some(std::net::Ipv4Addr::from(octets))
    }

    /// A port as `Display` writes it: [`port_number`]'s rule, without a
    /// leading zero.
    fn canonical_port(text: &str) -> Option<u16> {
        if text.starts_with('0') {
            return None;
        }
        port_number(text).ok()
    }

    /// The schemes a NATS URL may have: `nats` and `tls`, and for an
    /// endpoint (`websocket`) also `ws` and `wss`.
    fn schemes(websocket: bool) -> impl Iterator<Item = NatsScheme> {
        [
            NatsScheme::Nats,
            NatsScheme::Tls,
            NatsScheme::Ws,
            NatsScheme::Wss,
        ]
        .into_iter()
        .filter(move |s| websocket || matches!(s, NatsScheme::Nats | NatsScheme::Tls))
    }

    /// The NATS URL rule, for any text (see [`nats_url`]).
    pub(super) fn url_in_full(raw: &str, websocket: bool) -> Result<NatsUrl, Reason> {
        if raw.len() > NatsUrl::MAX_LEN {
            return Err("must be at most 300 characters");
        }
        // For ASCII, a byte test says the same as the character test (U+000B,
        // whitespace to `char` but not to `u8`, is a control character).
        let spaced = if raw.is_ascii() {
            raw.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        } else {
            raw.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if spaced {
            return Err("must not contain whitespace or control characters");
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(if websocket {
                "must be a URL like tls://hub.example.com:7422 or wss://hub.example.com:443"
            } else {
                "must be a URL like nats://10.0.1.50:4222 or tls://nats.example.com:4222"
            });
        };
        let scheme = schemes(websocket)
            .find(|s| s.as_str().eq_ignore_ascii_case(scheme))
            .ok_or(if websocket {
                "scheme must be nats://, tls://, ws:// or wss://"
            } else {
                "scheme must be nats:// or tls://"
            })?;
        let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err("must not contain credentials");
        }
        if !(tail.is_empty() || tail == "/") {
            return Err("must not have a path, query or fragment");
        }
        if authority.is_empty() {
            return Err("must name a host");
        }
        let (host, port) = host_and_port(authority)?;
        Ok(NatsUrl {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// `host[:port]`, IPv6 in brackets.
    pub(crate) fn host_and_port(raw: &str) -> Result<(Host, Option<u16>), Reason> {
        let (host, port) = if raw.starts_with('[') {
            let Some(end) = raw.find(']') else {
                return Err("an IPv6 address needs its closing ']'");
            };
            let (host, rest) = raw.split_at(end + 1);
            if rest.is_empty() {
                (host, None)
            } else {
                let port = rest
                    .strip_prefix(':')
                    .ok_or("unexpected text after the IPv6 address")?;
                (host, Some(port))
            }
        } else {
            match raw.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("an IPv6 address must be written in brackets");
                }
                Some((host, port)) => (host, Some(port)),
                None => (raw, None),
            }
        };
        let host = self::host(host).map_err(|reason| match reason {
            EMPTY => "must name a host",
            NOT_A_HOST => "the host must be a DNS name or an IP address",
            other => other,
        })?;
        Ok((host, port.map(port_number).transpose()?))
    }

    /// A port: 1–5 decimal digits, 1–65535 (no sign, no spaces).
    fn port_number(text: &str) -> Result<u16, Reason> {
        const BAD: Reason = "the port must be a number from 1 to 65535";
        if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD);
        }
        match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(BAD),
            Ok(port) => Ok(port),
        }
    }
}

/// The host of a [`WebhookUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookHost {
    /// An IP literal (any notation the URL standard reads: `2130706433`,
    /// `[::ffff:127.0.0.1]`, ... are all IP literals here).
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
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

    /// The URL's host, as the URL standard parses it.
    pub fn host(&self) -> WebhookHost {
        match url::Url::parse(&self.0)
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()))
        {
            Some(url::Host::Ipv4(ip)) => WebhookHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => WebhookHost::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => WebhookHost::Name(name),
            None => WebhookHost::Name(String::new()),
        }
    }
}

/// Where people and edge boxes reach one of the platform's services: the
/// control plane's `--public-url` (written into enrollment tokens) and the
/// agent gateway's `--gateway-url` (written into bundles). `http`/`https`,
/// a host ([`rule::host`]), an optional port; no credentials, path, query or
/// fragment, since paths are appended to it. Held as `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BaseUrl(String);
string_newtype!(BaseUrl);

impl BaseUrl {
    /// Parses a base URL (a trailing `/` is dropped).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| FieldError::new("url", m);
        let raw = raw.trim();
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(err("must be a URL like https://edge.example.com"));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(err("must be http:// or https://"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(err(
                "must not have a path, query or fragment (the service answers at the root)",
            ));
        }
        if rest.contains('@') {
            return Err(err("must not contain credentials"));
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("must not contain whitespace or control characters"));
        }
        let (host, port) = rule::host_and_port(rest).map_err(err)?;
        Ok(Self(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    /// Whether this is `https://`.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// Whether this is plain `http://` to a loopback host (`localhost`,
    /// `127.0.0.0/8`, `::1`): the one case where a browser sends a cookie
    /// without TLS that the platform accepts by default.
    pub fn is_plain_http_to_loopback(&self) -> bool {
        let Some(authority) = self.0.strip_prefix("http://") else {
            return false;
        };
        match rule::host_and_port(authority) {
            Ok((Host::Dns(name), _)) => name == "localhost",
            Ok((Host::Ip(ip), _)) => ip.is_loopback(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-wise checks for ASCII text must refuse exactly what the
    /// character rules refuse, for every ASCII character.
    #[test]
    fn the_ascii_fast_paths_refuse_exactly_what_the_character_rules_refuse() {
        const SPACED: rule::Reason = "must not contain whitespace or control characters";
        for b in 0u8..=127 {
            let c = char::from(b);
            let name = format!("a{c}b");
            assert_eq!(
                rule::display_text(&name).is_err(),
                c.is_control(),
                "{b:#04x}"
            );
            let url = format!("nats://h{c}x:4222");
            let refused = rule::nats_url(&url).err() == Some(SPACED);
            assert_eq!(refused, c.is_whitespace() || c.is_control(), "{b:#04x}");
        }
        let long = "x".repeat(DisplayName::MAX_LEN + 1);
        assert!(rule::display_name(&long).is_err());
        let wide = "é".repeat(DisplayName::MAX_LEN);
        assert_eq!(rule::display_name(&wide), Ok(wide.as_str()));
    }

    /// The one-pass path for stored URLs must never accept what the full
    /// rule refuses, nor read anything differently: for every input it
    /// accepts, the full rule gives the same URL. It must also take every
    /// URL the full rule writes back (else it saves nothing).
    #[test]
    fn the_canonical_url_path_accepts_only_what_the_full_rule_accepts_alike() {
        let (label63, label64) = ("a".repeat(63), "a".repeat(64));
        let too_long = format!("{}.b", "a".repeat(250));
        let hosts: Vec<&str> = vec![
            "10.0.1.50",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "nats.example.com",
            "a",
            "a-b.c",
            "-a.com",
            "a-.com",
            "a..b",
            ".a",
            "a.",
            "example.123",
            "123",
            "x1.y2",
            "UPPER.example.com",
            &label63,
            &label64,
            &too_long,
            "[::1]",
            "::1",
            "h_x",
            "h@x",
            "",
        ];
        let ports = [
            "4222", "1", "65535", "65536", "0", "04222", "", "123456", "42a",
        ];
        let mut inputs = Vec::new();
        for scheme in ["nats", "tls", "ws", "wss", "NATS", "Tls", "http", ""] {
            for &host in &hosts {
                for port in ports {
                    inputs.push(format!("{scheme}://{host}:{port}"));
                }
                inputs.push(format!("{scheme}://{host}"));
                inputs.push(format!("{scheme}://{host}:4222/"));
                inputs.push(format!("{scheme}://u@{host}:4222"));
                inputs.push(format!("{scheme}:/{host}:4222"));
            }
        }
        inputs.push(format!("tls://{}:4222", "a".repeat(300)));
        let mut taken = 0;
        for raw in &inputs {
            for websocket in [false, true] {
                let full = rule::url_in_full(raw, websocket);
                if let Some(fast) = rule::canonical_url(raw, websocket) {
                    taken += 1;
                    assert_eq!(Ok(&fast), full.as_ref(), "{raw} (websocket {websocket})");
                    // ... and is the text `Display` writes, so a list may
                    // show the stored text as it is (`NatsUrl::written_text`).
                    assert_eq!(&fast.to_string(), raw, "{raw} is not as written");
                }
                if !websocket {
                    assert_eq!(
                        rule::is_written_url(raw),
                        rule::canonical_url(raw, false).is_some(),
                        "{raw}"
                    );
                    // The list's text is the full rule's value, written.
                    assert_eq!(
                        NatsUrl::written_text(raw).ok().map(|t| t.into_owned()),
                        full.as_ref().ok().map(ToString::to_string),
                        "{raw}"
                    );
                }
                // Whatever the full rule accepts, written back, is taken
                // by the one-pass path as the same value (IPv6 hosts, rare
                // for sites, always take the full rule).
                if let Ok(url) = full
                    && !matches!(url.host(), Host::Ip(IpAddr::V6(_)))
                {
                    let text = url.to_string();
                    assert_eq!(
                        rule::canonical_url(&text, websocket).as_ref(),
                        Some(&url),
                        "{text} (from {raw})"
                    );
                }
            }
        }
        assert!(taken > 100, "only {taken} inputs took the one-pass path");
    }

    proptest! {
        #[test]
        fn the_canonical_url_path_agrees_with_the_full_rule_on_any_text(
            raw in "(nats|tls|ws|wss|NATS)://[a-z0-9.:@/\\[\\]-]{0,40}",
            websocket in any::<bool>(),
        ) {
            if let Some(fast) = rule::canonical_url(&raw, websocket) {
                prop_assert_eq!(&fast.to_string(), &raw);
                prop_assert_eq!(Ok(fast), rule::url_in_full(&raw, websocket));
            }
        }

        /// The one-pass path reads an IPv4 host itself (one pass over the
        /// host, not `Ipv4Addr`'s parser): it takes exactly the hosts
        /// `Ipv4Addr` takes, as the same address, and refuses the rest
        /// (leading zeros, octets over 255, too few or many octets).
        #[test]
        fn the_canonical_url_path_reads_ipv4_hosts_as_std_does(
            octets in prop::collection::vec(
                "|0|[1-9]|[1-9][0-9]|1[0-9]{2}|2[0-5][0-9]|0[0-9]{1,2}|[3-9][0-9]{2}|[0-9]{4}",
                3..=5,
            ),
            port in 1u16..,
        ) {
            let host = octets.join(".");
            let raw = format!("tls://{host}:{port}");
            let std = host.parse::<std::net::Ipv4Addr>().ok();
            let fast = rule::canonical_url(&raw, false).map(|url| url.host().clone());
            prop_assert_eq!(fast, std.map(|ip| Host::Ip(IpAddr::V4(ip))));
        }
    }

    /// IPv4 hosts are written without `Ipv4Addr`'s `Display`; the text
    /// must be the same, at every digit count of an octet.
    #[test]
    fn ipv4_hosts_are_written_as_std_writes_them() {
        for octets in [
            [0, 9, 10, 99],
            [100, 199, 200, 255],
            [127, 0, 0, 1],
            [255; 4],
        ] {
            let ip = std::net::Ipv4Addr::from(octets);
            assert_eq!(Host::Ip(IpAddr::V4(ip)).to_string(), ip.to_string());
        }
    }

    /// URLs are written piece by piece; the text must be what `write!`
    /// wrote, at every digit count of a port.
    #[test]
    fn nats_urls_are_written_as_format_writes_them() {
        for port in [1, 9, 10, 99, 100, 999, 1000, 4222, 9999, 10000, 65535] {
            for raw in [
                format!("tls://10.0.1.50:{port}"),
                format!("nats://nats.example.com:{port}"),
                format!("nats://[2001:db8::1]:{port}"),
            ] {
                let url = NatsUrl::parse(&raw).expect(&raw);
                let expected = format!("{}://{}:{}", url.scheme().as_str(), url.host(), url.port());
                assert_eq!(url.to_string(), expected);
                assert_eq!(url.to_string(), raw);
            }
        }
    }

    #[test]
    fn base_urls_are_validated_and_know_plain_loopback() {
        let ok = |raw: &str| BaseUrl::parse(raw).expect(raw);
        assert_eq!(
            ok("https://Edge.Example.com/").as_str(),
            "https://edge.example.com"
        );
        assert_eq!(
            ok("HTTP://127.0.0.1:8080").as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(ok("http://[::1]:8080").as_str(), "http://[::1]:8080");
        assert!(ok("http://localhost:8080").is_plain_http_to_loopback());
        assert!(ok("http://127.0.0.2").is_plain_http_to_loopback());
        assert!(ok("http://[::1]:9").is_plain_http_to_loopback());
        assert!(!ok("https://localhost").is_plain_http_to_loopback());
        assert!(!ok("http://edge.example.com:8080").is_plain_http_to_loopback());
        assert!(!ok("http://10.0.0.1").is_plain_http_to_loopback());
        assert!(ok("https://hub.example.com:50051").is_https());
        for bad in [
            "",
            "edge.example.com",
            "ftp://edge.example.com",
            "https://",
            "https://edge.example.com/ui",
            "https://edge.example.com?x=1",
            "https://user:pw@edge.example.com",
            "https://bad host",
            "https://edge.example.com:0",
            "https://edge.example.com:99999",
            "https://::1:8080",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

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
    fn display_names_reject_bidi_overrides_and_isolates() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            let err = DisplayName::parse(&format!("NYC{c}Office")).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(err.message.contains("bidirectional"), "{c:?}: {err}");
        }
        // Right-to-left text itself is fine; only the invisible controls are not.
        assert!(DisplayName::parse("מרכז נתונים").is_ok());
        assert!(TokenName::parse("ci\u{202E}txt").is_err());
    }

    /// The verdicts the bundle's own display-text check gave before it called
    /// this rule.
    #[test]
    fn display_names_keep_the_bundle_verdicts() {
        for ok in [
            "NYC Office",
            r#"O'Brien "HQ" $(x) `y` ${HOME} \"#,
            "Zürich Büro",
        ] {
            assert!(rule::display_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "  ", "a\nb", "a\rb", "a\0b", "a\tb", "a\u{202E}b"] {
            assert!(rule::display_name(bad).is_err(), "{bad:?}");
        }
        assert!(rule::display_name(&"x".repeat(201)).is_err());
        assert!(rule::display_name(&"x".repeat(101)).is_err());
        // The character rule alone has no length bound (the bundle sets its own).
        assert!(rule::display_text(&"x".repeat(201)).is_ok());
        assert!(rule::display_text("a\u{2067}b").is_err());
        assert_eq!(rule::display_name(" a ").unwrap(), "a");
    }

    /// The verdicts of the slug checks that `bundle`, `natsconf` and `pki`
    /// had before they called this rule.
    #[test]
    fn slugs_keep_the_renderers_verdicts() {
        for ok in [
            "a",
            "nyc-office",
            "factory-3",
            "0",
            "nyc-office-2",
            &"a".repeat(63),
        ] {
            assert!(rule::slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a b",
            "a'b",
            "$(x)",
            "a/b",
            "..",
            "a\"",
            "${x}",
            "ä",
            "a,o=x",
            &"a".repeat(64),
        ] {
            assert!(rule::slug(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nats_urls_keep_the_bundle_verdicts() {
        for ok in [
            "nats://10.0.1.50:4222",
            "tls://nats.serviceradar.cloud:7422",
            "nats://leaf.local",
            "nats://[::1]:4222",
            "nats://[fd00::5]",
        ] {
            assert!(NatsUrl::parse(ok).is_ok(), "{ok}");
            assert!(NatsUrl::parse_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "10.0.1.50:4222",
            "http://x:1",
            "nats://",
            "nats://x:0",
            "nats://x:65536",
            "nats://x:",
            "nats://user:pw@x:4222",
            "nats://x:4222/path",
            "nats://x y:4222",
            "nats://$(touch /tmp/p):4222",
            "nats://x';rm -rf /;':1",
            "nats://[::1",
            "nats://[::1]x",
            "nats://-x:1",
            "nats://10.0.1.50:4222';id;'",
            "nats://10.0.1.50:4222\nExecStartPre=/bin/id",
            "nats://`id`:4222",
        ] {
            assert!(NatsUrl::parse(bad).is_err(), "{bad:?}");
            assert!(NatsUrl::parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_port_is_refused() {
        let err = NatsUrl::parse("nats://x:").unwrap_err();
        assert!(err.message.contains("port"), "{err}");
        assert!(NatsUrl::parse("nats://[::1]:").is_err());
        assert!(ListenAddr::parse("x:").is_err());
    }

    #[test]
    fn websocket_urls_only_through_the_endpoint_entry_point() {
        let wss = NatsUrl::parse_endpoint("wss://hub.example.com:443").unwrap();
        assert_eq!(wss.scheme(), NatsScheme::Wss);
        assert_eq!(wss.to_string(), "wss://hub.example.com:443");
        assert_eq!(
            NatsUrl::parse_endpoint("wss://Hub.Example.com")
                .unwrap()
                .to_string(),
            "wss://hub.example.com:443"
        );
        assert_eq!(
            NatsUrl::parse_endpoint("ws://10.0.0.1")
                .unwrap()
                .to_string(),
            "ws://10.0.0.1:80"
        );
        for user_input in ["wss://hub.example.com:443", "ws://10.0.0.1:8080"] {
            let err = NatsUrl::parse(user_input).unwrap_err();
            assert_eq!(err.field, "nats_leaf_url");
            assert!(err.message.contains("nats:// or tls://"), "{err}");
        }
        for bad in [
            "https://hub:443",
            "wss://user@hub:443",
            "wss://hub:443/path",
        ] {
            assert!(NatsUrl::parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    /// The URL verdicts of `natsconf` (its leaf remote additionally needs an
    /// explicit port, which it checks itself).
    #[test]
    fn nats_urls_keep_the_natsconf_verdicts() {
        let url = NatsUrl::parse("tls://hub.example.com:7422").unwrap();
        assert_eq!(url.scheme(), NatsScheme::Tls);
        assert_eq!(url.to_string(), "tls://hub.example.com:7422");
        assert_eq!(
            NatsUrl::parse("nats://[::1]:7422/").unwrap().to_string(),
            "nats://[::1]:7422"
        );
        for bad in [
            "hub:7422",
            "https://hub:7422",
            "tls://user:pw@hub:7422",
            "tls://hub:7422/path",
            "tls://hub:7422?x=1",
            "tls://hub:7422\"",
            "tls://hub:7422\ninclude /etc/passwd",
            "tls://${HUB}:7422",
            "tls://hub}:7422",
            "nats://1.2.3:4222",
            "nats://10.0.0.256:4222",
            "nats://::1:4222",
            "nats://[10.0.0.1]:4222",
        ] {
            assert!(NatsUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Host verdicts of `natsconf` and `pki` (which trims before asking).
    #[test]
    fn hosts_keep_the_renderers_verdicts() {
        assert_eq!(
            Host::parse("Hub.Example.com").unwrap(),
            Host::Dns("hub.example.com".into())
        );
        assert_eq!(
            Host::parse("localhost").unwrap(),
            Host::Dns("localhost".into())
        );
        for ip in ["127.0.0.1", "10.0.0.5", "::1", "[::1]", "[fd00::1]"] {
            assert!(matches!(Host::parse(ip).unwrap(), Host::Ip(_)), "{ip}");
        }
        assert_eq!(Host::parse("[fd00::1]").unwrap().to_bare(), "fd00::1");
        assert_eq!(Host::parse("fd00::1").unwrap().to_string(), "[fd00::1]");
        for bad in [
            "",
            " ",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "1.2.3.999",
            "1.2.3",
            "10.0.0.256",
            "a b",
            "exa mple.com",
            "a\"b",
            "${H}",
            "x}",
            "*.example.com",
            "example.com.",
            "nats://host:4222",
            "host:4222",
            "[example.com]",
            "[10.0.0.1]",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_names_are_lowercase_ldh() {
        assert!(rule::dns_name("serviceradar.io").is_ok());
        assert!(rule::dns_name("corp.internal").is_ok());
        for bad in [
            "",
            "Serviceradar.io",
            "spiffe://x",
            "a/b",
            "x:443",
            "a..b",
            "10.0.0.1",
        ] {
            assert!(rule::dns_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Listen-address verdicts of `natsconf`'s former `HostPort`.
    #[test]
    fn listen_addresses_keep_the_natsconf_verdicts() {
        assert_eq!(ListenAddr::parse("leaf.local:1").unwrap().port(), 1);
        for bad in [
            "0.0.0.0:0",
            "0.0.0.0:65536",
            ":::4222",
            "::1:4222",
            "h:+1",
            "h:42 22",
            "[::1:4222",
            "[::1]4222",
        ] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad:?} accepted");
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
            let _ = NatsUrl::parse_endpoint(&s);
            let _ = rule::dns_name(&s);
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

        /// The renderers print the text they were given, not the canonical
        /// form, so an accepted endpoint's own text must be safe too.
        #[test]
        fn accepted_endpoint_text_is_safe(s in "(nats|tls|ws|wss|NATS)://[a-zA-Z0-9.:\\[\\]/@?#$' -]{0,40}") {
            if let Ok(url) = NatsUrl::parse_endpoint(&s) {
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || ":/.-[]".contains(c)), "{}", s);
                prop_assert_eq!(NatsUrl::parse_endpoint(&url.to_string()).unwrap(), url);
            }
        }

        #[test]
        fn accepted_display_names_have_no_bidi_controls(s in "\\PC{0,120}") {
            if let Ok(name) = DisplayName::parse(&s) {
                prop_assert!(!name.as_str().chars().any(rule::is_bidi_control));
            }
        }
    }
}
