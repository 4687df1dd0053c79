//! RTP header extension elements (RFC 8285) and the typed values a forwarder
//! reads or rewrites: MID, RID and repaired RID (RFC 8852 / RFC 9143),
//! abs-send-time, transport-wide congestion control sequence numbers
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01) and client-to-mixer
//! audio level (RFC 6464).
//!
//! Element parsing works on the extension data of an RTP packet
//! ([`RtpPacket::extension_data`]) together with the block's profile
//! ([`RtpPacket::extension_profile`]), which selects the one-byte (0xBEDE)
//! or two-byte (0x100x) element form.

use core::time::Duration;

use super::rtp::RtpPacket;
use super::{Result, WireError};

const LAYER: &str = "rtp-ext";

/// Profile value of the one-byte element form.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Profile value of the two-byte element form; the low 4 bits ("appbits")
/// are free for the application.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
/// In the one-byte form this id ends parsing of the block (RFC 8285 §4.2).
const ONE_BYTE_STOP_ID: u8 = 15;

/// Extension URIs negotiated in SDP (`a=extmap`) for the values this module
/// reads and writes.
pub mod uri {
    /// Media identification (RFC 9143).
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    /// RTP stream id, the simulcast layer name (RFC 8852).
    pub const RTP_STREAM_ID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    /// RTP stream id of the stream a redundancy stream repairs (RFC 8852).
    pub const REPAIRED_RTP_STREAM_ID: &str =
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    /// Absolute send time (6.18 fixed-point seconds).
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    /// Transport-wide congestion control sequence number.
    pub const TRANSPORT_WIDE_CC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    /// Client-to-mixer audio level (RFC 6464).
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    /// AV1 Dependency Descriptor.
    pub const AV1_DEPENDENCY_DESCRIPTOR: &str =
        "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
}

/// Which RFC 8285 element layout an extension block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionForm {
    /// One header byte: 4-bit id (1..=14), 4-bit length minus one.
    OneByte,
    /// Two header bytes: 8-bit id (1..=255), 8-bit length.
    TwoByte,
}

impl ExtensionForm {
    /// The form a block's profile field announces, or `None` if the block
    /// is not an RFC 8285 block.
    pub fn from_profile(profile: u16) -> Option<Self> {
        if profile == ONE_BYTE_PROFILE {
            Some(Self::OneByte)
        } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
            Some(Self::TwoByte)
        } else {
            None
        }
    }

    /// The profile value announcing this form (appbits zero).
    pub fn profile(self) -> u16 {
        match self {
            Self::OneByte => ONE_BYTE_PROFILE,
            Self::TwoByte => TWO_BYTE_PROFILE,
        }
    }

    /// Largest element id this form can carry.
    pub fn max_id(self) -> u8 {
        match self {
            Self::OneByte => 14,
            Self::TwoByte => 255,
        }
    }

    /// Whether an element of `len` data bytes fits this form.
    pub fn fits_len(self, len: usize) -> bool {
        match self {
            Self::OneByte => (1..=16).contains(&len),
            Self::TwoByte => len <= 255,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Self::OneByte => 1,
            Self::TwoByte => 2,
        }
    }
}

fn form_of(profile: u16) -> Result<ExtensionForm> {
    ExtensionForm::from_profile(profile).ok_or(WireError::Malformed {
        layer: LAYER,
        reason: "extension profile is neither 0xBEDE nor 0x100x",
    })
}

/// One parsing step at a position inside an extension block.
enum Step {
    Padding,
    Stop,
    Element {
        id: u8,
        /// Offset of the element's header.
        at: usize,
        /// Offset of the data and one past its end.
        start: usize,
        end: usize,
    },
}

/// Parses whatever starts at `at`, which must be inside `data`.
fn step(form: ExtensionForm, data: &[u8], at: usize) -> Result<Step> {
    let Some(&first) = data.get(at) else {
        return Ok(Step::Stop);
    };
    if first == 0 {
        return Ok(Step::Padding);
    }
    let (id, start, len) = match form {
        ExtensionForm::OneByte => {
            let id = first >> 4;
            if id == ONE_BYTE_STOP_ID {
                return Ok(Step::Stop);
            }
            if id == 0 {
                return Err(WireError::Malformed {
                    layer: LAYER,
                    reason: "element id 0 with a non-zero length",
                });
            }
            (id, at + 1, usize::from(first & 0x0f) + 1)
        }
        ExtensionForm::TwoByte => match data.get(at + 1) {
            Some(&len) => (first, at + 2, usize::from(len)),
            None => {
                return Err(WireError::Truncated {
                    layer: LAYER,
                    need: at + 2,
                    have: data.len(),
                })
            }
        },
    };
    let actual = data.len().saturating_sub(start);
    if len > actual {
        return Err(WireError::BadLength {
            layer: LAYER,
            claimed: len,
            actual,
        });
    }
    Ok(Step::Element {
        id,
        at,
        start,
        end: start + len,
    })
}

