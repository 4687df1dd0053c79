//! RTP packets (RFC 3550 §5.1): fixed header, CSRC list, header-extension
//! block and padding, plus extended sequence numbers (RFC 3711 §3.3.1).
//!
//! [`RtpPacket`] is a zero-copy view. [`RtpPacket::new_checked`] validates
//! everything the accessors rely on, including the padding count;
//! [`RtpPacket::new_checked_header`] skips the padding check because in an
//! SRTP packet the padding count byte is still encrypted.

use super::{be16, ensure_len, Result, WireError};

const LAYER: &str = "rtp";

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;
/// The only RTP version in use (RFC 3550).
pub const RTP_VERSION: u8 = 2;
/// Largest number of CSRC identifiers the 4-bit CC field can announce.
pub const MAX_CSRCS: usize = 15;
/// Length of the header-extension block's own header (profile + length).
pub const EXTENSION_HEADER_LEN: usize = 4;

/// A zero-copy view of an RTP packet.
///
/// Accessors never panic, whatever the buffer holds: on a view made with
/// [`RtpPacket::new_unchecked`] over too few bytes, fixed fields read as
/// zero, variable-length regions read as empty or `None`, and setters of
/// missing fields do nothing. On a view from [`RtpPacket::new_checked`] every
/// accessor reads exactly what the header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps `buffer` without validation; see the type's documentation for
    /// what accessors return on bytes that would fail [`Self::new_checked`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking the version, that the CSRC list and the
    /// extension block fit, and, when the P bit is set, that the padding count
    /// is at least 1 and fits in the bytes after the header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        packet.check_padding()?;
        Ok(packet)
    }

    /// Like [`Self::new_checked`] but does not look at the padding count,
    /// which is encrypted in an SRTP packet.
    pub fn new_checked_header(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        Ok(packet)
    }

    fn check_header(&self) -> Result<()> {
        let buf = self.buffer.as_ref();
        ensure_len(LAYER, buf, FIXED_HEADER_LEN)?;
        let version = self.version();
        if version != RTP_VERSION {
            return Err(WireError::BadVersion {
                layer: LAYER,
                version,
            });
        }
        let csrc_end = self.csrc_end();
        ensure_len(LAYER, buf, csrc_end)?;
        if self.extension() {
            let data_start = csrc_end + EXTENSION_HEADER_LEN;
            ensure_len(LAYER, buf, data_start)?;
            let claimed = usize::from(be16(buf, csrc_end + 2)) * 4;
            let actual = buf.len() - data_start;
            if claimed > actual {
                return Err(WireError::BadLength {
                    layer: LAYER,
                    claimed,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Requires [`Self::check_header`] to have passed.
    fn check_padding(&self) -> Result<()> {
        if !self.padding() {
            return Ok(());
        }
        let buf = self.buffer.as_ref();
        let area = buf.len().saturating_sub(self.header_len());
        let count = match buf.last() {
            Some(&count) if area > 0 => usize::from(count),
            _ => {
                return Err(WireError::Malformed {
                    layer: LAYER,
                    reason: "padding bit set but no bytes follow the header",
                })
            }
        };
        if count == 0 {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "padding count of zero",
            });
        }
        if count > area {
            return Err(WireError::BadLength {
                layer: LAYER,
                claimed: count,
                actual: area,
            });
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole packet: header, payload and padding.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn fixed(&self) -> &[u8; FIXED_HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk::<FIXED_HEADER_LEN>()
            .unwrap_or(&[0; FIXED_HEADER_LEN])
    }

    /// Version field (2 on every checked packet).
    pub fn version(&self) -> u8 {
        self.fixed()[0] >> 6
    }

    /// P bit: the packet ends with padding whose last byte is its length.
    pub fn padding(&self) -> bool {
        self.fixed()[0] & 0x20 != 0
    }

    /// X bit: a header-extension block follows the CSRC list.
    pub fn extension(&self) -> bool {
        self.fixed()[0] & 0x10 != 0
    }

    /// CC field: the number of CSRC identifiers.
    pub fn csrc_count(&self) -> u8 {
        self.fixed()[0] & 0x0f
    }

    /// M bit, whose meaning the payload format defines (end of a video frame).
    pub fn marker(&self) -> bool {
        self.fixed()[1] & 0x80 != 0
    }

    /// 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.fixed()[1] & 0x7f
    }

    /// 16-bit sequence number.
    pub fn sequence_number(&self) -> u16 {
        let f = self.fixed();
        u16::from_be_bytes([f[2], f[3]])
    }

    /// 32-bit media timestamp.
    pub fn timestamp(&self) -> u32 {
        let f = self.fixed();
        u32::from_be_bytes([f[4], f[5], f[6], f[7]])
    }

    /// Synchronisation source identifier.
    pub fn ssrc(&self) -> u32 {
        let f = self.fixed();
        u32::from_be_bytes([f[8], f[9], f[10], f[11]])
    }

    fn csrc_end(&self) -> usize {
        FIXED_HEADER_LEN + 4 * usize::from(self.csrc_count())
    }

    /// The contributing source identifiers, in header order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.buffer
            .as_ref()
            .get(FIXED_HEADER_LEN..self.csrc_end())
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Length of the extension block including its 4-byte header, or 0
    /// without the X bit.
    fn extension_block_len(&self) -> usize {
        if !self.extension() {
            return 0;
        }
        let at = self.csrc_end() + 2;
        let words = match self.buffer.as_ref().get(at..at + 2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => 0,
        };
        EXTENSION_HEADER_LEN + 4 * words
    }

    /// Bytes before the payload: 12 + 4·CC, plus the extension block
    /// (its 4-byte header and its data) when the X bit is set.
    pub fn header_len(&self) -> usize {
        self.csrc_end() + self.extension_block_len()
    }

    /// The 16-bit "defined by profile" field of the extension block
    /// (0xBEDE for RFC 8285 one-byte elements), if the X bit is set.
    pub fn extension_profile(&self) -> Option<u16> {
        if !self.extension() {
            return None;
        }
        let at = self.csrc_end();
        match self.buffer.as_ref().get(at..at + 2) {
            Some(&[hi, lo]) => Some(u16::from_be_bytes([hi, lo])),
            _ => None,
        }
    }

    fn extension_data_range(&self) -> Option<core::ops::Range<usize>> {
        if !self.extension() {
            return None;
        }
        let start = self.csrc_end() + EXTENSION_HEADER_LEN;
        let end = self.header_len();
        (end <= self.buffer.as_ref().len()).then_some(start..end)
    }

    /// The extension words after the 4-byte extension header, if the X bit
    /// is set.
    pub fn extension_data(&self) -> Option<&[u8]> {
        let range = self.extension_data_range()?;
        self.buffer.as_ref().get(range)
    }

    /// Number of padding bytes at the end (0 without the P bit).
    ///
    /// On a view from [`Self::new_checked_header`] the count byte may be
    /// ciphertext; the value is then clamped to the bytes after the header
    /// and only meaningful once the packet has been decrypted.
    pub fn padding_len(&self) -> usize {
        if !self.padding() {
            return 0;
        }
        let buf = self.buffer.as_ref();
        let area = buf.len().saturating_sub(self.header_len());
        match buf.last() {
            Some(&count) if area > 0 => usize::from(count).min(area),
            _ => 0,
        }
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let start = self.header_len();
        let end = self
            .buffer
            .as_ref()
            .len()
            .saturating_sub(self.padding_len());
        if start <= end {
            start..end
        } else {
            0..0
        }
    }

    /// The payload, without the header and without padding.
    pub fn payload(&self) -> &[u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    fn fixed_mut(&mut self) -> Option<&mut [u8; FIXED_HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut::<FIXED_HEADER_LEN>()
    }

    /// Sets or clears the M bit.
    pub fn set_marker(&mut self, marker: bool) {
        if let Some(f) = self.fixed_mut() {
            f[1] = (f[1] & 0x7f) | if marker { 0x80 } else { 0 };
        }
    }

    /// Sets the payload type; only its low 7 bits are used.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        if let Some(f) = self.fixed_mut() {
            f[1] = (f[1] & 0x80) | (payload_type & 0x7f);
        }
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u16) {
        if let Some(f) = self.fixed_mut() {
            f[2..4].copy_from_slice(&seq.to_be_bytes());
        }
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, timestamp: u32) {
        if let Some(f) = self.fixed_mut() {
            f[4..8].copy_from_slice(&timestamp.to_be_bytes());
        }
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        if let Some(f) = self.fixed_mut() {
            f[8..12].copy_from_slice(&ssrc.to_be_bytes());
        }
    }

    /// The payload, mutable, without header and padding.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }

    /// The extension words after the 4-byte extension header, mutable, for
    /// rewriting extension ids and values in place.
    pub fn extension_data_mut(&mut self) -> Option<&mut [u8]> {
        let range = self.extension_data_range()?;
        self.buffer.as_mut().get_mut(range)
    }
}

/// Writes an RTP header (fixed part, CSRCs, optional extension block) into a
/// caller buffer; the payload is the caller's to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeaderBuilder<'a> {
    marker: bool,
    padding: bool,
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
    csrcs: &'a [u32],
    extension: Option<(u16, &'a [u8])>,
}

impl<'a> RtpHeaderBuilder<'a> {
    /// A header without marker, padding, CSRCs or extension.
    pub const fn new(payload_type: u8, sequence_number: u16, timestamp: u32, ssrc: u32) -> Self {
        Self {
            marker: false,
            padding: false,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            csrcs: &[],
            extension: None,
        }
    }

    /// Sets the M bit.
    pub const fn marker(mut self, marker: bool) -> Self {
        self.marker = marker;
        self
    }

    /// Sets the P bit; the caller appends the padding bytes and the count.
    pub const fn padding(mut self, padding: bool) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the CSRC list (at most 15 entries).
    pub const fn csrcs(mut self, csrcs: &'a [u32]) -> Self {
        self.csrcs = csrcs;
        self
    }

    /// Adds an extension block with this profile and data; the data is
    /// zero-padded to a multiple of 4 bytes, which RFC 8285 parsers skip as
    /// padding.
    pub const fn extension(mut self, profile: u16, data: &'a [u8]) -> Self {
        self.extension = Some((profile, data));
        self
    }

    fn extension_words(data: &[u8]) -> Result<u16> {
        u16::try_from(data.len().div_ceil(4)).map_err(|_| WireError::Malformed {
            layer: LAYER,
            reason: "extension block longer than 65535 words",
        })
    }

    /// The length the header will occupy, or why it cannot be written.
    pub fn header_len(&self) -> Result<usize> {
        if self.payload_type > 0x7f {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "payload type above 127",
            });
        }
        if self.csrcs.len() > MAX_CSRCS {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "more than 15 CSRCs",
            });
        }
        let mut len = FIXED_HEADER_LEN + 4 * self.csrcs.len();
        if let Some((_, data)) = self.extension {
            len += EXTENSION_HEADER_LEN + 4 * usize::from(Self::extension_words(data)?);
        }
        Ok(len)
    }

    /// Writes the header at the start of `buf` and returns its length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len()?;
        let have = buf.len();
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall {
            layer: LAYER,
            need: len,
            have,
        })?;
        // Lengths were validated by header_len, so the casts below are exact.
        let mut first = (RTP_VERSION << 6) | self.csrcs.len() as u8;
        if self.padding {
            first |= 0x20;
        }
        if self.extension.is_some() {
            first |= 0x10;
        }
        let (fixed, mut rest) = out.split_at_mut(FIXED_HEADER_LEN);
        fixed[0] = first;
        fixed[1] = self.payload_type | if self.marker { 0x80 } else { 0 };
        fixed[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        fixed[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        fixed[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        for (slot, csrc) in rest.chunks_exact_mut(4).zip(self.csrcs) {
            slot.copy_from_slice(&csrc.to_be_bytes());
        }
        rest = &mut rest[4 * self.csrcs.len()..];
        if let Some((profile, data)) = self.extension {
            let words = Self::extension_words(data)?;
            let (ext_header, ext_data) = rest.split_at_mut(EXTENSION_HEADER_LEN);
            ext_header[0..2].copy_from_slice(&profile.to_be_bytes());
            ext_header[2..4].copy_from_slice(&words.to_be_bytes());
            let (filled, pad) = ext_data.split_at_mut(data.len());
            filled.copy_from_slice(data);
            pad.fill(0);
        }
        Ok(len)
    }
}

/// Estimates the extended (ROC‖SEQ) index of a packet with sequence number
/// `seq`, given the highest extended index seen so far (RFC 3711 §3.3.1):
/// the candidate in the previous, current or next rollover whose index is
/// closest to `highest_ext`.
///
/// Before the first packet of a stream, pass `highest_ext = 0`: the result is
/// then `seq` itself (ROC 0), as RFC 3711 prescribes for the first packet.
/// There is no rollover before 0, so when `highest_ext` is in ROC 0 a packet
/// that looks like it belongs to the previous rollover is given ROC 0, the
/// only index it can legitimately have.
pub fn extend_sequence(highest_ext: u64, seq: u16) -> u64 {
    const HALF: u16 = 1 << 15;
    let roc = highest_ext >> 16;
    let highest_seq = highest_ext as u16;
    let guessed_roc = if highest_seq < HALF {
        if seq > highest_seq && seq - highest_seq > HALF {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if highest_seq - HALF > seq {
        roc + 1
    } else {
        roc
    };
    (guessed_roc << 16) | u64::from(seq)
}

/// Whether sequence number `a` is newer than `b` under RFC 1982 serial-number
/// arithmetic. Numbers exactly 2^15 apart are incomparable: neither is newer.
pub fn seq_newer(a: u16, b: u16) -> bool {
    let distance = a.wrapping_sub(b);
    distance != 0 && distance < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Opus packet as browsers send it: X bit, RFC 8285 one-byte
    /// elements (audio level id 1, abs-send-time id 2), one padding byte.
    const OPUS_WITH_EXT: [u8; 32] = [
        0x90, 0x6f, 0x1a, 0x2b, // V=2 X=1, PT=111, seq 0x1a2b
        0x00, 0x01, 0xe2, 0x40, // ts 123456
        0xde, 0xad, 0xbe, 0xef, // ssrc
        0xbe, 0xde, 0x00, 0x02, // one-byte profile, 2 words
        0x10, 0x85, 0x22, 0x12, // id1 len1: V=1 level 5; id2 len3...
        0x34, 0x56, 0x00, 0x00, // ...abs-send-time 0x123456, 2 padding bytes
        0xfc, 0xff, 0xfe, 0x01, // opus payload
        0x02, 0x03, 0x04, 0x05,
    ];

    #[test]
    fn parses_browser_opus_packet() {
        let p = RtpPacket::new_checked(&OPUS_WITH_EXT[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert!(p.extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 111);
        assert_eq!(p.sequence_number(), 0x1a2b);
        assert_eq!(p.timestamp(), 123_456);
        assert_eq!(p.ssrc(), 0xdead_beef);
        assert_eq!(p.csrcs().count(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.extension_profile(), Some(0xbede));
        assert_eq!(
            p.extension_data(),
            Some(&[0x10, 0x85, 0x22, 0x12, 0x34, 0x56, 0, 0][..])
        );
        assert_eq!(p.padding_len(), 0);
        assert_eq!(p.payload(), &OPUS_WITH_EXT[24..]);
    }

    #[test]
    fn csrcs_and_padding() {
        let mut pkt = vec![0xa2, 0xe0, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 2];
        pkt.extend_from_slice(&[0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]);
        pkt.extend_from_slice(&[0xaa, 0xbb, 0xcc]);
        pkt.extend_from_slice(&[0, 0, 3]);
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert!(p.padding());
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [0x1111_1111, 0x2222_2222]);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.padding_len(), 3);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc]);
        assert_eq!(p.extension_profile(), None);
        assert_eq!(p.extension_data(), None);
    }

    #[test]
    fn padding_may_fill_the_whole_payload_area() {
        let pkt = [0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4];
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.padding_len(), 4);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn rejects_bad_padding() {
        let header = [0xa0u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        // P bit but nothing after the header.
        assert!(matches!(
            RtpPacket::new_checked(&header[..]),
            Err(WireError::Malformed { .. })
        ));
        // Count of zero.
        let mut zero = header.to_vec();
        zero.extend_from_slice(&[1, 2, 0]);
        assert!(matches!(
            RtpPacket::new_checked(&zero[..]),
            Err(WireError::Malformed { .. })
        ));
        // Count longer than the payload area.
        let mut long = header.to_vec();
        long.extend_from_slice(&[1, 2, 4]);
        assert_eq!(
            RtpPacket::new_checked(&long[..]),
            Err(WireError::BadLength {
                layer: "rtp",
                claimed: 4,
                actual: 3
            })
        );
        // The header-only check accepts all of them; padding_len stays in bounds.
        for pkt in [&header[..], &zero[..], &long[..]] {
            let p = RtpPacket::new_checked_header(pkt).unwrap();
            assert!(p.padding_len() <= pkt.len() - p.header_len());
            assert!(p.payload().len() <= pkt.len() - p.header_len());
        }
    }

    #[test]
    fn rejects_bad_version() {
        for v in [0u8, 1, 3] {
            let mut pkt = OPUS_WITH_EXT;
            pkt[0] = (pkt[0] & 0x3f) | (v << 6);
            assert_eq!(
                RtpPacket::new_checked(&pkt[..]),
                Err(WireError::BadVersion {
                    layer: "rtp",
                    version: v
                })
            );
        }
    }

    #[test]
    fn rejects_lying_extension_length() {
        let mut pkt = OPUS_WITH_EXT;
        pkt[15] = 5; // 5 words = 20 bytes, only 16 follow
        assert_eq!(
            RtpPacket::new_checked_header(&pkt[..]),
            Err(WireError::BadLength {
                layer: "rtp",
                claimed: 20,
                actual: 16
            })
        );
        pkt[15] = 4; // exactly fills the packet
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.header_len(), 32);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn rejects_csrc_list_past_end() {
        let pkt = [0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert!(matches!(
            RtpPacket::new_checked(&pkt[..]),
            Err(WireError::Truncated { need: 72, .. })
        ));
    }

    #[test]
    fn every_truncation_of_a_full_packet_fails() {
        // CSRCs, an extension block and padding in one packet.
        let csrcs = [7u32, 8, 9];
        let mut pkt = vec![0; 64];
        let n = RtpHeaderBuilder::new(100, 1, 2, 3)
            .csrcs(&csrcs)
            .extension(0xbede, &[0x10, 0xaa])
            .padding(true)
            .write(&mut pkt)
            .unwrap();
        pkt.truncate(n);
        // Zero payload bytes so that no prefix ends in a plausible count.
        pkt.extend_from_slice(&[0, 0, 0, 0, 0, 3]);
        let full = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!(full.payload(), &[0, 0, 0]);
        for len in 0..pkt.len() {
            let prefix = &pkt[..len];
            assert!(
                RtpPacket::new_checked(prefix).is_err(),
                "prefix of {len} bytes accepted"
            );
            if len < n {
                assert!(RtpPacket::new_checked_header(prefix).is_err());
            }
        }
    }

    #[test]
    fn unchecked_view_of_short_buffer_does_not_panic() {
        for len in 0..OPUS_WITH_EXT.len() {
            let mut buf = OPUS_WITH_EXT[..len].to_vec();
            buf.iter_mut().for_each(|b| *b |= 0x20);
            let mut p = RtpPacket::new_unchecked(&mut buf[..]);
            let _ = (p.version(), p.sequence_number(), p.ssrc(), p.header_len());
            let _ = (p.extension_profile(), p.extension_data(), p.padding_len());
            let _ = (p.payload().len(), p.csrcs().count());
            p.set_ssrc(1);
            p.set_marker(true);
            let _ = p.payload_mut().len();
            let _ = p.extension_data_mut().map(|d| d.len());
        }
    }

    #[test]
    fn setters_touch_only_their_field() {
        let mut buf = OPUS_WITH_EXT;
        let mut p = RtpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_marker(true);
        p.set_payload_type(0xff);
        p.set_sequence_number(0xfffe);
        p.set_timestamp(0x0102_0304);
        p.set_ssrc(0x0a0b_0c0d);
        p.payload_mut()[0] = 0x55;
        p.extension_data_mut().unwrap()[1] = 0x7f;
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0x7f);
        p.set_payload_type(8);
        p.set_marker(false);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.sequence_number(), 0xfffe);
        assert_eq!(p.timestamp(), 0x0102_0304);
        assert_eq!(p.ssrc(), 0x0a0b_0c0d);
        let buf = p.into_inner();
        assert_eq!(buf[0], 0x90);
        assert_eq!(buf[17], 0x7f);
        assert_eq!(buf[24], 0x55);
        assert_eq!(buf[12..16], OPUS_WITH_EXT[12..16]);
        assert_eq!(buf[25..], OPUS_WITH_EXT[25..]);
    }

    #[test]
    fn builder_round_trip_and_errors() {
        let mut buf = [0u8; 40];
        let n = RtpHeaderBuilder::new(111, 0x1a2b, 123_456, 0xdead_beef)
            .extension(0xbede, &[0x10, 0x85, 0x22, 0x12, 0x34, 0x56])
            .write(&mut buf)
            .unwrap();
        assert_eq!(n, 24);
        assert_eq!(buf[..24], OPUS_WITH_EXT[..24]);

        let too_many = [0u32; 16];
        assert!(RtpHeaderBuilder::new(0, 0, 0, 0)
            .csrcs(&too_many)
            .write(&mut buf)
            .is_err());
        assert!(RtpHeaderBuilder::new(128, 0, 0, 0).write(&mut buf).is_err());
        let huge = vec![0u8; 4 * 65536];
        assert!(RtpHeaderBuilder::new(0, 0, 0, 0)
            .extension(0x1000, &huge)
            .header_len()
            .is_err());
        assert_eq!(
            RtpHeaderBuilder::new(0, 0, 0, 0).write(&mut buf[..11]),
            Err(WireError::BufferTooSmall {
                layer: "rtp",
                need: 12,
                have: 11
            })
        );
        let max_ext = vec![0u8; 4 * 65535];
        let mut big = vec![0u8; 12 + 4 + max_ext.len()];
        let n = RtpHeaderBuilder::new(0, 0, 0, 0)
            .extension(0x1000, &max_ext)
            .write(&mut big)
            .unwrap();
        assert_eq!(n, big.len());
        assert_eq!(RtpPacket::new_checked(&big[..]).unwrap().header_len(), n);
    }

    #[test]
    fn extend_sequence_examples() {
        // First packet: pass 0.
        assert_eq!(extend_sequence(0, 0), 0);
        assert_eq!(extend_sequence(0, 40_000), 40_000);
        assert_eq!(extend_sequence(0, 65_535), 65_535);
        // Forward across the wrap.
        assert_eq!(extend_sequence(65_535, 0), 65_536);
        assert_eq!(extend_sequence(65_500, 100), 65_536 + 100);
        // A late packet from before the wrap.
        assert_eq!(extend_sequence(65_536 + 5, 65_530), 65_530);
        // Late packet in ROC 0 when nothing came before the stream start.
        assert_eq!(extend_sequence(5, 65_530), 65_530);
        // Same rollover, both directions.
        assert_eq!(extend_sequence((3 << 16) | 1000, 900), (3 << 16) | 900);
        assert_eq!(extend_sequence((3 << 16) | 1000, 1100), (3 << 16) | 1100);
        // Exactly half a cycle away, as RFC 3711 §3.3.1 resolves it.
        assert_eq!(extend_sequence(1 << 16, 0x8000), (1 << 16) | 0x8000);
        assert_eq!(extend_sequence((1 << 16) | 0x8000, 0), 1 << 16);
        // Large indices do not overflow.
        let top = (u64::from(u32::MAX) << 16) | 0xffff;
        assert_eq!(extend_sequence(top, 0), top + 1);
    }

    #[test]
    fn seq_newer_examples() {
        assert!(seq_newer(1, 0));
        assert!(!seq_newer(0, 1));
        assert!(seq_newer(0, 65_535));
        assert!(!seq_newer(65_535, 0));
        assert!(seq_newer(100, 65_000));
        assert!(!seq_newer(5, 5));
        assert!(seq_newer(0x7fff, 0));
        assert!(!seq_newer(0x8000, 0));
        assert!(!seq_newer(0, 0x8000));
    }

    /// Packets with version 2 and a random mix of every optional field.
    fn shaped_packet() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<[u8; 12]>(),
            0u8..16,
            any::<bool>(),
            any::<bool>(),
            0u16..6,
            proptest::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(mut fixed, cc, x, p, ext_words, tail)| {
                fixed[0] = 0x80 | cc | if x { 0x10 } else { 0 } | if p { 0x20 } else { 0 };
                let mut pkt = fixed.to_vec();
                pkt.extend(std::iter::repeat_n(0x5a, 4 * usize::from(cc)));
                if x {
                    pkt.extend_from_slice(&[0xbe, 0xde]);
                    pkt.extend_from_slice(&ext_words.to_be_bytes());
                }
                pkt.extend_from_slice(&tail);
                pkt
            })
    }

    fn exercise<T: AsRef<[u8]>>(p: &RtpPacket<T>) -> usize {
        let mut acc = usize::from(p.version())
            + usize::from(p.csrc_count())
            + usize::from(p.payload_type())
            + usize::from(p.sequence_number())
            + p.timestamp() as usize
            + p.ssrc() as usize
            + p.csrcs().count()
            + p.header_len()
            + p.padding_len()
            + p.payload().len();
        acc += usize::from(p.padding()) + usize::from(p.extension()) + usize::from(p.marker());
        acc += p.extension_profile().map_or(0, usize::from);
        acc += p.extension_data().map_or(0, <[u8]>::len);
        acc
    }

    proptest! {
        #[test]
        fn checked_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(p) = RtpPacket::new_checked(&bytes[..]) {
                let _ = exercise(&p);
                let len = p.header_len() + p.payload().len() + p.padding_len();
                prop_assert_eq!(len, bytes.len());
            }
            if let Ok(p) = RtpPacket::new_checked_header(&bytes[..]) {
                let _ = exercise(&p);
                prop_assert!(p.header_len() <= bytes.len());
            }
            let _ = exercise(&RtpPacket::new_unchecked(&bytes[..]));
        }

        #[test]
        fn setters_on_checked_views_never_panic(mut bytes in shaped_packet(), v in any::<u32>()) {
            if let Ok(mut p) = RtpPacket::new_checked_header(&mut bytes[..]) {
                p.set_marker(v & 1 == 1);
                p.set_payload_type(v as u8);
                p.set_sequence_number(v as u16);
                p.set_timestamp(v);
                p.set_ssrc(!v);
                p.payload_mut().fill(0);
                if let Some(d) = p.extension_data_mut() { d.fill(0) }
                prop_assert_eq!(p.sequence_number(), v as u16);
                prop_assert_eq!(p.ssrc(), !v);
            }
        }

        #[test]
        fn agrees_with_rtp_rs(bytes in shaped_packet()) {
            let ours = RtpPacket::new_checked(&bytes[..]);
            let theirs = rtp_rs::RtpReader::new(&bytes);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok());
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                prop_assert_eq!(ours.payload_type(), theirs.payload_type());
                prop_assert_eq!(ours.marker(), theirs.mark());
                prop_assert_eq!(ours.sequence_number(), u16::from(theirs.sequence_number()));
                prop_assert_eq!(ours.timestamp(), theirs.timestamp());
                prop_assert_eq!(ours.ssrc(), theirs.ssrc());
                prop_assert!(ours.csrcs().eq(theirs.csrc()));
                prop_assert_eq!(ours.header_len(), theirs.payload_offset());
                prop_assert_eq!(ours.payload(), theirs.payload());
                prop_assert_eq!(
                    ours.extension_profile().zip(ours.extension_data()),
                    theirs.extension()
                );
            }
        }

        #[test]
        fn builder_output_parses_back(
            pt in 0u8..128, seq in any::<u16>(), ts in any::<u32>(), ssrc in any::<u32>(),
            marker in any::<bool>(),
            csrcs in proptest::collection::vec(any::<u32>(), 0..=15),
            ext in proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40))),
        ) {
            let mut b = RtpHeaderBuilder::new(pt, seq, ts, ssrc).marker(marker).csrcs(&csrcs);
            if let Some((profile, data)) = &ext {
                b = b.extension(*profile, data);
            }
            let mut buf = [0u8; 128];
            let n = b.write(&mut buf).unwrap();
            prop_assert_eq!(Ok(n), b.header_len());
            let p = RtpPacket::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!(p.payload_type(), pt);
            prop_assert_eq!(p.marker(), marker);
            prop_assert_eq!(p.sequence_number(), seq);
            prop_assert_eq!(p.timestamp(), ts);
            prop_assert_eq!(p.ssrc(), ssrc);
            prop_assert!(p.csrcs().eq(csrcs.iter().copied()));
            prop_assert_eq!(p.header_len(), n);
            prop_assert!(p.payload().is_empty());
            match &ext {
                Some((profile, data)) => {
                    prop_assert_eq!(p.extension_profile(), Some(*profile));
                    let got = p.extension_data().unwrap();
                    prop_assert_eq!(&got[..data.len()], &data[..]);
                    prop_assert!(got[data.len()..].iter().all(|&b| b == 0));
                    prop_assert!(got.len() - data.len() < 4);
                }
                None => prop_assert_eq!(p.extension_data(), None),
            }
        }

        #[test]
        fn extend_sequence_keeps_seq_and_stays_close(highest in 0u64..(1 << 48), seq in any::<u16>()) {
            let ext = extend_sequence(highest, seq);
            prop_assert_eq!(ext as u16, seq);
            let roc = highest >> 16;
            let got_roc = ext >> 16;
            prop_assert!(got_roc + 1 >= roc && got_roc <= roc + 1);
            // Within half a cycle, unless the previous rollover would be below ROC 0.
            if ext.abs_diff(highest) > 0x8000 {
                prop_assert_eq!(roc, 0);
                prop_assert!(ext > highest);
            }
        }

        #[test]
        fn extend_sequence_recovers_nearby_indices(highest in 0x8000u64..(1 << 48), delta in -0x7fffi64..=0x7fff) {
            let truth = highest.checked_add_signed(delta).unwrap();
            prop_assert_eq!(extend_sequence(highest, truth as u16), truth);
        }

        #[test]
        fn extend_sequence_follows_a_wrapping_stream(start in any::<u16>(), steps in proptest::collection::vec(-200i32..2000, 1..200)) {
            // A sender counting up with reordering; the receiver tracks the highest index.
            let mut truth = u64::from(start);
            let mut highest = extend_sequence(0, start);
            prop_assert_eq!(highest, truth);
            for step in steps {
                let candidate = truth as i64 + i64::from(step);
                if candidate < 0 { continue; }
                let index = candidate as u64;
                let ext = extend_sequence(highest, index as u16);
                prop_assert_eq!(ext, index);
                if ext > highest { highest = ext; }
                truth = truth.max(index);
            }
        }

        #[test]
        fn seq_newer_is_antisymmetric_and_matches_distance(a in any::<u16>(), b in any::<u16>()) {
            prop_assert!(!(seq_newer(a, b) && seq_newer(b, a)));
            let d = a.wrapping_sub(b);
            prop_assert_eq!(seq_newer(a, b), d != 0 && d < 0x8000);
            if d != 0 && d != 0x8000 {
                prop_assert!(seq_newer(a, b) ^ seq_newer(b, a));
            }
            prop_assert!(seq_newer(a.wrapping_add(1), a));
            prop_assert!(seq_newer(b.wrapping_add(0x7fff), b));
        }

        #[test]
        fn seq_newer_agrees_with_extend_sequence(highest in 0x10000u64..(1 << 40), seq in any::<u16>()) {
            let ext = extend_sequence(highest, seq);
            let d = seq.wrapping_sub(highest as u16);
            if d != 0x8000 {
                prop_assert_eq!(ext > highest, seq_newer(seq, highest as u16));
            }
        }
    }
}
