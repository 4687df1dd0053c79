//! Demultiplexing what arrives on a media port: the first-byte ranges of
//! RFC 7983 as updated by RFC 9443 (STUN, ZRTP, DTLS, TURN channels, QUIC,
//! RTP/RTCP), RTP/RTCP multiplexing (RFC 5761), and a full
//! Ethernet → IP → UDP parse for frames.

use core::net::IpAddr;

use super::ethernet::{ethertype, EthernetFrame};
use super::ipv4::{protocol, Ipv4Packet};
use super::ipv6::Ipv6Packet;
use super::udp::{UdpPacket, HEADER_LEN as UDP_HEADER_LEN};
use super::{Result, WireError};

const LAYER: &str = "demux";

/// What a UDP payload's first byte says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketClass {
    /// STUN (first byte 0..=3).
    Stun,
    /// ZRTP (16..=19).
    Zrtp,
    /// DTLS (20..=63).
    Dtls,
    /// TURN ChannelData (64..=79). RFC 9443 lets QUIC use this range too
    /// when no TURN channels are bound; this port binds channels, so the
    /// range stays TURN's.
    TurnChannel,
    /// QUIC (80..=127 short header, 192..=255 long header; RFC 9443).
    Quic,
    /// RTP or RTCP (128..=191: version 2); see [`is_rtcp`].
    RtpRtcp,
    /// Empty, or a first byte no protocol owns (4..=15); RFC 7983 says drop.
    Unknown,
}

/// Classifies a UDP payload by its first byte (RFC 7983 §7, RFC 9443).
pub fn classify(payload: &[u8]) -> PacketClass {
    match payload.first() {
        Some(0..=3) => PacketClass::Stun,
        Some(16..=19) => PacketClass::Zrtp,
        Some(20..=63) => PacketClass::Dtls,
        Some(64..=79) => PacketClass::TurnChannel,
        Some(80..=127 | 192..=255) => PacketClass::Quic,
        Some(128..=191) => PacketClass::RtpRtcp,
        Some(4..=15) | None => PacketClass::Unknown,
    }
}

/// Whether an RTP/RTCP-class payload is RTCP under rtcp-mux (RFC 5761 §4):
/// the second byte (marker bit and payload type together, the RTCP packet
/// type) is in 192..=223. RTP payload types 64..=95 are forbidden on a
/// muxed port so that this test is unambiguous. Requires version 2 and the
/// 4-byte RTCP common header.
pub fn is_rtcp(payload: &[u8]) -> bool {
    match payload {
        [first, second, _, _, ..] => first >> 6 == 2 && (192..=223).contains(second),
        _ => false,
    }
}

/// A UDP datagram found in an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    /// VLAN id, if the frame was tagged.
    pub vlan_id: Option<u16>,
    /// Source address of the IP header.
    pub src_addr: IpAddr,
    /// Destination address of the IP header.
    pub dst_addr: IpAddr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// Offset of the IP header in the frame.
    pub ip_offset: usize,
    /// Offset of the UDP header in the frame.
    pub udp_offset: usize,
    /// The UDP payload, bounded by the UDP length field.
    pub payload: &'a [u8],
}

impl UdpFrame<'_> {
    /// Offset of the UDP payload in the frame.
    pub fn payload_offset(&self) -> usize {
        self.udp_offset + UDP_HEADER_LEN
    }

    /// [`classify`] applied to the payload.
    pub fn class(&self) -> PacketClass {
        classify(self.payload)
    }
}

fn refuse(layer: &'static str, reason: &'static str) -> WireError {
    WireError::Malformed { layer, reason }
}

