//! Per-subscriber outgoing stream rewriting.
//!
//! A [`StreamRewriter`] turns the packets of one published source (all its
//! simulcast or SVC layers) into the one outgoing RTP stream a subscriber
//! sees: a stable SSRC, sequence numbers without the gaps the forwarder made
//! (layers not selected, padding, temporal layers above the cap, switches)
//! but with every gap a real loss made, so the subscriber NACKs exactly what
//! was lost, and timestamps that keep running across layer switches.
//!
//! It is sans-IO: fed [`IncomingPacket`] facts (already parsed, with their
//! arrival [`Instant`]) it returns a [`Decision`]; [`apply_to_packet`] then
//! writes a forward decision into the packet bytes. Time is only ever the
//! arrival instant passed in.
//!
//! # Segments
//!
//! Output numbering proceeds in *segments*: the stretch of one input stream
//! forwarded between two switches. A switch starts a new segment at the
//! target layer's key frame (or, inside one SVC stream, at a declared switch
//! point) whose first output sequence number directly follows the last one
//! handed out, and whose first timestamp follows the newest one sent by the
//! wall time elapsed since. Within a segment output numbers follow input
//! numbers, minus the ones deliberately dropped in time; see `seq` for how
//! reordering is handled. The previous segment is kept for a short while so
//! late packets can still fill the holes it left.

mod apply;
mod maps;
mod seq;
mod timestamp;

use std::time::{Duration, Instant};

pub use apply::apply_to_packet;
pub use maps::{ExtensionIdMap, PayloadTypeMap};

use crate::wire::WireError;
use seq::{Action, Position, SeqMap, Slot, Verdict};

/// Default number of input sequence numbers whose fate is remembered per
/// segment: about a second of 8 Mbit/s video, longer than a NACK round trip.
pub const DEFAULT_HISTORY_LEN: usize = 1024;
/// Smallest accepted history length.
pub const MIN_HISTORY_LEN: usize = 16;
/// Largest accepted history length: the window must stay under half the
/// 16-bit sequence space for extended numbers to be unambiguous.
pub const MAX_HISTORY_LEN: usize = 1 << 15;

/// How long late packets may still fill holes of the segment before the
/// last switch. Retransmissions arrive within a round trip; after that an
/// input stream that kept flowing could alias old sequence numbers.
const PREVIOUS_SEGMENT_TTL: Duration = Duration::from_secs(2);

/// Consecutive too-late packets of the forwarded stream after which it is
/// treated as having jumped backwards (a restarted encoder): a key frame is
/// requested, and the next key frame starts a new segment.
const RESYNC_STALE_RUN: u32 = 32;

/// Misuse of the rewriter API or a packet the rewriter cannot modify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// `history_len` is not a power of two within
    /// [`MIN_HISTORY_LEN`]`..=`[`MAX_HISTORY_LEN`].
    #[error("history length {0} is not a power of two in {MIN_HISTORY_LEN}..={MAX_HISTORY_LEN}")]
    InvalidHistoryLen(usize),
    /// A media clock rate of zero.
    #[error("clock rate must be positive")]
    ZeroClockRate,
    /// A payload type outside the 7-bit range.
    #[error("payload type {0} is outside 0..=127")]
    InvalidPayloadType(u8),
    /// Extension id 0, which RFC 8285 reserves.
    #[error("extension id {0} is reserved")]
    InvalidExtensionId(u8),
    /// The packet bytes could not be parsed or rewritten.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// How the layers of a source travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerStructure {
    /// Each layer is its own RTP stream with its own SSRC, sequence and
    /// timestamp space (VP8/H.264 simulcast). A packet is selected when its
    /// layer is the forwarded one, and a layer can only be entered at one
    /// of its key frames: declared switch points are ignored, because a
    /// different encoder's stream cannot be decoded from the middle.
    #[default]
    Simulcast,
    /// All layers travel in one RTP stream and each builds on those below
    /// (VP9/AV1 `L*T*` spatial SVC). A packet is selected when its layer is
    /// at or below the forwarded one; the forwarded layer changes at a key
    /// frame or at a packet of the target layer declared a switch point.
    Svc,
}

