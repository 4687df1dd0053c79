//! H.264 RTP payloads (RFC 6184) in non-interleaved mode: single NAL unit
//! packets, STAP-A aggregation and FU-A fragmentation, and key-frame
//! detection for a forwarder deciding where a subscriber may start.

use super::{Result, WireError};

const LAYER: &str = "h264";

/// NAL unit and RTP packet type numbers used here.
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const NON_IDR_SLICE: u8 = 1;
    /// Coded slice of an IDR picture.
    pub const IDR_SLICE: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Single-time aggregation packet (RFC 6184 §5.7.1).
    pub const STAP_A: u8 = 24;
    /// Single-time aggregation packet with DON.
    pub const STAP_B: u8 = 25;
    /// Multi-time aggregation packet, 16-bit timestamp offsets.
    pub const MTAP16: u8 = 26;
    /// Multi-time aggregation packet, 24-bit timestamp offsets.
    pub const MTAP24: u8 = 27;
    /// Fragmentation unit (RFC 6184 §5.8).
    pub const FU_A: u8 = 28;
    /// Fragmentation unit with DON.
    pub const FU_B: u8 = 29;
}

/// The fields of a one-byte NAL unit header (F, NRI, type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NalHeader(pub u8);

impl NalHeader {
    /// forbidden_zero_bit: set by a sender that knows the unit is damaged.
    pub fn forbidden(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// nal_ref_idc (2 bits): 0 means not used for reference.
    pub fn nri(self) -> u8 {
        (self.0 >> 5) & 0x03
    }

    /// nal_unit_type (5 bits).
    pub fn nal_type(self) -> u8 {
        self.0 & 0x1f
    }
}

/// The NAL unit type in the first payload byte (for STAP-A and FU-A this
/// is the packet type, 24 or 28).
pub fn payload_nal_type(payload: &[u8]) -> Result<u8> {
    payload
        .first()
        .map(|&b| NalHeader(b).nal_type())
        .ok_or(WireError::Truncated {
            layer: LAYER,
            need: 1,
            have: 0,
        })
}

/// What an H.264 RTP payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Payload<'a> {
    /// One whole NAL unit (types 1..=23).
    Single(&'a [u8]),
    /// Several NAL units; iterate with [`StapAIter`].
    StapA(StapAIter<'a>),
    /// A fragment of one NAL unit.
    FuA(FuA<'a>),
    /// Interleaved-mode packets (STAP-B, MTAP16/24, FU-B) and the
    /// reserved types 0, 30 and 31, which WebRTC never sends: the type.
    Other(u8),
}

impl<'a> H264Payload<'a> {
    /// Classifies a payload and validates the aggregation or fragmentation
    /// header it starts with. STAP-A units are validated as they are
    /// iterated.
    pub fn parse(payload: &'a [u8]) -> Result<Self> {
        let kind = payload_nal_type(payload)?;
        Ok(match kind {
            1..=23 => Self::Single(payload),
            nal_type::STAP_A => Self::StapA(StapAIter::new(payload)?),
            nal_type::FU_A => Self::FuA(FuA::parse(payload)?),
            other => Self::Other(other),
        })
    }
}

/// Iterator over the NAL units of a STAP-A packet (each preceded by a
/// 16-bit size). A size that runs past the packet, a zero size or a lone
/// trailing byte yields one error, after which the iterator ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StapAIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> StapAIter<'a> {
    /// Iterates the units of `payload`, whose first byte must be a STAP-A
    /// header.
    pub fn new(payload: &'a [u8]) -> Result<Self> {
        match payload.split_first() {
            Some((&header, rest)) if NalHeader(header).nal_type() == nal_type::STAP_A => Ok(Self {
                rest,
                failed: false,
            }),
            Some(_) => Err(WireError::Malformed {
                layer: LAYER,
                reason: "not a STAP-A packet",
            }),
            None => Err(WireError::Truncated {
                layer: LAYER,
                need: 1,
                have: 0,
            }),
        }
    }
}

impl<'a> Iterator for StapAIter<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = match self.rest {
            [hi, lo, body @ ..] => {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                if size == 0 {
                    Err(WireError::Malformed {
                        layer: LAYER,
                        reason: "STAP-A unit of size zero",
                    })
                } else if size > body.len() {
                    Err(WireError::BadLength {
                        layer: LAYER,
                        claimed: size,
                        actual: body.len(),
                    })
                } else {
                    let (unit, rest) = body.split_at(size);
                    self.rest = rest;
                    Ok(unit)
                }
            }
            _ => Err(WireError::Truncated {
                layer: LAYER,
                need: 2,
                have: self.rest.len(),
            }),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// An FU-A fragment: FU indicator, FU header, fragment data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuA<'a> {
    indicator: u8,
    header: u8,
    data: &'a [u8],
}

impl<'a> FuA<'a> {
    /// Parses an FU-A packet: the type must be 28, the FU header present,
    /// and S and E not both set (RFC 6184 §5.8).
    pub fn parse(payload: &'a [u8]) -> Result<Self> {
        let (indicator, header, data) = match payload {
            [indicator, header, data @ ..] => (*indicator, *header, data),
            _ => {
                return Err(WireError::Truncated {
                    layer: LAYER,
                    need: 2,
                    have: payload.len(),
                })
            }
        };
        if NalHeader(indicator).nal_type() != nal_type::FU_A {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "not an FU-A packet",
            });
        }
        if header & 0xc0 == 0xc0 {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "FU-A with both start and end bits",
            });
        }
        Ok(Self {
            indicator,
            header,
            data,
        })
    }

    /// S bit: this fragment starts the NAL unit.
    pub fn start(&self) -> bool {
        self.header & 0x80 != 0
    }

    /// E bit: this fragment ends the NAL unit.
    pub fn end(&self) -> bool {
        self.header & 0x40 != 0
    }

    /// Type of the fragmented NAL unit.
    pub fn original_nal_type(&self) -> u8 {
        self.header & 0x1f
    }

    /// The header the reassembled NAL unit starts with: F and NRI from the
    /// indicator, the type from the FU header.
    pub fn original_nal_header(&self) -> NalHeader {
        NalHeader((self.indicator & 0xe0) | self.original_nal_type())
    }

    /// The fragment's bytes after the FU header.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

