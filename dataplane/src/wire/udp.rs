//! UDP datagrams (RFC 768) with checksums over the IPv4 and IPv6
//! pseudo-headers (RFC 768, RFC 8200 §8.1) and incremental checksum updates
//! (RFC 1624) for the port and address rewrites of the relay path.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ipv4::{checksum, protocol};
use super::{ensure_len, Result, WireError};

const LAYER: &str = "udp";

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A zero-copy view of a UDP datagram.
///
/// Accessors never panic: on a view made with [`Self::new_unchecked`] over
/// too few bytes, fields read as zero, the payload is clamped to the buffer,
/// and setters of missing fields do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

fn pseudo_header_sum_v4(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u64 {
    let sum = checksum::accumulate(0, &src.octets());
    let sum = checksum::accumulate(sum, &dst.octets());
    sum + u64::from(protocol::UDP) + u64::from(udp_len)
}

fn pseudo_header_sum_v6(src: Ipv6Addr, dst: Ipv6Addr, udp_len: u16) -> u64 {
    let sum = checksum::accumulate(0, &src.octets());
    let sum = checksum::accumulate(sum, &dst.octets());
    sum + u64::from(protocol::UDP) + u64::from(udp_len)
}

/// Updates a UDP checksum for a change of a covered field (port, or an
/// address in the pseudo-header) from `old` to `new` (RFC 1624). A zero
/// checksum (none, over IPv4) stays zero; a computed zero is sent as
/// 0xFFFF, as RFC 768 requires.
pub fn update_checksum(current: u16, old: &[u8], new: &[u8]) -> u16 {
    if current == 0 {
        return 0;
    }
    match checksum::update(current, old, new) {
        0 => 0xffff,
        value => value,
    }
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking that the header is present and that
    /// the length field is at least 8 and fits in the buffer (trailing
    /// bytes are allowed). Checksums are verified separately.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let buf = packet.buffer.as_ref();
        ensure_len(LAYER, buf, HEADER_LEN)?;
        let claimed = usize::from(packet.len());
        if claimed < HEADER_LEN {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "length field below 8",
            });
        }
        if claimed > buf.len() {
            return Err(WireError::BadLength {
                layer: LAYER,
                claimed,
                actual: buf.len(),
            });
        }
        Ok(packet)
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes past the length field.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn fixed(&self) -> &[u8; HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk::<HEADER_LEN>()
            .unwrap_or(&[0; HEADER_LEN])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[0], f[1]])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[2], f[3]])
    }

    /// Length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[4], f[5]])
    }

    /// Checksum field (0 over IPv4 means "no checksum").
    pub fn checksum(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[6], f[7]])
    }

    fn datagram(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        buf.get(..usize::from(self.len())).unwrap_or(buf)
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    fn verify(&self, pseudo: u64) -> bool {
        checksum::fold(checksum::accumulate(pseudo, self.datagram())) == 0xffff
    }

    /// Whether the checksum verifies over the IPv4 pseudo-header; a zero
    /// checksum means the sender computed none and is accepted.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || self.verify(pseudo_header_sum_v4(src, dst, self.len()))
    }

    /// Whether the checksum verifies over the IPv6 pseudo-header; a zero
    /// checksum is invalid over IPv6 (RFC 8200 §8.1).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.checksum() != 0 && self.verify(pseudo_header_sum_v6(src, dst, self.len()))
    }

    /// [`Self::verify_checksum_v4`] or [`Self::verify_checksum_v6`] by
    /// address family; false when the families differ.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => self.verify_checksum_v4(src, dst),
            (IpAddr::V6(src), IpAddr::V6(dst)) => self.verify_checksum_v6(src, dst),
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn fixed_mut(&mut self) -> Option<&mut [u8; HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut::<HEADER_LEN>()
    }

    /// Sets the source port without touching the checksum.
    pub fn set_src_port(&mut self, port: u16) {
        if let Some(f) = self.fixed_mut() {
            f[0..2].copy_from_slice(&port.to_be_bytes());
        }
    }

    /// Sets the destination port without touching the checksum.
    pub fn set_dst_port(&mut self, port: u16) {
        if let Some(f) = self.fixed_mut() {
            f[2..4].copy_from_slice(&port.to_be_bytes());
        }
    }

    /// Sets the length field without touching the checksum.
    pub fn set_len(&mut self, len: u16) {
        if let Some(f) = self.fixed_mut() {
            f[4..6].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        if let Some(f) = self.fixed_mut() {
            f[6..8].copy_from_slice(&value.to_be_bytes());
        }
    }

    fn fill(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let value = !checksum::fold(checksum::accumulate(pseudo, self.datagram()));
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill(pseudo_header_sum_v4(src, dst, self.len()));
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.fill(pseudo_header_sum_v6(src, dst, self.len()));
    }

    /// Rewrites the source port and updates the checksum incrementally.
    pub fn rewrite_src_port(&mut self, port: u16) {
        let value = update_checksum(
            self.checksum(),
            &self.src_port().to_be_bytes(),
            &port.to_be_bytes(),
        );
        self.set_src_port(port);
        self.set_checksum(value);
    }

    /// Rewrites the destination port and updates the checksum
    /// incrementally.
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let value = update_checksum(
            self.checksum(),
            &self.dst_port().to_be_bytes(),
            &port.to_be_bytes(),
        );
        self.set_dst_port(port);
        self.set_checksum(value);
    }

    /// Updates the checksum for an IP address rewritten in the enclosing
    /// header (the address is part of the pseudo-header). Both addresses
    /// must be of one family; otherwise nothing changes and an error is
    /// returned.
    pub fn adjust_checksum_for_address(&mut self, old: IpAddr, new: IpAddr) -> Result<()> {
        let value = match (old, new) {
            (IpAddr::V4(old), IpAddr::V4(new)) => {
                update_checksum(self.checksum(), &old.octets(), &new.octets())
            }
            (IpAddr::V6(old), IpAddr::V6(new)) => {
                update_checksum(self.checksum(), &old.octets(), &new.octets())
            }
            _ => {
                return Err(WireError::Malformed {
                    layer: LAYER,
                    reason: "address family changed",
                })
            }
        };
        self.set_checksum(value);
        Ok(())
    }

    /// The payload, mutable, bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        let buf = self.buffer.as_mut();
        let end = end.min(buf.len());
        buf.get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// Writes a UDP header with a zero checksum at the start of `buf` for a
