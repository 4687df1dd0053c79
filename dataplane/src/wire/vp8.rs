//! The VP8 payload descriptor (RFC 7741 §4.2) at the start of a VP8 RTP
//! payload, key-frame detection (§4.3), and the in-place picture id and
//! TL0PICIDX rewrites an SFU needs when it switches simulcast layers.
//!
//! ```text
//!      0 1 2 3 4 5 6 7
//!     +-+-+-+-+-+-+-+-+
//!     |X|R|N|S|R| PID |  required
//!     +-+-+-+-+-+-+-+-+
//! X:  |I|L|T|K| RSV   |  if X
//! I:  |M| PictureID   |  if I (a second byte if M)
//! L:  |   TL0PICIDX   |  if L
//! T/K:|TID|Y| KEYIDX  |  if T or K
//! ```

use super::{Result, WireError};

const LAYER: &str = "vp8";

/// Where the optional fields sit in a descriptor.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Offset of the picture id and whether it is the 15-bit form.
    picture_id: Option<(usize, bool)>,
    tl0_pic_idx: Option<usize>,
    tid_keyidx: Option<usize>,
    len: usize,
}

fn layout(buf: &[u8]) -> Result<Layout> {
    let truncated = |need: usize| WireError::Truncated {
        layer: LAYER,
        need,
        have: buf.len(),
    };
    let first = *buf.first().ok_or(truncated(1))?;
    let mut layout = Layout {
        picture_id: None,
        tl0_pic_idx: None,
        tid_keyidx: None,
        len: 1,
    };
    if first & 0x80 == 0 {
        return Ok(layout);
    }
    let ext = *buf.get(1).ok_or(truncated(2))?;
    let mut at = 2;
    if ext & 0x80 != 0 {
        let wide = buf.get(at).ok_or(truncated(at + 1))? & 0x80 != 0;
        layout.picture_id = Some((at, wide));
        at += if wide { 2 } else { 1 };
    }
    if ext & 0x40 != 0 {
        layout.tl0_pic_idx = Some(at);
        at += 1;
    }
    if ext & 0x30 != 0 {
        layout.tid_keyidx = Some(at);
        at += 1;
    }
    if at > buf.len() {
        return Err(truncated(at));
    }
    layout.len = at;
    Ok(layout)
}

