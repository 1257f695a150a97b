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
//!
//! Slugs, hosts, listen addresses and NATS URLs are checked with the domain's rules
//! ([`serviceradar_domain::validate::rule`]), the same functions the API parses
//! requests with; paths, server names, subjects and JetStream domains are this
//! crate's own, since only configs have them.

use std::fmt;

use serviceradar_domain::validate::{ListenAddr, NatsUrl, rule};

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

/// A tenant or site slug by the domain's rule ([`rule::slug`]): `[a-z0-9-]`, 1 to
/// 63 characters, no leading or trailing `-`.
///
/// Slugs end up in server names, JetStream domains and subjects, so they are held to
/// the alphabet that is valid in all three.
pub fn validate_slug(field: &'static str, value: &str) -> Result<(), ConfigError> {
    rule::slug(value).map_err(|reason| ConfigError::invalid(field, value, reason))
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

/// A listen address by the domain's rule ([`rule::listen_addr`]): `host:port`, IPv6
/// in brackets.
pub(crate) fn listen_addr(field: &'static str, value: &str) -> Result<ListenAddr, ConfigError> {
    rule::listen_addr(value).map_err(|reason| ConfigError::invalid(field, value, reason))
}

/// The checks every `cluster { }` block shares, a hub's or a site leaf's:
/// its listen address and TLS paths, at least `min_nodes` routes (else
/// `too_few`), this node one of them, every route a NATS URL with its
/// port, and one pinned certificate per node (SHA-256 of its public key,
/// lowercase hex): the nodes' certificates chain to a CA that also issues
/// other certificates (the tenant CA for a site's leaf, the platform root
/// for the hub), so a route peer is admitted by its pinned key, not by its
/// chain alone. Returns the parsed listen address and routes.
pub(crate) fn cluster_routes(
    listen: &str,
    tls: &crate::tls::TlsFiles,
    routes: &[String],
    pinned_certs: &[String],
    node: usize,
    min_nodes: usize,
    too_few: &'static str,
) -> Result<(ListenAddr, Vec<NatsUrl>), ConfigError> {
    let listen = listen_addr("cluster listen", listen)?;
    tls.validate("cluster tls path")?;
    if routes.len() < min_nodes {
        return Err(ConfigError::Inconsistent(too_few.into()));
    }
    if node >= routes.len() {
        return Err(ConfigError::Inconsistent(
            "the node index is not one of the cluster's routes".into(),
        ));
    }
    let routes = routes
        .iter()
        .map(|r| hub_url("cluster route", r))
        .collect::<Result<Vec<_>, _>>()?;
    if pinned_certs.len() != routes.len() {
        return Err(ConfigError::Inconsistent(
            "a cluster pins one certificate per node".into(),
        ));
    }
    for pin in pinned_certs {
        let hex = pin.len() == 64 && pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex {
            return Err(ConfigError::invalid(
                "pinned certificate",
                pin,
                "must be a SHA-256 in lowercase hex",
            ));
        }
    }
    Ok((listen, routes))
}

/// The hub URL of a leaf's remote: the domain's NATS URL rule ([`rule::nats_url`]:
/// `tls://` or `nats://`, a DNS name or IP literal, no user info, path, query or
/// fragment), and, for the rendered config, an explicit port: the hub's leafnode
/// port is not the client port a URL without one would mean.
pub(crate) fn hub_url(field: &'static str, value: &str) -> Result<NatsUrl, ConfigError> {
    let url = rule::nats_url(value).map_err(|reason| ConfigError::invalid(field, value, reason))?;
    let authority = value.strip_suffix('/').unwrap_or(value);
    if !authority.ends_with(&format!(":{}", url.port())) {
        return Err(ConfigError::invalid(
            field,
            value,
            "must name its port (scheme://host:port)",
        ));
    }
    Ok(url)
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

    /// `include "file"`: the file's text is read in place by nats-server
    /// (a relative path is relative to the including file).
    pub(crate) fn include(&mut self, file: &str) {
        self.indent();
        self.out.push_str("include ");
        self.out.push_str(&quote(file));
        self.out.push('\n');
    }

    /// A quoted string as an element of a list.
    pub(crate) fn line_string(&mut self, value: &str) {
        self.indent();
        self.out.push_str(&quote(value));
        self.out.push('\n');
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

    /// A quoted string as an element of the list opened last.
    pub(crate) fn list_string(&mut self, value: &str) {
        self.indent();
        self.out.push_str(&quote(value));
        self.out.push('\n');
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
    use serviceradar_domain::validate::Host;

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

    /// The rule is the domain's (`rule::slug`, whose tests hold the
    /// verdicts); here the refusal is a config error naming the field.
    #[test]
    fn slugs() {
        validate_slug("s", "nyc-office-2").unwrap();
        for bad in ["", "A", "a\"", "${x}", &"a".repeat(64)] {
            assert!(
                matches!(
                    validate_slug("tenant", bad),
                    Err(ConfigError::Invalid {
                        field: "tenant",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
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
        let parse = |v| listen_addr("address", v);
        assert_eq!(parse("0.0.0.0:4222").unwrap().to_string(), "0.0.0.0:4222");
        assert_eq!(parse("[::]:4222").unwrap().to_string(), "[::]:4222");
        assert_eq!(parse("leaf.local:1").unwrap().port(), 1);
        for bad in [
            "0.0.0.0",
            "0.0.0.0:0",
            "0.0.0.0:65536",
            ":::4222",
            "h:+1",
            "h:42 22",
            "[::1:4222",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// The URL rule is the domain's (`NatsUrl`, whose tests hold the
    /// verdicts); the hub URL also needs an explicit port, and a refusal is
    /// a config error naming the field.
    #[test]
    fn urls() {
        let parse = |v| hub_url("url", v);
        assert_eq!(
            parse("nats://[::1]:7422/").unwrap().to_string(),
            "nats://[::1]:7422"
        );
        for bad in [
            "tls://hub",
            "https://hub:7422",
            "tls://hub:7422\ninclude /etc/passwd",
            "tls://${HUB}:7422",
        ] {
            assert!(
                matches!(parse(bad), Err(ConfigError::Invalid { field: "url", .. })),
                "{bad:?} accepted"
            );
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