fn starts_keyframe(nal_type: u8) -> bool {
    nal_type == nal_type::IDR_SLICE || nal_type == nal_type::SPS
}

/// Whether an IDR slice or an SPS begins in this packet: a single NAL
/// unit of that type, any such unit inside a STAP-A, or the first fragment
/// (S bit) of one in an FU-A. Interleaved-mode packets return `false`.
pub fn is_keyframe(payload: &[u8]) -> Result<bool> {
    match H264Payload::parse(payload)? {
        H264Payload::Single(unit) => Ok(payload_nal_type(unit).is_ok_and(starts_keyframe)),
        H264Payload::StapA(units) => {
            let mut found = false;
            for unit in units {
                found |= starts_keyframe(payload_nal_type(unit?)?);
            }
            Ok(found)
        }
        H264Payload::FuA(fu) => Ok(fu.start() && starts_keyframe(fu.original_nal_type())),
        H264Payload::Other(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SPS and PPS as a browser sends them before an IDR (profile 42e01f).
    const SPS: [u8; 8] = [0x67, 0x42, 0xe0, 0x1f, 0xda, 0x01, 0x40, 0x16];
    const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78]; // NRI 3, type 24
        for u in units {
            p.extend_from_slice(&(u.len() as u16).to_be_bytes());
            p.extend_from_slice(u);
        }
        p
    }

    #[test]
    fn single_nal_units() {
        let idr = [0x65, 0x88, 0x84, 0x00];
        let non_idr = [0x41, 0x9a, 0x02];
        assert_eq!(payload_nal_type(&idr), Ok(5));
        assert_eq!(NalHeader(idr[0]).nri(), 3);
        assert!(!NalHeader(idr[0]).forbidden());
        assert_eq!(is_keyframe(&idr), Ok(true));
        assert_eq!(is_keyframe(&SPS), Ok(true));
        assert_eq!(is_keyframe(&PPS), Ok(false));
        assert_eq!(is_keyframe(&non_idr), Ok(false));
        assert_eq!(is_keyframe(&[0x06, 0x05]), Ok(false));
        assert!(matches!(H264Payload::parse(&idr), Ok(H264Payload::Single(u)) if u == idr));
        assert!(is_keyframe(&[]).is_err());
    }

    #[test]
    fn stap_a_units() {
        let idr = [0x65, 0xb8, 0x00];
        let p = stap_a(&[&SPS, &PPS, &idr]);
        let units: Vec<&[u8]> = StapAIter::new(&p).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(units, vec![&SPS[..], &PPS[..], &idr[..]]);
        assert_eq!(is_keyframe(&p), Ok(true));
        assert_eq!(is_keyframe(&stap_a(&[&PPS, &[0x06, 0x01]])), Ok(false));
        assert_eq!(is_keyframe(&stap_a(&[&PPS, &[0x65, 0x01]])), Ok(true));
        // A STAP-A with no units carries nothing.
        assert_eq!(is_keyframe(&[0x78]), Ok(false));
        assert!(StapAIter::new(&SPS).is_err());
        assert!(StapAIter::new(&[]).is_err());
    }

    #[test]
    fn stap_a_hostile_sizes() {
        let p = stap_a(&[&SPS, &PPS]);
        // Every cut is either a clean prefix of whole units or an error.
        for len in 1..p.len() {
            let got: Vec<_> = StapAIter::new(&p[..len]).unwrap().collect();
            let boundary = len == 1 || len == 1 + 2 + SPS.len();
            assert_eq!(
                got.last().is_some_and(|r| r.is_err()),
                !boundary,
                "cut {len}"
            );
            assert!(got.iter().filter(|r| r.is_err()).count() <= 1);
            if !boundary {
                assert!(is_keyframe(&p[..len]).is_err());
            }
        }
        // A size larger than what follows.
        let mut lying = stap_a(&[&SPS]);
        lying[2] += 1;
        assert!(matches!(
            StapAIter::new(&lying).unwrap().next(),
            Some(Err(WireError::BadLength {
                claimed: 9,
                actual: 8,
                ..
            }))
        ));
        // A zero size.
        assert!(matches!(
            StapAIter::new(&[0x78, 0, 0, 0x65]).unwrap().next(),
            Some(Err(WireError::Malformed { .. }))
        ));
        // The iterator ends after the error.
        let mut it = StapAIter::new(&[0x78, 0, 0, 0, 1, 0x65]).unwrap();
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none());
    }

    #[test]
    fn fu_a_fragments() {
        // IDR split in three: start, middle, end. Indicator NRI 3 type 28.
        let start = [0x7c, 0x85, 0xb8, 0x00];
        let middle = [0x7c, 0x05, 0x11];
        let end = [0x7c, 0x45, 0x22];
        let fu = FuA::parse(&start).unwrap();
        assert!(fu.start() && !fu.end());
        assert_eq!(fu.original_nal_type(), 5);
        assert_eq!(fu.original_nal_header(), NalHeader(0x65));
        assert_eq!(fu.data(), &[0xb8, 0x00]);
        assert_eq!(is_keyframe(&start), Ok(true));
        assert_eq!(is_keyframe(&middle), Ok(false));
        assert_eq!(is_keyframe(&end), Ok(false));
        assert!(FuA::parse(&end).unwrap().end());
        // A non-IDR slice start is not a key frame.
        assert_eq!(is_keyframe(&[0x5c, 0x81, 0x00]), Ok(false));
        // S and E together, truncation, wrong type.
        assert!(FuA::parse(&[0x7c, 0xc5, 0]).is_err());
        assert!(is_keyframe(&[0x7c, 0xc5, 0]).is_err());
        assert!(FuA::parse(&[0x7c]).is_err());
        assert!(is_keyframe(&[0x7c]).is_err());
        assert!(FuA::parse(&[0x65, 0x85]).is_err());
        assert!(matches!(
            H264Payload::parse(&start),
            Ok(H264Payload::FuA(_))
        ));
    }

    #[test]
    fn interleaved_and_reserved_types() {
        for t in [0u8, 25, 26, 27, 29, 30, 31] {
            assert_eq!(H264Payload::parse(&[t, 0, 0]), Ok(H264Payload::Other(t)));
            assert_eq!(is_keyframe(&[t, 0x85, 0]), Ok(false));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = is_keyframe(&bytes);
            match H264Payload::parse(&bytes) {
                Ok(H264Payload::StapA(units)) => {
                    let mut total = 0;
                    for unit in units {
                        match unit {
                            Ok(u) => total += u.len() + 2,
                            Err(_) => break,
                        }
                    }
                    prop_assert!(total < bytes.len());
                }
                Ok(H264Payload::FuA(fu)) => prop_assert_eq!(fu.data().len() + 2, bytes.len()),
                _ => {}
            }
        }

        #[test]
        fn stap_a_round_trip(units in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..6)) {
            let refs: Vec<&[u8]> = units.iter().map(|u| &u[..]).collect();
            let p = stap_a(&refs);
            let got: Vec<&[u8]> = StapAIter::new(&p).unwrap().collect::<Result<_>>().unwrap();
            prop_assert_eq!(got, refs.clone());
            let expected = refs.iter().any(|u| matches!(u[0] & 0x1f, 5 | 7));
            prop_assert_eq!(is_keyframe(&p), Ok(expected));
        }
    }
}
