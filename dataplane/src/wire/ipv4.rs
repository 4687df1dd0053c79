//! IPv4 headers (RFC 791) and the Internet checksum (RFC 1071, with
//! incremental updates per RFC 1624).

use core::net::Ipv4Addr;

use super::{ensure_len, Result, WireError};

const LAYER: &str = "ipv4";

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

/// IP protocol numbers this crate dispatches on.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// The Internet checksum: one's complement sum of 16-bit words.
pub mod checksum {
    /// Adds `data`, as big-endian 16-bit words (an odd last byte padded
    /// with zero), to an unfolded running sum. A `u64` accumulator cannot
    /// overflow for any buffer that fits in memory.
    pub fn accumulate(mut sum: u64, data: &[u8]) -> u64 {
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
        sum
    }

    /// Folds a running sum to 16 bits with end-around carry (not
    /// complemented).
    pub fn fold(mut sum: u64) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The checksum of `data` (RFC 1071): the complement of the folded sum.
    pub fn checksum(data: &[u8]) -> u16 {
        !fold(accumulate(0, data))
    }

    /// Updates `checksum` for a 16-bit word of the covered data changing
    /// from `old` to `new` (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
    pub fn update_word(checksum: u16, old: u16, new: u16) -> u16 {
        let sum = u64::from(!checksum) + u64::from(!old) + u64::from(new);
        !fold(sum)
    }

    /// Updates `checksum` for a field changing from `old` to `new`. The
    /// field must start at an even offset of the covered data and both
    /// slices must have its length (an odd last byte is the high byte of
    /// its word).
    pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
        // ~old + new summed wordwise, then one fold: equivalent to
        // applying update_word per word.
        let removed = !fold(accumulate(0, old));
        let sum = u64::from(!checksum) + u64::from(removed) + accumulate(0, new);
        !fold(sum)
    }
}

