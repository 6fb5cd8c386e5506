//! Which IP addresses no action may reach.
//!
//! An action runs on the operator's machine, inside the operator's network. Letting it reach
//! loopback, private ranges or the cloud metadata service (169.254.169.254) would turn a granted
//! public API into a door to everything behind the firewall, so every address that is not
//! globally routable is refused, both for IP-literal URLs and for the answers of the guarded DNS
//! resolver. IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
//! the embedded address, so `::ffff:127.0.0.1` is as blocked as `127.0.0.1`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 networks that are not globally reachable (IANA special-purpose registry and RFC 6890).
const V4_BLOCKED: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),          // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),         // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),      // shared address space (CGNAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),        // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),     // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),      // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),       // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),       // TEST-NET-1
    (Ipv4Addr::new(192, 88, 99, 0), 24),     // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16),     // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),      // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24),    // TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24),     // TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),        // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),        // reserved, includes 255.255.255.255
    (Ipv4Addr::new(255, 255, 255, 255), 32), // limited broadcast (inside 240/4, listed for clarity)
];

/// IPv6 networks refused as a whole, whatever follows the prefix.
const V6_BLOCKED: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128), // unspecified
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128), // loopback
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64), // dummy prefix (RFC 9780)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // Teredo, benchmarking, ORCHID, ...
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation (RFC 9637)
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // SRv6 SIDs
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// IPv6 networks whose last 32 bits are an IPv4 address that decides.
const V6_EMBEDDING_LAST_32: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96), // IPv4-translated (SIIT)
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96),      // IPv4-compatible (deprecated)
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64 well-known prefix
];

/// 6to4: the IPv4 address sits in bits 16..48.
const V6_6TO4: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

/// The only IPv6 block allocated for global unicast.
const V6_GLOBAL_UNICAST: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Whether an action must never connect to `ip` because it is not a global address.
///
/// Covers loopback, private, CGNAT, link-local (and so cloud metadata), documentation,
/// benchmarking, multicast, reserved and broadcast IPv4; for IPv6 the unspecified and loopback
/// addresses, unique-local, link- and site-local, multicast, documentation, discard, Teredo and
/// anything outside `2000::/3`, the only block IANA allocates for global unicast. IPv6 addresses
/// that embed IPv4 (`::ffff:a.b.c.d`, `::a.b.c.d`, `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`)
/// are judged by the embedded IPv4 address. Used for IP-literal URLs and by the guarded resolver.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

/// Whether `ip` is a loopback address: `127.0.0.0/8`, `::1` or IPv4-mapped `::ffff:127.x.x.x`.
///
/// Used to validate `--dev-loopback` entries, which may only open loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    V4_BLOCKED.iter().any(|&(net, len)| in_v4(ip, net, len))
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    if V6_BLOCKED.iter().any(|&(net, len)| in_v6(ip, net, len)) {
        return true;
    }
    let bits = ip.to_bits();
    if V6_EMBEDDING_LAST_32
        .iter()
        .any(|&(net, len)| in_v6(ip, net, len))
    {
        // Truncation keeps exactly the low 32 bits, which hold the embedded address.
        return is_blocked_v4(Ipv4Addr::from_bits(bits as u32));
    }
    if in_v6(ip, V6_6TO4.0, V6_6TO4.1) {
        return is_blocked_v4(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    !in_v6(ip, V6_GLOBAL_UNICAST.0, V6_GLOBAL_UNICAST.1)
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn non_global_ipv4_addresses_are_blocked() {
        let cases = [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.254",
            "255.255.255.255",
        ];
        for text in cases {
            assert!(is_blocked(ip(text)), "{text} should be blocked");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass() {
        let cases = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.0.3.1",
            "192.88.98.1",
            "192.167.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "198.51.101.1",
            "203.0.114.1",
            "223.255.255.255",
        ];
        for text in cases {
            assert!(!is_blocked(ip(text)), "{text} should pass");
        }
    }

    #[test]
    fn non_global_ipv6_addresses_are_blocked() {
        let cases = [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "3fff::1",
            "5f00::1",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::808:808",
            // Outside 2000::/3, nothing is allocated for global unicast.
            "1234::1",
            "4000::1",
            "e000::1",
        ];
        for text in cases {
            assert!(is_blocked(ip(text)), "{text} should be blocked");
        }
    }

    #[test]
    fn public_ipv6_addresses_pass() {
        let cases = [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001:81c::200e",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "3ffe::1",
        ];
        for text in cases {
            assert!(!is_blocked(ip(text)), "{text} should pass");
        }
    }

    #[test]
    fn ipv6_forms_embedding_ipv4_are_judged_by_the_embedded_address() {
        let cases = [
            // IPv4-mapped
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:0.0.0.0", true),
            ("::ffff:8.8.8.8", false),
            // IPv4-translated
            ("::ffff:0:127.0.0.1", true),
            ("::ffff:0:8.8.8.8", false),
            // IPv4-compatible
            ("::127.0.0.1", true),
            ("::192.168.0.1", true),
            ("::0.0.0.2", true),
            ("::8.8.8.8", false),
            // NAT64
            ("64:ff9b::a9fe:a9fe", true),
            ("64:ff9b::127.0.0.1", true),
            ("64:ff9b::10.1.2.3", true),
            ("64:ff9b::8.8.8.8", false),
            // 6to4
            ("2002:7f00:1::", true),
            ("2002:a00:1::1", true),
            ("2002:a9fe:a9fe::1", true),
            ("2002:5db8:d822::", false),
            ("2002:808:808::1", false),
        ];
        for (text, blocked) in cases {
            assert_eq!(is_blocked(ip(text)), blocked, "{text}");
        }
    }

    #[test]
    fn ipv4_mapped_loopback_is_blocked() {
        assert!(is_blocked(ip("::ffff:7f00:1")));
    }

    #[test]
    fn loopback_covers_127_slash_8_and_ipv6_loopback_and_mapped_loopback() {
        let cases = [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.9.9.9", true),
            ("128.0.0.1", false),
            ("10.0.0.1", false),
            ("::", false),
            ("::2", false),
            ("::ffff:10.0.0.1", false),
            ("0.0.0.0", false),
            ("8.8.8.8", false),
        ];
        for (text, want) in cases {
            assert_eq!(is_loopback(ip(text)), want, "{text}");
        }
    }
}
