//! Per-SSRC stream state, in a table sized once when the context is made.
//!
//! Everything is allocated up front for the configured bound, so neither a
//! packet nor a new stream allocates: streams live in a slab, their replay
//! windows in one bit slab, and lookups go through a sorted `(ssrc, slot)`
//! array (binary search) behind a one-entry cache for the common case of
//! consecutive packets of one stream.

use super::replay::{words_for, Window};
use super::SrtpError;

/// The state of one SSRC in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stream {
    /// Highest SRTP index sent, and which recent ones were (repeat guard).
    pub rtp_tx: Window,
    /// Highest SRTP index received, and the replay window behind it.
    pub rtp_rx: Window,
    /// Highest SRTCP index received, and the replay window behind it.
    pub rtcp_rx: Window,
    /// Next SRTCP index to send.
    pub rtcp_tx_next: u32,
}

/// Which of a stream's three windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    RtpTx = 0,
    RtpRx = 1,
    RtcpRx = 2,
}

pub(crate) struct StreamTable {
    streams: Vec<Stream>,
    /// Slot of each live SSRC, sorted by SSRC.
    index: Vec<(u32, u32)>,
    /// Slots freed by `remove`, reused before new ones.
    free: Vec<u32>,
    /// Window bits: `words` per window, three windows per slot.
    bits: Vec<u64>,
    words: usize,
    max: usize,
    /// Last looked-up `(ssrc, slot)`.
    last: Option<(u32, u32)>,
}

impl StreamTable {
    pub(crate) fn new(max: usize, window: u64) -> Self {
        let words = words_for(window);
        Self {
            streams: Vec::with_capacity(max),
            index: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            bits: vec![0; max * 3 * words],
            words,
            max,
            last: None,
        }
    }

    /// The slot of `ssrc`, without touching the lookup cache.
    pub(crate) fn peek(&self, ssrc: u32) -> Option<usize> {
        let at = self.index.binary_search_by_key(&ssrc, |&(s, _)| s).ok()?;
        Some(self.index[at].1 as usize)
    }

    #[inline]
    pub(crate) fn find(&mut self, ssrc: u32) -> Option<usize> {
        if let Some((cached, slot)) = self.last {
            if cached == ssrc {
                return Some(slot as usize);
            }
        }
        let at = self.index.binary_search_by_key(&ssrc, |&(s, _)| s).ok()?;
        let slot = self.index[at].1;
        self.last = Some((ssrc, slot));
        Some(slot as usize)
    }

    /// The slot of `ssrc`, made if absent and the table has room.
    #[inline]
    pub(crate) fn find_or_insert(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        match self.find(ssrc) {
            Some(slot) => Ok(slot),
            None => self.insert(ssrc),
        }
    }

    fn insert(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        let at = match self.index.binary_search_by_key(&ssrc, |&(s, _)| s) {
            Ok(at) => return Ok(self.index[at].1 as usize),
            Err(at) => at,
        };
        if self.index.len() >= self.max {
            return Err(SrtpError::TooManyStreams { max: self.max });
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.streams[slot as usize] = Stream::default();
                slot
            }
            None => {
                self.streams.push(Stream::default());
                (self.streams.len() - 1) as u32
            }
        };
        // Capacity was reserved for `max` entries: this never reallocates.
        self.index.insert(at, (ssrc, slot));
        self.last = Some((ssrc, slot));
        Ok(slot as usize)
    }

    /// Forgets `ssrc`; returns whether it was known.
    pub(crate) fn remove(&mut self, ssrc: u32) -> bool {
        match self.index.binary_search_by_key(&ssrc, |&(s, _)| s) {
            Ok(at) => {
                let (_, slot) = self.index.remove(at);
                self.free.push(slot);
                if self.last.is_some_and(|(s, _)| s == ssrc) {
                    self.last = None;
                }
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    #[inline]
    pub(crate) fn stream(&self, slot: usize) -> &Stream {
        &self.streams[slot]
    }

    #[inline]
    pub(crate) fn stream_mut(&mut self, slot: usize) -> &mut Stream {
        &mut self.streams[slot]
    }

    /// The bits of one window of one slot.
    #[inline]
    pub(crate) fn bits(&self, slot: usize, which: Which) -> &[u64] {
        let start = (slot * 3 + which as usize) * self.words;
        &self.bits[start..start + self.words]
    }

    /// A stream and the bits of one of its windows, mutably.
    #[inline]
    pub(crate) fn window_mut(&mut self, slot: usize, which: Which) -> (&mut Window, &mut [u64]) {
        let start = (slot * 3 + which as usize) * self.words;
        let stream = &mut self.streams[slot];
        let window = match which {
            Which::RtpTx => &mut stream.rtp_tx,
            Which::RtpRx => &mut stream.rtp_rx,
            Which::RtcpRx => &mut stream.rtcp_rx,
        };
        (window, &mut self.bits[start..start + self.words])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_reusable() {
        let mut table = StreamTable::new(3, 128);
        let a = table.find_or_insert(30).unwrap();
        let b = table.find_or_insert(10).unwrap();
        let c = table.find_or_insert(20).unwrap();
        assert_eq!(table.find_or_insert(10).unwrap(), b);
        assert_eq!(
            table.find_or_insert(40),
            Err(SrtpError::TooManyStreams { max: 3 })
        );
        assert_eq!(table.find(20), Some(c));
        assert_eq!(table.peek(10), Some(b));
        assert_eq!(table.peek(11), None);
        assert_eq!(table.find(30), Some(a));
        table.stream_mut(b).rtcp_tx_next = 9;
        assert!(table.remove(10));
        assert!(!table.remove(10));
        assert_eq!(table.find(10), None);
        let d = table.find_or_insert(40).unwrap();
        assert_eq!(d, b, "the freed slot is reused");
        assert_eq!(table.stream(d).rtcp_tx_next, 0, "and starts fresh");
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn windows_do_not_overlap() {
        let mut table = StreamTable::new(2, 100);
        let a = table.find_or_insert(1).unwrap();
        let b = table.find_or_insert(2).unwrap();
        let (w, bits) = table.window_mut(a, Which::RtpRx);
        w.commit(bits, 5);
        for (slot, which) in [
            (a, Which::RtpTx),
            (a, Which::RtcpRx),
            (b, Which::RtpTx),
            (b, Which::RtpRx),
            (b, Which::RtcpRx),
        ] {
            assert!(table.bits(slot, which).iter().all(|&w| w == 0));
        }
        assert_eq!(table.bits(a, Which::RtpRx).len(), 2);
    }
}