/// Iterator over the `(id, data)` elements of an extension block.
///
/// Padding bytes are skipped; in the one-byte form id 15 ends the block.
/// An element that overruns the block yields one `Err` and then the iterator
/// ends.
#[derive(Debug, Clone)]
pub struct ExtensionIter<'a> {
    data: &'a [u8],
    form: ExtensionForm,
    pos: usize,
    done: bool,
}

impl<'a> ExtensionIter<'a> {
    /// Iterates the elements of `data` (the words after the 4-byte block
    /// header) for a block with this `profile`.
    pub fn new(profile: u16, data: &'a [u8]) -> Result<Self> {
        Ok(Self {
            data,
            form: form_of(profile)?,
            pos: 0,
            done: false,
        })
    }

    /// Iterates the elements of `packet`'s extension block; empty when the
    /// packet has none.
    pub fn from_packet<T: AsRef<[u8]>>(packet: &'a RtpPacket<T>) -> Result<Self> {
        match (packet.extension_profile(), packet.extension_data()) {
            (Some(profile), Some(data)) => Self::new(profile, data),
            _ => Ok(Self {
                data: &[],
                form: ExtensionForm::OneByte,
                pos: 0,
                done: true,
            }),
        }
    }

    /// The element form of the block being iterated.
    pub fn form(&self) -> ExtensionForm {
        self.form
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = Result<(u8, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.pos < self.data.len() {
            match step(self.form, self.data, self.pos) {
                Ok(Step::Padding) => self.pos += 1,
                Ok(Step::Stop) => self.done = true,
                Ok(Step::Element { id, start, end, .. }) => {
                    self.pos = end;
                    return Some(Ok((id, self.data.get(start..end).unwrap_or(&[]))));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.done = true;
        None
    }
}

/// Locates the first element with `id`: the range of its data.
fn locate(profile: u16, data: &[u8], id: u8) -> Result<Option<core::ops::Range<usize>>> {
    let form = form_of(profile)?;
    let mut pos = 0;
    while pos < data.len() {
        match step(form, data, pos)? {
            Step::Padding => pos += 1,
            Step::Stop => break,
            Step::Element {
                id: found,
                start,
                end,
                ..
            } => {
                if found == id {
                    return Ok(Some(start..end));
                }
                pos = end;
            }
        }
    }
    Ok(None)
}

/// The data of the first element with `id`, if any. Elements after it are
/// not validated.
pub fn find(profile: u16, data: &[u8], id: u8) -> Result<Option<&[u8]>> {
    Ok(locate(profile, data, id)?.and_then(|range| data.get(range)))
}

/// The data of the first element with `id`, mutable, for in-place writers
/// such as [`write_abs_send_time`].
pub fn find_mut(profile: u16, data: &mut [u8], id: u8) -> Result<Option<&mut [u8]>> {
    Ok(locate(profile, data, id)?.and_then(|range| data.get_mut(range)))
}

/// Rewrites element ids in place, for a subscriber that negotiated other
/// ids than the publisher.
///
/// `map` receives each element's id and returns the new one; returning 0
/// erases the element by turning all its bytes into padding (for extensions
/// the subscriber did not negotiate). A returned id the form cannot carry
/// (above 14 in the one-byte form) is refused with an error and the block is
/// left untouched: the whole block is validated before any byte changes, so
/// `map` is called twice per element.
pub fn remap_ids<F: FnMut(u8) -> u8>(data: &mut [u8], profile: u16, mut map: F) -> Result<()> {
    let form = form_of(profile)?;
    for write in [false, true] {
        let mut pos = 0;
        while pos < data.len() {
            match step(form, data, pos)? {
                Step::Padding => pos += 1,
                Step::Stop => break,
                Step::Element { id, at, end, .. } => {
                    let new_id = map(id);
                    if new_id > form.max_id() {
                        return Err(WireError::Malformed {
                            layer: LAYER,
                            reason: "mapped extension id does not fit the element form",
                        });
                    }
                    if write {
                        if new_id == 0 {
                            if let Some(element) = data.get_mut(at..end) {
                                element.fill(0);
                            }
                        } else if let Some(header) = data.get_mut(at) {
                            *header = match form {
                                ExtensionForm::OneByte => (new_id << 4) | (*header & 0x0f),
                                ExtensionForm::TwoByte => new_id,
                            };
                        }
                    }
                    pos = end;
                }
            }
        }
    }
    Ok(())
}

/// Writes `elements` as an extension block body of the given form into
/// `out`, zero-padded to a multiple of 4 bytes, and returns its length.
/// Ready to pass to [`super::rtp::RtpHeaderBuilder::extension`] with
/// [`ExtensionForm::profile`].
pub fn write_elements(
    out: &mut [u8],
    form: ExtensionForm,
    elements: &[(u8, &[u8])],
) -> Result<usize> {
    let mut need = 0usize;
    for &(id, data) in elements {
        if id == 0 || id > form.max_id() {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "extension id does not fit the element form",
            });
        }
        if !form.fits_len(data.len()) {
            return Err(WireError::Malformed {
                layer: LAYER,
                reason: "extension data length does not fit the element form",
            });
        }
        need += form.header_len() + data.len();
    }
    let padded = need.div_ceil(4) * 4;
    let have = out.len();
    let out = out.get_mut(..padded).ok_or(WireError::BufferTooSmall {
        layer: LAYER,
        need: padded,
        have,
    })?;
    let mut pos = 0;
    for &(id, data) in elements {
        // Ids and lengths were validated above, so the narrowing casts are exact.
        match form {
            ExtensionForm::OneByte => {
                out[pos] = (id << 4) | (data.len() - 1) as u8;
                pos += 1;
            }
            ExtensionForm::TwoByte => {
                out[pos] = id;
                out[pos + 1] = data.len() as u8;
                pos += 2;
            }
        }
        out[pos..pos + data.len()].copy_from_slice(data);
        pos += data.len();
    }
    out[pos..].fill(0);
    Ok(padded)
}

fn is_token_char(b: u8) -> bool {
    // RFC 4566 token-char, which RFC 8852 and RFC 9143 identifiers use.
    matches!(b, 0x21 | 0x23..=0x27 | 0x2a..=0x2b | 0x2d..=0x2e | 0x30..=0x39 | 0x41..=0x5a | 0x5e..=0x7e)
}

fn read_token<'a>(data: &'a [u8], reason: &'static str) -> Result<&'a str> {
    if data.is_empty() || !data.iter().all(|&b| is_token_char(b)) {
        return Err(WireError::Malformed {
            layer: LAYER,
            reason,
        });
    }
    core::str::from_utf8(data).map_err(|_| WireError::Malformed {
        layer: LAYER,
        reason,
    })
}

/// Reads a MID (media identification) element.
pub fn read_mid(data: &[u8]) -> Result<&str> {
    read_token(data, "MID is empty or not made of token characters")
}

/// Reads an RtpStreamId (RID) element, the simulcast layer name.
pub fn read_rid(data: &[u8]) -> Result<&str> {
    read_token(data, "RID is empty or not made of token characters")
}

/// Reads a RepairedRtpStreamId element (the RID a repair stream protects).
pub fn read_repaired_rid(data: &[u8]) -> Result<&str> {
    read_token(
        data,
        "repaired RID is empty or not made of token characters",
    )
}

fn exact_len(data: &[u8], len: usize) -> Result<()> {
    if data.len() == len {
        Ok(())
    } else {
        Err(WireError::BadLength {
            layer: LAYER,
            claimed: data.len(),
            actual: len,
        })
    }
}

/// Absolute send time: 24-bit unsigned 6.18 fixed-point seconds, wrapping
/// every 64 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbsSendTime(u32);

impl AbsSendTime {
    const FRACTION_BITS: u32 = 18;
    const MASK: u32 = 0x00ff_ffff;

    /// From the 24-bit wire value; higher bits are discarded.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw & Self::MASK)
    }

    /// The 24-bit wire value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// From a time since an arbitrary epoch, keeping it modulo 64 s.
    pub fn from_duration(time: Duration) -> Self {
        let secs = time.as_secs() % 64;
        let fraction = (u64::from(time.subsec_nanos()) << Self::FRACTION_BITS) / 1_000_000_000;
        // secs < 64 and fraction < 2^18, so the value fits in 24 bits.
        Self::from_raw(((secs << Self::FRACTION_BITS) | fraction) as u32)
    }

    /// The time within the 64 s cycle.
    pub fn to_duration(self) -> Duration {
        let secs = u64::from(self.0 >> Self::FRACTION_BITS);
        let fraction = u64::from(self.0 & ((1 << Self::FRACTION_BITS) - 1));
        let nanos = (fraction * 1_000_000_000) >> Self::FRACTION_BITS;
        Duration::from_secs(secs) + Duration::from_nanos(nanos)
    }
}

/// Reads an abs-send-time element (exactly 3 bytes).
pub fn read_abs_send_time(data: &[u8]) -> Result<AbsSendTime> {
    exact_len(data, 3)?;
    Ok(AbsSendTime::from_raw(u32::from_be_bytes([
        0, data[0], data[1], data[2],
    ])))
}

/// Overwrites an abs-send-time element's data (exactly 3 bytes) in place.
pub fn write_abs_send_time(data: &mut [u8], time: AbsSendTime) -> Result<()> {
    exact_len(data, 3)?;
    data.copy_from_slice(&time.raw().to_be_bytes()[1..]);
    Ok(())
}

/// Reads a transport-wide congestion control sequence number (exactly 2
/// bytes).
pub fn read_transport_cc(data: &[u8]) -> Result<u16> {
    exact_len(data, 2)?;
    Ok(u16::from_be_bytes([data[0], data[1]]))
}

/// Overwrites a transport-wide congestion control sequence number in place.
pub fn write_transport_cc(data: &mut [u8], seq: u16) -> Result<()> {
    exact_len(data, 2)?;
    data.copy_from_slice(&seq.to_be_bytes());
    Ok(())
}

/// Client-to-mixer audio level (RFC 6464).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioLevel {
    /// V bit: the sender's voice activity detector thinks this is speech.
    pub voice_activity: bool,
    /// Level in -dBov, 0 (loudest) to 127 (silence).
    pub level: u8,
}