/// Configuration of one [`StreamRewriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriterConfig {
    /// SSRC of the outgoing stream, whatever layer is forwarded.
    pub output_ssrc: u32,
    /// Media clock rate in Hz (90 000 for video, 48 000 for Opus).
    pub clock_rate: u32,
    /// How the source's layers travel.
    pub structure: LayerStructure,
    /// Publisher → subscriber payload types; packets of unmapped payload
    /// types are dropped without leaving a gap.
    pub payload_types: PayloadTypeMap,
    /// Sequence number of the first outgoing packet (RFC 3550 wants it
    /// random; the caller owns the randomness).
    pub initial_seq: u16,
    /// Timestamp of the first outgoing packet.
    pub initial_timestamp: u32,
    /// Input sequence numbers remembered per segment; a power of two in
    /// [`MIN_HISTORY_LEN`]`..=`[`MAX_HISTORY_LEN`].
    pub history_len: usize,
}

impl RewriterConfig {
    /// A configuration for simulcast layers starting at sequence number and
    /// timestamp 0 with [`DEFAULT_HISTORY_LEN`]; adjust the fields as needed.
    pub fn new(output_ssrc: u32, clock_rate: u32, payload_types: PayloadTypeMap) -> Self {
        Self {
            output_ssrc,
            clock_rate,
            structure: LayerStructure::Simulcast,
            payload_types,
            initial_seq: 0,
            initial_timestamp: 0,
            history_len: DEFAULT_HISTORY_LEN,
        }
    }
}

/// Why the forwarder itself drops a packet it hands to the rewriter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// The forwarder's own layer logic excludes it (e.g. an SVC packet the
    /// dependency descriptor shows the subscriber's decode target does not
    /// need).
    LayerNotSelected,
    /// The packet carries only padding (bandwidth probing of the publisher).
    PaddingOnly,
    /// Its temporal layer is above the subscriber's temporal cap.
    TemporalLayerAboveCap,
}

/// The facts about one incoming (decrypted) packet that the rewriter needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingPacket {
    /// Layer the packet belongs to: the simulcast encoding index, or the
    /// spatial layer inside an SVC stream.
    pub layer: u8,
    /// SSRC of the publisher's stream that carried it.
    pub ssrc: u32,
    /// Its RTP sequence number.
    pub seq: u16,
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// Its (publisher) payload type.
    pub payload_type: u8,
    /// Its marker bit.
    pub marker: bool,
    /// It is the first packet of a key frame.
    pub keyframe: bool,
    /// A decoder can start following its layer here without a key frame
    /// (VP8/VP9 layer sync, AV1 dependency-descriptor switch indication).
    pub switch_point: bool,
    /// When it arrived.
    pub arrival: Instant,
    /// Set when the forwarder drops it deliberately.
    pub discard: Option<Discard>,
}

/// Why a packet is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Its layer is not the forwarded one.
    NotSelected,
    /// Padding only.
    PaddingOnly,
    /// Temporal layer above the cap.
    TemporalLayerAboveCap,
    /// The subscriber did not negotiate its payload type.
    UnmappedPayloadType,
    /// It belongs to the target layer, which cannot be entered before a key
    /// frame (or switch point) arrives.
    AwaitingKeyframe,
    /// No layer is to be forwarded.
    Paused,
    /// Already seen.
    Duplicate,
    /// Too old: before the current segment, or out of the history window.
    TooLate,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// Every reason, in declaration order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::NotSelected,
        Self::PaddingOnly,
        Self::TemporalLayerAboveCap,
        Self::UnmappedPayloadType,
        Self::AwaitingKeyframe,
        Self::Paused,
        Self::Duplicate,
        Self::TooLate,
    ];

    /// A stable snake_case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotSelected => "not_selected",
            Self::PaddingOnly => "padding_only",
            Self::TemporalLayerAboveCap => "temporal_layer_above_cap",
            Self::UnmappedPayloadType => "unmapped_payload_type",
            Self::AwaitingKeyframe => "awaiting_keyframe",
            Self::Paused => "paused",
            Self::Duplicate => "duplicate",
            Self::TooLate => "too_late",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl From<Discard> for DropReason {
    fn from(discard: Discard) -> Self {
        match discard {
            Discard::LayerNotSelected => Self::NotSelected,
            Discard::PaddingOnly => Self::PaddingOnly,
            Discard::TemporalLayerAboveCap => Self::TemporalLayerAboveCap,
        }
    }
}

/// The header a forwarded packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing sequence number.
    pub seq: u16,
    /// Outgoing sequence number with its rollover count (ROC‖SEQ), the
    /// packet index SRTP protection of the subscriber's leg needs.
    pub extended_seq: u64,
    /// Outgoing timestamp.
    pub timestamp: u32,
    /// Subscriber payload type.
    pub payload_type: u8,
    /// Marker bit, as received.
    pub marker: bool,
}

