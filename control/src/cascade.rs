//! Cascading a consult across appliances (grand rounds): the origin keeps
//! terminating each publisher's leg in its worker, and its XDP/TC programs
//! send one copy of every packet the publisher sends, still encrypted as
//! sent, over a trunk to each downstream appliance. A downstream box takes
//! the trunk as a publisher leg keyed with the publisher's SRTP key and fans
//! it out to its own subscribers.
//!
//! This module finds how a trunk leaves the origin: the source address the
//! kernel's routing picks towards the downstream box, the interface holding
//! it, that interface's MAC, and the next hop's MAC (the box itself on a
//! shared network, else the route's gateway) from the kernel's neighbour
//! table, resolved first if needed. IPv4 only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dataplane::srtp::SrtpProfile;
use serde::{Deserialize, Serialize};

/// How a trunk leaves this appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRoute {
    /// Egress interface.
    pub interface: String,
    /// Its index.
    pub ifindex: u32,
    /// This appliance's address on it (the trunk's source).
    pub local_ip: Ipv4Addr,
    /// Its MAC address.
    pub src_mac: [u8; 6],
    /// The next hop's MAC address.
    pub next_hop_mac: [u8; 6],
    /// The next hop (the peer itself or a gateway).
    pub next_hop: Ipv4Addr,
}

/// A trunk route could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    /// Only IPv4 trunks are built.
    #[error("trunk peer {0} is IPv6; trunks are IPv4 only")]
    Ipv6(IpAddr),
    /// No route or address towards the peer.
    #[error("no route to trunk peer {peer}: {reason}")]
    NoRoute {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The next hop's MAC address did not resolve.
    #[error(
        "next hop {next_hop} on {interface} did not resolve (no ARP answer within {waited:?})"
    )]
    Unresolved {
        /// The next hop.
        next_hop: Ipv4Addr,
        /// The interface.
        interface: String,
        /// How long it waited.
        waited: Duration,
    },
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The gateway `/proc/net/route` gives for `dest` on `interface`: `None`
/// when the destination is on-link (or no route names the interface),
/// else the gateway of the longest matching prefix.
pub fn gateway_from_proc_route(table: &str, interface: &str, dest: Ipv4Addr) -> Option<Ipv4Addr> {
    // Fields are hex in host (little-endian) byte order.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    let dest = u32::from(dest);
    let mut best: Option<(u32, u32)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != interface {
            continue;
        }
        let (Some(net), Some(gw), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else {
            continue;
        };
        if dest & mask == net & mask && best.is_none_or(|(m, _)| mask.count_ones() > m.count_ones())
        {
            best = Some((mask, gw));
        }
    }
    best.and_then(|(_, gw)| (gw != 0).then(|| Ipv4Addr::from(gw)))
}

/// The MAC of `ip` on `interface` in `/proc/net/arp`, if complete.
pub fn mac_from_proc_arp(table: &str, interface: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device.
        if f.len() < 6 || f[5] != interface || f[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let complete = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()? & 0x2 != 0;
        complete.then(|| parse_mac(f[3])).flatten()
    })
}

/// The interface holding `ip`.
fn interface_of(ip: Ipv4Addr) -> Option<String> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null()
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip {
                // SAFETY: ifa_name is a NUL-terminated string.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
                found = Some(name.to_string_lossy().into_owned());
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

/// Finds how a trunk to `peer` leaves this appliance, in the calling
/// thread's network namespace. Sends one empty datagram to `peer` if the
/// next hop is not in the neighbour table yet, and waits up to `wait` for
/// it to resolve.
pub fn resolve(peer: SocketAddr, wait: Duration) -> Result<TrunkRoute, CascadeError> {
    let IpAddr::V4(peer_ip) = peer.ip() else {
        return Err(CascadeError::Ipv6(peer.ip()));
    };
    let no_route = |reason: String| CascadeError::NoRoute { peer, reason };
    let probe = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(peer).map(|()| s))
        .map_err(|e| no_route(e.to_string()))?;
    let local_ip = match probe
        .local_addr()
        .map_err(|e| no_route(e.to_string()))?
        .ip()
    {
        IpAddr::V4(v4) => v4,
        other => return Err(no_route(format!("source address {other} is not IPv4"))),
    };
    let interface =
        interface_of(local_ip).ok_or_else(|| no_route(format!("no interface holds {local_ip}")))?;
    let ifindex = dataplane::xdp::ifindex(&interface).map_err(|e| no_route(e.to_string()))?;
    let src_mac = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))
        .ok()
        .and_then(|t| parse_mac(&t))
        .ok_or_else(|| no_route(format!("{interface} has no MAC address")))?;
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let next_hop = gateway_from_proc_route(&routes, &interface, peer_ip).unwrap_or(peer_ip);
    let started = Instant::now();
    let mut probed = false;
    loop {
        let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        if let Some(next_hop_mac) = mac_from_proc_arp(&arp, &interface, next_hop) {
            return Ok(TrunkRoute {
                interface,
                ifindex,
                local_ip,
                src_mac,
                next_hop_mac,
                next_hop,
            });
        }
        if started.elapsed() >= wait {
            return Err(CascadeError::Unresolved {
                next_hop,
                interface,
                waited: wait,
            });
        }
        if !probed {
            // The kernel resolves the next hop to send this.
            let _ = probe.send(&[]);
            probed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the origin sends a downstream appliance to open a trunk
/// (`POST /v1/consults/{id}/trunk`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrunkRequest {
    /// The origin appliance.
    pub origin: String,
    /// The consult's priority and residency.
    pub priority: crate::overload::Priority,
    /// Residency tag.
    pub residency: String,
    /// The origin's address and media port on the way to this box.
    pub source: SocketAddr,
    /// The publishers whose streams the trunk carries.
    pub publishers: Vec<TrunkPublisher>,
}

/// One publisher carried by a trunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrunkPublisher {
    /// Its participant id.
    pub participant: String,
    /// Its role.
    pub role: crate::token::Role,
    /// Its leg as negotiated at the origin.
    pub negotiated: crate::sdp::NegotiatedLeg,
    /// Its SRTP profile.
    pub profile: String,
    /// Its SRTP master key and salt (what it protects its packets with),
    /// base64.
    pub key: String,
    /// Salt, base64.
    pub salt: String,
    /// Where its copies come from: the origin's trunk address and a port
    /// of this publisher's own ([`trunk_source_port`]).
    pub source: SocketAddr,
}

