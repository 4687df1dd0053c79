//! Packet history for answering NACKs.
//!
//! Each published video source keeps the *decrypted* packets it received in
//! one byte ring ([`SourceCache`]), shared by all its subscribers: a packet
//! is stored once however many subscribers might ask for it. Each outgoing
//! stream keeps, per output sequence number, where its packet came from and
//! the header it was given ([`SentLog`]), so a NACKed number is rebuilt by
//! copying the source packet and applying the same rewrite again. Both are
//! allocated once, when the publication or subscription is made.

use crate::rewrite::Forward;

/// Index slots per layer; a power of two, more than the packets a ring of
/// the default size holds for one layer.
const INDEX_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Absolute ring position of the first byte; `u64::MAX` when empty.
    start: u64,
    len: u16,
    seq: u16,
}

const EMPTY: Slot = Slot {
    start: u64::MAX,
    len: 0,
    seq: 0,
};

/// Decrypted packets of one source's layers, by (layer, sequence number).
#[derive(Debug)]
pub struct SourceCache {
    ring: Box<[u8]>,
    /// Absolute position of the next write (ring offset = write % len).
    write: u64,
    index: Box<[Slot]>,
    layers: usize,
}

impl SourceCache {
    /// A cache of `bytes` bytes for `layers` layers.
    pub fn new(bytes: usize, layers: usize) -> Self {
        Self {
            ring: vec![0u8; bytes.max(2048)].into_boxed_slice(),
            write: 0,
            index: vec![EMPTY; INDEX_LEN * layers.max(1)].into_boxed_slice(),
            layers: layers.max(1),
        }
    }

    /// Stores `packet` as (layer, seq), overwriting the oldest bytes.
    pub fn insert(&mut self, layer: usize, seq: u16, packet: &[u8]) {
        let cap = self.ring.len() as u64;
        let len = packet.len();
        if layer >= self.layers || len as u64 > cap || len > usize::from(u16::MAX) {
            return;
        }
        // A packet never straddles the end of the ring.
        let mut off = self.write % cap;
        if off + len as u64 > cap {
            self.write += cap - off;
            off = 0;
        }
        let off = off as usize;
        self.ring[off..off + len].copy_from_slice(packet);
        self.index[layer * INDEX_LEN + usize::from(seq) % INDEX_LEN] = Slot {
            start: self.write,
            len: len as u16,
            seq,
        };
        self.write += len as u64;
    }

    /// The packet stored as (layer, seq), if its bytes are still there.
    pub fn get(&self, layer: usize, seq: u16) -> Option<&[u8]> {
        if layer >= self.layers {
            return None;
        }
        let slot = self.index[layer * INDEX_LEN + usize::from(seq) % INDEX_LEN];
        let cap = self.ring.len() as u64;
        // Overwritten once the write position has gone past start + cap.
        if slot.start == u64::MAX || slot.seq != seq || slot.start + cap < self.write {
            return None;
        }
        let off = (slot.start % cap) as usize;
        Some(&self.ring[off..off + usize::from(slot.len)])
    }
}

/// What was sent under one output sequence number.
#[derive(Debug, Clone, Copy)]
pub struct SentEntry {
    /// Layer of the source packet.
    pub layer: u8,
    /// Its input sequence number.
    pub in_seq: u16,
    /// The header it was given.
    pub forward: Forward,
}

/// Output sequence number → source packet, for one outgoing stream.
#[derive(Debug)]
pub struct SentLog {
    entries: Box<[Option<SentEntry>]>,
}

impl SentLog {
    /// A log remembering the last `len` (a power of two) numbers.
    pub fn new(len: usize) -> Self {
        Self {
            entries: vec![None; len.next_power_of_two()].into_boxed_slice(),
        }
    }

    /// Records a sent packet.
    pub fn record(&mut self, entry: SentEntry) {
        let i = usize::from(entry.forward.seq) & (self.entries.len() - 1);
        self.entries[i] = Some(entry);
    }

    /// What was sent as `seq`, if still remembered.
    pub fn get(&self, seq: u16) -> Option<SentEntry> {
        let i = usize::from(seq) & (self.entries.len() - 1);
        self.entries[i].filter(|e| e.forward.seq == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_finds_until_overwritten() {
        let mut cache = SourceCache::new(4096, 2);
        cache.insert(0, 10, &[1; 1000]);
        cache.insert(1, 10, &[2; 1000]);
        assert_eq!(cache.get(0, 10), Some(&[1u8; 1000][..]));
        assert_eq!(cache.get(1, 10), Some(&[2u8; 1000][..]));
        assert_eq!(cache.get(0, 11), None);
        assert_eq!(cache.get(2, 10), None);
        // Three more packets wrap the ring (a packet never straddles its
        // end) and overwrite the first; the fourth overwrites the second.
        for seq in 11..14 {
            cache.insert(0, seq, &[seq as u8; 1000]);
        }
        assert_eq!(cache.get(0, 10), None);
        assert_eq!(cache.get(1, 10), Some(&[2u8; 1000][..]));
        assert_eq!(cache.get(0, 13), Some(&[13u8; 1000][..]));
        cache.insert(0, 14, &[14; 1000]);
        assert_eq!(cache.get(1, 10), None);
        assert_eq!(cache.get(0, 11), Some(&[11u8; 1000][..]));
    }

    #[test]
    fn index_collisions_do_not_return_the_wrong_packet() {
        let mut cache = SourceCache::new(1 << 20, 1);
        cache.insert(0, 5, &[5; 10]);
        cache.insert(0, 5 + INDEX_LEN as u16, &[6; 10]);
        assert_eq!(cache.get(0, 5), None);
        assert_eq!(cache.get(0, 5 + INDEX_LEN as u16), Some(&[6u8; 10][..]));
    }
}
