//! The fixed leading fields of the AV1 Dependency Descriptor RTP header
//! extension (AV1 RTP specification, Appendix A): the mandatory descriptor
//! fields and, when the element is longer than 3 bytes, the flags that open
//! the extended descriptor fields.
//!
//! The template dependency structure itself is not parsed; a forwarder
//! only needs to know that one is present (it arrives on key frames and
//! must be kept when forwarding).

use super::{Result, WireError};

const LAYER: &str = "av1-dd";

/// Length of the mandatory descriptor fields.
pub const MANDATORY_LEN: usize = 3;

/// A bounds-checked reader of big-endian bit fields, most significant bit
/// first, as the AV1 specification's `f(n)` reads them.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    bit_pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, bit_pos: 0 }
    }

    /// Bits read so far.
    pub fn bits_consumed(&self) -> usize {
        self.bit_pos
    }

    /// Bits left to read.
    pub fn remaining_bits(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.bit_pos)
    }

    /// Reads one bit.
    pub fn read_bit(&mut self) -> Result<bool> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads `count` bits (at most 32) as an unsigned number.
    pub fn read_bits(&mut self, count: u32) -> Result<u32> {
        if count > 32 {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "bit field wider than 32 bits",
            });
        }
        let count_usize = count as usize;
        if count_usize > self.remaining_bits() {
            return Err(WireError::Truncated {
                layer: LAYER,
                need: (self.bit_pos + count_usize).div_ceil(8),
                have: self.data.len(),
            });
        }
        let mut value: u64 = 0;
        for _ in 0..count {
            let byte = self.data.get(self.bit_pos / 8).copied().unwrap_or(0);
            let bit = (byte >> (7 - self.bit_pos % 8)) & 1;
            value = (value << 1) | u64::from(bit);
            self.bit_pos += 1;
        }
        // At most 32 bits were shifted in.
        Ok(value as u32)
    }
}

/// The flags at the start of `extended_descriptor_fields()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtendedFlags {
    /// `template_dependency_structure_present_flag`: a template dependency
    /// structure follows (sent with key frames).
    pub template_dependency_structure_present: bool,
    /// `active_decode_targets_present_flag`.
    pub active_decode_targets_present: bool,
    /// `custom_dtis_flag`.
    pub custom_dtis: bool,
    /// `custom_fdiffs_flag`.
    pub custom_fdiffs: bool,
    /// `custom_chains_flag`.
    pub custom_chains: bool,
}

/// The parsed leading fields of a Dependency Descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DependencyDescriptor {
    /// First packet of the frame.
    pub start_of_frame: bool,
    /// Last packet of the frame.
    pub end_of_frame: bool,
    /// `frame_dependency_template_id` (6 bits).
    pub frame_dependency_template_id: u8,
    /// `frame_number` (16 bits, wrapping).
    pub frame_number: u16,
    /// The extended-field flags, present when the element is longer than
    /// 3 bytes.
    pub extended: Option<ExtendedFlags>,
}

impl DependencyDescriptor {
    /// Parses the element data of a Dependency Descriptor extension.
    pub fn parse(data: &[u8]) -> Result<Self> {
        if data.len() < MANDATORY_LEN {
            return Err(WireError::Truncated {
                layer: LAYER,
                need: MANDATORY_LEN,
                have: data.len(),
            });
        }
        let mut bits = BitReader::new(data);
        let start_of_frame = bits.read_bit()?;
        let end_of_frame = bits.read_bit()?;
        // The widths below bound the values, so the narrowing is exact.
        let frame_dependency_template_id = bits.read_bits(6)? as u8;
        let frame_number = bits.read_bits(16)? as u16;
        let extended = if data.len() > MANDATORY_LEN {
            Some(ExtendedFlags {
                template_dependency_structure_present: bits.read_bit()?,
                active_decode_targets_present: bits.read_bit()?,
                custom_dtis: bits.read_bit()?,
                custom_fdiffs: bits.read_bit()?,
                custom_chains: bits.read_bit()?,
            })
        } else {
            None
        };
        Ok(Self {
            start_of_frame,
            end_of_frame,
            frame_dependency_template_id,
            frame_number,
            extended,
        })
    }

