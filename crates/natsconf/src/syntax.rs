//! Validated building blocks of nats-server configuration text.
//!
//! Why this module exists: leaf and hub configs are rendered from values that come
//! from the database and, further back, from tenant admins (slugs, host names). The
//! nats-server config language has variables (`$X`), `include` directives, comments
//! (`#`, `//`), blocks and arrays; a value that smuggles a quote, a newline or a brace
//! into the file could change what the server parses. So every value is first
//! *validated* against the narrow alphabet it has any business using (a path has no
//! use for `$`, a slug none for `"`), and is then written as a double-quoted, escaped
//! string anyway (defence in depth). Keys are static text of this crate, except
//! account public keys, which are validated nkeys.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// Why a config could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An input value is not acceptable for the field it was given for. The value is
    /// shown escaped (`{:?}`), so a newline in it cannot forge log lines.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Which input field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A JWT input does not decode, is not signed correctly or has the wrong type.
    #[error("invalid {field}: {source}")]
    Jwt {
        /// Which input field.
        field: &'static str,
        /// What the decoder found.
        #[source]
        source: crate::jwt::JwtError,
    },
    /// The inputs are individually valid but do not fit together.
    #[error("inconsistent input: {0}")]
    Inconsistent(String),
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, value: &str, reason: &'static str) -> Self {
        Self::Invalid {
            field,
            value: value.to_owned(),
            reason,
        }
    }
}

/// Writes `value` as a double-quoted nats-server config string.
///
/// Inside double quotes the config lexer does not expand `$variables` and ignores
/// `#`/`include`/braces; only `\` and `"` are special. Both are escaped here, and
/// control characters become `\xNN` (or `\n`, `\r`, `\t`). Validated inputs never
/// contain any of these, so this is the second line of defence.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A tenant or site slug: `[a-z0-9-]`, 1 to 63 characters, no leading or trailing `-`.
///
/// Slugs end up in server names, JetStream domains and subjects, so they are held to
/// the alphabet that is valid in all three.
pub fn validate_slug(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 63 {
        return Err(ConfigError::invalid(
            field,
            value,
            "must be 1 to 63 characters",
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ConfigError::invalid(
            field,
            value,
            "may only contain a-z, 0-9 and '-'",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(ConfigError::invalid(
            field,
            value,
            "must not start or end with '-'",
        ));
    }
    Ok(())
}

/// A server name: `[A-Za-z0-9._-]`, 1 to 255 characters.
pub(crate) fn validate_server_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 255 {
        return Err(ConfigError::invalid(
            field,
            value,
            "must be 1 to 255 characters",
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ConfigError::invalid(
            field,
            value,
            "may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// A filesystem path written into a config: `[A-Za-z0-9._/+@=,-]`, no `..` component,
/// at most 1024 bytes.
///
/// Paths are chosen by the control plane (never by a request field), but they are
/// validated all the same: there is no reason for a path in a generated config to
/// contain a space, a quote, `$`, `#`, `;`, braces or a newline.
pub(crate) fn validate_path(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 1024 {
        return Err(ConfigError::invalid(
            field,
            value,
            "must be 1 to 1024 bytes",
        ));
    }
    if !value.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'_' | b'/' | b'+' | b'@' | b'=' | b',' | b'-')
    }) {
        return Err(ConfigError::invalid(
            field,
            value,
            "may only contain A-Z, a-z, 0-9 and . _ / + @ = , -",
        ));
    }
    if value.split('/').any(|part| part == "..") {
        return Err(ConfigError::invalid(
            field,
            value,
            "must not contain a '..' component",
        ));
    }
    Ok(())
}

/// A subject token (one dot-free element of a NATS subject) or a subject pattern
/// used in permissions: printable ASCII without whitespace.
pub(crate) fn validate_subject(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 512 {
        return Err(ConfigError::invalid(field, value, "must be 1 to 512 bytes"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(
            field,
            value,
            "must be printable ASCII without whitespace",
        ));
    }
    if value.starts_with('.') || value.ends_with('.') || value.contains("..") {
        return Err(ConfigError::invalid(field, value, "has an empty token"));
    }
    Ok(())
}

/// A host: a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name (letters, digits, '-' per label; labels of 1 to 63 characters).
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl Host {
    /// Parses a host name or an IP literal (IPv6 with or without brackets).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let unbracketed = value
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'));
        if let Some(inner) = unbracketed {
            return Ipv6Addr::from_str(inner)
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| ConfigError::invalid("host", value, "not an IPv6 address"));
        }
        if let Ok(ip) = IpAddr::from_str(value) {
            return Ok(Host::Ip(ip));
        }
        validate_dns_name(value)?;
        Ok(Host::Dns(value.to_ascii_lowercase()))
    }

    /// The host as written in a URL or `host:port` (IPv6 in brackets).
    pub fn to_url_host(&self) -> String {
        match self {
            Host::Dns(name) => name.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }

    /// The host as a bare value (IPv6 without brackets), for `host:` keys.
    pub fn to_bare(&self) -> String {
        match self {
            Host::Dns(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_url_host())
    }
}

fn validate_dns_name(value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 253 {
        return Err(ConfigError::invalid(
            "host",
            value,
            "must be 1 to 253 characters",
        ));
    }
    let mut last_label = "";
    for label in value.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(ConfigError::invalid(
                "host",
                value,
                "each DNS label must be 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::invalid(
                "host",
                value,
                "not a DNS name or IP address",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(ConfigError::invalid(
                "host",
                value,
                "a DNS label must not start or end with '-'",
            ));
        }
        last_label = label;
    }
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::invalid(
            "host",
            value,
            "looks like a malformed IP address",
        ));
    }
    Ok(())
}

fn parse_port(field: &'static str, whole: &str, port: &str) -> Result<u16, ConfigError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::invalid(field, whole, "port must be a number"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(ConfigError::invalid(
            field,
            whole,
            "port must be 1 to 65535",
        )),
        Ok(p) => Ok(p),
    }
}

