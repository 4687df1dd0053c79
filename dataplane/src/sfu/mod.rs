//! The sans-IO SFU core: rooms, legs, publications and subscriptions, fed
//! datagrams and time, producing datagrams and timers.
//!
//! # Shape
//!
//! Like str0m and quiche, [`Sfu`] never touches a socket or a clock:
//!
//! * [`Sfu::handle_datagram`] takes one received UDP payload (in a buffer
//!   the caller owns and lets the core decrypt in place), the local and
//!   remote addresses and the arrival time;
//! * [`Sfu::handle_timeout`] runs timers (feedback, reports, layer
//!   upgrades) at or after [`Sfu::poll_timeout`];
//! * [`Sfu::command`] applies a control-plane [`Command`] between batches;
//! * the datagrams to send accumulate in a [`TransmitQueue`] of reusable
//!   buffers, which the engine takes with [`Sfu::swap_transmits`].
//!
//! Nothing on the packet path allocates: every table, history and buffer is
//! sized when a leg, publication or subscription is made.
//!
//! # Per RTP packet
//!
//! 1. The leg is found by its (local, remote) address pair; unknown pairs are
//!    dropped ([`DropReason::UnknownPeer`]).
//! 2. The SSRC (readable before decryption) must be one the leg published,
//!    or a new SSRC carrying a RID the publication announced; anything else
//!    is dropped ([`DropReason::UnknownSsrc`]): before any cryptography on
//!    a leg without transport-cc, after authentication (step 3) on a leg
//!    with it, whose probes and retransmissions on unrouted SSRCs must still
//!    be recorded as arrived.
//! 3. SRTP unprotect with the leg's receive context (authentication, replay
//!    window), then the transport-cc arrival record. A RID-announced SSRC is
//!    bound to its layer only once its packet authenticated.
//! 4. Reception statistics (for the receiver reports), the layer's bitrate
//!    window, the NACK cache.
//! 5. For each subscriber: the [`StreamRewriter`] decides (layer selection,
//!    key-frame-gated switch, continuity); a forwarded packet is copied into
//!    a queue buffer, its header rewritten ([`apply_to_packet`], plus the
//!    subscriber's own transport-wide sequence number), and SRTP-protected
//!    with the subscriber leg's send context. A rewriter waiting for a key
//!    frame triggers a rate-limited PLI to the publisher.
//!
//! # RTCP
//!
//! * SR from a publisher: remembered for the receiver reports (LSR/DLSR),
//!   and forwarded to each subscriber currently receiving that SSRC with the
//!   outgoing SSRC, the RTP timestamp mapped through the rewriter's current
//!   offset and the outgoing packet and octet counts.
//! * RR from a subscriber: terminated. The appliance sends its own RRs to
//!   publishers every [`SfuConfig::report_interval`].
//! * NACK: answered from the cache (see [`cache`]) as RTX when the subscriber
//!   negotiated it, otherwise by resending the packet under its original
//!   sequence number.
//! * PLI/FIR: forwarded to the publisher for the layer the subscriber gets,
//!   at most once per [`SfuConfig::keyframe_request_interval`] per layer.
//! * REMB and transport-cc feedback: the subscriber's bandwidth estimate
//!   (see [`bwe`]), shared among its video subscriptions after an audio
//!   allowance, drives each [`LayerSelector`].
//! * transport-cc feedback is generated towards publishers every
//!   [`SfuConfig::feedback_interval`].
//!
//! Caps from the overload policy apply per room and per subscriber; the
//! stricter wins. Audio is never capped.

pub mod bwe;
pub mod cache;
pub mod command;
pub mod delay;
pub mod peer;
pub mod queue;
pub mod stats;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::layer::{LayerSelector, OverloadCap, SelectorConfig};
use crate::rewrite::{
    apply_to_packet, Decision, ExtensionIdMap, IncomingPacket, PayloadTypeMap, RewriterConfig,
    StreamRewriter,
};
use crate::srtp::{SrtpConfig, SrtpContext, SrtpError};
use crate::wire::demux::{classify, is_rtcp, PacketClass};
use crate::wire::rtcp::{self, FirEntry, ReportBlockRepr, RtcpPacket, SenderInfo};
use crate::wire::rtp::{extend_sequence, RtpPacket};
use crate::wire::rtp_ext;

use bwe::{TwccEstimator, TwccRecorder};
use cache::{SentEntry, SentLog, SourceCache};
pub use command::{
    Command, CommandError, ExtensionIds, LayerSpec, LegConfig, MediaConfig, PublishSpec, Reply,
    SubscribeSpec, VideoCodec,
};
pub use queue::{Transmit, TransmitQueue, TRANSMIT_BUF_LEN};
pub use stats::{
    Counters, DropReason, InStreamStats, LegStats, MediaKind, OutStreamStats, SfuStats,
};

/// A leg's id, chosen by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

/// A room's id, chosen by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u64);

/// Opus clock rate.
const AUDIO_CLOCK: u32 = 48_000;
/// Video clock rate.
const VIDEO_CLOCK: u32 = 90_000;
/// Most simulcast layers a publication may have.
pub const MAX_PUBLISHED_LAYERS: usize = 8;

/// Sizing and timing of the core.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Most legs the core holds (tables are sized for it).
    pub max_legs: usize,
    /// Datagrams the outgoing queue holds between two drains.
    pub queue_capacity: usize,
    /// Bytes of decrypted packets kept per published video source for NACKs.
    pub cache_bytes: usize,
    /// Output sequence numbers remembered per outgoing video stream.
    pub sent_log_len: usize,
    /// Least time between two key frame requests for one layer.
    pub keyframe_request_interval: Duration,
    /// Period of transport-cc feedback to publishers and of layer-selector
    /// polling.
    pub feedback_interval: Duration,
    /// Period of receiver reports to publishers and of layer bitrate
    /// measurement.
    pub report_interval: Duration,
    /// Part of a subscriber's estimate reserved per audio stream it gets.
    pub audio_allowance_bps: u64,
    /// SRTP replay window of receive contexts.
    pub replay_window: u32,
    /// Layer selector hysteresis.
    pub selector: SelectorConfig,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            max_legs: 4096,
            queue_capacity: 1024,
            cache_bytes: 256 * 1024,
            sent_log_len: 1024,
            keyframe_request_interval: Duration::from_millis(300),
            feedback_interval: Duration::from_millis(100),
            report_interval: Duration::from_secs(1),
            audio_allowance_bps: 64_000,
            replay_window: 512,
            selector: SelectorConfig::default(),
        }
    }
}

/// RFC 3550 A.1/A.3/A.8 reception statistics of one received SSRC.
#[derive(Debug, Clone, Copy, Default)]
struct RecvStats {
    started: bool,
    base: u64,
    highest: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units × 16 (RFC 3550 A.8).
    jitter16: u64,
    last_transit: i64,
    lsr: u32,
    lsr_at: Option<Instant>,
}

