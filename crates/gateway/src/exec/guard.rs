//! The outbound address guard: which addresses the gateway may connect to.
//!
//! A contract names its service's base URL, and whoever may register a contract could point it
//! at the machine's neighbours: the cloud metadata endpoint (169.254.169.254), link-local
//! addresses, or, on a production network, internal services. The guard refuses, always:
//! link-local (169.254.0.0/16, fe80::/10, which holds every cloud's metadata address),
//! unspecified, multicast and broadcast addresses, and the IPv6 forms that embed them; and,
//! unless private addresses are allowed (development) or the address is in an allow-listed range:
//! loopback, RFC 1918 private ranges, carrier-grade NAT (100.64.0.0/10) and unique-local IPv6
//! (fc00::/7).
//!
//! It is applied to every address a host name resolves to, at connection time (so a name that
//! re-resolves to a forbidden address is caught), and to literal IP addresses before a request
//! is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range, `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or ADDR/PREFIX range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix must be 0–{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
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

/// Which outbound addresses are allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressGuard {
    /// Loopback and private ranges allowed (development mode).
    pub allow_private: bool,
    /// Ranges allowed even when private ones are not (never overrides the always-refused ones).
    pub allowlist: Vec<Cidr>,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Link-local, metadata, unspecified, multicast or broadcast: refused in every mode.
    Forbidden(&'static str),
    /// Loopback or a private range, outside the allowlist.
    Private(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Forbidden(what) => write!(f, "{what} addresses are never called"),
            Refusal::Private(what) => write!(
                f,
                "{what} addresses are not called in production unless allow-listed \
                 (gateway.allowed_private_ranges)"
            ),
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<Refusal> {
    let o = ip.octets();
    if ip.is_link_local() {
        return Some(Refusal::Forbidden("link-local (cloud metadata)"));
    }
    if ip.is_unspecified() || o[0] == 0 {
        return Some(Refusal::Forbidden("unspecified"));
    }
    if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        return Some(Refusal::Forbidden("multicast, broadcast or reserved"));
    }
    if ip.is_loopback() {
        return Some(Refusal::Private("loopback"));
    }
    if ip.is_private() {
        return Some(Refusal::Private("private (RFC 1918)"));
    }
    if o[0] == 100 && (o[1] & 0xc0) == 64 {
        return Some(Refusal::Private("carrier-grade NAT"));
    }
    None
}

fn v6_class(ip: Ipv6Addr) -> Option<Refusal> {
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d, deprecated) forms are judged
    // as the IPv4 address they carry.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let s = ip.segments();
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return v4_class(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if ip.is_unspecified() {
        return Some(Refusal::Forbidden("unspecified"));
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some(Refusal::Forbidden("link-local (cloud metadata)"));
    }
    if ip.is_multicast() {
        return Some(Refusal::Forbidden("multicast, broadcast or reserved"));
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return v4_class(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return v4_class(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if ip.is_loopback() {
        return Some(Refusal::Private("loopback"));
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some(Refusal::Private("unique-local (fc00::/7)"));
    }
    // The AWS metadata service's IPv6 address sits in fd00:ec2::/32, already unique-local.
    None
}

impl AddressGuard {
    /// A guard that allows private addresses (development) or not (production).
    pub fn new(allow_private: bool, allowlist: Vec<Cidr>) -> AddressGuard {
        AddressGuard {
            allow_private,
            allowlist,
        }
    }

    /// Checks one address.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let class = match ip {
            IpAddr::V4(v4) => v4_class(v4),
            IpAddr::V6(v6) => v6_class(v6),
        };
        match class {
            None => Ok(()),
            Some(r @ Refusal::Forbidden(_)) => Err(r),
            Some(r @ Refusal::Private(_)) => {
                if self.allow_private || self.allowlist.iter().any(|c| c.contains(ip)) {
                    Ok(())
                } else {
                    Err(r)
                }
            }
        }
    }

    /// Checks the host of a URL when it is a literal IP address (host names are checked when
    /// they resolve). `host` may carry IPv6 brackets.
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_refused_in_every_mode() {
        for guard in [
            AddressGuard::new(true, vec![]),
            AddressGuard::new(false, vec!["169.254.0.0/16".parse().unwrap()]),
        ] {
            for bad in [
                "169.254.169.254",
                "169.254.0.1",
                "fe80::1",
                "::ffff:169.254.169.254",
                "::169.254.169.254",
                "64:ff9b::a9fe:a9fe",
                "2002:a9fe:a9fe::1",
                "0.0.0.0",
                "::",
                "224.0.0.1",
                "255.255.255.255",
                "ff02::1",
            ] {
                assert!(
                    matches!(guard.check(ip(bad)), Err(Refusal::Forbidden(_))),
                    "{bad} passed"
                );
            }
        }
    }

    #[test]
    fn private_ranges_need_development_mode_or_the_allowlist() {
        let prod = AddressGuard::new(false, vec![]);
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00:ec2::254",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
        ] {
            assert!(
                matches!(prod.check(ip(private)), Err(Refusal::Private(_))),
                "{private} passed in production"
            );
            assert!(AddressGuard::new(true, vec![]).check(ip(private)).is_ok());
        }
        let listed = AddressGuard::new(false, vec!["10.1.0.0/16".parse().unwrap()]);
        assert!(listed.check(ip("10.1.200.3")).is_ok());
        assert!(listed.check(ip("10.2.0.1")).is_err());
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            assert!(prod.check(ip(public)).is_ok(), "{public} refused");
        }
    }

    #[test]
    fn literal_hosts_are_checked_and_names_are_left_to_resolution() {
        let prod = AddressGuard::new(false, vec![]);
        assert!(prod.check_host("[::1]").is_err());
        assert!(prod.check_host("169.254.169.254").is_err());
        assert!(prod.check_host("api.openai.com").is_ok());
    }

    #[test]
    fn ranges_parse_strictly() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("10.0.0.1".parse::<Cidr>().unwrap().contains(ip("10.0.0.1")));
        assert!(!"10.0.0.1".parse::<Cidr>().unwrap().contains(ip("10.0.0.2")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
        for bad in ["10.0.0.0/33", "fd00::/129", "ten/8", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
