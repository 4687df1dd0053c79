//! Sequence-number mapping for one segment: the stretch of one input stream
//! forwarded to a subscriber between two switches.
//!
//! Output numbers are handed out in input-sequence order. Every input number
//! of the segment either gets exactly one output number (forwarded, or left
//! empty as a *hole* so the subscriber sees a loss and NACKs it) or none at
//! all (deliberately dropped). The decision for a missing number is deferred
//! until a later packet is forwarded: a deliberate drop that arrives before
//! then closes the gap instead of leaving one. A bounded ring remembers the
//! decision for the last `N` input numbers, which is what lets a late packet
//! land in the hole reserved for it.

use crate::wire::rtp::extend_sequence;

/// Extended input numbers start one rollover up, so `base - 1` never
/// underflows and the first packet's predecessors are representable.
const EXT_ORIGIN: u64 = 1 << 16;

/// What is known about one input sequence number inside the window.
///
/// Output numbers are kept as their low 16 bits; the extended value is
/// recovered from `next_out` because it is always less than `N` behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Not seen, and no output number decided yet.
    Missing,
    /// Seen and deliberately dropped.
    Discarded,
    /// Forwarded with this output number.
    Sent(u16),
    /// Still missing when a later packet was forwarded: this output number
    /// was left empty.
    Hole(u16),
}

/// What to do with a packet that belongs to the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Forward it.
    Forward,
    /// Drop it deliberately; it must not consume an output number.
    Discard,
}

/// Outcome of [`SeqMap::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward with extended output number `out`.
    Assign {
        /// Extended output sequence number (ROC‖SEQ of the outgoing stream).
        out: u64,
        /// The packet arrived late and took the hole reserved for it.
        filled_hole: bool,
        /// Output numbers left empty before this one for missing inputs.
        holes_opened: u64,
    },
    /// This input number was seen before.
    Duplicate,
    /// Before the segment's first packet, or older than the window.
    Stale,
    /// Deliberate drop recorded; no output number consumed.
    Closed,
    /// Deliberate drop of a packet whose output number had already been left
    /// empty as a hole; the hole stays.
    DiscardInHole,
    /// After the end of a sealed segment: not this segment's packet.
    Beyond,
}

/// Where an extended input number falls relative to the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// Before the segment's first packet.
    BeforeStart,
    /// Older than the window: its slot is forgotten.
    Stale,
    /// Inside the window.
    InWindow,
    /// Newer than anything seen.
    New,
}

/// Input → output sequence mapping of one segment.
#[derive(Debug)]
pub(crate) struct SeqMap {
    ring: Box<[Slot]>,
    mask: u64,
    /// Extended input number of the segment's first packet.
    base_in: u64,
    /// Highest extended input number seen.
    highest_in: u64,
    /// Every input number up to here has its final fate (an output number, a
    /// closed gap, or a pending hole); later ones may still be decided.
    resolved_through: u64,
    /// Missing inputs that fell out of the window before being resolved:
    /// output numbers to leave empty before the next forwarded packet.
    pending_holes: u64,
    /// Extended output number the next forwarded packet or hole gets.
    next_out: u64,
    /// No new output numbers: only holes may still be filled.
    sealed: bool,
}

impl SeqMap {
    /// Starts a segment whose first packet has sequence number `first_seq`
    /// and will get output number `next_out`. `ring.len()` must be a power
    /// of two no larger than 2^15 (checked by the caller's configuration).
    pub(crate) fn new(ring: Box<[Slot]>, first_seq: u16, next_out: u64) -> Self {
        let base_in = EXT_ORIGIN + u64::from(first_seq);
        let mask = (ring.len() as u64).saturating_sub(1);
        Self {
            ring,
            mask,
            base_in,
            highest_in: base_in - 1,
            resolved_through: base_in - 1,
            pending_holes: 0,
            next_out,
            sealed: false,
        }
    }