/// What to do with one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it with this header.
    Forward(Forward),
    /// Do not send it.
    Drop(DropReason),
}

/// What a rewriter has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteCounters {
    forwarded: u64,
    dropped: [u64; DropReason::COUNT],
    switches: u64,
    starts: u64,
    restarts: u64,
    gaps_passed: u64,
    gaps_filled: u64,
    discards_in_gaps: u64,
}

impl RewriteCounters {
    /// Packets forwarded.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Duplicates dropped.
    pub fn duplicates(&self) -> u64 {
        self.dropped(DropReason::Duplicate)
    }

    /// Packets dropped because they came too late to be placed.
    pub fn too_late(&self) -> u64 {
        self.dropped(DropReason::TooLate)
    }

    /// Changes of the forwarded layer from one layer to another.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Times forwarding began with nothing forwarded before it: the first
    /// start and every resume after a pause.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// Times the forwarded layer's input stream was replaced (new SSRC, or a
    /// sequence discontinuity) and forwarding restarted at its key frame.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Output sequence numbers left empty because the input packet was
    /// missing: real losses passed on so the subscriber NACKs them.
    pub fn gaps_passed(&self) -> u64 {
        self.gaps_passed
    }

    /// Late packets that filled an empty output sequence number.
    pub fn gaps_filled(&self) -> u64 {
        self.gaps_filled
    }

    /// Deliberately dropped packets that arrived only after their output
    /// sequence number had been left empty; those numbers stay empty.
    pub fn discards_in_gaps(&self) -> u64 {
        self.discards_in_gaps
    }
}

/// One input stream forwarded between two switches.
#[derive(Debug)]
struct Segment {
    /// The forwarded layer (inside an SVC stream it may change).
    layer: u8,
    ssrc: u32,
    seq: SeqMap,
    /// Added (wrapping) to input timestamps.
    ts_offset: u32,
    /// Input timestamp of the newest forwarded frame, to finish it before a
    /// pause.
    frame_ts: u32,
}

#[derive(Debug)]
struct Previous {
    segment: Segment,
    sealed_at: Instant,
}

/// The newest output timestamp sent, and when its first packet arrived.
#[derive(Debug, Clone, Copy)]
struct NewestTimestamp {
    ts: u32,
    first_arrival: Instant,
}

/// How a new segment relates to what was forwarded before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentKind {
    Start,
    Switch,
    Restart,
}

/// Per-subscriber state of one outgoing stream of one published source.
#[derive(Debug)]
pub struct StreamRewriter {
    output_ssrc: u32,
    clock_rate: u32,
    structure: LayerStructure,
    payload_types: PayloadTypeMap,
    initial_timestamp: u32,
    history_len: usize,
    target: Option<u8>,
    current: Option<Segment>,
    previous: Option<Previous>,
    spare_ring: Option<Box<[Slot]>>,
    /// Output number for the next segment while none is current.
    next_out: u64,
    newest_out: Option<NewestTimestamp>,
    /// A packet of the forwarded layer came on a new SSRC.
    restart_pending: bool,
    /// Consecutive too-late packets of the current segment's stream.
    stale_run: u32,
    counters: RewriteCounters,
}

impl StreamRewriter {
    /// A rewriter with no target layer (nothing is forwarded until
    /// [`Self::set_target_layer`]).
    pub fn new(config: RewriterConfig) -> Result<Self, RewriteError> {
        let len = config.history_len;
        if !len.is_power_of_two() || !(MIN_HISTORY_LEN..=MAX_HISTORY_LEN).contains(&len) {
            return Err(RewriteError::InvalidHistoryLen(len));
        }
        if config.clock_rate == 0 {
            return Err(RewriteError::ZeroClockRate);
        }
        Ok(Self {
            output_ssrc: config.output_ssrc,
            clock_rate: config.clock_rate,
            structure: config.structure,
            payload_types: config.payload_types,
            initial_timestamp: config.initial_timestamp,
            history_len: len,
            target: None,
            current: None,
            previous: None,
            spare_ring: None,
            next_out: u64::from(config.initial_seq),
            newest_out: None,
            restart_pending: false,
            stale_run: 0,
            counters: RewriteCounters::default(),
        })
    }

