//! Ethernet II frames with at most one 802.1Q / 802.1ad VLAN tag.
//!
//! Stacked tags (QinQ with two tags) are refused: the appliance's ports see
//! at most one tag, and a second one would hide the real ethertype.

use core::fmt;

use super::{be16, ensure_len, Result, WireError};

const LAYER: &str = "ethernet";

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;

/// Ethertype values this crate dispatches on.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag.
    pub const QINQ: u16 = 0x88A8;
}

fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN || ethertype == ethertype::QINQ
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set (multicast, including broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A VLAN tag's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag protocol identifier: 0x8100 (802.1Q) or 0x88A8 (802.1ad).
    pub tpid: u16,
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (12 bits).
    pub vlan_id: u16,
}

impl VlanTag {
    fn from_tci(tpid: u16, tci: u16) -> Self {
        Self {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vlan_id: tci & 0x0fff,
        }
    }

    fn tci(&self) -> u16 {
        (u16::from(self.pcp & 0x07) << 13)
            | if self.dei { 0x1000 } else { 0 }
            | (self.vlan_id & 0x0fff)
    }
}

/// A zero-copy view of an Ethernet II frame.
///
/// Accessors never panic: on a view made with [`Self::new_unchecked`] over
/// too few bytes, fields read as zero, the payload as empty, and setters of
/// missing fields do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking that the header, and the VLAN tag if
    /// the ethertype announces one, are present, and that tags are not
    /// stacked.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        let buf = frame.buffer.as_ref();
        ensure_len(LAYER, buf, HEADER_LEN)?;
        if is_vlan_tpid(be16(buf, 12)) {
            ensure_len(LAYER, buf, HEADER_LEN + VLAN_TAG_LEN)?;
            if is_vlan_tpid(be16(buf, 16)) {
                return Err(WireError::Malformed {
                    layer: LAYER,
                    reason: "stacked VLAN tags",
                });
            }
        }
        Ok(frame)
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn fixed(&self) -> &[u8; HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk::<HEADER_LEN>()
            .unwrap_or(&[0; HEADER_LEN])
    }

    fn read16(&self, at: usize) -> u16 {
        match self.buffer.as_ref().get(at..at + 2) {
            Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
            _ => 0,
        }
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        let f = self.fixed();
        MacAddr([f[0], f[1], f[2], f[3], f[4], f[5]])
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        let f = self.fixed();
        MacAddr([f[6], f[7], f[8], f[9], f[10], f[11]])
    }

    /// The ethertype field right after the addresses: the TPID when the
    /// frame is tagged.
    pub fn ethertype(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[12], f[13]])
    }

    /// The VLAN tag, if the frame carries one.
    pub fn vlan(&self) -> Option<VlanTag> {
        let tpid = self.ethertype();
        if !is_vlan_tpid(tpid) {
            return None;
        }
        match self.buffer.as_ref().get(14..16) {
            Some(&[hi, lo]) => Some(VlanTag::from_tci(tpid, u16::from_be_bytes([hi, lo]))),
            _ => None,
        }
    }

    /// The ethertype of the payload: after the VLAN tag if there is one.
    pub fn payload_ethertype(&self) -> u16 {
        if is_vlan_tpid(self.ethertype()) {
            self.read16(HEADER_LEN + 2)
        } else {
            self.ethertype()
        }
    }

    /// 14, or 18 with a VLAN tag.
    pub fn header_len(&self) -> usize {
        if is_vlan_tpid(self.ethertype()) {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The bytes after the header, including any trailing padding a short
    /// frame was extended with (the IP layer bounds itself by its length
    /// field).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        if let Some(field) = self.buffer.as_mut().get_mut(0..6) {
            field.copy_from_slice(&addr.0);
        }
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        if let Some(field) = self.buffer.as_mut().get_mut(6..12) {
            field.copy_from_slice(&addr.0);
        }
    }

    /// Sets the payload's ethertype (after the VLAN tag if there is one).
    pub fn set_payload_ethertype(&mut self, ethertype: u16) {
        let at = self.header_len() - 2;
        if let Some(field) = self.buffer.as_mut().get_mut(at..at + 2) {
            field.copy_from_slice(&ethertype.to_be_bytes());
        }
    }

    /// The bytes after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