    /// Gives the ring back for reuse by a later segment.
    pub(crate) fn into_ring(self) -> Box<[Slot]> {
        self.ring
    }

    fn window(&self) -> u64 {
        self.mask + 1
    }

    fn slot(&self, ext: u64) -> Slot {
        self.ring
            .get((ext & self.mask) as usize)
            .copied()
            .unwrap_or(Slot::Missing)
    }

    fn set_slot(&mut self, ext: u64, slot: Slot) {
        if let Some(s) = self.ring.get_mut((ext & self.mask) as usize) {
            *s = slot;
        }
    }

    /// The extended input number closest to the highest one seen.
    pub(crate) fn extend(&self, seq: u16) -> u64 {
        extend_sequence(self.highest_in, seq)
    }

    /// Where `ext` falls relative to this segment.
    pub(crate) fn position(&self, ext: u64) -> Position {
        if ext < self.base_in {
            Position::BeforeStart
        } else if ext > self.highest_in {
            Position::New
        } else if ext + self.window() <= self.highest_in {
            Position::Stale
        } else {
            Position::InWindow
        }
    }

    /// Output number the first packet after this segment should get.
    pub(crate) fn next_out(&self) -> u64 {
        self.next_out
    }

    /// Ends the segment: nothing after its last resolved input number will
    /// ever get an output number, but holes stay fillable while in the window.
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
        self.pending_holes = 0;
    }

    /// Whether a sealed segment has no fillable hole left in its window.
    pub(crate) fn exhausted(&self) -> bool {
        self.sealed && self.resolved_through + self.window() <= self.highest_in
    }

    fn out_from_low_bits(&self, low: u16) -> u64 {
        // Slots in the window were numbered at most N (≤ 2^15) before next_out.
        let behind = (self.next_out as u16).wrapping_sub(low);
        self.next_out - u64::from(behind)
    }

    /// Records the packet with extended input number `ext` and decides its
    /// output number.
    pub(crate) fn apply(&mut self, ext: u64, action: Action) -> Verdict {
        match self.position(ext) {
            Position::BeforeStart | Position::Stale => return Verdict::Stale,
            Position::New if self.sealed => {
                self.highest_in = ext;
                return Verdict::Beyond;
            }
            Position::New => self.advance(ext),
            Position::InWindow => {}
        }
        if ext > self.resolved_through {
            if self.sealed {
                return Verdict::Beyond;
            }
            return match (self.slot(ext), action) {
                (Slot::Missing, Action::Forward) => self.assign(ext),
                (Slot::Missing, Action::Discard) => {
                    self.set_slot(ext, Slot::Discarded);
                    Verdict::Closed
                }
                _ => Verdict::Duplicate,
            };
        }
        match (self.slot(ext), action) {
            (Slot::Hole(low), Action::Forward) => {
                self.set_slot(ext, Slot::Sent(low));
                Verdict::Assign {
                    out: self.out_from_low_bits(low),
                    filled_hole: true,
                    holes_opened: 0,
                }
            }
            (Slot::Hole(_), Action::Discard) => {
                self.set_slot(ext, Slot::Discarded);
                Verdict::DiscardInHole
            }
            (Slot::Sent(_) | Slot::Discarded, _) => Verdict::Duplicate,
            // Resolved while missing but not given a slot: it left the window
            // as a pending hole, so its output number is not known any more.
            (Slot::Missing, _) => Verdict::Stale,
        }
    }

    /// Moves the window so that `ext` (newer than anything seen) is its top.
    fn advance(&mut self, ext: u64) {
        let window = self.window();
        // `ext` ≥ EXT_ORIGIN > window, so this never underflows.
        let new_low = ext + 1 - window;
        let leaving_through = new_low - 1;
        if leaving_through > self.resolved_through {
            // Numbers about to leave the window must be resolved first: the
            // missing ones become holes owed before the next forwarded packet.
            let seen_until = leaving_through.min(self.highest_in);
            for s in self.resolved_through + 1..=seen_until {
                if self.slot(s) == Slot::Missing {
                    self.pending_holes += 1;
                }
            }
            if leaving_through > self.highest_in {
                self.pending_holes += leaving_through - self.highest_in;
            }
            self.resolved_through = leaving_through;
        }
        for s in (self.highest_in + 1).max(new_low)..=ext {
            self.set_slot(s, Slot::Missing);
        }
        self.highest_in = ext;
    }

    /// Gives `ext` the next output number, leaving a hole for every input
    /// number before it that is still missing.
    fn assign(&mut self, ext: u64) -> Verdict {
        let mut holes = self.pending_holes;
        self.next_out += self.pending_holes;
        self.pending_holes = 0;
        // resolved_through ≥ highest_in − N, so this walks at most N slots.
        for s in self.resolved_through + 1..ext {
            if self.slot(s) == Slot::Missing {
                self.set_slot(s, Slot::Hole(self.next_out as u16));
                self.next_out += 1;
                holes += 1;
            }
        }
        let out = self.next_out;
        self.set_slot(ext, Slot::Sent(out as u16));
        self.next_out += 1;
        self.resolved_through = ext;
        Verdict::Assign {
            out,
            filled_hole: false,
            holes_opened: holes,
        }
    }
}