    /// Sets the layer the subscriber should receive (`None` pauses video).
    /// The forwarded layer follows at the next key frame or switch point of
    /// the target; until then the current layer keeps flowing. A pause takes
    /// effect once the frame being forwarded is complete.
    pub fn set_target_layer(&mut self, layer: Option<u8>) {
        self.target = layer;
    }

    /// The layer the subscriber should receive.
    pub fn target_layer(&self) -> Option<u8> {
        self.target
    }

    /// The layer being forwarded now.
    pub fn current_layer(&self) -> Option<u8> {
        self.current.as_ref().map(|s| s.layer)
    }

    /// Whether a key frame of [`Self::target_layer`] must be requested from
    /// the publisher (PLI/FIR) for forwarding to reach the target: a switch
    /// or start is pending, or the forwarded stream restarted or lost
    /// continuity. A switch down inside an SVC stream waits for a switch
    /// point instead, which comes without asking.
    pub fn needs_keyframe(&self) -> bool {
        let Some(target) = self.target else {
            return false;
        };
        let Some(segment) = &self.current else {
            return true;
        };
        if self.restart_pending || self.stale_run >= RESYNC_STALE_RUN {
            return true;
        }
        match self.structure {
            LayerStructure::Simulcast => segment.layer != target,
            LayerStructure::Svc => target > segment.layer,
        }
    }

    /// The outgoing SSRC.
    pub fn output_ssrc(&self) -> u32 {
        self.output_ssrc
    }

    /// The payload-type map in use.
    pub fn payload_types(&self) -> &PayloadTypeMap {
        &self.payload_types
    }

    /// Replaces the payload-type map (after renegotiation).
    pub fn set_payload_types(&mut self, payload_types: PayloadTypeMap) {
        self.payload_types = payload_types;
    }

    /// What the rewriter has done so far.
    pub fn counters(&self) -> &RewriteCounters {
        &self.counters
    }

    /// Decides what to do with one incoming packet of the source.
    ///
    /// Every packet of every layer of the source should be passed, including
    /// those the forwarder drops ([`IncomingPacket::discard`]): that is how
    /// the rewriter tells a deliberate drop from a loss.
    pub fn process(&mut self, packet: &IncomingPacket) -> Decision {
        let decision = self.decide(packet);
        match decision {
            Decision::Forward(_) => self.counters.forwarded += 1,
            Decision::Drop(reason) => self.counters.dropped[reason.index()] += 1,
        }
        decision
    }

    fn decide(&mut self, p: &IncomingPacket) -> Decision {
        self.expire_previous(p.arrival);
        let mut stale_in_current = false;
        if let Some(segment) = &self.current {
            if segment.ssrc == p.ssrc {
                let ext = segment.seq.extend(p.seq);
                match segment.seq.position(ext) {
                    Position::InWindow => return self.on_current(p, ext, false),
                    Position::New => return self.on_current(p, ext, true),
                    Position::BeforeStart | Position::Stale => stale_in_current = true,
                }
            }
        }
        match self.on_previous(p) {
            PreviousOutcome::Decided(decision) => return decision,
            PreviousOutcome::Stale => return Decision::Drop(DropReason::TooLate),
            PreviousOutcome::NotItsPacket => {}
        }
        if stale_in_current {
            self.stale_run = self.stale_run.saturating_add(1);
        }
        if let Some(kind) = self.entry_kind(p, stale_in_current) {
            return self.start_segment(p, kind);
        }
        Decision::Drop(self.unforwarded_reason(p, stale_in_current))
    }

    fn selected(&self, packet_layer: u8, forwarded_layer: u8) -> bool {
        match self.structure {
            LayerStructure::Simulcast => packet_layer == forwarded_layer,
            LayerStructure::Svc => packet_layer <= forwarded_layer,
        }
    }

    /// Why a packet of a segment whose forwarded layer is `forwarded_layer`
    /// must not be forwarded, if it must not.
    fn discard_reason(&self, p: &IncomingPacket, forwarded_layer: u8) -> Option<DropReason> {
        if !self.selected(p.layer, forwarded_layer) {
            Some(DropReason::NotSelected)
        } else if let Some(discard) = p.discard {
            Some(discard.into())
        } else if self.payload_types.get(p.payload_type).is_none() {
            Some(DropReason::UnmappedPayloadType)
        } else {
            None
        }
    }