/// The source port of publisher leg `leg`'s trunk copies: one per
/// publisher, so a downstream worker, which keys legs by address, tells the
/// publishers of one trunk apart. Taken from 61000–64999, above the usual
/// media port ranges; nothing listens there, so what a downstream box sends
/// back to it is dropped at the origin (as unknown, in XDP, when the range
/// is the media range).
pub fn trunk_source_port(leg: u64) -> u16 {
    61_000 + (leg % 4_000) as u16
}

/// What a downstream appliance answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrunkAccepted {
    /// Where the trunk's packets go: its media address and port.
    pub media: SocketAddr,
    /// Trunk legs opened.
    pub legs: usize,
}

/// The name of an SRTP profile on the wire between appliances.
pub fn profile_name(p: SrtpProfile) -> &'static str {
    match p {
        SrtpProfile::AesCm128HmacSha1_80 => "aes_cm_128_hmac_sha1_80",
        SrtpProfile::AesCm128HmacSha1_32 => "aes_cm_128_hmac_sha1_32",
        SrtpProfile::AeadAes128Gcm => "aead_aes_128_gcm",
        SrtpProfile::AeadAes256Gcm => "aead_aes_256_gcm",
    }
}

/// The inverse of [`profile_name`].
pub fn profile_from_name(name: &str) -> Option<SrtpProfile> {
    [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ]
    .into_iter()
    .find(|p| profile_name(*p) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip() {
        for p in [
            SrtpProfile::AesCm128HmacSha1_80,
            SrtpProfile::AesCm128HmacSha1_32,
            SrtpProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm,
        ] {
            assert_eq!(profile_from_name(profile_name(p)), Some(p));
        }
        assert_eq!(profile_from_name("rot13"), None);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:aa:00:00:00:01\n"),
            Some([0x02, 0xaa, 0, 0, 0, 1])
        );
        assert_eq!(parse_mac("02:aa:00:00:00"), None);
        assert_eq!(parse_mac("02:aa:00:00:00:01:02"), None);
        assert_eq!(parse_mac("zz:aa:00:00:00:01"), None);
    }

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        p1\t00000000\t010112C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        p1\t000112C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        p1\t000212C6\t010112C6\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn the_longest_matching_route_gives_the_gateway() {
        let on_link = Ipv4Addr::new(198, 18, 1, 7);
        let routed = Ipv4Addr::new(198, 18, 2, 2);
        let gw = Ipv4Addr::new(198, 18, 1, 1);
        assert_eq!(gateway_from_proc_route(ROUTE, "p1", on_link), None);
        assert_eq!(gateway_from_proc_route(ROUTE, "p1", routed), Some(gw));
        // The default route for anything else.
        assert_eq!(
            gateway_from_proc_route(ROUTE, "p1", Ipv4Addr::new(198, 19, 0, 1)),
            Some(gw)
        );
        assert_eq!(gateway_from_proc_route(ROUTE, "eth9", routed), None);
        assert_eq!(
            gateway_from_proc_route("garbage\nx y z\n", "p1", routed),
            None
        );
    }

    #[test]
    fn only_complete_neighbours_count() {
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
            198.18.1.1       0x1         0x2         02:aa:00:00:00:01     *        p1\n\
            198.18.1.9       0x1         0x0         00:00:00:00:00:00     *        p1\n\
            198.18.2.1       0x1         0x6         02:aa:00:00:00:02     *        p2\n";
        let ip = |d| Ipv4Addr::new(198, 18, 1, d);
        assert_eq!(
            mac_from_proc_arp(arp, "p1", ip(1)),
            Some([0x02, 0xaa, 0, 0, 0, 1])
        );
        assert_eq!(mac_from_proc_arp(arp, "p1", ip(9)), None);
        assert_eq!(mac_from_proc_arp(arp, "p2", ip(1)), None);
        assert_eq!(
            mac_from_proc_arp(arp, "p2", Ipv4Addr::new(198, 18, 2, 1)),
            Some([0x02, 0xaa, 0, 0, 0, 2])
        );
    }
}