    /// Whether a template dependency structure is attached.
    pub fn template_dependency_structure_present(&self) -> bool {
        self.extended
            .is_some_and(|flags| flags.template_dependency_structure_present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mandatory_fields_only() {
        // S=1, E=0, template 5, frame 0x1234.
        let dd = DependencyDescriptor::parse(&[0x85, 0x12, 0x34]).unwrap();
        assert_eq!(
            dd,
            DependencyDescriptor {
                start_of_frame: true,
                end_of_frame: false,
                frame_dependency_template_id: 5,
                frame_number: 0x1234,
                extended: None,
            }
        );
        assert!(!dd.template_dependency_structure_present());
        let dd = DependencyDescriptor::parse(&[0x7f, 0xff, 0xff]).unwrap();
        assert!(!dd.start_of_frame);
        assert!(dd.end_of_frame);
        assert_eq!(dd.frame_dependency_template_id, 63);
        assert_eq!(dd.frame_number, 0xffff);
    }

    #[test]
    fn key_frame_with_structure() {
        // S=1, E=1, template 0, frame 1; structure present and active
        // decode targets present, then the start of a structure.
        let data = [0xc0, 0x00, 0x01, 0b1100_0000, 0x04, 0x00, 0x00];
        let dd = DependencyDescriptor::parse(&data).unwrap();
        assert!(dd.start_of_frame && dd.end_of_frame);
        assert_eq!(dd.frame_number, 1);
        assert_eq!(
            dd.extended,
            Some(ExtendedFlags {
                template_dependency_structure_present: true,
                active_decode_targets_present: true,
                custom_dtis: false,
                custom_fdiffs: false,
                custom_chains: false,
            })
        );
        assert!(dd.template_dependency_structure_present());
    }

    #[test]
    fn every_flag_combination() {
        for flags in 0u8..32 {
            let data = [0x40, 0x00, 0x07, flags << 3];
            let ext = DependencyDescriptor::parse(&data)
                .unwrap()
                .extended
                .unwrap();
            assert_eq!(ext.template_dependency_structure_present, flags & 16 != 0);
            assert_eq!(ext.active_decode_targets_present, flags & 8 != 0);
            assert_eq!(ext.custom_dtis, flags & 4 != 0);
            assert_eq!(ext.custom_fdiffs, flags & 2 != 0);
            assert_eq!(ext.custom_chains, flags & 1 != 0);
        }
    }

    #[test]
    fn truncated() {
        for len in 0..MANDATORY_LEN {
            assert_eq!(
                DependencyDescriptor::parse(&[0xff; 3][..len]),
                Err(WireError::Truncated {
                    layer: "av1-dd",
                    need: 3,
                    have: len
                })
            );
        }
    }

    #[test]
    fn bit_reader_bounds() {
        let mut r = BitReader::new(&[0b1010_1100, 0xff]);
        assert_eq!(r.read_bits(3), Ok(0b101));
        assert_eq!(r.read_bits(0), Ok(0));
        assert_eq!(r.read_bits(5), Ok(0b01100));
        assert_eq!(r.bits_consumed(), 8);
        assert_eq!(r.remaining_bits(), 8);
        assert!(matches!(
            r.read_bits(9),
            Err(WireError::Truncated {
                need: 3,
                have: 2,
                ..
            })
        ));
        // A failed read consumes nothing.
        assert_eq!(r.read_bits(8), Ok(0xff));
        assert!(r.read_bit().is_err());
        assert!(BitReader::new(&[0; 8]).read_bits(33).is_err());
        assert_eq!(
            BitReader::new(&[0xde, 0xad, 0xbe, 0xef]).read_bits(32),
            Ok(0xdead_beef)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            match DependencyDescriptor::parse(&data) {
                Ok(dd) => {
                    prop_assert!(data.len() >= 3);
                    prop_assert_eq!(dd.extended.is_some(), data.len() > 3);
                    prop_assert_eq!(dd.frame_number, u16::from_be_bytes([data[1], data[2]]));
                    prop_assert_eq!(dd.frame_dependency_template_id, data[0] & 0x3f);
                }
                Err(_) => prop_assert!(data.len() < 3),
            }
        }

        #[test]
        fn bit_reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..8), widths in proptest::collection::vec(0u32..40, 0..10)) {
            let mut r = BitReader::new(&data);
            for w in widths {
                let before = r.bits_consumed();
                match r.read_bits(w) {
                    Ok(v) => {
                        prop_assert_eq!(r.bits_consumed(), before + w as usize);
                        prop_assert!(w == 32 || u64::from(v) < 1u64 << w);
                    }
                    Err(_) => prop_assert_eq!(r.bits_consumed(), before),
                }
            }
        }
    }
}
