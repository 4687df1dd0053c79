//! Counters of the SFU core, by leg and in total.

use std::fmt;

/// Why the core dropped a received datagram (or part of its work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No leg has this local/remote address pair.
    UnknownPeer,
    /// STUN, DTLS or another non-RTP protocol: not the worker's business.
    NotMedia,
    /// Not parseable as RTP or RTCP.
    Malformed,
    /// SRTP/SRTCP authentication failed (forged or corrupted).
    AuthFailed,
    /// Replayed, or too old for the replay window.
    Replay,
    /// An SSRC the leg has not published (or, in feedback, an SSRC the
    /// appliance does not send on that leg).
    UnknownSsrc,
    /// A payload type the publisher did not negotiate.
    UnknownPayloadType,
    /// The SRTP context refused a new SSRC (stream table full).
    TooManyStreams,
    /// The outgoing queue was full; the engine did not drain it in time.
    QueueFull,
    /// Rewriting or protecting a packet for a subscriber failed.
    EgressFailed,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 10;
    /// Every reason, in declaration order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::UnknownPeer,
        Self::NotMedia,
        Self::Malformed,
        Self::AuthFailed,
        Self::Replay,
        Self::UnknownSsrc,
        Self::UnknownPayloadType,
        Self::TooManyStreams,
        Self::QueueFull,
        Self::EgressFailed,
    ];

    /// A stable snake_case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownPeer => "unknown_peer",
            Self::NotMedia => "not_media",
            Self::Malformed => "malformed",
            Self::AuthFailed => "auth_failed",
            Self::Replay => "replay",
            Self::UnknownSsrc => "unknown_ssrc",
            Self::UnknownPayloadType => "unknown_payload_type",
            Self::TooManyStreams => "too_many_streams",
            Self::QueueFull => "queue_full",
            Self::EgressFailed => "egress_failed",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drop counts indexed by [`DropReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl DropCounts {
    /// Count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    pub(crate) fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

/// Counters of one leg (or, summed, of the whole core).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// SRTP packets received that authenticated.
    pub rtp_received: u64,
    /// SRTCP packets received that authenticated.
    pub rtcp_received: u64,
    /// Media packets sent (forwarded, first transmissions).
    pub rtp_sent: u64,
    /// RTCP packets sent (forwarded SRs, own RRs, feedback).
    pub rtcp_sent: u64,
    /// Received datagrams dropped, by reason.
    pub dropped: DropCounts,
    /// Sequence numbers subscribers reported lost in NACKs.
    pub nacked: u64,
    /// Packets retransmitted from the cache (plain or RTX).
    pub retransmitted: u64,
    /// NACKed packets no longer (or never) in the cache.
    pub nack_misses: u64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: u64,
    /// PLI/FIR sent to publishers.
    pub keyframe_requests_sent: u64,
    /// REMB messages consumed.
    pub remb_received: u64,
    /// transport-cc feedback messages consumed.
    pub twcc_received: u64,
    /// transport-cc feedback messages sent to publishers.
    pub twcc_sent: u64,
    /// Sender reports forwarded to subscribers.
    pub sr_forwarded: u64,
    /// Receiver reports from subscribers, terminated here.
    pub rr_received: u64,
    /// Receiver reports sent to publishers.
    pub rr_sent: u64,
}

impl Counters {
    pub(crate) fn merge(&mut self, o: &Counters) {
        self.rtp_received += o.rtp_received;
        self.rtcp_received += o.rtcp_received;
        self.rtp_sent += o.rtp_sent;
        self.rtcp_sent += o.rtcp_sent;
        self.dropped.merge(&o.dropped);
        self.nacked += o.nacked;
        self.retransmitted += o.retransmitted;
        self.nack_misses += o.nack_misses;
        self.keyframe_requests_received += o.keyframe_requests_received;
        self.keyframe_requests_sent += o.keyframe_requests_sent;
        self.remb_received += o.remb_received;
        self.twcc_received += o.twcc_received;
        self.twcc_sent += o.twcc_sent;
        self.sr_forwarded += o.sr_forwarded;
        self.rr_received += o.rr_received;
        self.rr_sent += o.rr_sent;
    }
}

/// Whether a stream carries audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus (one layer).
    Audio,
    /// VP8/H.264, possibly simulcast.
    Video,
}

/// One outgoing stream of a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutStreamStats {
    /// The publisher it carries.
    pub publisher: super::LegId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its SSRC towards the subscriber.
    pub ssrc: u32,
    /// Packets forwarded (first transmissions).
    pub forwarded: u64,
    /// Layer switches.
    pub switches: u64,
    /// Output sequence numbers left empty by real losses upstream.
    pub gaps_passed: u64,
    /// Layer being forwarded.
    pub current_layer: Option<u8>,
    /// Layer the selector wants.
    pub target_layer: Option<u8>,
}

/// One stream a publishing leg sends, as the core identified it: from the
/// offer's SSRCs, or learned from the RID of its first packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InStreamStats {
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// Audio or video.
    pub kind: MediaKind,
    /// Simulcast layer, 0 = lowest (0 for audio).
    pub layer: u8,
}

/// Everything known about one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegStats {
    /// The leg.
    pub leg: super::LegId,
    /// Its room.
    pub room: super::RoomId,
    /// Its counters.
    pub counters: Counters,
    /// The bandwidth estimate towards it, bit/s, if any feedback arrived.
    pub estimate_bps: Option<u64>,
    /// Its outgoing streams (as a subscriber).
    pub out_streams: Vec<OutStreamStats>,
    /// The streams it publishes whose SSRC is known.
    pub published: Vec<InStreamStats>,
}

/// Totals of the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Legs.
    pub legs: usize,
    /// Rooms.
    pub rooms: usize,
    /// Counters summed over legs, plus drops of datagrams no leg owns.
    pub counters: Counters,
    /// Layer switches over all outgoing streams.
    pub layer_switches: u64,
}