    /// A packet the current segment can place (in its window, or `newest`).
    fn on_current(&mut self, p: &IncomingPacket, ext: u64, newest: bool) -> Decision {
        self.stale_run = 0;
        let (frame_ts, forwarded_layer) = match &self.current {
            Some(segment) => (segment.frame_ts, segment.layer),
            None => return Decision::Drop(DropReason::NotSelected),
        };
        let Some(target) = self.target else {
            // Pause once the frame being forwarded is complete; late packets
            // of earlier frames may still fill their holes.
            if newest && p.timestamp != frame_ts {
                self.seal_current(p.arrival);
                return Decision::Drop(DropReason::Paused);
            }
            return self.place_in_current(p, ext, forwarded_layer);
        };
        let mut forwarded_layer = forwarded_layer;
        if self.structure == LayerStructure::Svc
            && target != forwarded_layer
            && p.discard.is_none()
            && self.payload_types.get(p.payload_type).is_some()
            && (p.keyframe || (p.switch_point && p.layer == target))
        {
            forwarded_layer = target;
            if let Some(segment) = self.current.as_mut() {
                segment.layer = target;
            }
            self.counters.switches += 1;
        }
        self.place_in_current(p, ext, forwarded_layer)
    }

    fn place_in_current(&mut self, p: &IncomingPacket, ext: u64, forwarded_layer: u8) -> Decision {
        let reason = self.discard_reason(p, forwarded_layer);
        let action = if reason.is_some() {
            Action::Discard
        } else {
            Action::Forward
        };
        let Some(segment) = self.current.as_mut() else {
            return Decision::Drop(DropReason::NotSelected);
        };
        let verdict = segment.seq.apply(ext, action);
        let ts_offset = segment.ts_offset;
        match verdict {
            Verdict::Assign {
                out,
                filled_hole,
                holes_opened,
            } => {
                self.counters.gaps_passed += holes_opened;
                if filled_hole {
                    self.counters.gaps_filled += 1;
                } else {
                    segment.frame_ts = p.timestamp;
                }
                if p.keyframe {
                    self.restart_pending = false;
                }
                self.emit(p, out, p.timestamp.wrapping_add(ts_offset))
            }
            other => self.drop_verdict(other, reason),
        }
    }

    fn drop_verdict(&mut self, verdict: Verdict, reason: Option<DropReason>) -> Decision {
        let reason = reason.unwrap_or(DropReason::NotSelected);
        Decision::Drop(match verdict {
            Verdict::Duplicate => DropReason::Duplicate,
            Verdict::Stale => DropReason::TooLate,
            Verdict::DiscardInHole => {
                self.counters.discards_in_gaps += 1;
                reason
            }
            Verdict::Closed | Verdict::Beyond | Verdict::Assign { .. } => reason,
        })
    }

    /// A packet of the stream of the segment before the last switch: it may
    /// fill a hole that segment left.
    fn on_previous(&mut self, p: &IncomingPacket) -> PreviousOutcome {
        let Some(previous) = &self.previous else {
            return PreviousOutcome::NotItsPacket;
        };
        if previous.segment.ssrc != p.ssrc {
            return PreviousOutcome::NotItsPacket;
        }
        let reason = self.discard_reason(p, previous.segment.layer);
        let action = if reason.is_some() {
            Action::Discard
        } else {
            Action::Forward
        };
        let Some(previous) = self.previous.as_mut() else {
            return PreviousOutcome::NotItsPacket;
        };
        let ext = previous.segment.seq.extend(p.seq);
        let verdict = previous.segment.seq.apply(ext, action);
        let ts_offset = previous.segment.ts_offset;
        match verdict {
            Verdict::Assign { out, .. } => {
                self.counters.gaps_filled += 1;
                PreviousOutcome::Decided(self.emit(p, out, p.timestamp.wrapping_add(ts_offset)))
            }
            Verdict::Beyond => PreviousOutcome::NotItsPacket,
            Verdict::Stale => PreviousOutcome::Stale,
            other => PreviousOutcome::Decided(self.drop_verdict(other, reason)),
        }
    }

    /// Whether `p` starts a new segment, and how.
    fn entry_kind(&self, p: &IncomingPacket, stale_in_current: bool) -> Option<SegmentKind> {
        let target = self.target?;
        if !p.keyframe
            || p.discard.is_some()
            || self.payload_types.get(p.payload_type).is_none()
            || !self.selected(p.layer, target)
        {
            return None;
        }
        let Some(segment) = &self.current else {
            return Some(SegmentKind::Start);
        };
        if segment.ssrc == p.ssrc {
            let jumped = stale_in_current && self.stale_run >= RESYNC_STALE_RUN;
            return jumped.then_some(SegmentKind::Restart);
        }
        let same_layer = match self.structure {
            LayerStructure::Simulcast => segment.layer == p.layer,
            LayerStructure::Svc => true,
        };
        Some(if same_layer {
            SegmentKind::Restart
        } else {
            SegmentKind::Switch
        })
    }