impl RecvStats {
    fn on_packet(&mut self, seq: u16, ts: u32, arrival_units: i64) {
        if !self.started {
            self.started = true;
            // Offset by one rollover so a late packet before the first
            // cannot underflow.
            self.base = (1 << 16) | u64::from(seq);
            self.highest = self.base;
            self.last_transit = arrival_units - i64::from(ts);
        } else {
            let ext = extend_sequence(self.highest, seq);
            if ext > self.highest {
                self.highest = ext;
            }
            let transit = arrival_units - i64::from(ts);
            let d = (transit - self.last_transit).unsigned_abs();
            self.last_transit = transit;
            // J += (|D| - J) / 16, kept scaled by 16.
            self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
        }
        self.received += 1;
    }

    fn block(&mut self, ssrc: u32, now: Instant) -> Option<ReportBlockRepr> {
        if !self.started {
            return None;
        }
        let expected = self.highest - self.base + 1;
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let delay_since_last_sr = self.lsr_at.map_or(0, |at| {
            let d = now.saturating_duration_since(at);
            (d.as_secs_f64() * 65536.0) as u32
        });
        Some(ReportBlockRepr {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            extended_highest_seq: (self.highest - (1 << 16)) as u32,
            jitter: (self.jitter16 >> 4) as u32,
            last_sr: self.lsr,
            delay_since_last_sr,
        })
    }
}

#[derive(Debug)]
struct AudioSource {
    ssrc: u32,
    stats: RecvStats,
    outs: Vec<usize>,
}

#[derive(Debug)]
struct VideoLayer {
    rid: Option<Box<[u8]>>,
    ssrc: Option<u32>,
    window_bytes: u64,
    bitrate_bps: u64,
    idle_windows: u8,
    stats: RecvStats,
    last_keyframe_request: Option<Instant>,
}

#[derive(Debug)]
struct VideoSource {
    layers: Vec<VideoLayer>,
    cache: SourceCache,
    outs: Vec<usize>,
}

/// Where a received SSRC goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceRef {
    Audio,
    Video(u8),
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    room: RoomId,
    local: SocketAddr,
    remote: SocketAddr,
    rx: SrtpContext,
    tx: SrtpContext,
    media: MediaConfig,
    rtcp_ssrc: u32,
    audio: Option<AudioSource>,
    video: Option<VideoSource>,
    /// Outgoing streams this leg receives.
    subscribed: Vec<usize>,
    counters: Counters,
    cap: Option<OverloadCap>,
    remb: Option<(u64, Instant)>,
    twcc_out: TwccEstimator,
    twcc_in: TwccRecorder,
    fir_seq: u8,
}

impl Leg {
    /// The source a (not yet authenticated) packet with `ssrc` belongs to,
    /// and whether it is a new SSRC identified by its RID.
    fn locate(&self, ssrc: u32, packet: &[u8]) -> Option<(SourceRef, bool)> {
        if let Some(audio) = &self.audio {
            if audio.ssrc == ssrc {
                return Some((SourceRef::Audio, false));
            }
        }
        let video = self.video.as_ref()?;
        if let Some(i) = video.layers.iter().position(|l| l.ssrc == Some(ssrc)) {
            return Some((SourceRef::Video(i as u8), false));
        }
        let rid_id = self.media.extensions.rid?;
        let rtp = RtpPacket::new_checked_header(packet).ok()?;
        let (profile, data) = (rtp.extension_profile()?, rtp.extension_data()?);
        let rid = rtp_ext::find(profile, data, rid_id).ok()??;
        let i = video
            .layers
            .iter()
            .position(|l| l.ssrc.is_none() && l.rid.as_deref() == Some(rid))?;
        Some((SourceRef::Video(i as u8), true))
    }

    fn effective_cap(&self, room_cap: Option<OverloadCap>) -> Option<OverloadCap> {
        stricter(room_cap, self.cap)
    }
}

fn stricter(a: Option<OverloadCap>, b: Option<OverloadCap>) -> Option<OverloadCap> {
    match (a, b) {
        (Some(OverloadCap::AudioOnly), _) | (_, Some(OverloadCap::AudioOnly)) => {
            Some(OverloadCap::AudioOnly)
        }
        (Some(OverloadCap::MaxLayer(x)), Some(OverloadCap::MaxLayer(y))) => {
            Some(OverloadCap::MaxLayer(x.min(y)))
        }
        (x, None) => x,
        (None, y) => y,
    }
}

#[derive(Debug)]
struct OutStream {
    sub: usize,
    publ: usize,
    kind: MediaKind,
    ssrc: u32,
    rewriter: StreamRewriter,
    selector: Option<LayerSelector>,
    ext_map: ExtensionIdMap,
    /// The subscriber's transport-cc id, rewritten with its own numbering.
    tcc_id: Option<u8>,
    /// RTX SSRC and payload type towards the subscriber.
    rtx: Option<(u32, u8)>,
    rtx_seq: u16,
    sent: Option<SentLog>,
    packets: u32,
    octets: u32,
    /// Input SSRC, input and output timestamps of the newest forwarded
    /// packet: the rewriter's current timestamp offset, for SRs.
    ts_map: Option<(u32, u32, u32)>,
}

#[derive(Debug, Default)]
struct Room {
    legs: Vec<usize>,
    cap: Option<OverloadCap>,
}

/// The SFU core of one worker. See the [module documentation](self).
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    epoch: Instant,
    legs: Vec<Option<Leg>>,
    free_legs: Vec<usize>,
    by_id: HashMap<LegId, usize>,
    by_addr: HashMap<(SocketAddr, SocketAddr), usize>,
    outs: Vec<Option<OutStream>>,
    free_outs: Vec<usize>,
    rooms: HashMap<RoomId, Room>,
    queue: TransmitQueue,
    /// Drops of datagrams no leg owns.
    unowned: Counters,
    next_feedback: Instant,
    next_report: Instant,
    seed: u64,
}

/// Maps an SRTP error on receive to a drop reason.
fn srtp_drop(err: SrtpError) -> DropReason {
    match err {
        SrtpError::AuthenticationFailed => DropReason::AuthFailed,
        SrtpError::ReplayedPacket | SrtpError::TooOld => DropReason::Replay,
        SrtpError::TooManyStreams { .. } => DropReason::TooManyStreams,
        _ => DropReason::Malformed,
    }
}