/// payload of `payload_len` bytes and returns the header length; fill the
/// checksum once the payload is in place.
pub fn write_header(
    buf: &mut [u8],
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
) -> Result<usize> {
    let len = u16::try_from(HEADER_LEN + payload_len).map_err(|_| WireError::Malformed {
        layer: LAYER,
        reason: "datagram longer than 65535 bytes",
    })?;
    let have = buf.len();
    let out = buf
        .first_chunk_mut::<HEADER_LEN>()
        .ok_or(WireError::BufferTooSmall {
            layer: LAYER,
            need: HEADER_LEN,
            have,
        })?;
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out[6..8].fill(0);
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0; HEADER_LEN];
        write_header(&mut d, 5004, 40000, payload.len()).unwrap();
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn fields_and_payload_bounds() {
        let mut d = datagram(&[1, 2, 3]);
        d.extend_from_slice(&[0xaa; 5]); // link-layer padding
        let u = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!(u.src_port(), 5004);
        assert_eq!(u.dst_port(), 40000);
        assert_eq!(u.len(), 11);
        assert_eq!(u.checksum(), 0);
        assert_eq!(u.payload(), &[1, 2, 3]);
    }

    #[test]
    fn known_checksum_vector() {
        // 192.0.2.1:1234 -> 192.0.2.2:5678, payload "hi", checksum worked
        // out by hand from the RFC 768 definition.
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(192, 0, 2, 2);
        let mut d = vec![0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0a, 0x00, 0x00, b'h', b'i'];
        // Pseudo-header c000+0201+c000+0202+0011+000a = 1841e, header
        // 04d2+162e+000a = 1b0a, data 6869: total 20791, folded 0793,
        // complemented f86c.
        let expected = 0xf86c;
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.fill_checksum_v4(src, dst);
        assert_eq!(u.checksum(), expected);
        assert!(u.verify_checksum_v4(src, dst));
        assert!(!u.verify_checksum_v4(dst, Ipv4Addr::new(192, 0, 2, 3)));
    }

    #[test]
    fn zero_checksum_rules() {
        let d = datagram(b"payload");
        let u = UdpPacket::new_checked(&d[..]).unwrap();
        assert!(u.verify_checksum_v4(V4_SRC, V4_DST));
        assert!(!u.verify_checksum_v6(V6_SRC, V6_DST));
        assert!(u.verify_checksum(V4_SRC.into(), V4_DST.into()));
        assert!(!u.verify_checksum(V4_SRC.into(), V6_DST.into()));
    }

    #[test]
    fn v6_fill_and_verify() {
        let mut d = datagram(b"odd");
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.fill_checksum_v6(V6_SRC, V6_DST);
        assert_ne!(u.checksum(), 0);
        assert!(u.verify_checksum_v6(V6_SRC, V6_DST));
        assert!(u.verify_checksum(V6_SRC.into(), V6_DST.into()));
        u.payload_mut()[0] ^= 1;
        assert!(!u.verify_checksum_v6(V6_SRC, V6_DST));
    }

    #[test]
    fn rejects_lying_lengths() {
        let d = datagram(&[0; 4]);
        for len in 0..d.len() {
            assert!(UdpPacket::new_checked(&d[..len]).is_err());
        }
        for claimed in 0..8u16 {
            let mut bad = d.clone();
            bad[4..6].copy_from_slice(&claimed.to_be_bytes());
            assert!(matches!(
                UdpPacket::new_checked(&bad[..]),
                Err(WireError::Malformed { .. })
            ));
        }
        let mut bad = d.clone();
        bad[4..6].copy_from_slice(&13u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&bad[..]),
            Err(WireError::BadLength {
                layer: "udp",
                claimed: 13,
                actual: 12
            })
        );
        assert!(write_header(&mut [0u8; 7], 1, 2, 0).is_err());
        assert!(write_header(&mut [0u8; 8], 1, 2, 65528).is_err());
        assert!(write_header(&mut [0u8; 8], 1, 2, 65527).is_ok());
    }

    #[test]
    fn rewrites_keep_checksum_valid() {
        let mut d = datagram(b"rtp bytes");
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.fill_checksum_v4(V4_SRC, V4_DST);
        u.rewrite_src_port(10_000);
        u.rewrite_dst_port(20_000);
        let new_dst = Ipv4Addr::new(198, 19, 1, 1);
        u.adjust_checksum_for_address(V4_DST.into(), new_dst.into())
            .unwrap();
        assert!(u.verify_checksum_v4(V4_SRC, new_dst));
        assert_eq!((u.src_port(), u.dst_port()), (10_000, 20_000));
        assert!(u
            .adjust_checksum_for_address(V4_DST.into(), V6_DST.into())
            .is_err());

        // No checksum over IPv4 stays no checksum.
        let mut d = datagram(b"x");
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.rewrite_dst_port(1);
        assert_eq!(u.checksum(), 0);

        let mut d = datagram(b"six");
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.fill_checksum_v6(V6_SRC, V6_DST);
        u.adjust_checksum_for_address(V6_SRC.into(), V6_DST.into())
            .unwrap();
        assert!(u.verify_checksum_v6(V6_DST, V6_DST));
    }

    #[test]
    fn unchecked_short_views_do_not_panic() {
        for len in 0..12 {
            let mut buf = vec![0xff; len];
            let mut u = UdpPacket::new_unchecked(&mut buf[..]);
            let _ = (
                u.src_port(),
                u.payload().len(),
                u.verify_checksum_v4(V4_SRC, V4_DST),
            );
            u.fill_checksum_v6(V6_SRC, V6_DST);
            u.rewrite_dst_port(3);
            let _ = u.payload_mut().len();
        }
    }

    proptest! {
        #[test]
        fn checked_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(u) = UdpPacket::new_checked(&bytes[..]) {
                prop_assert_eq!(u.payload().len() + HEADER_LEN, usize::from(u.len()));
                let _ = (u.verify_checksum_v4(V4_SRC, V4_DST), u.verify_checksum_v6(V6_SRC, V6_DST));
            }
        }

        #[test]
        fn incremental_rewrites_match_full_recompute(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            sport in any::<u16>(), dport in any::<u16>(),
            new_src in any::<[u8; 4]>(), new_dst6 in any::<[u8; 16]>(),
        ) {
            let mut d = datagram(&payload);
            let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
            u.fill_checksum_v4(V4_SRC, V4_DST);
            u.rewrite_src_port(sport);
            u.rewrite_dst_port(dport);
            let new_src = Ipv4Addr::from(new_src);
            u.adjust_checksum_for_address(V4_SRC.into(), new_src.into()).unwrap();
            prop_assert!(u.checksum() != 0);
            prop_assert!(u.verify_checksum_v4(new_src, V4_DST));

            let mut d = datagram(&payload);
            let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
            u.fill_checksum_v6(V6_SRC, V6_DST);
            let new_dst = Ipv6Addr::from(new_dst6);
            u.adjust_checksum_for_address(V6_DST.into(), new_dst.into()).unwrap();
            u.rewrite_src_port(sport);
            prop_assert!(u.verify_checksum_v6(V6_SRC, new_dst));
        }
    }
}
