//! Which addresses the SFU advertises in its ICE candidates, and start-up warnings for addresses remote clients cannot use.
//!
//! Every configured address becomes a candidate (UDP, and TCP when ICE-TCP is on): IPv4 and
//! IPv6, and the public address of a 1:1 NAT beside the private one. Nothing configured: the
//! host's own non-loopback addresses. The choice is a pure function of the configuration and
//! the host's interfaces ([`plan`]); `Media::start` logs its warnings.

use std::net::IpAddr;

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan {
    /// In the order given; never empty.
    pub advertise: Vec<IpAddr>,
    /// One sentence each, for operators.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("rtc.advertise_ip {0:?}: {1}")]
    Bad(String, String),
}

/// Parses `rtc.advertise_ip`: addresses separated by commas or spaces; empty means none.
pub fn parse_list(text: &str) -> Result<Vec<IpAddr>, AddressError> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|e| AddressError::Bad(s.to_string(), e.to_string()))
        })
        .collect()
}

/// The addresses to advertise for `configured` (possibly empty) on a socket bound to `bind`,
/// given the host's interface addresses.
pub fn plan(
    configured: &[IpAddr],
    bind: IpAddr,
    interfaces: &[IpAddr],
) -> Result<AddressPlan, AddressError> {
    let mut warnings = Vec::new();
    // A socket on 0.0.0.0 (or a v4 address) cannot take IPv6; one on `::` takes both (Linux's
    // default dual stack), one on a v6 address only v6.
    let usable = |ip: &IpAddr| match bind {
        IpAddr::V4(_) => ip.is_ipv4(),
        IpAddr::V6(b) if b.is_unspecified() => true,
        IpAddr::V6(_) => ip.is_ipv6(),
    };
    let mut advertise = Vec::new();
    if configured.is_empty() {
        if bind.is_unspecified() {
            advertise.extend(
                interfaces
                    .iter()
                    .filter(|ip| !ip.is_loopback() && !link_local(ip) && usable(ip)),
            );
        } else {
            advertise.push(bind);
        }
        if advertise.is_empty() {
            advertise.push(IpAddr::from([127, 0, 0, 1]));
        }
    } else {
        for ip in configured {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(AddressError::Bad(
                    ip.to_string(),
                    "not an address clients can send to".into(),
                ));
            }
            if !usable(ip) {
                warnings.push(format!(
                    "rtc.advertise_ip {ip} is left out: the media sockets are bound to {bind}, which cannot receive on it (bind_ip = \"::\" takes IPv4 and IPv6)"
                ));
                continue;
            }
            if !advertise.contains(ip) {
                advertise.push(*ip);
            }
        }
        if advertise.is_empty() {
            return Err(AddressError::Bad(
                configured
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                format!("none of these can be received on bind_ip {bind}"),
            ));
        }
    }
    if advertise.iter().all(IpAddr::is_loopback) {
        warnings.push(format!(
            "advertising {} only: media works from this machine alone. Set CONVENE_RTC_ADVERTISE_IP (rtc.advertise_ip) to the address clients reach",
            list(&advertise)
        ));
    } else if advertise.iter().all(|ip| !public(ip)) {
        warnings.push(format!(
            "advertising private addresses only ({}): clients outside this network get no media. Behind a 1:1 NAT (a cloud VM), add the public address to CONVENE_RTC_ADVERTISE_IP",
            list(&advertise)
        ));
    }
    if !interfaces.is_empty() && bind.is_unspecified() {
        for ip in &advertise {
            if !ip.is_loopback() && !interfaces.contains(ip) {
                warnings.push(format!(
                    "{ip} is not an address of this host: it must be a 1:1 NAT that forwards the media UDP and TCP ports here unchanged"
                ));
            }
        }
    }
    Ok(AddressPlan {
        advertise,
        warnings,
    })
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Reachable from the internet: not loopback, private, shared (CGNAT), link-local, ULA or documentation.
pub fn public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            let documentation = matches!(
                v4.octets(),
                [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
            );
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || shared
                || documentation)
        }
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            let unique_local = (s0 & 0xfe00) == 0xfc00;
            let documentation = s0 == 0x2001 && v6.segments()[1] == 0x0db8;
            let mapped = v6.to_ipv4_mapped().is_some();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || link_local(ip)
                || unique_local
                || documentation
                || mapped)
        }
    }
}

/// The host's interface addresses (empty where they cannot be read).
pub fn interface_addresses() -> Vec<IpAddr> {
    #[cfg(target_os = "linux")]
    {
        match nix::ifaddrs::getifaddrs() {
            Ok(addrs) => addrs
                .filter_map(|a| {
                    let sa = a.address?;
                    if let Some(v4) = sa.as_sockaddr_in() {
                        Some(IpAddr::V4(v4.ip()))
                    } else {
                        sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                    }
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "getifaddrs");
                Vec::new()
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &str) -> Vec<IpAddr> {
        parse_list(s).unwrap()
    }

    #[test]
    fn lists_parse_with_commas_or_spaces() {
        assert_eq!(
            ips("203.0.113.7, 2001:db8::7 10.0.0.5"),
            vec![
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap(),
                "10.0.0.5".parse().unwrap()
            ]
        );
        assert!(ips("").is_empty());
        assert!(parse_list("10.0.0.1,nope").is_err());
    }

    #[test]
    fn nothing_configured_takes_the_hosts_addresses() {
        let host = ips("127.0.0.1 10.1.2.3 fe80::1 2a01:4f8::10");
        let p = plan(&[], "0.0.0.0".parse().unwrap(), &host).unwrap();
        assert_eq!(
            p.advertise,
            ips("10.1.2.3"),
            "v4 socket: v4 only, no loopback"
        );
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("private addresses only"),
            "{:?}",
            p.warnings
        );
        let p = plan(&[], "::".parse().unwrap(), &host).unwrap();
        assert_eq!(p.advertise, ips("10.1.2.3 2a01:4f8::10"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let p = plan(&[], "0.0.0.0".parse().unwrap(), &ips("127.0.0.1")).unwrap();
        assert_eq!(p.advertise, ips("127.0.0.1"));
        assert!(p.warnings[0].contains("this machine alone"));
    }

    #[test]
    fn nat_public_address_beside_the_private_one() {
        let host = ips("127.0.0.1 172.31.5.9");
        let p = plan(
            &ips("34.120.1.2,172.31.5.9"),
            "0.0.0.0".parse().unwrap(),
            &host,
        )
        .unwrap();
        assert_eq!(p.advertise, ips("34.120.1.2 172.31.5.9"));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("1:1 NAT"));
    }

    #[test]
    fn addresses_the_socket_cannot_receive_on_are_left_out_with_a_warning() {
        let p = plan(
            &ips("34.120.1.2 2a01:4f8::10"),
            "0.0.0.0".parse().unwrap(),
            &[],
        )
        .unwrap();
        assert_eq!(p.advertise, ips("34.120.1.2"));
        assert!(p.warnings[0].contains("left out"), "{:?}", p.warnings);
        assert!(plan(&ips("2a01:4f8::10"), "0.0.0.0".parse().unwrap(), &[]).is_err());
        assert!(plan(&ips("0.0.0.0"), "0.0.0.0".parse().unwrap(), &[]).is_err());
        assert!(plan(&ips("224.0.0.1"), "0.0.0.0".parse().unwrap(), &[]).is_err());
    }

    #[test]
    fn loopback_and_private_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!public(&s.parse().unwrap()), "{s}");
        }
        for s in ["34.120.1.2", "2a01:4f8::10"] {
            assert!(public(&s.parse().unwrap()), "{s}");
        }
    }
}
