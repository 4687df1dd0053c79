//! IPv6 headers (RFC 8200) and the extension-header chain up to the
//! upper-layer protocol.

use core::net::Ipv6Addr;

use super::{be16, be32, ensure_len, Result, WireError};

const LAYER: &str = "ipv6";

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Longest extension-header chain walked before giving up; real traffic
/// carries one or two, and the bound keeps hostile chains cheap.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Next-header values of the extension headers this module walks.
pub mod next_header {
    /// Hop-by-Hop Options (must come first).
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Destination Options.
    pub const DESTINATION_OPTIONS: u8 = 60;
    /// No next header.
    pub const NO_NEXT_HEADER: u8 = 59;
}

const FRAGMENT_HEADER_LEN: usize = 8;

/// What a Fragment header says about this packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Offset of this fragment's data in the original packet, in bytes.
    pub offset: u16,
    /// M flag: more fragments follow.
    pub more: bool,
    /// Identification shared by the fragments of one packet.
    pub ident: u32,
}

impl FragmentInfo {
    /// Whether this is the first fragment, the only one whose data starts
    /// with the upper-layer header.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Where the upper-layer protocol starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// Protocol number of the upper layer (17 for UDP; 59 for none).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Set when the chain contained a Fragment header. For a non-first
    /// fragment the bytes at `offset` are fragment data, not a header.
    pub fragment: Option<FragmentInfo>,
}

