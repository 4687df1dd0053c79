//! Packet index estimation (RFC 3711 §3.3.1, Appendix A) and the sliding
//! replay window (RFC 3711 §3.3.2).
//!
//! The window's bits live in a slice the caller owns (the stream table keeps
//! all windows in one preallocated slab), addressed as a ring: the bit for
//! index `i` is bit `i mod (64 · words)`. Advancing the window only clears
//! the bits of the indices it passes over, so a packet costs a few word
//! operations whatever the window size.

use super::SrtpError;

/// Largest SRTP packet index: 32-bit ROC ‖ 16-bit SEQ.
pub(crate) const MAX_RTP_INDEX: u64 = (1 << 48) - 1;

/// Estimates the 48-bit packet index of sequence number `seq` from the
/// highest index `top` accepted so far (RFC 3711 Appendix A): the candidate
/// in the previous, current or next rollover nearest to `top`.
///
/// Returns `None` when the candidate would precede index 0 (ROC −1) or pass
/// 2^48 − 1: no legitimate packet has such an index.
#[inline]
pub(crate) fn estimate_index(top: u64, seq: u16) -> Option<u64> {
    const HALF: u16 = 1 << 15;
    let roc = top >> 16;
    let s_l = top as u16;
    let seq_index = u64::from(seq);
    if s_l < HALF {
        if seq > s_l && seq - s_l > HALF {
            let prev = roc.checked_sub(1)?;
            Some(prev << 16 | seq_index)
        } else {
            Some(roc << 16 | seq_index)
        }
    } else if s_l - HALF > seq {
        let next = (roc + 1) << 16 | seq_index;
        (next <= MAX_RTP_INDEX).then_some(next)
    } else {
        Some(roc << 16 | seq_index)
    }
}

/// Number of `u64` words a window of `window` packets needs.
pub(crate) const fn words_for(window: u64) -> usize {
    window.div_ceil(64) as usize
}

/// Where a replay window stands; its bits are passed in alongside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// Highest index accepted, meaningful once `started`.
    pub top: u64,
    /// Whether any index has been accepted.
    pub started: bool,
}

impl Window {
    /// Checks `index` against the window without changing it: new if above
    /// the top, otherwise it must be less than `size` behind and unseen.
    #[inline]
    pub(crate) fn check(&self, bits: &[u64], size: u64, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.top {
            return Ok(());
        }
        if self.top - index >= size {
            return Err(SrtpError::TooOld);
        }
        let (word, mask) = position(bits, index);
        if bits[word] & mask != 0 {
            Err(SrtpError::ReplayedPacket)
        } else {
            Ok(())
        }
    }

    /// Records `index`, which [`Self::check`] accepted, as seen.
    #[inline]
    pub(crate) fn commit(&mut self, bits: &mut [u64], index: u64) {
        if !self.started {
            bits.fill(0);
            self.top = index;
            self.started = true;
        } else if index > self.top {
            clear_span(bits, self.top + 1, index - self.top);
            self.top = index;
        }
        let (word, mask) = position(bits, index);
        bits[word] |= mask;
    }
}

#[inline]
fn position(bits: &[u64], index: u64) -> (usize, u64) {
    let ring = bits.len() as u64 * 64;
    let bit = index % ring;
    ((bit / 64) as usize, 1 << (bit % 64))
}

/// Clears the ring bits of the `count` indices starting at `first`.
#[inline]
fn clear_span(bits: &mut [u64], first: u64, count: u64) {
    let ring = bits.len() as u64 * 64;
    if count >= ring {
        bits.fill(0);
        return;
    }
    let start = first % ring;
    let head = count.min(ring - start);
    clear_linear(bits, start as usize, head as usize);
    if head < count {
        clear_linear(bits, 0, (count - head) as usize);
    }
}