/// A listen or connect address: `host:port` (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host part.
    pub host: Host,
    /// The port, 1 to 65535.
    pub port: u16,
}

impl HostPort {
    /// Builds an address from already parsed parts.
    pub fn new(host: Host, port: u16) -> Self {
        Self { host, port }
    }

    /// Parses `host:port` or `[v6]:port`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let (host, port) = split_host_port("address", value)?;
        Ok(Self {
            host: Host::parse(host)?,
            port: parse_port("address", value, port)?,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.to_url_host(), self.port)
    }
}

impl FromStr for HostPort {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn split_host_port<'a>(
    field: &'static str,
    value: &'a str,
) -> Result<(&'a str, &'a str), ConfigError> {
    if let Some(rest) = value.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(ConfigError::invalid(field, value, "unclosed '['"));
        };
        let host = &value[..end + 2];
        let Some(port) = rest[end + 1..].strip_prefix(':') else {
            return Err(ConfigError::invalid(field, value, "expected host:port"));
        };
        return Ok((host, port));
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host, port)),
        Some(_) => Err(ConfigError::invalid(
            field,
            value,
            "an IPv6 address must be written in brackets",
        )),
        None => Err(ConfigError::invalid(field, value, "expected host:port")),
    }
}

/// The scheme of a NATS URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsScheme {
    /// `tls://`: TLS from the first byte of the connection.
    Tls,
    /// `nats://`: plain, or TLS when the connection's TLS block asks for it.
    Nats,
}

/// A NATS URL of the strict form `tls://host:port` or `nats://host:port`: no user
/// info, no path, no query, an explicit port, a DNS name or IP literal as host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl {
    /// `tls` or `nats`.
    pub scheme: NatsScheme,
    /// Host and port.
    pub address: HostPort,
}

