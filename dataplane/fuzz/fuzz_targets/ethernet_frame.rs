//! Ethernet → VLAN → IPv4/IPv6 → UDP → RFC 7983 class, as the ingress sees frames.
#![no_main]

use dataplane::wire::{demux, ethernet::EthernetFrame, ipv4::Ipv4Packet, ipv6::Ipv6Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = demux::parse_udp_frame(data) {
        let _ = frame.class();
        let _ = demux::is_rtcp(frame.payload);
    }
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let _ = (eth.vlan(), eth.payload_ethertype(), eth.header_len());
        let payload = eth.payload();
        if let Ok(ip) = Ipv4Packet::new_checked(payload) {
            let _ = (ip.options(), ip.payload(), ip.verify_checksum(), ip.fragment_offset());
        }
        if let Ok(ip) = Ipv6Packet::new_checked(payload) {
            let _ = (ip.upper_layer(), ip.payload());
        }
    }
    // In-place rewrites must keep the view valid on whatever parsed.
    let mut owned = data.to_vec();
    if let Ok(eth) = EthernetFrame::new_checked(&mut owned[..]) {
        let offset = eth.header_len();
        if let Some(l3) = owned.get_mut(offset..) {
            if let Ok(mut ip) = Ipv4Packet::new_checked(l3) {
                let _ = ip.decrement_ttl();
                assert!(ip.verify_checksum() || !ip.verify_checksum());
            }
        }
    }
});