/// Parses Ethernet (with at most one VLAN tag) → IPv4 or IPv6 (with
/// extension headers) → UDP and returns the addresses, ports and payload.
///
/// Every length is validated; checksums are not verified (the NIC or the
/// kernel has done so, and the relay path leaves them to the receiver).
/// Non-UDP packets and non-first fragments are refused with
/// [`WireError::Malformed`]; a first fragment fails the UDP length check.
pub fn parse_udp_frame(frame: &[u8]) -> Result<UdpFrame<'_>> {
    let eth = EthernetFrame::new_checked(frame)?;
    let vlan_id = eth.vlan().map(|tag| tag.vlan_id);
    let ip_offset = eth.header_len();
    let ip_bytes = frame.get(ip_offset..).unwrap_or(&[]);
    let (src_addr, dst_addr, udp_start, udp_end) = match eth.payload_ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(ip_bytes)?;
            if ip.fragment_offset() != 0 {
                return Err(refuse("ipv4", "non-first fragment"));
            }
            if ip.protocol() != protocol::UDP {
                return Err(refuse("ipv4", "not UDP"));
            }
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.header_len(),
                usize::from(ip.total_len()),
            )
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(ip_bytes)?;
            let upper = ip.upper_layer()?;
            if upper.fragment.is_some_and(|f| !f.is_first()) {
                return Err(refuse("ipv6", "non-first fragment"));
            }
            if upper.protocol != protocol::UDP {
                return Err(refuse("ipv6", "not UDP"));
            }
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                upper.offset,
                super::ipv6::HEADER_LEN + usize::from(ip.payload_len()),
            )
        }
        _ => return Err(refuse(LAYER, "ethertype is neither IPv4 nor IPv6")),
    };
    // The IP views validated udp_start <= udp_end <= ip_bytes.len().
    let udp_bytes = ip_bytes.get(udp_start..udp_end).unwrap_or(&[]);
    let udp = UdpPacket::new_checked(udp_bytes)?;
    let payload_len = usize::from(udp.len()) - UDP_HEADER_LEN;
    let payload = udp_bytes
        .get(UDP_HEADER_LEN..UDP_HEADER_LEN + payload_len)
        .unwrap_or(&[]);
    Ok(UdpFrame {
        vlan_id,
        src_addr,
        dst_addr,
        src_port: udp.src_port(),
        dst_port: udp.dst_port(),
        ip_offset,
        udp_offset: ip_offset + udp_start,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    /// Ethernet + IPv4 + UDP + a 12-byte RTP header and 4 payload bytes,
    /// 198.18.0.1:5004 -> 198.18.0.2:40000, built byte by byte.
    fn ipv4_rtp_frame() -> Vec<u8> {
        let mut f = vec![
            0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, // ethernet
            0x45, 0x00, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // ipv4
            198, 18, 0, 1, 198, 18, 0, 2, //
            0x13, 0x8c, 0x9c, 0x40, 0x00, 0x18, 0x00, 0x00, // udp, length 24
            0x80, 0x60, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, // rtp
            0xde, 0xad, 0xbe, 0xef,
        ];
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.fill_checksum();
        f
    }

    /// Ethernet with an 802.1Q tag + IPv6 with a Destination Options header
    /// + UDP + a STUN binding request header, 2001:2::1 -> 2001:2::2.
    fn ipv6_stun_frame() -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a, 0x86, 0xdd]); // VID 42
        f.extend_from_slice(&[0x60, 0, 0, 0, 0x00, 0x24, 60, 64]); // payload 36, dest opts
        f.extend_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1).octets());
        f.extend_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2).octets());
        f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // dest opts -> UDP, PadN
        f.extend_from_slice(&[0x0d, 0x96, 0x0d, 0x97, 0x00, 0x1c, 0x00, 0x00]); // udp, 28
        f.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]); // stun
        f.extend_from_slice(&[7; 12]); // transaction id
        f
    }

    #[test]
    fn classify_ranges() {
        let expect = |b: u8| match b {
            0..=3 => PacketClass::Stun,
            4..=15 => PacketClass::Unknown,
            16..=19 => PacketClass::Zrtp,
            20..=63 => PacketClass::Dtls,
            64..=79 => PacketClass::TurnChannel,
            80..=127 => PacketClass::Quic,
            128..=191 => PacketClass::RtpRtcp,
            192..=255 => PacketClass::Quic,
        };
        for b in 0..=255u8 {
            assert_eq!(classify(&[b]), expect(b), "first byte {b}");
        }
        assert_eq!(classify(&[]), PacketClass::Unknown);
        // A DTLS 1.2 handshake record starts with content type 22.
        assert_eq!(classify(&[22, 0xfe, 0xfd]), PacketClass::Dtls);
    }

    #[test]
    fn rtcp_mux() {
        // RTCP SR (200), RR (201), PSFB (206) and the range ends.
        for pt in [192u8, 200, 201, 206, 223] {
            assert!(is_rtcp(&[0x80, pt, 0, 6]), "{pt}");
        }
        // RTP with and without marker, payload types outside 64..=95.
        for second in [96u8, 111, 0x80 | 96, 0x80 | 127, 191, 224] {
            assert!(!is_rtcp(&[0x80, second, 0, 1]), "{second}");
        }
        assert!(!is_rtcp(&[0x80, 200, 0]));
        assert!(!is_rtcp(&[0x40, 200, 0, 6]));
    }

    #[test]
    fn parses_ipv4_rtp() {
        let f = ipv4_rtp_frame();
        assert!(Ipv4Packet::new_checked(&f[14..]).unwrap().verify_checksum());
        let u = parse_udp_frame(&f).unwrap();
        assert_eq!(u.vlan_id, None);
        assert_eq!(u.src_addr, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(u.dst_addr, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!((u.src_port, u.dst_port), (5004, 40000));
        assert_eq!(u.ip_offset, 14);
        assert_eq!(u.udp_offset, 34);
        assert_eq!(u.payload_offset(), 42);
        assert_eq!(u.payload, &f[42..]);
        assert_eq!(u.class(), PacketClass::RtpRtcp);
        assert!(!is_rtcp(u.payload));
    }

    #[test]
    fn parses_tagged_ipv6_stun() {
        let f = ipv6_stun_frame();
        let u = parse_udp_frame(&f).unwrap();
        assert_eq!(u.vlan_id, Some(42));
        assert_eq!(
            u.src_addr,
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1))
        );
        assert_eq!((u.src_port, u.dst_port), (3478, 3479));
        assert_eq!(u.ip_offset, 18);
        assert_eq!(u.udp_offset, 18 + 40 + 8);
        assert_eq!(u.payload.len(), 20);
        assert_eq!(u.class(), PacketClass::Stun);
    }

    #[test]
    fn trailing_link_padding_is_ignored() {
        let mut f = ipv4_rtp_frame();
        f.extend_from_slice(&[0; 6]);
        let u = parse_udp_frame(&f).unwrap();
        assert_eq!(u.payload.len(), 16);
    }

    #[test]
    fn every_truncation_fails() {
        for f in [ipv4_rtp_frame(), ipv6_stun_frame()] {
            for len in 0..f.len() {
                assert!(parse_udp_frame(&f[..len]).is_err(), "cut at {len}");
            }
        }
    }

    #[test]
    fn refuses_fragments_and_other_protocols() {
        // IPv4 non-first fragment.
        let mut f = ipv4_rtp_frame();
        f[20..22].copy_from_slice(&0x0001u16.to_be_bytes());
        assert_eq!(
            parse_udp_frame(&f),
            Err(WireError::Malformed {
                layer: "ipv4",
                reason: "non-first fragment"
            })
        );
        // IPv4 first fragment: the UDP length runs past the fragment.
        let mut f = ipv4_rtp_frame();
        f[20] = 0x20; // MF
        f[16..18].copy_from_slice(&0x28u16.to_be_bytes());
        assert!(matches!(
            parse_udp_frame(&f),
            Err(WireError::BadLength { layer: "udp", .. })
        ));
        // TCP.
        let mut f = ipv4_rtp_frame();
        f[23] = 6;
        assert!(matches!(
            parse_udp_frame(&f),
            Err(WireError::Malformed {
                reason: "not UDP",
                ..
            })
        ));
        // ARP.
        let mut f = ipv4_rtp_frame();
        f[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
        assert!(matches!(
            parse_udp_frame(&f),
            Err(WireError::Malformed { layer: "demux", .. })
        ));
        // IPv6 non-first fragment: replace the Destination Options header
        // with a Fragment header at offset 8 bytes.
        let mut f = ipv6_stun_frame();
        f[24] = 44;
        f[58..66].copy_from_slice(&[17, 0, 0x00, 0x08, 0, 0, 0, 9]);
        assert_eq!(
            parse_udp_frame(&f),
            Err(WireError::Malformed {
                layer: "ipv6",
                reason: "non-first fragment"
            })
        );
        // IPv6 whose upper layer is not UDP.
        let mut f = ipv6_stun_frame();
        f[58] = 58;
        assert!(matches!(
            parse_udp_frame(&f),
            Err(WireError::Malformed {
                reason: "not UDP",
                ..
            })
        ));
    }

    #[test]
    fn lying_lengths_are_refused() {
        // IP total length past the frame.
        let mut f = ipv4_rtp_frame();
        f[17] += 1;
        assert!(matches!(
            parse_udp_frame(&f),
            Err(WireError::BadLength { layer: "ipv4", .. })
        ));
        // UDP length past the IP payload even though the frame has the bytes.
        let mut f = ipv4_rtp_frame();
        f[16..18].copy_from_slice(&0x2bu16.to_be_bytes());
        assert!(matches!(
            parse_udp_frame(&f),
            Err(WireError::BadLength { layer: "udp", .. })
        ));
        // UDP length shorter than its header.
        let mut f = ipv4_rtp_frame();
        f[38..40].copy_from_slice(&7u16.to_be_bytes());
        assert!(parse_udp_frame(&f).is_err());
        // UDP length shorter than the IP payload bounds the payload.
        let mut f = ipv4_rtp_frame();
        f[38..40].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(parse_udp_frame(&f).unwrap().payload.len(), 12);
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(u) = parse_udp_frame(&bytes) {
                prop_assert!(u.payload_offset() + u.payload.len() <= bytes.len());
                prop_assert_eq!(&bytes[u.payload_offset()..u.payload_offset() + u.payload.len()], u.payload);
            }
            let _ = (classify(&bytes), is_rtcp(&bytes));
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            v6 in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = if v6 { ipv6_stun_frame() } else { ipv4_rtp_frame() };
            for (at, value) in edits {
                let i = at.index(f.len());
                f[i] = value;
            }
            let len = f.len();
            f.truncate(len - cut.index(len / 4 + 1));
            if let Ok(u) = parse_udp_frame(&f) {
                prop_assert_eq!(&f[u.payload_offset()..u.payload_offset() + u.payload.len()], u.payload);
            }
        }
    }
}
