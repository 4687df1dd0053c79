//! Zero-copy views over packet bytes.
//!
//! Every view follows one pattern: `View::new_checked(buf)` validates the
//! lengths the accessors rely on and returns a [`WireError`] if they lie;
//! accessors then read without panicking. Views over `AsMut<[u8]>` buffers
//! also have in-place setters for the hot path.

/// Why some bytes are not a valid packet of the expected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or a length field) requires.
    #[error("{layer}: truncated (need {need} bytes, have {have})")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    /// A version field this code does not speak.
    #[error("{layer}: unsupported version {version}")]
    BadVersion { layer: &'static str, version: u8 },
    /// A length field that contradicts the bytes actually present.
    #[error("{layer}: length field says {claimed} but {actual} bytes are available")]
    BadLength {
        layer: &'static str,
        claimed: usize,
        actual: usize,
    },
    /// Any other structural violation.
    #[error("{layer}: {reason}")]
    Malformed {
        layer: &'static str,
        reason: &'static str,
    },
    /// The output buffer given to a builder is too small.
    #[error("{layer}: output buffer too small (need {need} bytes, have {have})")]
    BufferTooSmall {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    /// A checksum, CRC or MAC over the packet did not verify.
    #[error("{layer}: integrity check failed ({what})")]
    Integrity {
        layer: &'static str,
        what: &'static str,
    },
}

/// Result of parsing or building wire data.
pub type Result<T> = core::result::Result<T, WireError>;

/// Returns `Err(Truncated)` unless `buf` has at least `need` bytes.
#[inline]
pub(crate) fn ensure_len(layer: &'static str, buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(WireError::Truncated {
            layer,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

#[inline]
pub(crate) fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline]
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

pub mod av1_dd;
pub mod demux;
pub mod ethernet;
pub mod h264;
pub mod ipv4;
pub mod ipv6;
pub mod rtcp;
pub mod rtp;
pub mod rtp_ext;
pub mod stun;
pub mod udp;
pub mod vp8;