/// A zero-copy view of an IPv4 packet.
///
/// Accessors never panic: on a view made with [`Self::new_unchecked`] over
/// bytes that would fail [`Self::new_checked`], fixed fields read as zero,
/// variable regions are clamped to the buffer, and setters of missing
/// fields do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking the version, that IHL is at least 5
    /// and the header with its options fits, and that the total length
    /// covers the header and fits in the buffer (trailing bytes, such as
    /// Ethernet padding, are allowed). The checksum is not verified here;
    /// see [`Self::verify_checksum`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let buf = packet.buffer.as_ref();
        ensure_len(LAYER, buf, MIN_HEADER_LEN)?;
        let version = packet.version();
        if version != 4 {
            return Err(WireError::BadVersion {
                layer: LAYER,
                version,
            });
        }
        let header_len = packet.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "IHL below 5",
            });
        }
        ensure_len(LAYER, buf, header_len)?;
        let total = usize::from(packet.total_len());
        if total < header_len {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "total length shorter than the header",
            });
        }
        if total > buf.len() {
            return Err(WireError::BadLength {
                layer: LAYER,
                claimed: total,
                actual: buf.len(),
            });
        }
        Ok(packet)
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes past the total length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn fixed(&self) -> &[u8; MIN_HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk::<MIN_HEADER_LEN>()
            .unwrap_or(&[0; MIN_HEADER_LEN])
    }

    /// Version field (4 on every checked packet).
    pub fn version(&self) -> u8 {
        self.fixed()[0] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[0] & 0x0f) * 4
    }

    /// Differentiated services code point.
    pub fn dscp(&self) -> u8 {
        self.fixed()[1] >> 2
    }

    /// Explicit congestion notification bits.
    pub fn ecn(&self) -> u8 {
        self.fixed()[1] & 0x03
    }

    /// Total length field: header plus payload.
    pub fn total_len(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[2], f[3]])
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[4], f[5]])
    }

    /// DF flag.
    pub fn dont_fragment(&self) -> bool {
        self.fixed()[6] & 0x40 != 0
    }

    /// MF flag: more fragments follow.
    pub fn more_fragments(&self) -> bool {
        self.fixed()[6] & 0x20 != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn fragment_offset(&self) -> u16 {
        let f = self.fixed();
        (u16::from_be_bytes([f[6], f[7]]) & 0x1fff) << 3
    }

    /// Whether this packet is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.fixed()[8]
    }

    /// Protocol of the payload (17 for UDP).
    pub fn protocol(&self) -> u8 {
        self.fixed()[9]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[10], f[11]])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let f = self.fixed();
        Ipv4Addr::new(f[12], f[13], f[14], f[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let f = self.fixed();
        Ipv4Addr::new(f[16], f[17], f[18], f[19])
    }

    fn header(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        buf.get(..self.header_len()).unwrap_or(buf)
    }

    /// The options between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        self.header().get(MIN_HEADER_LEN..).unwrap_or(&[])
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::accumulate(0, self.header())) == 0xffff
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let start = self.header_len();
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        if start <= end {
            start..end
        } else {
            0..0
        }
    }

    /// The payload, bounded by the total length field (not by the buffer,
    /// which may carry link-layer padding).
    pub fn payload(&self) -> &[u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn fixed_mut(&mut self) -> Option<&mut [u8; MIN_HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut::<MIN_HEADER_LEN>()
    }

    /// Sets the TTL without touching the checksum.
    pub fn set_ttl(&mut self, ttl: u8) {
        if let Some(f) = self.fixed_mut() {
            f[8] = ttl;
        }
    }

    /// Sets the protocol without touching the checksum.
    pub fn set_protocol(&mut self, protocol: u8) {
        if let Some(f) = self.fixed_mut() {
            f[9] = protocol;
        }
    }

    /// Sets DSCP (6 bits) and ECN (2 bits) without touching the checksum.
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        if let Some(f) = self.fixed_mut() {
            f[1] = (dscp << 2) | (ecn & 0x03);
        }
    }

    /// Sets the identification field without touching the checksum.
    pub fn set_ident(&mut self, ident: u16) {
        if let Some(f) = self.fixed_mut() {
            f[4..6].copy_from_slice(&ident.to_be_bytes());
        }
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        if let Some(f) = self.fixed_mut() {
            f[10..12].copy_from_slice(&value.to_be_bytes());
        }
    }

    /// Sets the source address without touching the checksum.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        if let Some(f) = self.fixed_mut() {
            f[12..16].copy_from_slice(&addr.octets());
        }
    }

    /// Sets the destination address without touching the checksum.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        if let Some(f) = self.fixed_mut() {
            f[16..20].copy_from_slice(&addr.octets());
        }
    }

    /// Recomputes the header checksum over the header and options.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.header());
        self.set_checksum(value);
    }

    /// Rewrites the source address and updates the checksum incrementally.
    pub fn rewrite_src_addr(&mut self, addr: Ipv4Addr) {
        let old = self.src_addr();
        let value = checksum::update(self.checksum(), &old.octets(), &addr.octets());
        self.set_src_addr(addr);
        self.set_checksum(value);
    }

    /// Rewrites the destination address and updates the checksum
    /// incrementally.
    pub fn rewrite_dst_addr(&mut self, addr: Ipv4Addr) {
        let old = self.dst_addr();
        let value = checksum::update(self.checksum(), &old.octets(), &addr.octets());
        self.set_dst_addr(addr);
        self.set_checksum(value);
    }

    /// Decrements the TTL as a forwarder does and updates the checksum
    /// incrementally (RFC 1624); returns the new TTL. A packet whose TTL is
    /// 0 or 1 must not be forwarded: it is left untouched and an error
    /// returned.
    pub fn decrement_ttl(&mut self) -> Result<u8> {
        let ttl = self.ttl();
        if ttl <= 1 {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "TTL expired",
            });
        }
        let f = self.fixed();
        // TTL shares its 16-bit word with the protocol.
        let old_word = u16::from_be_bytes([f[8], f[9]]);
        let new_word = old_word - 0x0100;
        let value = checksum::update_word(self.checksum(), old_word, new_word);
        self.set_ttl(ttl - 1);
        self.set_checksum(value);
        Ok(ttl - 1)
    }

    /// The payload, mutable, bounded by the total length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::be16;
    use proptest::prelude::*;

    /// A commonly cited example header (UDP, 192.168.0.1 -> 192.168.0.199)
    /// whose checksum is 0xb861.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn packet_with_payload(payload_len: usize) -> Vec<u8> {
        let mut p = HEADER.to_vec();
        let total = (20 + payload_len) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend((0..payload_len).map(|i| i as u8));
        let mut v = Ipv4Packet::new_unchecked(&mut p[..]);
        v.fill_checksum();
        p
    }

    #[test]
    fn known_header_checksum() {
        let mut buf = HEADER.to_vec();
        buf.extend_from_slice(&[0; 95]); // total length 0x73
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0xb861);
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert!(p.dont_fragment());
        assert!(!p.more_fragments());
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(p.payload().len(), 95);
        assert!(p.options().is_empty());

        let mut buf2 = buf.clone();
        let mut q = Ipv4Packet::new_checked(&mut buf2[..]).unwrap();
        q.set_checksum(0);
        assert!(!q.verify_checksum());
        q.fill_checksum();
        assert_eq!(q.checksum(), 0xb861);
        assert_eq!(be16(&buf2, 10), 0xb861);
    }

    #[test]
    fn options_and_payload_bounds() {
        let mut p = vec![0x46, 0, 0, 28, 0, 1, 0x20, 0x02, 1, 17, 0, 0];
        p.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        p.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]); // router alert option
        p.extend_from_slice(&[1, 2, 3, 4, 9, 9]); // 4 payload bytes, 2 padding
        let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        v.fill_checksum();
        assert!(v.verify_checksum());
        assert_eq!(v.header_len(), 24);
        assert_eq!(v.options(), &[0x94, 0x04, 0, 0]);
        assert_eq!(v.payload(), &[1, 2, 3, 4]);
        assert!(v.more_fragments());
        assert_eq!(v.fragment_offset(), 16);
        assert!(v.is_fragment());
        assert_eq!(v.ident(), 1);
        v.payload_mut().fill(0);
        assert_eq!(&p[24..], &[0, 0, 0, 0, 9, 9]);
    }

    #[test]
    fn rejects_hostile_headers() {
        let good = packet_with_payload(8);
        // Bad versions.
        for version in [0u8, 6, 15] {
            let mut p = good.clone();
            p[0] = (version << 4) | 5;
            assert_eq!(
                Ipv4Packet::new_checked(&p[..]),
                Err(WireError::BadVersion {
                    layer: "ipv4",
                    version
                })
            );
        }
        // IHL below 5.
        for ihl in 0..5u8 {
            let mut p = good.clone();
            p[0] = 0x40 | ihl;
            assert!(matches!(
                Ipv4Packet::new_checked(&p[..]),
                Err(WireError::Malformed { .. })
            ));
        }
        // IHL past the buffer.
        let mut p = good.clone();
        p[0] = 0x4f;
        assert!(matches!(
            Ipv4Packet::new_checked(&p[..]),
            Err(WireError::Truncated { need: 60, .. })
        ));
        // Total length shorter than the header, and longer than the buffer.
        let mut p = good.clone();
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&p[..]),
            Err(WireError::Malformed { .. })
        ));
        let mut p = good.clone();
        p[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]),
            Err(WireError::BadLength {
                layer: "ipv4",
                claimed: 29,
                actual: 28
            })
        );
        // Every prefix.
        for len in 0..good.len() {
            assert!(Ipv4Packet::new_checked(&good[..len]).is_err());
        }
        assert!(Ipv4Packet::new_checked(&good[..]).is_ok());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = packet_with_payload(4);
        let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        assert_eq!(v.decrement_ttl(), Ok(63));
        assert!(v.verify_checksum());
        v.set_ttl(2);
        v.fill_checksum();
        assert_eq!(v.decrement_ttl(), Ok(1));
        assert!(v.verify_checksum());
        let before = v.as_bytes().to_vec();
        assert!(v.decrement_ttl().is_err());
        assert_eq!(v.as_bytes(), &before[..]);
        v.set_ttl(0);
        assert!(v.decrement_ttl().is_err());
    }

    #[test]
    fn address_rewrite_keeps_checksum_valid() {
        let mut p = packet_with_payload(4);
        let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        v.rewrite_src_addr(Ipv4Addr::new(198, 18, 0, 10));
        v.rewrite_dst_addr(Ipv4Addr::new(198, 19, 255, 255));
        assert!(v.verify_checksum());
        assert_eq!(v.src_addr(), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(v.dst_addr(), Ipv4Addr::new(198, 19, 255, 255));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives 0x0000
        // (eqn. 3 yields the complement-correct 0x0000, not 0xFFFF).
        assert_eq!(checksum::update_word(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn unchecked_short_views_do_not_panic() {
        for len in 0..24 {
            let mut buf = vec![0x4f; len];
            let mut v = Ipv4Packet::new_unchecked(&mut buf[..]);
            let _ = (
                v.src_addr(),
                v.payload().len(),
                v.options().len(),
                v.verify_checksum(),
            );
            v.fill_checksum();
            let _ = v.decrement_ttl();
            v.rewrite_dst_addr(Ipv4Addr::LOCALHOST);
            let _ = v.payload_mut().len();
        }
    }

    proptest! {
        #[test]
        fn checked_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(v) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (v.dscp(), v.ecn(), v.ident(), v.fragment_offset(), v.is_fragment());
                let _ = (v.src_addr(), v.dst_addr(), v.verify_checksum());
                prop_assert!(v.header_len() >= 20 && v.header_len() <= 60);
                prop_assert_eq!(v.header_len() + v.payload().len(), usize::from(v.total_len()));
                prop_assert_eq!(v.options().len(), v.header_len() - 20);
            }
        }

        #[test]
        fn incremental_matches_full(
            payload_len in 0usize..16,
            ttl in 2u8..=255,
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
        ) {
            let mut p = packet_with_payload(payload_len);
            let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
            v.set_ttl(ttl);
            v.fill_checksum();
            v.decrement_ttl().unwrap();
            v.rewrite_src_addr(Ipv4Addr::from(src));
            v.rewrite_dst_addr(Ipv4Addr::from(dst));
            prop_assert!(v.verify_checksum());
            let incremental = v.checksum();
            v.fill_checksum();
            // Equal up to the two one's complement zeros.
            let full = v.checksum();
            prop_assert!(incremental == full || (incremental ^ full) == 0xffff && (incremental == 0 || full == 0));
        }

        #[test]
        fn update_matches_recompute(data in proptest::collection::vec(any::<u8>(), 2..64), at in 0usize..32, new in any::<[u8; 4]>()) {
            let at = (at * 2).min(data.len() & !1);
            let end = (at + 4).min(data.len());
            let mut changed = data.clone();
            changed[at..end].copy_from_slice(&new[..end - at]);
            let before = checksum::checksum(&data);
            let updated = checksum::update(before, &data[at..end], &changed[at..end]);
            let mut check = checksum::accumulate(0, &changed);
            check += u64::from(updated);
            prop_assert_eq!(checksum::fold(check), 0xffff);
        }
    }
}
