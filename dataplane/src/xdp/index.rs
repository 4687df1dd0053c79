//! Bookkeeping for the direct per-port index of IPv4 flows.
//!
//! A local port with exactly one IPv4 flow is published in the port index:
//! the program finds its flow with two array lookups instead of hashing the
//! flow key. Every IPv4 flow stays in the IPv4 flow map as well, so a port
//! with several senders (or a sender the index does not name) is served by
//! the map, and the index can be cleared or out of slots at any time without
//! changing what is forwarded.
//!
//! Slots are never rewritten while the index may point at them: a new value
//! goes into a free slot, the port's index entry is switched to it (one
//! aligned 4-byte store), and the old slot waits out [`SLOT_QUARANTINE`]
//! before it is handed out again. A program that read the old index entry
//! finishes with the old slot long before that (XDP runs inside an RCU read
//! section of microseconds).

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

/// How long a slot the index no longer points at is kept before reuse.
pub(super) const SLOT_QUARANTINE: Duration = Duration::from_secs(1);

/// An IPv4 sender: address as on the wire, port in host order.
pub(super) type Remote = ([u8; 4], u16);

/// What the loader knows about the port index and the slots behind it.
pub(super) struct PortIndex {
    /// The IPv4 senders with a flow, per local port (the IPv4 flow map's keys).
    remotes: HashMap<u16, BTreeSet<Remote>>,
    /// The slot each published port's index entry points at.
    published: HashMap<u16, u32>,
    /// Slots nothing points at, ready for use.
    free: Vec<u32>,
    /// Slots unpublished at the given time, oldest first.
    quarantine: VecDeque<(Instant, u32)>,
}

impl PortIndex {
    /// Bookkeeping for `slots` slots, all free.
    pub(super) fn new(slots: u32) -> Self {
        Self {
            remotes: HashMap::new(),
            published: HashMap::new(),
            // Reversed so slots are handed out from 0 up.
            free: (0..slots).rev().collect(),
            quarantine: VecDeque::new(),
        }
    }

    /// Records a flow of `remote` to `port` (again, if it exists already).
    pub(super) fn add(&mut self, port: u16, remote: Remote) {
        self.remotes.entry(port).or_default().insert(remote);
    }

    /// Forgets the flow of `remote` to `port`; false if there was none.
    pub(super) fn remove(&mut self, port: u16, remote: Remote) -> bool {
        let Some(set) = self.remotes.get_mut(&port) else {
            return false;
        };
        let removed = set.remove(&remote);
        if set.is_empty() {
            self.remotes.remove(&port);
        }
        removed
    }

    /// The port's only IPv4 sender, if it has exactly one: what the index
    /// should name for it.
    pub(super) fn sole_remote(&self, port: u16) -> Option<Remote> {
        match self.remotes.get(&port) {
            Some(set) if set.len() == 1 => set.first().copied(),
            _ => None,
        }
    }

    /// The slot the port's index entry points at, if any.
    pub(super) fn published(&self, port: u16) -> Option<u32> {
        self.published.get(&port).copied()
    }

    /// A slot nothing points at (not even a program still running), or
    /// `None` if every slot is in use or in quarantine.
    pub(super) fn take_slot(&mut self, now: Instant) -> Option<u32> {
        while let Some(&(since, slot)) = self.quarantine.front() {
            if now.saturating_duration_since(since) < SLOT_QUARANTINE {
                break;
            }
            self.quarantine.pop_front();
            self.free.push(slot);
        }
        self.free.pop()
    }

    /// Gives back a slot from [`take_slot`](Self::take_slot) that was never
    /// published.
    pub(super) fn put_back(&mut self, slot: u32) {
        self.free.push(slot);
    }

    /// Records that the port's index entry now points at `slot` (or at
    /// nothing) since `now`; the slot it pointed at before goes into quarantine.
    pub(super) fn set_published(&mut self, port: u16, slot: Option<u32>, now: Instant) {
        let old = match slot {
            Some(slot) => self.published.insert(port, slot),
            None => self.published.remove(&port),
        };
        if let Some(old) = old.filter(|&old| Some(old) != slot) {
            self.quarantine.push_back((now, old));
        }
    }

    /// Slots ready for use now or after their quarantine (for tests and diagnostics).
    #[cfg(test)]
    fn unused(&self) -> usize {
        self.free.len() + self.quarantine.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Remote = ([198, 18, 0, 1], 5000);
    const B: Remote = ([198, 18, 0, 2], 5000);

    #[test]
    fn a_port_is_indexable_only_with_exactly_one_sender() {
        let mut index = PortIndex::new(4);
        assert_eq!(index.sole_remote(40_000), None);
        index.add(40_000, A);
        assert_eq!(index.sole_remote(40_000), Some(A));
        index.add(40_000, A);
        assert_eq!(
            index.sole_remote(40_000),
            Some(A),
            "re-adding is idempotent"
        );
        index.add(40_000, B);
        assert_eq!(index.sole_remote(40_000), None);
        assert!(index.remove(40_000, A));
        assert!(!index.remove(40_000, A));
        assert_eq!(index.sole_remote(40_000), Some(B));
        assert!(index.remove(40_000, B));
        assert_eq!(index.sole_remote(40_000), None);
        assert!(!index.remove(40_001, A));
    }

    #[test]
    fn replaced_slots_are_reused_only_after_the_quarantine() {
        let t0 = Instant::now();
        let mut index = PortIndex::new(2);
        let first = index.take_slot(t0).unwrap();
        index.set_published(40_000, Some(first), t0);
        let second = index.take_slot(t0).unwrap();
        assert_ne!(first, second);
        index.set_published(40_000, Some(second), t0);
        assert_eq!(index.published(40_000), Some(second));
        // `first` is in quarantine, `second` published: nothing to hand out.
        assert_eq!(index.take_slot(t0 + SLOT_QUARANTINE / 2), None);
        assert_eq!(index.take_slot(t0 + SLOT_QUARANTINE), Some(first));
        index.put_back(first);
        index.set_published(40_000, None, t0 + SLOT_QUARANTINE);
        assert_eq!(index.published(40_000), None);
        assert_eq!(index.unused(), 2);
        assert_eq!(index.take_slot(t0 + SLOT_QUARANTINE), Some(first));
        assert_eq!(index.take_slot(t0 + SLOT_QUARANTINE), None);
        assert_eq!(index.take_slot(t0 + 2 * SLOT_QUARANTINE), Some(second));
    }

    #[test]
    fn republishing_the_same_slot_does_not_quarantine_it() {
        let t0 = Instant::now();
        let mut index = PortIndex::new(1);
        let slot = index.take_slot(t0).unwrap();
        index.set_published(40_000, Some(slot), t0);
        index.set_published(40_000, Some(slot), t0);
        assert_eq!(index.unused(), 0);
        index.set_published(40_000, None, t0);
        assert_eq!(index.unused(), 1);
    }
}