/// A zero-copy view of an IPv6 packet.
///
/// Accessors never panic: on a view made with [`Self::new_unchecked`] over
/// too few bytes, fields read as zero, the payload is clamped to the buffer,
/// and setters of missing fields do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking the version and that the payload
    /// length fits in the buffer (trailing bytes are allowed). Jumbograms
    /// (payload length 0 with a Jumbo Payload option) are not supported:
    /// their payload reads as empty.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let buf = packet.buffer.as_ref();
        ensure_len(LAYER, buf, HEADER_LEN)?;
        let version = packet.version();
        if version != 6 {
            return Err(WireError::BadVersion {
                layer: LAYER,
                version,
            });
        }
        let claimed = usize::from(packet.payload_len());
        let actual = buf.len() - HEADER_LEN;
        if claimed > actual {
            return Err(WireError::BadLength {
                layer: LAYER,
                claimed,
                actual,
            });
        }
        Ok(packet)
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes past the payload length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn fixed(&self) -> &[u8; HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk::<HEADER_LEN>()
            .unwrap_or(&[0; HEADER_LEN])
    }

    /// Version field (6 on every checked packet).
    pub fn version(&self) -> u8 {
        self.fixed()[0] >> 4
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        let f = self.fixed();
        (f[0] << 4) | (f[1] >> 4)
    }

    /// 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        let f = self.fixed();
        u32::from_be_bytes([0, f[1] & 0x0f, f[2], f[3]])
    }

    /// Payload length field: bytes after the fixed header, extension
    /// headers included.
    pub fn payload_len(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[4], f[5]])
    }

    /// Next header of the fixed header (the first extension header or the
    /// upper layer).
    pub fn next_header(&self) -> u8 {
        self.fixed()[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.fixed()[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let f = self.fixed();
        let mut octets = [0; 16];
        octets.copy_from_slice(&f[8..24]);
        Ipv6Addr::from(octets)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let f = self.fixed();
        let mut octets = [0; 16];
        octets.copy_from_slice(&f[24..40]);
        Ipv6Addr::from(octets)
    }

    fn end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// The bytes after the fixed header, bounded by the payload length
    /// (extension headers included).
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.end())
            .unwrap_or(&[])
    }

    /// Walks Hop-by-Hop, Routing, Fragment and Destination Options headers
    /// to the upper-layer protocol. Stops at a Fragment header with a
    /// non-zero offset, since what follows it is not a header. Any other
    /// next-header value (including 59, no next header) is the upper layer.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let buf = self.buffer.as_ref();
        let end = self.end();
        let mut protocol = self.next_header();
        let mut offset = HEADER_LEN;
        let mut fragment = None;
        for index in 0..=MAX_EXTENSION_HEADERS {
            let header_len = match protocol {
                next_header::HOP_BY_HOP if index != 0 => {
                    return Err(WireError::Malformed {
                        layer: LAYER,
                        reason: "Hop-by-Hop Options header not first",
                    })
                }
                next_header::HOP_BY_HOP
                | next_header::ROUTING
                | next_header::DESTINATION_OPTIONS => {
                    ensure_len(LAYER, &buf[..end], offset + 2)?;
                    (usize::from(buf[offset + 1]) + 1) * 8
                }
                next_header::FRAGMENT => FRAGMENT_HEADER_LEN,
                _ => {
                    return Ok(UpperLayer {
                        protocol,
                        offset,
                        fragment,
                    })
                }
            };
            if index == MAX_EXTENSION_HEADERS {
                break;
            }
            let available = end.saturating_sub(offset);
            if header_len > available {
                return Err(WireError::BadLength {
                    layer: LAYER,
                    claimed: header_len,
                    actual: available,
                });
            }
            let next = buf[offset];
            if protocol == next_header::FRAGMENT {
                if fragment.is_some() {
                    return Err(WireError::Malformed {
                        layer: LAYER,
                        reason: "more than one Fragment header",
                    });
                }
                let field = be16(buf, offset + 2);
                let info = FragmentInfo {
                    offset: field & 0xfff8,
                    more: field & 0x0001 != 0,
                    ident: be32(buf, offset + 4),
                };
                fragment = Some(info);
                if !info.is_first() {
                    return Ok(UpperLayer {
                        protocol: next,
                        offset: offset + header_len,
                        fragment,
                    });
                }
            }
            protocol = next;
            offset += header_len;
        }
        Err(WireError::Malformed {
            layer: LAYER,
            reason: "too many extension headers",
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn fixed_mut(&mut self) -> Option<&mut [u8; HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut::<HEADER_LEN>()
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        if let Some(f) = self.fixed_mut() {
            f[7] = hop_limit;
        }
    }

    /// Decrements the hop limit as a forwarder does and returns the new
    /// value. A packet whose hop limit is 0 or 1 must not be forwarded: it
    /// is left untouched and an error returned.
    pub fn decrement_hop_limit(&mut self) -> Result<u8> {
        let hop_limit = self.hop_limit();
        if hop_limit <= 1 {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "hop limit expired",
            });
        }
        self.set_hop_limit(hop_limit - 1);
        Ok(hop_limit - 1)
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, traffic_class: u8) {
        if let Some(f) = self.fixed_mut() {
            f[0] = (f[0] & 0xf0) | (traffic_class >> 4);
            f[1] = (traffic_class << 4) | (f[1] & 0x0f);
        }
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        if let Some(f) = self.fixed_mut() {
            f[8..24].copy_from_slice(&addr.octets());
        }
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        if let Some(f) = self.fixed_mut() {
            f[24..40].copy_from_slice(&addr.octets());
        }
    }

    /// The bytes after the fixed header, mutable, bounded by the payload
    /// length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x6b, 0x81, 0x23, 0x45];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&SRC.octets());
        p.extend_from_slice(&DST.octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fixed_header_fields() {
        let p = header(17, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut with_trailer = p.clone();
        with_trailer.extend_from_slice(&[0xee; 4]);
        let v = Ipv6Packet::new_checked(&with_trailer[..]).unwrap();
        assert_eq!(v.version(), 6);
        assert_eq!(v.traffic_class(), 0xb8);
        assert_eq!(v.flow_label(), 0x12345);
        assert_eq!(v.payload_len(), 8);
        assert_eq!(v.next_header(), 17);
        assert_eq!(v.hop_limit(), 64);
        assert_eq!(v.src_addr(), SRC);
        assert_eq!(v.dst_addr(), DST);
        assert_eq!(v.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            v.upper_layer(),
            Ok(UpperLayer {
                protocol: 17,
                offset: 40,
                fragment: None
            })
        );
    }

    #[test]
    fn walks_every_extension_header_kind() {
        let mut ext = Vec::new();
        ext.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop -> routing
        ext.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0]); // routing (16 bytes) -> fragment
        ext.extend_from_slice(&[0; 8]);
        ext.extend_from_slice(&[60, 0, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef]); // fragment, offset 0, M=0
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // destination options -> UDP
        ext.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 8, 0, 0]);
        let p = header(0, &ext);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            v.upper_layer(),
            Ok(UpperLayer {
                protocol: 17,
                offset: 40 + 40,
                fragment: Some(FragmentInfo {
                    offset: 0,
                    more: false,
                    ident: 0xdead_beef
                })
            })
        );
        // Every truncation of the chain errors.
        for len in 0..ext.len() - 8 {
            let p = header(0, &ext[..len]);
            let v = Ipv6Packet::new_checked(&p[..]).unwrap();
            assert!(v.upper_layer().is_err(), "chain cut at {len}");
        }
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        // Offset 1448 bytes (181 units), M=1; the data looks like a header
        // but must not be walked.
        let mut ext = vec![17, 0];
        ext.extend_from_slice(&((181u16 << 3) | 1).to_be_bytes());
        ext.extend_from_slice(&[0, 0, 0, 7]);
        ext.extend_from_slice(&[0xff; 3]);
        let p = header(44, &ext);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        let upper = v.upper_layer().unwrap();
        assert_eq!(upper.protocol, 17);
        assert_eq!(upper.offset, 48);
        let frag = upper.fragment.unwrap();
        assert!(!frag.is_first());
        assert_eq!(frag.offset, 1448);
        assert!(frag.more);
        assert_eq!(frag.ident, 7);
    }

    #[test]
    fn refuses_hostile_chains() {
        // Hop-by-Hop after another header.
        let p = header(60, &[0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(WireError::Malformed { .. })
        ));
        // A loop of Destination Options headers longer than the bound.
        let mut chain = Vec::new();
        for _ in 0..=MAX_EXTENSION_HEADERS {
            chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = header(60, &chain);
        assert!(matches!(
            Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(WireError::Malformed { .. })
        ));
        // Exactly the bound is fine.
        let mut chain = Vec::new();
        for i in 0..MAX_EXTENSION_HEADERS {
            let next = if i + 1 == MAX_EXTENSION_HEADERS {
                17
            } else {
                60
            };
            chain.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = header(60, &chain);
        assert_eq!(
            Ipv6Packet::new_checked(&p[..])
                .unwrap()
                .upper_layer()
                .unwrap()
                .offset,
            40 + 8 * MAX_EXTENSION_HEADERS
        );
        // Two Fragment headers.
        let p = header(44, &[44, 0, 0, 0, 0, 0, 0, 1, 17, 0, 0, 0, 0, 0, 0, 1]);
        assert!(Ipv6Packet::new_checked(&p[..])
            .unwrap()
            .upper_layer()
            .is_err());
        // An extension header whose length runs past the payload length,
        // even though the buffer holds more bytes.
        let mut p = header(60, &[17, 1, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(WireError::BadLength {
                claimed: 16,
                actual: 8,
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_fixed_headers() {
        let good = header(17, &[0; 8]);
        for len in 0..good.len() {
            assert!(Ipv6Packet::new_checked(&good[..len]).is_err());
        }
        let mut p = good.clone();
        p[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]),
            Err(WireError::BadVersion {
                layer: "ipv6",
                version: 4
            })
        );
        let mut p = good.clone();
        p[5] = 9;
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]),
            Err(WireError::BadLength {
                layer: "ipv6",
                claimed: 9,
                actual: 8
            })
        );
    }

    #[test]
    fn setters() {
        let mut p = header(17, &[0; 4]);
        let mut v = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        v.set_src_addr(DST);
        v.set_dst_addr(SRC);
        v.set_traffic_class(0x2e);
        assert_eq!(v.decrement_hop_limit(), Ok(63));
        v.payload_mut().fill(9);
        assert_eq!(v.src_addr(), DST);
        assert_eq!(v.dst_addr(), SRC);
        assert_eq!(v.traffic_class(), 0x2e);
        assert_eq!(v.flow_label(), 0x12345);
        assert_eq!(v.version(), 6);
        assert_eq!(v.payload(), &[9; 4]);
        v.set_hop_limit(1);
        assert!(v.decrement_hop_limit().is_err());
        assert_eq!(v.hop_limit(), 1);
    }

    #[test]
    fn unchecked_short_views_do_not_panic() {
        for len in 0..48 {
            let mut buf = vec![0x3c; len];
            let mut v = Ipv6Packet::new_unchecked(&mut buf[..]);
            let _ = (
                v.src_addr(),
                v.dst_addr(),
                v.payload().len(),
                v.upper_layer(),
            );
            v.set_dst_addr(DST);
            let _ = v.decrement_hop_limit();
            let _ = v.payload_mut().len();
        }
    }

    proptest! {
        #[test]
        fn checked_views_never_panic(
            next in prop_oneof![Just(0u8), Just(43), Just(44), Just(60), any::<u8>()],
            body in proptest::collection::vec(prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(17), any::<u8>()], 0..96),
            extra in 0usize..4,
        ) {
            let mut p = header(next, &body);
            p.extend(std::iter::repeat_n(0, extra));
            let v = Ipv6Packet::new_checked(&p[..]).unwrap();
            if let Ok(upper) = v.upper_layer() {
                prop_assert!(upper.offset >= HEADER_LEN);
                prop_assert!(upper.offset <= HEADER_LEN + body.len());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(v) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = (v.traffic_class(), v.flow_label(), v.hop_limit(), v.upper_layer());
                prop_assert_eq!(v.payload().len(), usize::from(v.payload_len()));
            }
        }
    }
}