/// Clears bits `start .. start + len` of the (non-wrapping) bit array.
#[inline]
fn clear_linear(bits: &mut [u64], start: usize, len: usize) {
    let mut at = start;
    let end = start + len;
    while at < end {
        let word = at / 64;
        let offset = at % 64;
        let n = (64 - offset).min(end - at);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << offset
        };
        bits[word] &= !mask;
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// RFC 3711 Appendix A, literally, with the ROC as a signed number.
    fn rfc_estimate(roc: i64, s_l: i64, seq: i64) -> i64 {
        let v = if s_l < 32768 {
            if seq - s_l > 32768 {
                roc - 1
            } else {
                roc
            }
        } else if s_l - 32768 > seq {
            roc + 1
        } else {
            roc
        };
        v * 65536 + seq
    }

    #[test]
    fn estimates_across_the_wrap() {
        assert_eq!(estimate_index(65_535, 0), Some(65_536));
        assert_eq!(estimate_index(65_536, 65_535), Some(65_535));
        assert_eq!(estimate_index(65_536 + 10, 65_500), Some(65_500));
        assert_eq!(estimate_index(3 << 16 | 40_000, 100), Some(4 << 16 | 100));
        // Before the first rollover there is no ROC −1.
        assert_eq!(estimate_index(100, 65_000), None);
        // Past ROC 2^32 − 1 there is no next rollover.
        assert_eq!(estimate_index(MAX_RTP_INDEX - 10, 5), None);
    }

    #[test]
    fn window_accepts_reordered_and_rejects_replays() {
        let mut bits = [0u64; 2];
        let mut w = Window::default();
        for index in [10u64, 12, 11, 200, 150, 73] {
            w.check(&bits, 128, index).unwrap();
            w.commit(&mut bits, index);
        }
        assert_eq!(w.check(&bits, 128, 150), Err(SrtpError::ReplayedPacket));
        assert_eq!(w.check(&bits, 128, 200), Err(SrtpError::ReplayedPacket));
        assert_eq!(w.check(&bits, 128, 72), Err(SrtpError::TooOld));
        assert_eq!(w.check(&bits, 128, 74), Ok(()));
        assert_eq!(w.check(&bits, 128, 201), Ok(()));
        // A jump wider than the ring forgets everything behind it.
        w.commit(&mut bits, 10_000);
        assert_eq!(w.check(&bits, 128, 9_990), Ok(()));
        assert_eq!(w.check(&bits, 128, 10_000), Err(SrtpError::ReplayedPacket));
    }

    proptest! {
        /// Against the RFC's own algorithm and against the true index, for
        /// any starting point and any jump that stays within ±2^15.
        #[test]
        fn estimation_matches_reference(
            start in 0u64..(1u64 << 40),
            jumps in proptest::collection::vec(-32_767i64..=32_767, 1..200),
        ) {
            let mut top = start;
            for jump in jumps {
                let truth = (top as i64 + jump).max(0);
                let seq = truth as u16;
                let reference = rfc_estimate((top >> 16) as i64, (top & 0xffff) as i64, i64::from(seq));
                let ours = estimate_index(top, seq);
                if reference < 0 {
                    prop_assert_eq!(ours, None);
                } else {
                    prop_assert_eq!(ours, Some(reference as u64));
                }
                prop_assert_eq!(ours, Some(truth as u64));
                top = top.max(truth as u64);
            }
        }

        /// The ring window against a set of every index ever accepted.
        #[test]
        fn window_matches_set_model(
            size in 1u64..300,
            steps in proptest::collection::vec((0u64..400, any::<bool>()), 1..300),
        ) {
            let mut bits = vec![0u64; words_for(size)];
            let mut w = Window::default();
            let mut seen = BTreeSet::new();
            let mut top: Option<u64> = None;
            let mut base = 1_000u64;
            for (offset, forward) in steps {
                let index = if forward { base + offset } else { base.saturating_sub(offset) };
                let expected = match top {
                    None => Ok(()),
                    Some(t) if index > t => Ok(()),
                    Some(t) if t - index >= size => Err(SrtpError::TooOld),
                    Some(_) if seen.contains(&index) => Err(SrtpError::ReplayedPacket),
                    Some(_) => Ok(()),
                };
                prop_assert_eq!(w.check(&bits, size, index), expected);
                if expected.is_ok() {
                    w.commit(&mut bits, index);
                    seen.insert(index);
                    top = Some(top.map_or(index, |t| t.max(index)));
                }
                base = top.unwrap_or(base);
            }
        }
    }
}