/// A ring of `len` slots for [`SeqMap::new`].
pub(crate) fn new_ring(len: usize) -> Box<[Slot]> {
    vec![Slot::Missing; len].into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(first_seq: u16, window: usize) -> SeqMap {
        SeqMap::new(new_ring(window), first_seq, 1000)
    }

    /// Feeds `(seq, action)` in order and returns each verdict.
    fn run(m: &mut SeqMap, steps: &[(u16, Action)]) -> Vec<Verdict> {
        steps
            .iter()
            .map(|&(seq, action)| {
                let ext = m.extend(seq);
                m.apply(ext, action)
            })
            .collect()
    }

    fn out(v: Verdict) -> u64 {
        match v {
            Verdict::Assign { out, .. } => out,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    use Action::{Discard as D, Forward as F};

    #[test]
    fn in_order_forwarding_is_contiguous() {
        let mut m = map(10, 64);
        let v = run(&mut m, &[(10, F), (11, F), (12, F)]);
        assert_eq!(
            v.iter().map(|&v| out(v)).collect::<Vec<_>>(),
            [1000, 1001, 1002]
        );
    }

    #[test]
    fn discards_in_order_close_the_gap() {
        let mut m = map(10, 64);
        let v = run(&mut m, &[(10, F), (11, D), (12, D), (13, F)]);
        assert_eq!(v[1], Verdict::Closed);
        assert_eq!(v[2], Verdict::Closed);
        assert_eq!(out(v[3]), 1001);
    }

    #[test]
    fn discard_arriving_before_the_missing_packet_still_closes_the_gap() {
        let mut m = map(10, 64);
        let v = run(&mut m, &[(10, F), (12, D), (11, F), (13, F)]);
        assert_eq!(out(v[2]), 1001);
        assert_eq!(out(v[3]), 1002);
    }

    #[test]
    fn loss_leaves_a_hole_and_a_late_packet_fills_it() {
        let mut m = map(10, 64);
        let v = run(&mut m, &[(10, F), (12, F), (11, F)]);
        assert_eq!(
            v[1],
            Verdict::Assign {
                out: 1002,
                filled_hole: false,
                holes_opened: 1
            }
        );
        assert_eq!(
            v[2],
            Verdict::Assign {
                out: 1001,
                filled_hole: true,
                holes_opened: 0
            }
        );
    }

    #[test]
    fn discard_after_its_hole_was_committed_leaves_the_hole() {
        let mut m = map(10, 64);
        let v = run(&mut m, &[(10, F), (12, F), (11, D), (13, F)]);
        assert_eq!(v[2], Verdict::DiscardInHole);
        assert_eq!(out(v[3]), 1003);
    }

    #[test]
    fn duplicates_are_recognised_for_every_kind_of_slot() {
        let mut m = map(10, 64);
        let v = run(
            &mut m,
            &[
                (10, F),
                (10, F),
                (11, D),
                (11, F),
                (13, F),
                (12, D),
                (12, F),
            ],
        );
        assert_eq!(v[1], Verdict::Duplicate);
        assert_eq!(v[3], Verdict::Duplicate);
        assert_eq!(v[5], Verdict::DiscardInHole);
        assert_eq!(v[6], Verdict::Duplicate);
    }

    #[test]
    fn packets_before_the_segment_or_the_window_are_stale() {
        let mut m = map(100, 16);
        let v = run(&mut m, &[(100, F), (99, F), (130, F), (114, F), (115, D)]);
        assert_eq!(v[1], Verdict::Stale);
        // 114 + 16 ≤ 130: outside the window.
        assert_eq!(v[3], Verdict::Stale);
        assert_eq!(v[4], Verdict::DiscardInHole);
    }

    #[test]
    fn missing_packets_evicted_unresolved_still_leave_their_holes() {
        let mut m = map(0, 16);
        // 1..=19 missing; 20 discarded evicts 1..=4 while still undecided.
        let v = run(&mut m, &[(0, F), (20, D), (2, F), (21, F)]);
        assert_eq!(v[1], Verdict::Closed);
        assert_eq!(v[2], Verdict::Stale);
        // 19 holes for 1..=19, none for the discarded 20.
        assert_eq!(
            v[3],
            Verdict::Assign {
                out: 1020,
                filled_hole: false,
                holes_opened: 19
            }
        );
    }

    #[test]
    fn discards_evicted_unresolved_stay_closed() {
        let mut m = map(0, 16);
        let mut steps = vec![(0, F)];
        steps.extend((1..40).map(|s| (s, D)));
        steps.push((40, F));
        let v = run(&mut m, &steps);
        assert_eq!(out(v[40]), 1001);
    }

    #[test]
    fn input_wrap_is_continuous() {
        let mut m = map(65534, 64);
        let v = run(&mut m, &[(65534, F), (65535, F), (0, F), (1, F)]);
        assert_eq!(
            v.iter().map(|&v| out(v)).collect::<Vec<_>>(),
            [1000, 1001, 1002, 1003]
        );
    }

    #[test]
    fn hole_fill_recovers_the_extended_output_across_an_output_wrap() {
        let mut m = SeqMap::new(new_ring(64), 7, 65535);
        let v = run(&mut m, &[(7, F), (9, F), (8, F)]);
        assert_eq!(out(v[0]), 65535);
        assert_eq!(out(v[1]), 65537);
        assert_eq!(out(v[2]), 65536);
    }

    #[test]
    fn sealed_segment_fills_holes_but_assigns_nothing_new() {
        let mut m = map(10, 64);
        run(&mut m, &[(10, F), (12, F)]);
        m.seal();
        let v = run(&mut m, &[(13, F), (11, F), (14, D), (12, F)]);
        assert_eq!(v[0], Verdict::Beyond);
        assert_eq!(out(v[1]), 1001);
        assert_eq!(v[2], Verdict::Beyond);
        assert_eq!(v[3], Verdict::Duplicate);
        assert_eq!(m.next_out(), 1003);
    }

    #[test]
    fn sealed_segment_is_exhausted_once_its_holes_leave_the_window() {
        let mut m = map(10, 16);
        run(&mut m, &[(10, F), (12, F)]);
        m.seal();
        assert!(!m.exhausted());
        run(&mut m, &[(27, F)]);
        assert!(!m.exhausted());
        run(&mut m, &[(28, F)]);
        assert!(m.exhausted());
    }
}