/// splitmix64: the initial sequence numbers and timestamps RFC 3550 wants
/// unpredictable.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Sfu {
    /// An empty core whose clock starts at `now`.
    pub fn new(config: SfuConfig, now: Instant) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            queue: TransmitQueue::new(config.queue_capacity),
            legs: Vec::with_capacity(config.max_legs),
            free_legs: Vec::new(),
            by_id: HashMap::with_capacity(config.max_legs),
            by_addr: HashMap::with_capacity(config.max_legs),
            outs: Vec::new(),
            free_outs: Vec::new(),
            rooms: HashMap::new(),
            unowned: Counters::default(),
            next_feedback: now + config.feedback_interval,
            next_report: now + config.report_interval,
            epoch: now,
            seed,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Datagrams waiting to be sent.
    pub fn transmits(&self) -> &TransmitQueue {
        &self.queue
    }

    /// Exchanges the queue of datagrams to send with `other` (which should
    /// be empty and of the same capacity): the engine sends from the queue it
    /// gets and clears it once every send has completed.
    pub fn swap_transmits(&mut self, other: &mut TransmitQueue) {
        std::mem::swap(&mut self.queue, other);
        self.queue.clear();
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_feedback.min(self.next_report)
    }

    /// Handles one received UDP payload. `buf` is decrypted in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        buf: &mut [u8],
    ) {
        let Some(&li) = self.by_addr.get(&(local, remote)) else {
            self.unowned.dropped.add(DropReason::UnknownPeer);
            return;
        };
        if classify(buf) != PacketClass::RtpRtcp {
            self.drop(li, DropReason::NotMedia);
            return;
        }
        if is_rtcp(buf) {
            self.on_rtcp(now, li, buf);
        } else {
            self.on_rtp(now, li, buf);
        }
    }

    fn drop(&mut self, li: usize, reason: DropReason) {
        if let Some(leg) = self.legs[li].as_mut() {
            leg.counters.dropped.add(reason);
        }
    }

    fn on_rtp(&mut self, now: Instant, li: usize, buf: &mut [u8]) {
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        let Ok(ssrc) = RtpPacket::new_checked_header(&buf[..]).map(|p| p.ssrc()) else {
            leg.counters.dropped.add(DropReason::Malformed);
            return;
        };
        let located = leg.locate(ssrc, buf);
        // Transport-wide CC numbers every packet the participant sends on
        // the leg, bandwidth probes and retransmissions on SSRCs we do not
        // route included: feedback must cover them or the sender reads them
        // as lost and its estimate collapses. So with transport-cc an
        // unknown SSRC is still authenticated (the leg's SRTP context only
        // keeps streams that authenticate) and its number recorded.
        if located.is_none() && leg.media.extensions.transport_cc.is_none() {
            leg.counters.dropped.add(DropReason::UnknownSsrc);
            return;
        }
        let plain = match leg.rx.unprotect_rtp(buf) {
            Ok(len) => len,
            Err(e) => {
                leg.counters.dropped.add(srtp_drop(e));
                return;
            }
        };
        let buf = &mut buf[..plain];
        let Ok(rtp) = RtpPacket::new_checked(&buf[..]) else {
            leg.counters.dropped.add(DropReason::Malformed);
            return;
        };
        if let (Some(id), Some(profile), Some(data)) = (
            leg.media.extensions.transport_cc,
            rtp.extension_profile(),
            rtp.extension_data(),
        ) {
            if let Ok(Some(seq)) = rtp_ext::find(profile, data, id)
                .map(|d| d.and_then(|d| rtp_ext::read_transport_cc(d).ok()))
            {
                leg.twcc_in.on_packet(seq, now);
            }
        }
        let Some((source, by_rid)) = located else {
            leg.counters.dropped.add(DropReason::UnknownSsrc);
            return;
        };
        let pt = rtp.payload_type();
        let (clock, layer, keyframe) = match source {
            SourceRef::Audio => {
                if leg.media.audio_pt != Some(pt) {
                    leg.counters.dropped.add(DropReason::UnknownPayloadType);
                    return;
                }
                (AUDIO_CLOCK, 0u8, true)
            }
            SourceRef::Video(layer) => {
                let Some((video_pt, codec)) = leg.media.video.filter(|(p, _)| *p == pt) else {
                    leg.counters.dropped.add(DropReason::UnknownPayloadType);
                    return;
                };
                let _ = video_pt;
                let keyframe = match codec {
                    VideoCodec::Vp8 => crate::wire::vp8::Vp8Payload::new_checked(rtp.payload())
                        .is_ok_and(|p| p.is_keyframe()),
                    VideoCodec::H264 => {
                        crate::wire::h264::is_keyframe(rtp.payload()).unwrap_or(false)
                    }
                };
                (VIDEO_CLOCK, layer, keyframe)
            }
        };
        leg.counters.rtp_received += 1;
        let incoming = IncomingPacket {
            layer,
            ssrc,
            seq: rtp.sequence_number(),
            timestamp: rtp.timestamp(),
            payload_type: pt,
            marker: rtp.marker(),
            keyframe,
            switch_point: false,
            arrival: now,
            discard: None,
        };
        let since = now.saturating_duration_since(self.epoch);
        let units = (since.as_micros() as i64) * i64::from(clock) / 1_000_000;
        match source {
            SourceRef::Audio => {
                if let Some(audio) = leg.audio.as_mut() {
                    audio
                        .stats
                        .on_packet(incoming.seq, incoming.timestamp, units);
                }
            }
            SourceRef::Video(l) => {
                if let Some(video) = leg.video.as_mut() {
                    let layer = &mut video.layers[usize::from(l)];
                    if by_rid {
                        layer.ssrc = Some(ssrc);
                    }
                    layer
                        .stats
                        .on_packet(incoming.seq, incoming.timestamp, units);
                    layer.window_bytes += plain as u64;
                    video.cache.insert(usize::from(l), incoming.seq, buf);
                }
            }
        }
        self.fan_out(now, li, source, &incoming, buf);
    }

    /// Rewrites, protects and queues one decrypted packet for every
    /// subscriber of its source.
    fn fan_out(
        &mut self,
        now: Instant,
        li: usize,
        source: SourceRef,
        incoming: &IncomingPacket,
        plain: &[u8],
    ) {
        let mut want_keyframe: Option<u8> = None;
        let mut i = 0;
        loop {
            let o = {
                let Some(leg) = self.legs[li].as_ref() else {
                    return;
                };
                let outs = match source {
                    SourceRef::Audio => leg.audio.as_ref().map(|a| &a.outs),
                    SourceRef::Video(_) => leg.video.as_ref().map(|v| &v.outs),
                };
                match outs.and_then(|outs| outs.get(i)) {
                    Some(&o) => o,
                    None => break,
                }
            };
            i += 1;
            let Some(out) = self.outs[o].as_mut() else {
                continue;
            };
            let decision = out.rewriter.process(incoming);
            if out.kind == MediaKind::Video && out.rewriter.needs_keyframe() {
                want_keyframe = want_keyframe.or(out.rewriter.target_layer());
            }
            let Decision::Forward(forward) = decision else {
                continue;
            };
            let Some(sub) = self.legs[out.sub].as_mut() else {
                continue;
            };
            let ext_map = &out.ext_map;
            let tcc_id = out.tcc_id;
            let len = plain.len();
            let pushed = self.queue.push_with(sub.local, sub.remote, |dst| {
                dst[..len].copy_from_slice(plain);
                apply_to_packet(&mut dst[..len], &forward, ext_map).map_err(|_| ())?;
                if let Some(id) = tcc_id {
                    stamp_transport_cc(&mut dst[..len], id, &mut sub.twcc_out, now);
                }
                sub.tx.protect_rtp(dst, len).map_err(|_| ())
            });
            match pushed {
                Ok(true) => {
                    sub.counters.rtp_sent += 1;
                    out.packets = out.packets.wrapping_add(1);
                    let payload = len.saturating_sub(RtpPacket::new_unchecked(plain).header_len());
                    out.octets = out.octets.wrapping_add(payload as u32);
                    out.ts_map = Some((incoming.ssrc, incoming.timestamp, forward.timestamp));
                    if let Some(log) = out.sent.as_mut() {
                        log.record(SentEntry {
                            layer: incoming.layer,
                            in_seq: incoming.seq,
                            forward,
                        });
                    }
                }
                Ok(false) => sub.counters.dropped.add(DropReason::QueueFull),
                Err(()) => sub.counters.dropped.add(DropReason::EgressFailed),
            }
        }
        if let Some(layer) = want_keyframe {
            self.request_keyframe(now, li, layer, false);
        }
    }

    /// Sends a PLI (or FIR) for `layer` to publisher leg `li`, unless one
    /// went out less than the configured interval ago.
    fn request_keyframe(&mut self, now: Instant, li: usize, layer: u8, fir: bool) {
        let interval = self.config.keyframe_request_interval;
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        let Some(l) = leg
            .video
            .as_mut()
            .and_then(|v| v.layers.get_mut(usize::from(layer)))
        else {
            return;
        };
        let Some(media_ssrc) = l.ssrc else {
            return;
        };
        if l.last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        l.last_keyframe_request = Some(now);
        let sender = leg.rtcp_ssrc;
        let seq_nr = leg.fir_seq;
        if fir {
            leg.fir_seq = leg.fir_seq.wrapping_add(1);
        }
        let tx = &mut leg.tx;
        let pushed = self.queue.push_with(leg.local, leg.remote, |dst| {
            let len = if fir {
                let entry = FirEntry {
                    ssrc: media_ssrc,
                    seq_nr,
                };
                rtcp::build_fir(sender, &[entry], dst).map_err(|_| ())?
            } else {
                rtcp::build_pli(sender, media_ssrc, dst).map_err(|_| ())?
            };
            tx.protect_rtcp(dst, len).map_err(|_| ())
        });
        count_rtcp(&mut leg.counters, pushed);
        if matches!(pushed, Ok(true)) {
            leg.counters.keyframe_requests_sent += 1;
        }
    }

    fn on_rtcp(&mut self, now: Instant, li: usize, buf: &mut [u8]) {
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        let plain = match leg.rx.unprotect_rtcp(buf) {
            Ok(len) => len,
            Err(e) => {
                leg.counters.dropped.add(srtp_drop(e));
                return;
            }
        };
        leg.counters.rtcp_received += 1;
        let mut estimate_changed = false;
        for packet in rtcp::iter_compound(&buf[..plain]) {
            let Ok(packet) = packet else {
                self.drop(li, DropReason::Malformed);
                break;
            };
            match packet {
                RtcpPacket::SenderReport(sr) => self.on_sender_report(now, li, &sr),
                RtcpPacket::ReceiverReport(_) => {
                    if let Some(leg) = self.legs[li].as_mut() {
                        leg.counters.rr_received += 1;
                    }
                }
                RtcpPacket::Nack(nack) => {
                    let Some(o) = self.out_by_ssrc(li, nack.media_ssrc()) else {
                        self.drop(li, DropReason::UnknownSsrc);
                        continue;
                    };
                    for seq in nack.lost_seqs() {
                        self.retransmit(now, o, seq);
                    }
                }
                RtcpPacket::Pli(_) | RtcpPacket::Fir(_) => {
                    let fir = matches!(packet, RtcpPacket::Fir(_));
                    let media = match &packet {
                        RtcpPacket::Fir(f) => f.entries().next().map(|e| e.ssrc),
                        other => other.feedback().map(|f| f.media_ssrc()),
                    };
                    let Some(o) = media.and_then(|m| self.out_by_ssrc(li, m)) else {
                        self.drop(li, DropReason::UnknownSsrc);
                        continue;
                    };
                    if let Some(leg) = self.legs[li].as_mut() {
                        leg.counters.keyframe_requests_received += 1;
                    }
                    let Some(out) = self.outs[o].as_ref() else {
                        continue;
                    };
                    let layer = out.rewriter.target_layer().or(out.rewriter.current_layer());
                    let publ = out.publ;
                    if let (MediaKind::Video, Some(layer)) = (out.kind, layer) {
                        self.request_keyframe(now, publ, layer, fir);
                    }
                }
                RtcpPacket::Remb(remb) => {
                    if let Some(leg) = self.legs[li].as_mut() {
                        leg.counters.remb_received += 1;
                        leg.remb = Some((remb.bitrate_bps(), now));
                        estimate_changed = true;
                    }
                }
                RtcpPacket::TransportCc(fb) => {
                    if let Some(leg) = self.legs[li].as_mut() {
                        leg.counters.twcc_received += 1;
                        leg.twcc_out.on_feedback(&fb, now);
                        estimate_changed = true;
                    }
                }
                _ => {}
            }
        }
        if estimate_changed {
            self.apply_estimate(now, li);
        }
    }

    fn out_by_ssrc(&self, li: usize, ssrc: u32) -> Option<usize> {
        let leg = self.legs[li].as_ref()?;
        leg.subscribed.iter().copied().find(|&o| {
            self.outs[o]
                .as_ref()
                .is_some_and(|out| out.ssrc == ssrc || out.rtx.is_some_and(|(r, _)| r == ssrc))
        })
    }

    fn on_sender_report(&mut self, now: Instant, li: usize, sr: &rtcp::SenderReport<&[u8]>) {
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        let ssrc = sr.ssrc();
        let lsr = (sr.ntp_timestamp() >> 16) as u32;
        let source = leg.locate(ssrc, &[]).map(|(s, _)| s);
        let outs_len = match source {
            Some(SourceRef::Audio) => leg.audio.as_mut().map(|a| {
                a.stats.lsr = lsr;
                a.stats.lsr_at = Some(now);
                a.outs.len()
            }),
            Some(SourceRef::Video(l)) => leg.video.as_mut().map(|v| {
                let stats = &mut v.layers[usize::from(l)].stats;
                stats.lsr = lsr;
                stats.lsr_at = Some(now);
                v.outs.len()
            }),
            None => {
                leg.counters.dropped.add(DropReason::UnknownSsrc);
                return;
            }
        };
        let ntp = sr.ntp_timestamp();
        let rtp_ts = sr.rtp_timestamp();
        for i in 0..outs_len.unwrap_or(0) {
            let Some(leg) = self.legs[li].as_ref() else {
                return;
            };
            let o = match source {
                Some(SourceRef::Audio) => leg.audio.as_ref().map(|a| a.outs[i]),
                _ => leg.video.as_ref().map(|v| v.outs[i]),
            };
            let Some(out) = o.and_then(|o| self.outs[o].as_mut()) else {
                continue;
            };
            let Some((in_ssrc, in_ts, out_ts)) = out.ts_map else {
                continue;
            };
            if in_ssrc != ssrc {
                continue;
            }
            let Some(sub) = self.legs[out.sub].as_mut() else {
                continue;
            };
            let info = SenderInfo {
                ntp_timestamp: ntp,
                rtp_timestamp: rtp_ts.wrapping_add(out_ts.wrapping_sub(in_ts)),
                packet_count: out.packets,
                octet_count: out.octets,
            };
            let out_ssrc = out.ssrc;
            let tx = &mut sub.tx;
            let pushed = self.queue.push_with(sub.local, sub.remote, |dst| {
                let len = rtcp::build_sender_report(out_ssrc, &info, &[], dst).map_err(|_| ())?;
                tx.protect_rtcp(dst, len).map_err(|_| ())
            });
            count_rtcp(&mut sub.counters, pushed);
            if matches!(pushed, Ok(true)) {
                sub.counters.sr_forwarded += 1;
            }
        }
    }

    /// Answers one NACKed output sequence number of outgoing stream `o`.
    fn retransmit(&mut self, now: Instant, o: usize, seq: u16) {
        let Some(out) = self.outs[o].as_mut() else {
            return;
        };
        let (publ, subi) = (out.publ, out.sub);
        let Ok([Some(publisher), Some(sub)]) = self.legs.get_disjoint_mut([publ, subi]) else {
            return;
        };
        sub.counters.nacked += 1;
        let packet = out
            .sent
            .as_ref()
            .and_then(|log| log.get(seq))
            .and_then(|e| {
                publisher
                    .video
                    .as_ref()
                    .and_then(|v| v.cache.get(usize::from(e.layer), e.in_seq))
                    .map(|p| (e, p))
            });
        let Some((entry, packet)) = packet else {
            sub.counters.nack_misses += 1;
            return;
        };
        let len = packet.len();
        let rtx = out.rtx.map(|(ssrc, pt)| (ssrc, pt, out.rtx_seq));
        let ext_map = &out.ext_map;
        let tcc_id = out.tcc_id;
        let pushed = self.queue.push_with(sub.local, sub.remote, |dst| {
            dst[..len].copy_from_slice(packet);
            apply_to_packet(&mut dst[..len], &entry.forward, ext_map).map_err(|_| ())?;
            if let Some(id) = tcc_id {
                stamp_transport_cc(&mut dst[..len], id, &mut sub.twcc_out, now);
            }
            let mut total = len;
            if let Some((rtx_ssrc, rtx_pt, rtx_seq)) = rtx {
                // RFC 4588: the original sequence number leads the payload.
                let header = RtpPacket::new_unchecked(&dst[..len]).header_len();
                dst.copy_within(header..len, header + 2);
                dst[header..header + 2].copy_from_slice(&entry.forward.seq.to_be_bytes());
                total += 2;
                let mut rtp = RtpPacket::new_unchecked(&mut dst[..total]);
                rtp.set_ssrc(rtx_ssrc);
                rtp.set_payload_type(rtx_pt);
                rtp.set_sequence_number(rtx_seq);
            }
            // Without RTX the same index is protected again over the same
            // payload: the context allows repeats for exactly this.
            sub.tx.protect_rtp(dst, total).map_err(|_| ())
        });
        match pushed {
            Ok(true) => {
                sub.counters.retransmitted += 1;
                if rtx.is_some() {
                    out.rtx_seq = out.rtx_seq.wrapping_add(1);
                }
            }
            Ok(false) => sub.counters.dropped.add(DropReason::QueueFull),
            Err(()) => sub.counters.dropped.add(DropReason::EgressFailed),
        }
    }

    /// Shares subscriber `li`'s estimate among its video streams.
    fn apply_estimate(&mut self, now: Instant, li: usize) {
        let Some(leg) = self.legs[li].as_ref() else {
            return;
        };
        let remb = leg
            .remb
            .filter(|(_, at)| now.saturating_duration_since(*at) < bwe::ESTIMATE_TTL)
            .map(|(bps, _)| bps);
        let twcc = leg.twcc_out.estimate(now);
        let estimate = match (remb, twcc) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(e) => e,
                None => return,
            },
        };
        let (mut audio, mut video) = (0u64, 0u64);
        for &o in &leg.subscribed {
            match self.outs[o].as_ref().map(|out| out.kind) {
                Some(MediaKind::Audio) => audio += 1,
                Some(MediaKind::Video) => video += 1,
                None => {}
            }
        }
        if video == 0 {
            return;
        }
        let share = estimate.saturating_sub(audio * self.config.audio_allowance_bps) / video.max(1);
        for &o in &leg.subscribed {
            if let Some(out) = self.outs[o].as_mut() {
                if let Some(selector) = out.selector.as_mut() {
                    let selection = selector.set_estimate(share, now);
                    out.rewriter.set_target_layer(selection.layer);
                }
            }
        }
    }

    /// Re-applies room and leg caps to subscriber `li`'s video streams.
    fn apply_caps(&mut self, now: Instant, li: usize) {
        let Some(leg) = self.legs[li].as_ref() else {
            return;
        };
        let room_cap = self.rooms.get(&leg.room).and_then(|r| r.cap);
        let cap = leg.effective_cap(room_cap);
        for &o in &leg.subscribed {
            if let Some(out) = self.outs[o].as_mut() {
                if let Some(selector) = out.selector.as_mut() {
                    let selection = selector.set_cap(cap, now);
                    out.rewriter.set_target_layer(selection.layer);
                }
            }
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_feedback {
            self.next_feedback = (self.next_feedback + self.config.feedback_interval)
                .max(now + self.config.feedback_interval / 2);
            for li in 0..self.legs.len() {
                self.send_twcc_feedback(li);
                self.poll_selectors(now, li);
            }
        }
        if now >= self.next_report {
            let interval = self.config.report_interval;
            self.next_report = (self.next_report + interval).max(now + interval / 2);
            for li in 0..self.legs.len() {
                self.measure_layers(now, li, interval);
                self.send_receiver_report(now, li);
            }
        }
    }

    fn poll_selectors(&mut self, now: Instant, li: usize) {
        let Some(leg) = self.legs[li].as_ref() else {
            return;
        };
        for &o in &leg.subscribed {
            if let Some(out) = self.outs[o].as_mut() {
                if let Some(selector) = out.selector.as_mut() {
                    let due = selector.poll_timeout().is_some_and(|t| t <= now);
                    if due {
                        let selection = selector.poll(now);
                        out.rewriter.set_target_layer(selection.layer);
                    }
                }
            }
        }
    }

    fn send_twcc_feedback(&mut self, li: usize) {
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        if leg.media.extensions.transport_cc.is_none() {
            return;
        }
        let media_ssrc = leg
            .video
            .as_ref()
            .and_then(|v| v.layers.iter().find_map(|l| l.ssrc))
            .or(leg.audio.as_ref().map(|a| a.ssrc))
            .unwrap_or(0);
        let sender = leg.rtcp_ssrc;
        let (rec, tx) = (&mut leg.twcc_in, &mut leg.tx);
        let pushed = self.queue.push_with(leg.local, leg.remote, |dst| {
            let len = rec
                .build_feedback(sender, media_ssrc, &mut dst[..TRANSMIT_BUF_LEN - 64])
                .ok_or(())?;
            tx.protect_rtcp(dst, len).map_err(|_| ())
        });
        if matches!(pushed, Ok(true)) {
            leg.counters.rtcp_sent += 1;
            leg.counters.twcc_sent += 1;
        } else if matches!(pushed, Ok(false)) {
            leg.counters.dropped.add(DropReason::QueueFull);
        }
    }

    fn measure_layers(&mut self, now: Instant, li: usize, interval: Duration) {
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        let Some(video) = leg.video.as_mut() else {
            return;
        };
        let secs = interval.as_secs_f64().max(1e-3);
        let mut bitrates = [0u64; MAX_PUBLISHED_LAYERS];
        // Silence before the publisher's first video packet says nothing
        // about its layers: they keep their nominal bitrates, so subscribers
        // are not paused and then made to wait for a requested key frame
        // when media starts (the first key frame would find them paused).
        let publishing = video
            .layers
            .iter()
            .any(|l| l.window_bytes > 0 || l.stats.started);
        for (i, layer) in video.layers.iter_mut().enumerate() {
            if layer.window_bytes > 0 {
                layer.bitrate_bps = (layer.window_bytes as f64 * 8.0 / secs) as u64;
                layer.idle_windows = 0;
            } else if layer.ssrc.is_some() && publishing {
                // A layer that stopped is inactive after two silent windows.
                layer.idle_windows = layer.idle_windows.saturating_add(1);
                if layer.idle_windows >= 2 {
                    layer.bitrate_bps = 0;
                }
            }
            layer.window_bytes = 0;
            bitrates[i] = layer.bitrate_bps;
        }
        let count = video.layers.len();
        for i in 0..video.outs.len() {
            let o = video.outs[i];
            if let Some(out) = self.outs[o].as_mut() {
                if let Some(selector) = out.selector.as_mut() {
                    let mut selection = selector.selection();
                    for (l, bps) in bitrates.iter().enumerate().take(count) {
                        if let Ok(s) = selector.set_layer_bitrate(l as u8, *bps, now) {
                            selection = s;
                        }
                    }
                    out.rewriter.set_target_layer(selection.layer);
                }
            }
        }
    }

    fn send_receiver_report(&mut self, now: Instant, li: usize) {
        let Some(leg) = self.legs[li].as_mut() else {
            return;
        };
        let mut blocks = [ReportBlockRepr::default(); MAX_PUBLISHED_LAYERS + 1];
        let mut n = 0;
        if let Some(audio) = leg.audio.as_mut() {
            if let Some(b) = audio.stats.block(audio.ssrc, now) {
                blocks[n] = b;
                n += 1;
            }
        }
        if let Some(video) = leg.video.as_mut() {
            for layer in &mut video.layers {
                if let Some(ssrc) = layer.ssrc {
                    if let Some(b) = layer.stats.block(ssrc, now) {
                        blocks[n] = b;
                        n += 1;
                    }
                }
            }
        }
        if n == 0 {
            return;
        }
        let sender = leg.rtcp_ssrc;
        let tx = &mut leg.tx;
        let pushed = self.queue.push_with(leg.local, leg.remote, |dst| {
            let len = rtcp::build_receiver_report(sender, &blocks[..n], dst).map_err(|_| ())?;
            tx.protect_rtcp(dst, len).map_err(|_| ())
        });
        count_rtcp(&mut leg.counters, pushed);
        if matches!(pushed, Ok(true)) {
            leg.counters.rr_sent += 1;
        }
    }

    /// Applies a control-plane command.
    pub fn command(&mut self, now: Instant, command: Command) -> Result<Reply, CommandError> {
        match command {
            Command::AddLeg(config) => self.add_leg(now, *config).map(|()| Reply::Done),
            Command::RemoveLeg(id) => self.remove_leg(id).map(|()| Reply::Done),
            Command::Publish(id, spec) => self.publish(id, spec).map(|()| Reply::Done),
            Command::Subscribe {
                subscriber,
                publisher,
                ssrcs,
            } => self
                .subscribe(now, subscriber, publisher, ssrcs)
                .map(|()| Reply::Done),
            Command::Unsubscribe {
                subscriber,
                publisher,
            } => self
                .unsubscribe(subscriber, publisher)
                .map(|()| Reply::Done),
            Command::SetRoomCap(room, cap) => {
                let legs = match self.rooms.get_mut(&room) {
                    Some(r) => {
                        r.cap = cap;
                        r.legs.clone()
                    }
                    None => Vec::new(),
                };
                for li in legs {
                    self.apply_caps(now, li);
                }
                Ok(Reply::Done)
            }
            Command::SetLegCap(id, cap) => {
                let li = self.leg_index(id)?;
                if let Some(leg) = self.legs[li].as_mut() {
                    leg.cap = cap;
                }
                self.apply_caps(now, li);
                Ok(Reply::Done)
            }
            Command::Stats => Ok(Reply::Stats(Box::new(self.stats()))),
            Command::LegStats(id) => Ok(Reply::Leg(Box::new(self.leg_stats(id)?))),
            Command::RequestKeyFrame(id) => {
                let li = self.leg_index(id)?;
                let layers = self.legs[li]
                    .as_ref()
                    .and_then(|l| l.video.as_ref())
                    .map_or(0, |v| v.layers.len());
                for layer in 0..layers.min(usize::from(u8::MAX)) {
                    self.request_keyframe(now, li, layer as u8, false);
                }
                Ok(Reply::Done)
            }
        }
    }

    fn leg_index(&self, id: LegId) -> Result<usize, CommandError> {
        self.by_id
            .get(&id)
            .copied()
            .ok_or(CommandError::UnknownLeg(id))
    }

    fn add_leg(&mut self, now: Instant, c: LegConfig) -> Result<(), CommandError> {
        if self.by_id.contains_key(&c.id) {
            return Err(CommandError::DuplicateLeg(c.id));
        }
        if self.by_addr.contains_key(&(c.local, c.remote)) {
            return Err(CommandError::AddressInUse {
                local: c.local,
                remote: c.remote,
            });
        }
        if self.by_id.len() >= self.config.max_legs {
            return Err(CommandError::TooManyLegs(self.config.max_legs));
        }
        let rx_config = SrtpConfig {
            replay_window: self.config.replay_window,
            ..SrtpConfig::default()
        };
        // NACKs without RTX resend a packet under its original index with
        // the same payload, which re-encrypts to the same ciphertext.
        let tx_config = SrtpConfig {
            allow_repeat_tx: true,
            ..SrtpConfig::default()
        };
        let leg = Leg {
            id: c.id,
            room: c.room,
            local: c.local,
            remote: c.remote,
            rx: SrtpContext::with_config(c.profile, &c.remote_key, rx_config)?,
            tx: SrtpContext::with_config(c.profile, &c.local_key, tx_config)?,
            media: c.media,
            rtcp_ssrc: c.rtcp_ssrc,
            audio: None,
            video: None,
            subscribed: Vec::new(),
            counters: Counters::default(),
            cap: None,
            remb: None,
            twcc_out: TwccEstimator::new(),
            twcc_in: TwccRecorder::new(now),
            fir_seq: 0,
        };
        let li = match self.free_legs.pop() {
            Some(li) => {
                self.legs[li] = Some(leg);
                li
            }
            None => {
                self.legs.push(Some(leg));
                self.legs.len() - 1
            }
        };
        self.by_id.insert(c.id, li);
        self.by_addr.insert((c.local, c.remote), li);
        self.rooms.entry(c.room).or_default().legs.push(li);
        Ok(())
    }

    fn remove_leg(&mut self, id: LegId) -> Result<(), CommandError> {
        let li = self.leg_index(id)?;
        // Every subscription it is part of, either side.
        let mut outs: Vec<usize> = Vec::new();
        for (o, out) in self.outs.iter().enumerate() {
            if let Some(out) = out {
                if out.sub == li || out.publ == li {
                    outs.push(o);
                }
            }
        }
        for o in outs {
            self.free_out(o);
        }
        let Some(leg) = self.legs[li].take() else {
            return Err(CommandError::UnknownLeg(id));
        };
        self.by_id.remove(&id);
        self.by_addr.remove(&(leg.local, leg.remote));
        if let Some(room) = self.rooms.get_mut(&leg.room) {
            room.legs.retain(|&l| l != li);
            if room.legs.is_empty() {
                self.rooms.remove(&leg.room);
            }
        }
        self.free_legs.push(li);
        Ok(())
    }

    fn free_out(&mut self, o: usize) {
        let Some(out) = self.outs[o].take() else {
            return;
        };
        if let Some(sub) = self.legs[out.sub].as_mut() {
            sub.subscribed.retain(|&x| x != o);
        }
        if let Some(publ) = self.legs[out.publ].as_mut() {
            if let Some(a) = publ.audio.as_mut() {
                a.outs.retain(|&x| x != o);
            }
            if let Some(v) = publ.video.as_mut() {
                v.outs.retain(|&x| x != o);
            }
        }
        self.free_outs.push(o);
    }

    fn publish(&mut self, id: LegId, spec: PublishSpec) -> Result<(), CommandError> {
        let li = self.leg_index(id)?;
        let cache_bytes = self.config.cache_bytes;
        let Some(leg) = self.legs[li].as_mut() else {
            return Err(CommandError::UnknownLeg(id));
        };
        if leg.audio.is_some() || leg.video.is_some() {
            return Err(CommandError::InvalidPublication(
                "the leg publishes already",
            ));
        }
        if spec.audio_ssrc.is_none() && spec.video_layers.is_empty() {
            return Err(CommandError::InvalidPublication("nothing to publish"));
        }
        if spec.audio_ssrc.is_some() && leg.media.audio_pt.is_none() {
            return Err(CommandError::InvalidPublication("audio was not negotiated"));
        }
        if !spec.video_layers.is_empty() && leg.media.video.is_none() {
            return Err(CommandError::InvalidPublication("video was not negotiated"));
        }
        if spec.video_layers.len() > MAX_PUBLISHED_LAYERS {
            return Err(CommandError::InvalidPublication("too many layers"));
        }
        let mut ssrcs: Vec<u32> = spec.audio_ssrc.into_iter().collect();
        for layer in &spec.video_layers {
            match (&layer.rid, layer.ssrc) {
                (None, None) => {
                    return Err(CommandError::InvalidPublication(
                        "a layer needs a RID or an SSRC",
                    ))
                }
                (Some(_), None) if leg.media.extensions.rid.is_none() => {
                    return Err(CommandError::InvalidPublication(
                        "a RID layer needs the RID extension",
                    ))
                }
                _ => {}
            }
            if let Some(ssrc) = layer.ssrc {
                if ssrcs.contains(&ssrc) {
                    return Err(CommandError::SsrcInUse(ssrc));
                }
                ssrcs.push(ssrc);
            }
        }
        leg.audio = spec.audio_ssrc.map(|ssrc| AudioSource {
            ssrc,
            stats: RecvStats::default(),
            outs: Vec::new(),
        });
        if !spec.video_layers.is_empty() {
            let layers: Vec<VideoLayer> = spec
                .video_layers
                .iter()
                .map(|l| VideoLayer {
                    rid: l.rid.as_ref().map(|r| r.as_bytes().into()),
                    ssrc: l.ssrc,
                    window_bytes: 0,
                    bitrate_bps: l.nominal_bps,
                    idle_windows: 0,
                    stats: RecvStats::default(),
                    last_keyframe_request: None,
                })
                .collect();
            let cache = SourceCache::new(cache_bytes, layers.len());
            leg.video = Some(VideoSource {
                layers,
                cache,
                outs: Vec::new(),
            });
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        now: Instant,
        subscriber: LegId,
        publisher: LegId,
        ssrcs: SubscribeSpec,
    ) -> Result<(), CommandError> {
        let si = self.leg_index(subscriber)?;
        let pi = self.leg_index(publisher)?;
        if si == pi {
            return Err(CommandError::SelfSubscription(subscriber));
        }
        let (Some(sub), Some(publ)) = (self.legs[si].as_ref(), self.legs[pi].as_ref()) else {
            return Err(CommandError::UnknownLeg(subscriber));
        };
        if sub.room != publ.room {
            return Err(CommandError::DifferentRooms(subscriber, publisher));
        }
        if sub
            .subscribed
            .iter()
            .any(|&o| self.outs[o].as_ref().is_some_and(|out| out.publ == pi))
        {
            return Err(CommandError::AlreadySubscribed {
                subscriber,
                publisher,
            });
        }
        for ssrc in [ssrcs.audio_ssrc, ssrcs.video_ssrc, ssrcs.video_rtx_ssrc] {
            if self.out_by_ssrc(si, ssrc).is_some() || ssrc == sub.rtcp_ssrc {
                return Err(CommandError::SsrcInUse(ssrc));
            }
        }
        if publ.audio.is_none() && publ.video.is_none() {
            return Err(CommandError::InvalidPublication(
                "the publisher has published nothing",
            ));
        }
        let (pe, se) = (publ.media.extensions, sub.media.extensions);
        let mut ext_map = ExtensionIdMap::new();
        for (from, to) in [
            (pe.abs_send_time, se.abs_send_time),
            (pe.transport_cc, se.transport_cc),
            (pe.audio_level, se.audio_level),
        ] {
            if let (Some(from), Some(to)) = (from, to) {
                ext_map.insert(from, to)?;
            }
        }
        let tcc_id = se.transport_cc.filter(|_| pe.transport_cc.is_some());
        let room_cap = self.rooms.get(&sub.room).and_then(|r| r.cap);
        let cap = sub.effective_cap(room_cap);
        let estimate = sub.remb.map(|(bps, _)| bps);
        let mut new_outs = Vec::new();

        if let (Some(audio), Some(from), Some(to)) =
            (&publ.audio, publ.media.audio_pt, sub.media.audio_pt)
        {
            let _ = audio;
            let mut pts = PayloadTypeMap::new();
            pts.insert(from, to)?;
            let mut config = RewriterConfig::new(ssrcs.audio_ssrc, AUDIO_CLOCK, pts);
            let r = mix(self.seed ^ u64::from(ssrcs.audio_ssrc));
            config.initial_seq = r as u16;
            config.initial_timestamp = (r >> 32) as u32;
            let mut rewriter = StreamRewriter::new(config)?;
            rewriter.set_target_layer(Some(0));
            new_outs.push((
                MediaKind::Audio,
                OutStream {
                    sub: si,
                    publ: pi,
                    kind: MediaKind::Audio,
                    ssrc: ssrcs.audio_ssrc,
                    rewriter,
                    selector: None,
                    ext_map: ext_map.clone(),
                    tcc_id,
                    rtx: None,
                    rtx_seq: 0,
                    sent: None,
                    packets: 0,
                    octets: 0,
                    ts_map: None,
                },
            ));
        }
        if let (Some(video), Some((from, pcodec)), Some((to, scodec))) =
            (&publ.video, publ.media.video, sub.media.video)
        {
            if pcodec == scodec {
                let mut pts = PayloadTypeMap::new();
                pts.insert(from, to)?;
                let mut config = RewriterConfig::new(ssrcs.video_ssrc, VIDEO_CLOCK, pts);
                let r = mix(self.seed ^ u64::from(ssrcs.video_ssrc));
                config.initial_seq = r as u16;
                config.initial_timestamp = (r >> 32) as u32;
                let mut rewriter = StreamRewriter::new(config)?;
                let mut selector = LayerSelector::new(self.config.selector, video.layers.len())?;
                for (i, layer) in video.layers.iter().enumerate() {
                    selector.set_layer_bitrate(i as u8, layer.bitrate_bps, now)?;
                }
                selector.set_cap(cap, now);
                let selection = match estimate {
                    Some(bps) => selector.set_estimate(bps, now),
                    None => selector.selection(),
                };
                rewriter.set_target_layer(selection.layer);
                let rtx = sub
                    .media
                    .rtx_pt
                    .filter(|_| sub.media.nack)
                    .map(|pt| (ssrcs.video_rtx_ssrc, pt));
                new_outs.push((
                    MediaKind::Video,
                    OutStream {
                        sub: si,
                        publ: pi,
                        kind: MediaKind::Video,
                        ssrc: ssrcs.video_ssrc,
                        rewriter,
                        selector: Some(selector),
                        ext_map,
                        tcc_id,
                        rtx,
                        rtx_seq: mix(self.seed ^ u64::from(ssrcs.video_rtx_ssrc)) as u16,
                        sent: sub
                            .media
                            .nack
                            .then(|| SentLog::new(self.config.sent_log_len)),
                        packets: 0,
                        octets: 0,
                        ts_map: None,
                    },
                ));
            }
        }
        for (kind, out) in new_outs {
            let o = match self.free_outs.pop() {
                Some(o) => {
                    self.outs[o] = Some(out);
                    o
                }
                None => {
                    self.outs.push(Some(out));
                    self.outs.len() - 1
                }
            };
            if let Some(sub) = self.legs[si].as_mut() {
                sub.subscribed.push(o);
            }
            if let Some(publ) = self.legs[pi].as_mut() {
                match kind {
                    MediaKind::Audio => publ.audio.as_mut().map(|a| a.outs.push(o)),
                    MediaKind::Video => publ.video.as_mut().map(|v| v.outs.push(o)),
                };
            }
        }
        self.apply_estimate(now, si);
        Ok(())
    }

    fn unsubscribe(&mut self, subscriber: LegId, publisher: LegId) -> Result<(), CommandError> {
        let si = self.leg_index(subscriber)?;
        let pi = self.leg_index(publisher)?;
        let outs: Vec<usize> = self.legs[si]
            .as_ref()
            .map(|s| {
                s.subscribed
                    .iter()
                    .copied()
                    .filter(|&o| self.outs[o].as_ref().is_some_and(|out| out.publ == pi))
                    .collect()
            })
            .unwrap_or_default();
        if outs.is_empty() {
            return Err(CommandError::NotSubscribed {
                subscriber,
                publisher,
            });
        }
        for o in outs {
            self.free_out(o);
        }
        Ok(())
    }

    /// The totals.
    pub fn stats(&self) -> SfuStats {
        let mut counters = self.unowned.clone();
        let mut legs = 0;
        for leg in self.legs.iter().flatten() {
            counters.merge(&leg.counters);
            legs += 1;
        }
        let layer_switches = self
            .outs
            .iter()
            .flatten()
            .map(|o| o.rewriter.counters().switches())
            .sum();
        SfuStats {
            legs,
            rooms: self.rooms.len(),
            counters,
            layer_switches,
        }
    }

    /// One leg's stats.
    pub fn leg_stats(&self, id: LegId) -> Result<LegStats, CommandError> {
        let li = self.leg_index(id)?;
        let leg = self.legs[li].as_ref().ok_or(CommandError::UnknownLeg(id))?;
        let now = Instant::now();
        let remb = leg.remb.map(|(bps, _)| bps);
        let twcc = leg.twcc_out.estimate(now);
        let estimate_bps = match (remb, twcc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let out_streams = leg
            .subscribed
            .iter()
            .filter_map(|&o| self.outs[o].as_ref())
            .map(|out| OutStreamStats {
                publisher: self.legs[out.publ].as_ref().map_or(LegId(0), |p| p.id),
                kind: out.kind,
                ssrc: out.ssrc,
                forwarded: out.rewriter.counters().forwarded(),
                switches: out.rewriter.counters().switches(),
                gaps_passed: out.rewriter.counters().gaps_passed(),
                current_layer: out.rewriter.current_layer(),
                target_layer: out.rewriter.target_layer(),
            })
            .collect();
        let audio = leg.audio.iter().map(|a| InStreamStats {
            ssrc: a.ssrc,
            kind: MediaKind::Audio,
            layer: 0,
        });
        let video = leg.video.iter().flat_map(|v| {
            v.layers.iter().enumerate().filter_map(|(i, l)| {
                Some(InStreamStats {
                    ssrc: l.ssrc?,
                    kind: MediaKind::Video,
                    layer: u8::try_from(i).ok()?,
                })
            })
        });
        Ok(LegStats {
            leg: leg.id,
            room: leg.room,
            counters: leg.counters.clone(),
            estimate_bps,
            out_streams,
            published: audio.chain(video).collect(),
        })
    }

    /// The leg a datagram from `remote` to `local` belongs to.
    pub fn leg_at(&self, local: SocketAddr, remote: SocketAddr) -> Option<LegId> {
        let li = *self.by_addr.get(&(local, remote))?;
        self.legs[li].as_ref().map(|l| l.id)
    }
}

/// Counts an RTCP packet the core tried to queue.
fn count_rtcp(counters: &mut Counters, pushed: Result<bool, ()>) {
    match pushed {
        Ok(true) => counters.rtcp_sent += 1,
        Ok(false) => counters.dropped.add(DropReason::QueueFull),
        Err(()) => counters.dropped.add(DropReason::EgressFailed),
    }
}

/// Overwrites the transport-cc element `id` of a (rewritten, plaintext) RTP
/// packet with the subscriber's own next transport-wide sequence number.
fn stamp_transport_cc(packet: &mut [u8], id: u8, estimator: &mut TwccEstimator, now: Instant) {
    let len = packet.len();
    let mut rtp = RtpPacket::new_unchecked(packet);
    let Some(profile) = rtp.extension_profile() else {
        return;
    };
    let Some(data) = rtp.extension_data_mut() else {
        return;
    };
    if let Ok(Some(element)) = rtp_ext::find_mut(profile, data, id) {
        let seq = estimator.on_send(len, now);
        let _ = rtp_ext::write_transport_cc(element, seq);
    }
}