/// Writes an Ethernet header (with a VLAN tag if `vlan` is given) at the
/// start of `buf` and returns its length. The tag's PCP and VLAN id are
/// masked to their 3 and 12 bits.
pub fn write_header(
    buf: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    vlan: Option<VlanTag>,
    ethertype: u16,
) -> Result<usize> {
    if vlan.is_some_and(|tag| !is_vlan_tpid(tag.tpid)) {
        return Err(WireError::Malformed {
            layer: LAYER,
            reason: "VLAN TPID is neither 0x8100 nor 0x88A8",
        });
    }
    let len = if vlan.is_some() {
        HEADER_LEN + VLAN_TAG_LEN
    } else {
        HEADER_LEN
    };
    let have = buf.len();
    let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall {
        layer: LAYER,
        need: len,
        have,
    })?;
    out[0..6].copy_from_slice(&dst.0);
    out[6..12].copy_from_slice(&src.0);
    if let Some(tag) = vlan {
        out[12..14].copy_from_slice(&tag.tpid.to_be_bytes());
        out[14..16].copy_from_slice(&tag.tci().to_be_bytes());
    }
    out[len - 2..len].copy_from_slice(&ethertype.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DST: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    const SRC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);

    #[test]
    fn untagged_ipv4() {
        let mut frame = vec![
            0x02, 0, 0, 0, 0, 0x01, // dst
            0x02, 0, 0, 0, 0, 0x02, // src
            0x08, 0x00, // IPv4
        ];
        frame.extend_from_slice(&[0x45, 0, 0, 20]);
        let f = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(f.dst_addr(), DST);
        assert_eq!(f.src_addr(), SRC);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload_ethertype(), ethertype::IPV4);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0x45, 0, 0, 20]);
        assert_eq!(f.dst_addr().to_string(), "02:00:00:00:00:01");
    }

    #[test]
    fn single_tag_both_tpids() {
        for tpid in [ethertype::VLAN, ethertype::QINQ] {
            let mut frame = vec![0xff; 12];
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&[0xb0, 0x64]); // PCP 5, DEI 1, VID 100
            frame.extend_from_slice(&[0x86, 0xdd, 0x60]);
            let f = EthernetFrame::new_checked(&frame[..]).unwrap();
            assert!(f.dst_addr().is_broadcast());
            assert!(f.dst_addr().is_multicast());
            assert_eq!(
                f.vlan(),
                Some(VlanTag {
                    tpid,
                    pcp: 5,
                    dei: true,
                    vlan_id: 100
                })
            );
            assert_eq!(f.ethertype(), tpid);
            assert_eq!(f.payload_ethertype(), ethertype::IPV6);
            assert_eq!(f.header_len(), 18);
            assert_eq!(f.payload(), &[0x60]);
        }
    }

    #[test]
    fn refuses_stacked_tags_and_truncation() {
        let mut frame = vec![0; 12];
        frame.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
        assert!(matches!(
            EthernetFrame::new_checked(&frame[..]),
            Err(WireError::Malformed { .. })
        ));
        let mut tagged = [0u8; 18];
        write_header(
            &mut tagged,
            DST,
            SRC,
            Some(VlanTag {
                tpid: ethertype::VLAN,
                pcp: 0,
                dei: false,
                vlan_id: 7,
            }),
            ethertype::IPV4,
        )
        .unwrap();
        for len in 0..tagged.len() {
            assert!(matches!(
                EthernetFrame::new_checked(&tagged[..len]),
                Err(WireError::Truncated { .. })
            ));
        }
        assert!(EthernetFrame::new_checked(&tagged[..]).is_ok());
    }

    #[test]
    fn setters_and_writer() {
        let mut buf = [0u8; 20];
        let n = write_header(&mut buf, DST, SRC, None, ethertype::ARP).unwrap();
        assert_eq!(n, 14);
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr(SRC);
        f.set_src_addr(DST);
        f.set_payload_ethertype(ethertype::IPV6);
        f.payload_mut().fill(0xee);
        assert_eq!(f.dst_addr(), SRC);
        assert_eq!(f.src_addr(), DST);
        assert_eq!(f.payload_ethertype(), ethertype::IPV6);
        assert_eq!(f.payload(), &[0xee; 6]);

        let tag = VlanTag {
            tpid: ethertype::QINQ,
            pcp: 7,
            dei: false,
            vlan_id: 4095,
        };
        let n = write_header(&mut buf, DST, SRC, Some(tag), ethertype::IPV4).unwrap();
        assert_eq!(n, 18);
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        assert_eq!(f.vlan(), Some(tag));
        f.set_payload_ethertype(ethertype::IPV6);
        assert_eq!(f.payload_ethertype(), ethertype::IPV6);
        assert_eq!(f.vlan(), Some(tag));

        assert!(matches!(
            write_header(&mut buf[..17], DST, SRC, Some(tag), ethertype::IPV4),
            Err(WireError::BufferTooSmall { need: 18, .. })
        ));
        let bad = VlanTag {
            tpid: 0x0800,
            ..tag
        };
        assert!(write_header(&mut buf, DST, SRC, Some(bad), ethertype::IPV4).is_err());
    }

    #[test]
    fn unchecked_short_views_do_not_panic() {
        for len in 0..20 {
            let mut buf = vec![0x81; len];
            let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
            let _ = (
                f.dst_addr(),
                f.src_addr(),
                f.vlan(),
                f.payload_ethertype(),
                f.payload().len(),
            );
            f.set_dst_addr(DST);
            f.set_payload_ethertype(1);
            let _ = f.payload_mut().len();
        }
    }

    proptest! {
        #[test]
        fn checked_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan());
                prop_assert_eq!(f.header_len() + f.payload().len(), bytes.len());
                prop_assert_eq!(f.vlan().is_some(), f.header_len() == 18);
                prop_assert!(!is_vlan_tpid(f.payload_ethertype()));
            }
        }
    }
}
