//! Which network addresses the platform may connect to on a tenant's behalf.
//!
//! A tenant names URLs the control plane then calls (alert webhooks). Left
//! unchecked, that is a way into the operator's own network (SSRF): loopback,
//! the cloud metadata address, private ranges. [`is_public`] is the one rule
//! saying which addresses are fair game; an operator can allow named ranges
//! ([`IpRange`]) for self-hosted installs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Whether `ip` is a public unicast address: not loopback, unspecified,
/// link-local, private (RFC 1918), carrier-grade NAT (100.64/10), unique
/// local (fc00::/7), multicast, broadcast, documentation or reserved, in any
/// notation (an IPv4 address mapped into or compatible with IPv6 is judged
/// as the IPv4 address).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| ipv4_compatible(v6)) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn ipv4_compatible(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_unspecified() && !v6.is_loopback())
        .then(|| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (wraps IPv4)
}

/// What kind of non-public address `ip` is, in a few words for a refusal
/// (`"loopback"`, `"private (RFC 1918)"`, ...); `None` for a public one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    if is_public(ip) {
        return None;
    }
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().or_else(|| ipv4_compatible(v6)),
    };
    Some(match (v4, ip) {
        (Some(v4), _) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                "loopback"
            } else if v4.is_unspecified() || a == 0 {
                "unspecified (this network)"
            } else if v4.is_private() {
                "private (RFC 1918)"
            } else if v4.is_link_local() {
                "link-local (cloud metadata lives here)"
            } else if a == 100 && (64..128).contains(&b) {
                "carrier-grade NAT (100.64.0.0/10)"
            } else if v4.is_multicast() || v4.is_broadcast() {
                "multicast or broadcast"
            } else if v4.is_documentation() {
                "documentation"
            } else {
                "reserved"
            }
        }
        (None, IpAddr::V6(v6)) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                "loopback"
            } else if v6.is_unspecified() {
                "unspecified"
            } else if (first & 0xfe00) == 0xfc00 {
                "unique local (fc00::/7)"
            } else if (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0 {
                "link-local"
            } else if v6.is_multicast() {
                "multicast"
            } else {
                "reserved"
            }
        }
        (None, IpAddr::V4(_)) => "reserved",
    })
}

/// An address range in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or one
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` lies in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address range like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether the platform may connect to `ip`: public, or in an operator-allowed range.
pub fn may_connect(ip: IpAddr, allowed: &[IpRange]) -> bool {
    is_public(ip) || allowed.iter().any(|r| r.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_in_every_notation_are_not_public() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "fe80::1",
            "fd00::1",
            "fc00::5",
            "ff02::1",
            "64:ff9b::7f00:1",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(!is_public(ip), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public}");
        }
    }

    #[test]
    fn internal_addresses_say_what_they_are() {
        let kind = |s: &str| internal_kind(s.parse().unwrap());
        assert_eq!(kind("127.0.0.1"), Some("loopback"));
        assert_eq!(kind("::1"), Some("loopback"));
        assert_eq!(kind("::ffff:10.1.2.3"), Some("private (RFC 1918)"));
        assert_eq!(
            kind("169.254.169.254"),
            Some("link-local (cloud metadata lives here)")
        );
        assert_eq!(
            kind("100.64.0.1"),
            Some("carrier-grade NAT (100.64.0.0/10)")
        );
        assert_eq!(kind("fd00::1"), Some("unique local (fc00::/7)"));
        assert_eq!(kind("8.8.8.8"), None);
    }

    #[test]
    fn ranges_parse_and_contain() {
        let loopback: IpRange = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains("127.0.0.1".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!loopback.contains("128.0.0.1".parse().unwrap()));
        let one: IpRange = "fd00::5".parse().unwrap();
        assert!(one.contains("fd00::5".parse().unwrap()));
        assert!(!one.contains("fd00::6".parse().unwrap()));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("10.0.0.1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "x/8", "fd00::/129", "10.0.0.0/-1"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        assert!(may_connect(
            "10.0.0.1".parse().unwrap(),
            &["10.0.0.0/8".parse().unwrap()]
        ));
        assert!(!may_connect("10.0.0.1".parse().unwrap(), &[]));
    }
}