impl NatsUrl {
    /// Parses and validates a URL; see the type's documentation for what is accepted.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let (scheme, rest) = if let Some(rest) = value.strip_prefix("tls://") {
            (NatsScheme::Tls, rest)
        } else if let Some(rest) = value.strip_prefix("nats://") {
            (NatsScheme::Nats, rest)
        } else {
            return Err(ConfigError::invalid(
                "url",
                value,
                "must start with tls:// or nats://",
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['@', '/', '?', '#']) {
            return Err(ConfigError::invalid(
                "url",
                value,
                "must be scheme://host:port without user info, path, query or fragment",
            ));
        }
        let (host, port) = split_host_port("url", rest)?;
        Ok(Self {
            scheme,
            address: HostPort {
                host: Host::parse(host)?,
                port: parse_port("url", value, port)?,
            },
        })
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            NatsScheme::Tls => "tls",
            NatsScheme::Nats => "nats",
        };
        write!(f, "{scheme}://{}", self.address)
    }
}

impl FromStr for NatsUrl {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A JetStream domain name: `[A-Za-z0-9_-]`, 1 to 64 characters.
///
/// nats-server refuses domains containing `.`, `*`, `>` or whitespace (the domain is
/// a token of the `$JS.<domain>.API` subject); this is stricter still.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JetStreamDomain(String);

impl JetStreamDomain {
    /// Validates a domain name.
    pub fn new(value: &str) -> Result<Self, ConfigError> {
        if value.is_empty() || value.len() > 64 {
            return Err(ConfigError::invalid(
                "jetstream domain",
                value,
                "must be 1 to 64 characters",
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::invalid(
                "jetstream domain",
                value,
                "may only contain A-Z, a-z, 0-9, '_' and '-'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The domain of one edge site's leaf: `sr-{tenant_slug}-{site_slug}`.
    ///
    /// Unique per site within a tenant (site slugs are unique per tenant), which is
    /// the scope that matters: domains are addressed inside one hub account. Long
    /// slugs are shortened and suffixed with a hash of the full pair, so the result
    /// stays unique and within 64 characters.
    pub fn for_site(tenant_slug: &str, site_slug: &str) -> Result<Self, ConfigError> {
        validate_slug("tenant slug", tenant_slug)?;
        validate_slug("site slug", site_slug)?;
        let full = format!("sr-{tenant_slug}-{site_slug}");
        if full.len() <= 64 {
            return Self::new(&full);
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{tenant_slug}/{site_slug}").as_bytes());
        let suffix = hex::encode(&digest[..6]);
        let keep = 64 - suffix.len() - 1;
        let head = full[..keep].trim_end_matches('-');
        Self::new(&format!("{head}-{suffix}"))
    }

    /// The domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JetStreamDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds config text with consistent indentation. Keys are `&'static str` so that
/// only this crate's own text can appear in key position; every value is quoted or
/// is a number or boolean.
pub(crate) struct ConfWriter {
    out: String,
    depth: usize,
}

impl ConfWriter {
    pub(crate) fn new() -> Self {
        Self {
            out: String::new(),
            depth: 0,
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    /// A comment block; `text` is this crate's own text plus validated values and
    /// must not contain newlines other than as line separators.
    pub(crate) fn comment(&mut self, text: &str) {
        for line in text.lines() {
            self.indent();
            if line.is_empty() {
                self.out.push_str("#\n");
            } else {
                self.out.push_str("# ");
                // Comments end at a newline; `lines()` has removed them, and a
                // carriage return is dropped for good measure.
                self.out.push_str(&line.replace('\r', ""));
                self.out.push('\n');
            }
        }
    }

    pub(crate) fn blank(&mut self) {
        self.out.push('\n');
    }

    pub(crate) fn string(&mut self, key: &'static str, value: &str) {
        self.raw_key_string(key, value);
    }

    /// A string entry whose key is not static text; the caller has validated it.
    pub(crate) fn raw_key_string(&mut self, key: &str, value: &str) {
        self.indent();
        self.out.push_str(key);
        self.out.push_str(": ");
        self.out.push_str(&quote(value));
        self.out.push('\n');
    }

    pub(crate) fn int(&mut self, key: &'static str, value: impl Into<i128>) {
        self.indent();
        self.out.push_str(&format!("{key}: {}\n", value.into()));
    }

    pub(crate) fn bool(&mut self, key: &'static str, value: bool) {
        self.indent();
        self.out.push_str(&format!("{key}: {value}\n"));
    }

    pub(crate) fn open(&mut self, key: &'static str) {
        self.indent();
        self.out.push_str(key);
        self.out.push_str(" {\n");
        self.depth += 1;
    }

    pub(crate) fn open_list(&mut self, key: &'static str) {
        self.indent();
        self.out.push_str(key);
        self.out.push_str(" = [\n");
        self.depth += 1;
    }

    pub(crate) fn open_anon(&mut self) {
        self.indent();
        self.out.push_str("{\n");
        self.depth += 1;
    }

    pub(crate) fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("}\n");
    }

    pub(crate) fn close_list(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("]\n");
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_everything_special() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(quote("a\nb\r\t"), "\"a\\nb\\r\\t\"");
        assert_eq!(quote("\u{1}\u{7f}"), "\"\\x01\\x7f\"");
        // `$` and braces are inert inside double quotes; they pass through.
        assert_eq!(quote("${X}"), "\"${X}\"");
    }

    #[test]
    fn slugs() {
        validate_slug("s", "nyc-office-2").unwrap();
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a b",
            "a\"",
            "${x}",
            &"a".repeat(64),
        ] {
            assert!(validate_slug("s", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths() {
        validate_path("p", "/etc/serviceradar/nats/leaf.creds").unwrap();
        validate_path("p", "relative/dir_1/x-y.pem").unwrap();
        for bad in [
            "",
            "/etc/a b",
            "/etc/\"x",
            "/etc/x\n",
            "/etc/${X}",
            "$(rm -rf /)",
            "/etc/x}",
            "/etc/#x",
            "/etc/x;y",
            "/etc/../passwd",
            "..",
            "/etc/x\\y",
        ] {
            assert!(validate_path("p", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("Hub.Example.com").unwrap(),
            Host::Dns("hub.example.com".into())
        );
        assert!(matches!(Host::parse("127.0.0.1").unwrap(), Host::Ip(_)));
        assert!(matches!(Host::parse("::1").unwrap(), Host::Ip(_)));
        assert!(matches!(Host::parse("[::1]").unwrap(), Host::Ip(_)));
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "1.2.3.999",
            "a b",
            "a\"b",
            "${H}",
            "x}",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            HostPort::parse("0.0.0.0:4222").unwrap().to_string(),
            "0.0.0.0:4222"
        );
        assert_eq!(
            HostPort::parse("[::]:4222").unwrap().to_string(),
            "[::]:4222"
        );
        assert_eq!(HostPort::parse("leaf.local:1").unwrap().port, 1);
        for bad in [
            "0.0.0.0",
            "0.0.0.0:0",
            "0.0.0.0:65536",
            ":::4222",
            "h:+1",
            "h:42 22",
            "[::1:4222",
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls() {
        let url = NatsUrl::parse("tls://hub.example.com:7422").unwrap();
        assert_eq!(url.scheme, NatsScheme::Tls);
        assert_eq!(url.to_string(), "tls://hub.example.com:7422");
        assert_eq!(
            NatsUrl::parse("nats://[::1]:7422/").unwrap().to_string(),
            "nats://[::1]:7422"
        );
        for bad in [
            "hub:7422",
            "https://hub:7422",
            "tls://hub",
            "tls://user:pw@hub:7422",
            "tls://hub:7422/path",
            "tls://hub:7422?x=1",
            "tls://hub:7422\"",
            "tls://hub:7422\ninclude /etc/passwd",
            "tls://${HUB}:7422",
            "tls://hub}:7422",
        ] {
            assert!(NatsUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            JetStreamDomain::for_site("acme", "nyc").unwrap().as_str(),
            "sr-acme-nyc"
        );
        let long = JetStreamDomain::for_site(&"t".repeat(63), &"s".repeat(63)).unwrap();
        assert!(long.as_str().len() <= 64);
        let other = JetStreamDomain::for_site(&"t".repeat(63), &"s".repeat(62)).unwrap();
        assert_ne!(long, other);
        for bad in ["", "a.b", "a*", "a>", "a b", "a\"b"] {
            assert!(JetStreamDomain::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_messages_escape_values() {
        let err = validate_path("cert file", "/x\ninclude /etc/passwd").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("cert file"));
    }
}