/// A zero-copy view of a VP8 RTP payload: descriptor, then VP8 data.
///
/// Accessors never panic: on a view made with [`Self::new_unchecked`] over
/// a truncated descriptor, optional fields read as `None`, the descriptor
/// length as the whole buffer, and setters return errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Payload<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Vp8Payload<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking that every field the descriptor
    /// announces is present.
    pub fn new_checked(buffer: T) -> Result<Self> {
        layout(buffer.as_ref())?;
        Ok(Self { buffer })
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole RTP payload.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn layout(&self) -> Option<Layout> {
        layout(self.buffer.as_ref()).ok()
    }

    fn first(&self) -> u8 {
        self.buffer.as_ref().first().copied().unwrap_or(0)
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    /// X bit: the extension byte follows.
    pub fn extended(&self) -> bool {
        self.first() & 0x80 != 0
    }

    /// N bit: the frame can be discarded without affecting other frames.
    pub fn non_reference(&self) -> bool {
        self.first() & 0x20 != 0
    }

    /// S bit: this packet starts a VP8 partition.
    pub fn start_of_partition(&self) -> bool {
        self.first() & 0x10 != 0
    }

    /// PID: the partition index (3 bits).
    pub fn partition_index(&self) -> u8 {
        self.first() & 0x07
    }

    /// The picture id (7 or 15 bits, without the M bit), if I is set.
    pub fn picture_id(&self) -> Option<u16> {
        let (at, wide) = self.layout()?.picture_id?;
        Some(if wide {
            u16::from_be_bytes([self.byte(at), self.byte(at + 1)]) & 0x7fff
        } else {
            u16::from(self.byte(at) & 0x7f)
        })
    }

    /// Width of the picture id field in bits (7, or 15 with the M bit),
    /// if I is set.
    pub fn picture_id_bits(&self) -> Option<u8> {
        let (_, wide) = self.layout()?.picture_id?;
        Some(if wide { 15 } else { 7 })
    }

    /// TL0PICIDX, if L is set.
    pub fn tl0_pic_idx(&self) -> Option<u8> {
        Some(self.byte(self.layout()?.tl0_pic_idx?))
    }

    fn tid_keyidx(&self, flag: u8) -> Option<u8> {
        let layout = self.layout()?;
        if self.byte(1) & flag == 0 {
            return None;
        }
        Some(self.byte(layout.tid_keyidx?))
    }

    /// Temporal layer index (TID, 2 bits), if T is set.
    pub fn temporal_id(&self) -> Option<u8> {
        self.tid_keyidx(0x20).map(|b| b >> 6)
    }

    /// Y bit (layer sync), if T is set.
    pub fn layer_sync(&self) -> Option<bool> {
        self.tid_keyidx(0x20).map(|b| b & 0x20 != 0)
    }

    /// KEYIDX (5 bits), if K is set.
    pub fn key_idx(&self) -> Option<u8> {
        self.tid_keyidx(0x10).map(|b| b & 0x1f)
    }

    /// Length of the payload descriptor.
    pub fn descriptor_len(&self) -> usize {
        self.layout()
            .map_or(self.buffer.as_ref().len(), |layout| layout.len)
    }

    /// The VP8 data after the descriptor.
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(self.descriptor_len()..)
            .unwrap_or(&[])
    }

    /// Whether this packet starts a key frame: S=1, PID=0, and the P bit
    /// (bit 0 of the VP8 payload header's first byte, "inverse key frame")
    /// is 0.
    pub fn is_keyframe(&self) -> bool {
        self.start_of_partition()
            && self.partition_index() == 0
            && self.payload().first().is_some_and(|b| b & 0x01 == 0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Vp8Payload<T> {
    /// Overwrites the picture id, keeping the field's width (7 or 15 bits);
    /// `picture_id` is taken modulo that width, as picture ids wrap.
    pub fn set_picture_id(&mut self, picture_id: u16) -> Result<()> {
        let (at, wide) =
            self.layout()
                .and_then(|layout| layout.picture_id)
                .ok_or(WireError::Malformed {
                    layer: LAYER,
                    reason: "no picture id field",
                })?;
        let buf = self.buffer.as_mut();
        if wide {
            let value = 0x8000 | (picture_id & 0x7fff);
            if let Some(field) = buf.get_mut(at..at + 2) {
                field.copy_from_slice(&value.to_be_bytes());
            }
        } else if let Some(field) = buf.get_mut(at) {
            // Masked to 7 bits, so the narrowing is exact.
            *field = (picture_id & 0x7f) as u8;
        }
        Ok(())
    }

    /// Overwrites TL0PICIDX.
    pub fn set_tl0_pic_idx(&mut self, tl0_pic_idx: u8) -> Result<()> {
        let at =
            self.layout()
                .and_then(|layout| layout.tl0_pic_idx)
                .ok_or(WireError::Malformed {
                    layer: LAYER,
                    reason: "no TL0PICIDX field",
                })?;
        if let Some(field) = self.buffer.as_mut().get_mut(at) {
            *field = tl0_pic_idx;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minimal_descriptor() {
        // S=1, PID=0, then a key frame payload header (P=0) and the start
        // code 9d 01 2a that follows it in a key frame.
        let p = [0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        let v = Vp8Payload::new_checked(&p[..]).unwrap();
        assert!(!v.extended());
        assert!(v.start_of_partition());
        assert_eq!(v.partition_index(), 0);
        assert_eq!(v.descriptor_len(), 1);
        assert_eq!(v.picture_id(), None);
        assert_eq!(v.tl0_pic_idx(), None);
        assert_eq!(v.temporal_id(), None);
        assert_eq!(v.key_idx(), None);
        assert!(v.is_keyframe());
        assert_eq!(v.payload(), &p[1..]);
    }

    #[test]
    fn browser_simulcast_descriptor() {
        // X, S; I with 15-bit picture id 0x1234, L = 7, T with TID 2, Y=1;
        // then an inter frame (P=1).
        let p = [0x90, 0xe0, 0x92, 0x34, 0x07, 0xa0, 0x31, 0x00, 0x00];
        let v = Vp8Payload::new_checked(&p[..]).unwrap();
        assert!(v.extended());
        assert!(!v.non_reference());
        assert_eq!(v.picture_id(), Some(0x1234));
        assert_eq!(v.picture_id_bits(), Some(15));
        assert_eq!(v.tl0_pic_idx(), Some(7));
        assert_eq!(v.temporal_id(), Some(2));
        assert_eq!(v.layer_sync(), Some(true));
        assert_eq!(v.key_idx(), None);
        assert_eq!(v.descriptor_len(), 6);
        assert!(!v.is_keyframe());
    }

    #[test]
    fn every_optional_field_combination() {
        for ext in 0u8..16 {
            for wide in [false, true] {
                let mut p = vec![0xb3, ext << 4];
                let (i, l, t, k) = (ext & 8 != 0, ext & 4 != 0, ext & 2 != 0, ext & 1 != 0);
                if i {
                    if wide {
                        p.extend_from_slice(&[0x80 | 0x55, 0x66]);
                    } else {
                        p.push(0x55);
                    }
                }
                if l {
                    p.push(0x99);
                }
                if t || k {
                    p.push(0b0110_0101); // TID 1, Y 1, KEYIDX 5
                }
                let descriptor = p.len();
                p.push(0xfe);
                let v = Vp8Payload::new_checked(&p[..]).unwrap();
                assert!(v.non_reference());
                assert_eq!(v.partition_index(), 3);
                assert_eq!(v.descriptor_len(), descriptor);
                let expected_pid = if wide { 0x5566 } else { 0x55 };
                assert_eq!(v.picture_id(), i.then_some(expected_pid));
                assert_eq!(v.tl0_pic_idx(), l.then_some(0x99));
                assert_eq!(v.temporal_id(), t.then_some(1));
                assert_eq!(v.layer_sync(), t.then_some(true));
                assert_eq!(v.key_idx(), k.then_some(5));
                assert_eq!(v.payload(), &[0xfe]);
                // Every cut inside the descriptor is refused.
                for len in 0..descriptor {
                    assert!(
                        matches!(
                            Vp8Payload::new_checked(&p[..len]),
                            Err(WireError::Truncated { .. })
                        ),
                        "ext {ext:x} wide {wide} cut {len}"
                    );
                }
                if !i {
                    break;
                }
            }
        }
    }

    #[test]
    fn keyframe_rules() {
        let key = |first: u8, header: u8| {
            Vp8Payload::new_checked(&[first, header][..])
                .unwrap()
                .is_keyframe()
        };
        assert!(key(0x10, 0x00));
        assert!(!key(0x10, 0x01)); // P=1: inter frame
        assert!(!key(0x00, 0x00)); // not a partition start
        assert!(!key(0x11, 0x00)); // PID 1
                                   // No payload byte at all.
        assert!(!Vp8Payload::new_checked(&[0x10][..]).unwrap().is_keyframe());
    }

    #[test]
    fn rewrites_keep_width() {
        let mut p = [0x90, 0xc0, 0x92, 0x34, 0x07, 0x00];
        let mut v = Vp8Payload::new_checked(&mut p[..]).unwrap();
        v.set_picture_id(0xffff).unwrap();
        assert_eq!(v.picture_id(), Some(0x7fff));
        v.set_picture_id(5).unwrap();
        assert_eq!(v.picture_id(), Some(5));
        assert_eq!(v.picture_id_bits(), Some(15));
        v.set_tl0_pic_idx(200).unwrap();
        assert_eq!(v.tl0_pic_idx(), Some(200));
        assert_eq!(p, [0x90, 0xc0, 0x80, 0x05, 200, 0x00]);

        let mut p = [0x90, 0x80, 0x12, 0x00];
        let mut v = Vp8Payload::new_checked(&mut p[..]).unwrap();
        v.set_picture_id(130).unwrap();
        assert_eq!(v.picture_id(), Some(2));
        assert_eq!(v.picture_id_bits(), Some(7));
        assert!(v.set_tl0_pic_idx(1).is_err());
        assert_eq!(p, [0x90, 0x80, 0x02, 0x00]);

        let mut p = [0x10, 0x00];
        let mut v = Vp8Payload::new_checked(&mut p[..]).unwrap();
        assert!(v.set_picture_id(1).is_err());
    }

    #[test]
    fn unchecked_truncated_views_do_not_panic() {
        let full = [0x90, 0xf0, 0x92, 0x34, 0x07, 0xa0];
        for len in 0..full.len() {
            let mut p = full[..len].to_vec();
            let mut v = Vp8Payload::new_unchecked(&mut p[..]);
            let _ = (
                v.picture_id(),
                v.tl0_pic_idx(),
                v.temporal_id(),
                v.key_idx(),
            );
            assert!(v.payload().is_empty());
            assert!(!v.is_keyframe());
            assert!(v.set_picture_id(1).is_err());
            assert!(v.set_tl0_pic_idx(1).is_err());
        }
    }

    proptest! {
        #[test]
        fn checked_views_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..12), value in any::<u16>()) {
            if let Ok(mut v) = Vp8Payload::new_checked(&mut bytes[..]) {
                let len = v.descriptor_len();
                prop_assert!(len <= 6);
                prop_assert_eq!(len + v.payload().len(), v.as_bytes().len());
                let _ = (v.layer_sync(), v.is_keyframe(), v.picture_id_bits());
                if v.set_picture_id(value).is_ok() {
                    let mask = if v.picture_id_bits() == Some(15) { 0x7fff } else { 0x7f };
                    prop_assert_eq!(v.picture_id(), Some(value & mask));
                }
                if v.set_tl0_pic_idx(value as u8).is_ok() {
                    prop_assert_eq!(v.tl0_pic_idx(), Some(value as u8));
                }
                prop_assert_eq!(v.descriptor_len(), len);
            }
        }
    }
}