    fn unforwarded_reason(&mut self, p: &IncomingPacket, stale_in_current: bool) -> DropReason {
        if stale_in_current {
            return DropReason::TooLate;
        }
        let Some(target) = self.target else {
            return DropReason::Paused;
        };
        if !self.selected(p.layer, target) {
            return DropReason::NotSelected;
        }
        if let Some(segment) = &self.current {
            let same_layer = match self.structure {
                LayerStructure::Simulcast => segment.layer == p.layer,
                LayerStructure::Svc => true,
            };
            // The forwarded layer's packets on an SSRC that is neither the
            // current nor the previous one: the publisher restarted it.
            let previous_ssrc = self.previous.as_ref().map(|prev| prev.segment.ssrc);
            if same_layer && segment.ssrc != p.ssrc && previous_ssrc != Some(p.ssrc) {
                self.restart_pending = true;
            }
        }
        DropReason::AwaitingKeyframe
    }

    /// Begins a segment at `p`, a key frame of the target layer.
    fn start_segment(&mut self, p: &IncomingPacket, kind: SegmentKind) -> Decision {
        let layer = self.target.unwrap_or(p.layer);
        match kind {
            SegmentKind::Start => self.counters.starts += 1,
            SegmentKind::Switch => self.counters.switches += 1,
            SegmentKind::Restart => self.counters.restarts += 1,
        }
        self.seal_current(p.arrival);
        let ring = self
            .spare_ring
            .take()
            .unwrap_or_else(|| seq::new_ring(self.history_len));
        let first_ts = match self.newest_out {
            Some(newest) => {
                let elapsed = p.arrival.saturating_duration_since(newest.first_arrival);
                newest
                    .ts
                    .wrapping_add(timestamp::switch_advance(elapsed, self.clock_rate))
            }
            None => self.initial_timestamp,
        };
        let seq = SeqMap::new(ring, p.seq, self.next_out);
        let ext = seq.extend(p.seq);
        self.current = Some(Segment {
            layer,
            ssrc: p.ssrc,
            seq,
            ts_offset: first_ts.wrapping_sub(p.timestamp),
            frame_ts: p.timestamp,
        });
        self.restart_pending = false;
        self.stale_run = 0;
        self.place_in_current(p, ext, layer)
    }

    /// Ends the current segment; it stays available for filling holes.
    fn seal_current(&mut self, now: Instant) {
        let Some(mut segment) = self.current.take() else {
            return;
        };
        self.next_out = segment.seq.next_out();
        segment.seq.seal();
        let sealed = Previous {
            segment,
            sealed_at: now,
        };
        if let Some(old) = self.previous.replace(sealed) {
            self.spare_ring = Some(old.segment.seq.into_ring());
        }
    }

    fn expire_previous(&mut self, now: Instant) {
        let expired = self.previous.as_ref().is_some_and(|prev| {
            prev.segment.seq.exhausted()
                || now.saturating_duration_since(prev.sealed_at) >= PREVIOUS_SEGMENT_TTL
        });
        if expired {
            if let Some(old) = self.previous.take() {
                self.spare_ring = Some(old.segment.seq.into_ring());
            }
        }
    }

    fn emit(&mut self, p: &IncomingPacket, out: u64, ts: u32) -> Decision {
        let is_newest = self
            .newest_out
            .is_none_or(|newest| timestamp::newer(ts, newest.ts));
        if is_newest {
            self.newest_out = Some(NewestTimestamp {
                ts,
                first_arrival: p.arrival,
            });
        }
        Decision::Forward(Forward {
            ssrc: self.output_ssrc,
            seq: out as u16,
            extended_seq: out,
            timestamp: ts,
            // Forwarding is only decided for mapped payload types.
            payload_type: self
                .payload_types
                .get(p.payload_type)
                .unwrap_or(p.payload_type),
            marker: p.marker,
        })
    }
}

/// What the previous segment makes of a packet of its stream.
enum PreviousOutcome {
    Decided(Decision),
    /// Older than anything it can place.
    Stale,
    /// Newer than its end (its stream kept flowing): not its packet.
    NotItsPacket,
}

#[cfg(test)]
mod tests;