/// Reads an audio level element. RFC 6464 data is one byte; longer elements
/// are accepted when the extra bytes are zero padding, as some senders
/// emit.
pub fn read_audio_level(data: &[u8]) -> Result<AudioLevel> {
    match data {
        [first, rest @ ..] if rest.iter().all(|&b| b == 0) => Ok(AudioLevel {
            voice_activity: first & 0x80 != 0,
            level: first & 0x7f,
        }),
        [] => Err(WireError::Truncated {
            layer: LAYER,
            need: 1,
            have: 0,
        }),
        _ => Err(WireError::Malformed {
            layer: LAYER,
            reason: "audio level element longer than one byte",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::RtpHeaderBuilder;
    use proptest::prelude::*;

    fn collect(profile: u16, data: &[u8]) -> Vec<Result<(u8, Vec<u8>)>> {
        ExtensionIter::new(profile, data)
            .unwrap()
            .map(|r| r.map(|(id, d)| (id, d.to_vec())))
            .collect()
    }

    #[test]
    fn one_byte_example_from_rfc8285() {
        // RFC 8285 §4.2 figure: id 1 with one byte, id 2 with two bytes,
        // then padding, id 3 with four bytes.
        let data = [
            0x10, 0xff, 0x21, 0x00, 0x01, 0x00, 0x00, 0x33, 0x01, 0x02, 0x03, 0x04,
        ];
        assert_eq!(
            collect(ONE_BYTE_PROFILE, &data),
            vec![
                Ok((1, vec![0xff])),
                Ok((2, vec![0x00, 0x01])),
                Ok((3, vec![1, 2, 3, 4])),
            ]
        );
    }

    #[test]
    fn two_byte_example_from_rfc8285() {
        // RFC 8285 §4.3 figure: id 1 with no data, id 2 with one byte, then
        // padding, id 3 with four bytes; appbits in the profile ignored.
        let data = [
            0x01, 0x00, 0x02, 0x01, 0x42, 0x00, 0x03, 0x04, 0x01, 0x02, 0x03, 0x04,
        ];
        assert_eq!(
            collect(0x100f, &data),
            vec![
                Ok((1, vec![])),
                Ok((2, vec![0x42])),
                Ok((3, vec![1, 2, 3, 4])),
            ]
        );
        assert_eq!(
            ExtensionForm::from_profile(0x1003),
            Some(ExtensionForm::TwoByte)
        );
        assert_eq!(ExtensionForm::from_profile(0x2000), None);
    }

    #[test]
    fn id_15_stops_one_byte_parsing() {
        let data = [0x10, 0xaa, 0xf3, 0x20, 0xbb, 0x00, 0x00, 0x00];
        assert_eq!(collect(ONE_BYTE_PROFILE, &data), vec![Ok((1, vec![0xaa]))]);
        // In the two-byte form 15 is an ordinary id.
        let data = [0x0f, 0x01, 0xcc, 0x00];
        assert_eq!(collect(0x1000, &data), vec![Ok((15, vec![0xcc]))]);
    }

    #[test]
    fn overrun_yields_one_error_then_ends() {
        let data = [0x10, 0xaa, 0x23, 0xbb];
        let got = collect(ONE_BYTE_PROFILE, &data);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok((1, vec![0xaa])));
        assert_eq!(
            got[1],
            Err(WireError::BadLength {
                layer: "rtp-ext",
                claimed: 4,
                actual: 1
            })
        );
        // Two-byte form with the length byte missing.
        assert!(matches!(
            collect(0x1000, &[0x05])[..],
            [Err(WireError::Truncated { .. })]
        ));
        assert!(matches!(
            collect(0x1000, &[0x05, 0x02, 0x01])[..],
            [Err(WireError::BadLength { .. })]
        ));
        // Id 0 with a length is not padding.
        assert!(matches!(
            collect(ONE_BYTE_PROFILE, &[0x01, 0x00])[..],
            [Err(WireError::Malformed { .. })]
        ));
    }

    #[test]
    fn rejects_foreign_profile() {
        assert!(ExtensionIter::new(0x0001, &[]).is_err());
        assert!(find(0xabcd, &[], 1).is_err());
        assert!(remap_ids(&mut [], 0xabcd, |id| id).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_or_a_prefix() {
        // The block parses fully; a cut block either errors or yields a prefix
        // of the elements.
        let mut data = [0u8; 32];
        let n = write_elements(
            &mut data,
            ExtensionForm::OneByte,
            &[(1, &[0x85]), (2, &[0x12, 0x34, 0x56]), (3, b"video0")],
        )
        .unwrap();
        let full = collect(ONE_BYTE_PROFILE, &data[..n]);
        assert_eq!(full.len(), 3);
        for len in 0..n {
            let cut = collect(ONE_BYTE_PROFILE, &data[..len]);
            let ok: Vec<_> = cut.iter().take_while(|r| r.is_ok()).cloned().collect();
            assert!(full.starts_with(&ok));
            // Elements end at offsets 2, 6 and 13; a cut anywhere else inside
            // them is an overrun.
            let ends = [2, 6, 13];
            assert_eq!(ok.len(), ends.iter().filter(|&&e| e <= len).count());
            let overrun = len > 0 && len < 13 && !ends.contains(&len);
            assert_eq!(cut.len(), ok.len() + usize::from(overrun), "cut at {len}");
        }
    }

    #[test]
    fn find_on_a_packet() {
        let mut ext = [0u8; 16];
        let n = write_elements(
            &mut ext,
            ExtensionForm::OneByte,
            &[(1, &[0x85]), (3, &[0x00, 0x07]), (4, b"0"), (10, b"hi")],
        )
        .unwrap();
        let mut pkt = [0u8; 64];
        let len = RtpHeaderBuilder::new(96, 1, 2, 3)
            .extension(ONE_BYTE_PROFILE, &ext[..n])
            .write(&mut pkt)
            .unwrap();
        let mut packet = RtpPacket::new_checked(&mut pkt[..len]).unwrap();
        let ids: Vec<u8> = ExtensionIter::from_packet(&packet)
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(ids, [1, 3, 4, 10]);

        let profile = packet.extension_profile().unwrap();
        let data = packet.extension_data().unwrap();
        assert_eq!(
            read_audio_level(find(profile, data, 1).unwrap().unwrap()),
            Ok(AudioLevel {
                voice_activity: true,
                level: 5
            })
        );
        assert_eq!(
            read_transport_cc(find(profile, data, 3).unwrap().unwrap()),
            Ok(7)
        );
        assert_eq!(read_mid(find(profile, data, 4).unwrap().unwrap()), Ok("0"));
        assert_eq!(
            read_rid(find(profile, data, 10).unwrap().unwrap()),
            Ok("hi")
        );
        assert_eq!(find(profile, data, 2), Ok(None));

        let data = packet.extension_data_mut().unwrap();
        write_transport_cc(find_mut(profile, data, 3).unwrap().unwrap(), 0xbeef).unwrap();
        assert_eq!(
            read_transport_cc(find(profile, data, 3).unwrap().unwrap()),
            Ok(0xbeef)
        );

        let mut plain = [0u8; 12];
        RtpHeaderBuilder::new(96, 1, 2, 3)
            .write(&mut plain)
            .unwrap();
        let plain = RtpPacket::new_checked(&plain[..]).unwrap();
        assert_eq!(ExtensionIter::from_packet(&plain).unwrap().count(), 0);
    }

    #[test]
    fn remap_rewrites_in_place() {
        let mut data = [0u8; 16];
        let n = write_elements(
            &mut data,
            ExtensionForm::OneByte,
            &[(1, &[0x85]), (3, &[0x00, 0x07]), (5, b"abc")],
        )
        .unwrap();
        let data = &mut data[..n];
        remap_ids(data, ONE_BYTE_PROFILE, |id| match id {
            1 => 14,
            3 => 0, // not negotiated by the subscriber: erased
            other => other,
        })
        .unwrap();
        assert_eq!(
            collect(ONE_BYTE_PROFILE, data),
            vec![Ok((14, vec![0x85])), Ok((5, b"abc".to_vec()))]
        );
        // An id the form cannot carry is refused and nothing changes.
        let before = data.to_vec();
        let mut calls = 0;
        assert!(remap_ids(data, ONE_BYTE_PROFILE, |id| {
            calls += 1;
            if id == 5 {
                15
            } else {
                2
            }
        })
        .is_err());
        assert_eq!(data, &before[..]);
        assert_eq!(calls, 2);

        let mut two = [0u8; 16];
        let n = write_elements(
            &mut two,
            ExtensionForm::TwoByte,
            &[(1, &[]), (200, &[9, 9])],
        )
        .unwrap();
        remap_ids(&mut two[..n], TWO_BYTE_PROFILE, |id| id.wrapping_add(50)).unwrap();
        assert_eq!(
            collect(TWO_BYTE_PROFILE, &two[..n]),
            vec![Ok((51, vec![])), Ok((250, vec![9, 9]))]
        );
        // A malformed block is refused before anything is written.
        let mut bad = [0x10, 0xaa, 0x23, 0xbb];
        assert!(remap_ids(&mut bad, ONE_BYTE_PROFILE, |_| 2).is_err());
        assert_eq!(bad, [0x10, 0xaa, 0x23, 0xbb]);
    }

    #[test]
    fn write_elements_validates() {
        let mut out = [0u8; 8];
        assert!(write_elements(&mut out, ExtensionForm::OneByte, &[(15, &[1])]).is_err());
        assert!(write_elements(&mut out, ExtensionForm::OneByte, &[(0, &[1])]).is_err());
        assert!(write_elements(&mut out, ExtensionForm::OneByte, &[(1, &[])]).is_err());
        assert!(write_elements(&mut out, ExtensionForm::OneByte, &[(1, &[0; 17])]).is_err());
        assert!(write_elements(&mut out, ExtensionForm::TwoByte, &[(1, &[0; 256])]).is_err());
        assert!(matches!(
            write_elements(&mut out, ExtensionForm::TwoByte, &[(1, &[0; 7])]),
            Err(WireError::BufferTooSmall {
                need: 12,
                have: 8,
                ..
            })
        ));
        assert_eq!(write_elements(&mut out, ExtensionForm::OneByte, &[]), Ok(0));
    }

    #[test]
    fn token_rules() {
        assert_eq!(read_mid(b"audio-0"), Ok("audio-0"));
        assert_eq!(read_rid(b"q"), Ok("q"));
        assert_eq!(read_repaired_rid(b"f_1"), Ok("f_1"));
        assert!(read_mid(b"").is_err());
        assert!(read_rid(b"a b").is_err());
        assert!(read_rid(b"a\0").is_err());
        assert!(read_mid(&[0xc3, 0xa9]).is_err());
        assert!(read_mid(b"(x)").is_err());
    }

    #[test]
    fn abs_send_time_fixed_point() {
        assert!(read_abs_send_time(&[0, 0]).is_err());
        assert!(read_abs_send_time(&[0, 0, 0, 0]).is_err());
        let t = read_abs_send_time(&[0x12, 0x34, 0x56]).unwrap();
        assert_eq!(t.raw(), 0x12_3456);
        // 0x123456 = 4 s + 0x23456 / 2^18 s.
        assert_eq!(t.to_duration().as_secs(), 4);
        assert_eq!(
            AbsSendTime::from_duration(Duration::from_millis(1500)).raw(),
            (1 << 18) | (1 << 17)
        );
        // Wraps every 64 s.
        assert_eq!(
            AbsSendTime::from_duration(Duration::from_secs(65)),
            AbsSendTime::from_duration(Duration::from_secs(1))
        );
        let mut buf = [0u8; 3];
        write_abs_send_time(&mut buf, AbsSendTime::from_raw(0xffab_cdef)).unwrap();
        assert_eq!(buf, [0xab, 0xcd, 0xef]);
        assert!(write_abs_send_time(&mut [0u8; 2], t).is_err());
    }

    #[test]
    fn transport_cc_and_audio_level() {
        assert_eq!(read_transport_cc(&[0x01, 0x02]), Ok(0x0102));
        assert!(read_transport_cc(&[0x01]).is_err());
        assert!(write_transport_cc(&mut [0u8; 3], 1).is_err());
        assert_eq!(
            read_audio_level(&[0x7f]),
            Ok(AudioLevel {
                voice_activity: false,
                level: 127
            })
        );
        assert_eq!(
            read_audio_level(&[0x81, 0, 0, 0]),
            Ok(AudioLevel {
                voice_activity: true,
                level: 1
            })
        );
        assert!(read_audio_level(&[]).is_err());
        assert!(read_audio_level(&[0x81, 1]).is_err());
    }

    fn profile_strategy() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(ONE_BYTE_PROFILE),
            (0u16..16).prop_map(|a| TWO_BYTE_PROFILE | a)
        ]
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_blocks_never_panics(profile in profile_strategy(), data in proptest::collection::vec(any::<u8>(), 0..64), id in any::<u8>()) {
            let mut total = 0usize;
            let mut errors = 0;
            for item in ExtensionIter::new(profile, &data).unwrap() {
                match item {
                    Ok((_, d)) => total += d.len(),
                    Err(_) => errors += 1,
                }
            }
            prop_assert!(total <= data.len());
            prop_assert!(errors <= 1);
            let _ = find(profile, &data, id);
            let mut copy = data.clone();
            let _ = find_mut(profile, &mut copy, id).map(|d| d.map(|d| d.fill(0)));
            let mut copy = data.clone();
            if remap_ids(&mut copy, profile, |old| old.wrapping_mul(7) % 15).is_err() {
                prop_assert_eq!(&copy, &data);
            }
        }

        #[test]
        fn written_elements_parse_back(
            two_byte in any::<bool>(),
            elements in proptest::collection::vec((1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16)), 0..6),
        ) {
            let form = if two_byte { ExtensionForm::TwoByte } else { ExtensionForm::OneByte };
            let refs: Vec<(u8, &[u8])> = elements.iter().map(|(id, d)| (*id, &d[..])).collect();
            let mut out = [0u8; 128];
            let n = write_elements(&mut out, form, &refs).unwrap();
            prop_assert_eq!(n % 4, 0);
            let got: Vec<(u8, Vec<u8>)> = ExtensionIter::new(form.profile(), &out[..n])
                .unwrap()
                .map(|r| r.map(|(id, d)| (id, d.to_vec())))
                .collect::<Result<_>>()
                .unwrap();
            prop_assert_eq!(got, elements.clone());
            // Remapping to the same ids is the identity on the bytes.
            let before = out;
            remap_ids(&mut out[..n], form.profile(), |id| id).unwrap();
            prop_assert_eq!(before, out);
        }

        #[test]
        fn abs_send_time_round_trips(raw in 0u32..(1 << 24)) {
            let t = AbsSendTime::from_raw(raw);
            prop_assert_eq!(AbsSendTime::from_duration(t.to_duration() + Duration::from_nanos(1)), t);
        }
    }
}
