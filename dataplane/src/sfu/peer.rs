//! A synthetic WebRTC endpoint for tests, benchmarks and demos: it publishes
//! Opus-sized audio and VP8 simulcast video over real SRTP with its own keys,
//! and checks everything it receives.
//!
//! Like the core it is sans-IO: packets are written into caller buffers and
//! received packets are handed in. Every media payload ends with a trailer —
//! the layer, the publisher's sequence number and an FNV-1a hash of the
//! payload before it — so a subscriber verifies payload integrity end to end
//! through decryption, rewriting and re-encryption by the appliance.

use std::collections::BTreeSet;

use crate::srtp::{MasterKey, SrtpContext, SrtpError, SrtpProfile};
use crate::wire::rtcp::{self, RtcpPacket};
use crate::wire::rtp::{extend_sequence, RtpHeaderBuilder, RtpPacket};
use crate::wire::rtp_ext::{self, ExtensionForm, ONE_BYTE_PROFILE};
use crate::wire::WireError;

use super::command::{LayerSpec, LegConfig, MediaConfig, PublishSpec, SubscribeSpec};
use super::{LegId, MediaKind, RoomId};

/// Layer tag of audio payloads in the trailer.
const AUDIO_LAYER: u8 = 0xff;
/// Trailer: layer (1), publisher sequence number (2), FNV-1a (4).
pub const TRAILER_LEN: usize = 7;
/// Bytes a VP8 payload descriptor and header take before the filler.
const VP8_HEADER_LEN: usize = 5;
/// Largest packet a peer builds.
const PACKET_BUF_LEN: usize = 1500;
/// Most lost sequence numbers one NACK from a peer carries.
const MAX_NACK: usize = 128;
/// How often a peer NACKs the same sequence number at most.
const MAX_NACKS_PER_SEQ: u8 = 5;

/// Why a peer could not build or take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// SRTP refused.
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpError),
    /// Packet bytes wrong.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// An SSRC the peer does not expect.
    #[error("unexpected SSRC {0:#010x}")]
    UnexpectedSsrc(u32),
    /// A payload type the peer did not negotiate.
    #[error("unexpected payload type {0}")]
    UnexpectedPayloadType(u8),
}

/// One simulcast layer a peer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLayer {
    /// Its RID, if it sends one.
    pub rid: Option<String>,
    /// Its SSRC.
    pub ssrc: u32,
    /// Its bitrate in kbit/s.
    pub kbps: u32,
}

/// What a peer sends and negotiated.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// DTLS-SRTP profile.
    pub profile: SrtpProfile,
    /// The peer's write key.
    pub send_key: MasterKey,
    /// The appliance's write key for this leg.
    pub recv_key: MasterKey,
    /// What was negotiated (the appliance's leg uses the same).
    pub media: MediaConfig,
    /// The peer's own RTCP sender SSRC.
    pub rtcp_ssrc: u32,
    /// Audio SSRC, if it publishes audio.
    pub audio_ssrc: Option<u32>,
    /// Video layers it publishes, lowest first.
    pub video: Vec<PeerLayer>,
    /// Video frame rate.
    pub fps: u32,
    /// Audio payload bytes per 20 ms packet.
    pub audio_payload: usize,
    /// Largest video payload per packet.
    pub max_video_payload: usize,
    /// A key frame every this many frames (0: only on request).
    pub keyframe_interval: u32,
    /// Seed of the filler bytes and initial numbers.
    pub seed: u64,
}

impl PeerConfig {
    /// The leg the appliance needs for this peer.
    pub fn leg_config(
        &self,
        id: LegId,
        room: RoomId,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        appliance_rtcp_ssrc: u32,
    ) -> LegConfig {
        LegConfig {
            id,
            room,
            local,
            remote,
            profile: self.profile,
            remote_key: self.send_key.clone(),
            local_key: self.recv_key.clone(),
            media: self.media.clone(),
            rtcp_ssrc: appliance_rtcp_ssrc,
        }
    }

    /// What the peer publishes, as the appliance is told. Layers with a RID
    /// are announced by RID only, so the appliance learns their SSRCs.
    pub fn publish_spec(&self) -> PublishSpec {
        PublishSpec {
            audio_ssrc: self.audio_ssrc,
            video_layers: self
                .video
                .iter()
                .map(|l| LayerSpec {
                    rid: l.rid.clone(),
                    ssrc: if l.rid.is_some() { None } else { Some(l.ssrc) },
                    nominal_bps: u64::from(l.kbps) * 1000,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct SendLayer {
    seq: u16,
    ts: u32,
    keyframe_pending: bool,
    picture_id: u16,
}

/// What a peer saw on one stream it receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// The stream's SSRC.
    pub ssrc: u32,
    /// Packets received and decrypted (first copies and retransmissions).
    pub received: u64,
    /// Retransmissions received (RTX, or a resent number that was missing).
    pub retransmissions: u64,
    /// Sequence numbers missing now.
    pub missing: u64,
    /// Numbers that were missing and arrived later.
    pub recovered: u64,
    /// Copies of numbers already received.
    pub duplicates: u64,
    /// Payloads whose trailer did not verify.
    pub payload_mismatches: u64,
    /// Timestamps that went backwards on new packets.
    pub timestamp_regressions: u64,
    /// Packets received per publisher layer (trailer's layer byte).
    pub per_layer: [u64; 8],
}

#[derive(Debug)]
struct RecvStream {
    kind: MediaKind,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
    highest: Option<u64>,
    last_ts: u32,
    missing: BTreeSet<u64>,
    nack_counts: std::collections::HashMap<u64, u8>,
    report: StreamReport,
}

/// Counters of a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Packets that failed SRTP/SRTCP.
    pub srtp_failures: u64,
    /// Packets on unexpected SSRCs or payload types.
    pub unexpected: u64,
    /// PLI/FIR received (as a publisher).
    pub keyframe_requests: u64,
    /// transport-cc feedback received.
    pub twcc_feedback: u64,
    /// Receiver reports received.
    pub receiver_reports: u64,
    /// Sender reports received.
    pub sender_reports: u64,
    /// Media packets sent.
    pub sent: u64,
    /// Key frames sent.
    pub keyframes_sent: u64,
    /// Video packets sent, per layer.
    pub video_sent: [u64; 8],
}

/// A synthetic endpoint. See the [module documentation](self).
#[derive(Debug)]
pub struct Peer {
    config: PeerConfig,
    tx: SrtpContext,
    rx: SrtpContext,
    audio_seq: u16,
    audio_ts: u32,
    layers: Vec<SendLayer>,
    frame: u64,
    transport_seq: u16,
    rng: u64,
    scratch: Box<[u8]>,
    streams: Vec<RecvStream>,
    report: PeerReport,
    nack_scratch: Vec<u16>,
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Whether a payload's trailer verifies; its layer byte if so.
pub fn check_trailer(payload: &[u8]) -> Option<u8> {
    let body = payload.len().checked_sub(4)?;
    if body < 3 || fnv1a(&payload[..body]).to_be_bytes() != payload[body..] {
        return None;
    }
    Some(payload[body - 3])
}

impl Peer {
    /// A peer with its SRTP contexts.
    pub fn new(config: PeerConfig) -> Result<Self, PeerError> {
        let tx = SrtpContext::new(config.profile, &config.send_key)?;
        // A receive window wide enough for retransmissions after a burst.
        let rx = SrtpContext::with_config(
            config.profile,
            &config.recv_key,
            crate::srtp::SrtpConfig {
                replay_window: 2048,
                ..Default::default()
            },
        )?;
        let mut rng = config.seed | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let layers = config
            .video
            .iter()
            .map(|_| SendLayer {
                seq: next() as u16,
                ts: next() as u32,
                keyframe_pending: true,
                picture_id: next() as u16 & 0x7fff,
            })
            .collect();
        Ok(Self {
            audio_seq: next() as u16,
            audio_ts: next() as u32,
            rng: next(),
            layers,
            frame: 0,
            transport_seq: 0,
            tx,
            rx,
            scratch: vec![0u8; PACKET_BUF_LEN].into_boxed_slice(),
            streams: Vec::new(),
            report: PeerReport::default(),
            nack_scratch: Vec::with_capacity(MAX_NACK),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Counters.
    pub fn report(&self) -> &PeerReport {
        &self.report
    }

    /// What the peer saw on each stream it receives.
    pub fn streams(&self) -> impl Iterator<Item = (MediaKind, &StreamReport)> {
        self.streams.iter().map(|s| (s.kind, &s.report))
    }

    /// The report of the stream with `ssrc`.
    pub fn stream(&self, ssrc: u32) -> Option<&StreamReport> {
        self.streams
            .iter()
            .find(|s| s.ssrc == ssrc)
            .map(|s| &s.report)
    }

    /// Announces the streams the appliance will send for one publisher.
    pub fn expect(&mut self, ssrcs: SubscribeSpec) {
        for (kind, ssrc, rtx) in [
            (MediaKind::Audio, ssrcs.audio_ssrc, None),
            (
                MediaKind::Video,
                ssrcs.video_ssrc,
                Some(ssrcs.video_rtx_ssrc),
            ),
        ] {
            self.streams.push(RecvStream {
                kind,
                ssrc,
                rtx_ssrc: rtx,
                highest: None,
                last_ts: 0,
                missing: BTreeSet::new(),
                nack_counts: std::collections::HashMap::new(),
                report: StreamReport {
                    ssrc,
                    ..StreamReport::default()
                },
            });
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn fill(&mut self, from: usize, to: usize) {
        let mut at = from;
        while at < to {
            let bytes = self.next_rand().to_le_bytes();
            let n = (to - at).min(8);
            self.scratch[at..at + n].copy_from_slice(&bytes[..n]);
            at += n;
        }
    }

    /// Builds one protected packet from `self.scratch[..payload]` into `out`.
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        marker: bool,
        rid: Option<usize>,
        payload: usize,
        now_us: u64,
        out: &mut [u8],
    ) -> Result<usize, PeerError> {
        let ids = self.config.media.extensions;
        let abs = rtp_ext::AbsSendTime::from_duration(std::time::Duration::from_micros(now_us))
            .raw()
            .to_be_bytes();
        let tcc = self.transport_seq.to_be_bytes();
        self.transport_seq = self.transport_seq.wrapping_add(1);
        let rid_bytes: &[u8] = match (rid, ids.rid) {
            (Some(l), Some(_)) => self.config.video[l]
                .rid
                .as_deref()
                .map_or(&[][..], str::as_bytes),
            _ => &[],
        };
        let mut elements: [(u8, &[u8]); 3] = [(0, &[]); 3];
        let mut n = 0;
        if let (Some(id), false) = (ids.rid, rid_bytes.is_empty()) {
            elements[n] = (id, rid_bytes);
            n += 1;
        }
        if let Some(id) = ids.abs_send_time {
            elements[n] = (id, &abs[1..]);
            n += 1;
        }
        if let Some(id) = ids.transport_cc {
            elements[n] = (id, &tcc);
            n += 1;
        }
        let mut ext = [0u8; 32];
        let ext_len = rtp_ext::write_elements(&mut ext, ExtensionForm::OneByte, &elements[..n])?;
        let mut builder = RtpHeaderBuilder::new(pt, seq, ts, ssrc).marker(marker);
        if ext_len > 0 {
            builder = builder.extension(ONE_BYTE_PROFILE, &ext[..ext_len]);
        }
        let header = builder.write(out)?;
        let len = header + payload;
        out[header..len].copy_from_slice(&self.scratch[..payload]);
        self.report.sent += 1;
        Ok(self.tx.protect_rtp(out, len)?)
    }

    fn seal_trailer(&mut self, body_end: usize, layer: u8, seq: u16) {
        self.scratch[body_end] = layer;
        self.scratch[body_end + 1..body_end + 3].copy_from_slice(&seq.to_be_bytes());
        let hash = fnv1a(&self.scratch[..body_end + 3]);
        self.scratch[body_end + 3..body_end + TRAILER_LEN].copy_from_slice(&hash.to_be_bytes());
    }

    /// One 20 ms audio packet into `out`; returns its length.
    pub fn audio_packet(&mut self, now_us: u64, out: &mut [u8]) -> Result<usize, PeerError> {
        let ssrc = self.config.audio_ssrc.ok_or(PeerError::UnexpectedSsrc(0))?;
        let pt = self
            .config
            .media
            .audio_pt
            .ok_or(PeerError::UnexpectedPayloadType(0))?;
        let payload = self.config.audio_payload.max(TRAILER_LEN + 1);
        let seq = self.audio_seq;
        let ts = self.audio_ts;
        self.audio_seq = seq.wrapping_add(1);
        self.audio_ts = ts.wrapping_add(960);
        self.fill(0, payload - TRAILER_LEN);
        self.seal_trailer(payload - TRAILER_LEN, AUDIO_LAYER, seq);
        self.packet(pt, seq, ts, ssrc, false, None, payload, now_us, out)
    }

    /// Bytes of one frame of `layer` (key frames are four times larger).
    fn frame_bytes(&self, layer: usize, keyframe: bool) -> usize {
        let kbps = self.config.video[layer].kbps as usize;
        let base = kbps * 1000 / 8 / self.config.fps.max(1) as usize;
        if keyframe {
            base * 4
        } else {
            base
        }
    }

    /// The packets of the next frame of every layer, each handed to `emit`
    /// as (layer, protected bytes). Packets of one frame have equal sizes
    /// except the last, as encoders packetise.
    pub fn video_frame(
        &mut self,
        now_us: u64,
        mut emit: impl FnMut(usize, &[u8]),
    ) -> Result<(), PeerError> {
        let mut out = [0u8; PACKET_BUF_LEN];
        let frame = self.frame;
        self.frame += 1;
        let (pt, _) = self
            .config
            .media
            .video
            .ok_or(PeerError::UnexpectedPayloadType(0))?;
        let ts_step = 90_000 / self.config.fps.max(1);
        for layer in 0..self.layers.len() {
            let periodic = self.config.keyframe_interval > 0
                && frame.is_multiple_of(u64::from(self.config.keyframe_interval));
            let keyframe = self.layers[layer].keyframe_pending || periodic;
            self.layers[layer].keyframe_pending = false;
            if keyframe {
                self.report.keyframes_sent += 1;
            }
            let bytes = self.frame_bytes(layer, keyframe);
            let max = self.config.max_video_payload.clamp(64, 1200);
            let count = bytes.div_ceil(max).max(1);
            let body = (bytes / count).clamp(VP8_HEADER_LEN + TRAILER_LEN + 4, max);
            let ts = self.layers[layer].ts;
            self.layers[layer].ts = ts.wrapping_add(ts_step);
            let picture_id = self.layers[layer].picture_id;
            self.layers[layer].picture_id = (picture_id + 1) & 0x7fff;
            let ssrc = self.config.video[layer].ssrc;
            for i in 0..count {
                let seq = self.layers[layer].seq;
                self.layers[layer].seq = seq.wrapping_add(1);
                let first = i == 0;
                // VP8 payload descriptor (RFC 7741): X, S on the first
                // packet, 15-bit PictureID; then the payload header whose
                // P bit is clear on key frames.
                self.scratch[0] = 0x80 | if first { 0x10 } else { 0 };
                self.scratch[1] = 0x80;
                self.scratch[2] = 0x80 | (picture_id >> 8) as u8;
                self.scratch[3] = picture_id as u8;
                self.scratch[4] = if first && keyframe { 0x00 } else { 0x01 };
                self.fill(VP8_HEADER_LEN, body - TRAILER_LEN);
                self.seal_trailer(body - TRAILER_LEN, layer as u8, seq);
                let marker = i + 1 == count;
                let len = self.packet(
                    pt,
                    seq,
                    ts,
                    ssrc,
                    marker,
                    Some(layer),
                    body,
                    now_us,
                    &mut out,
                )?;
                if let Some(n) = self.report.video_sent.get_mut(layer) {
                    *n += 1;
                }
                emit(layer, &out[..len]);
            }
        }
        Ok(())
    }

    /// A REMB of `bps` into `out`; returns its length.
    pub fn remb(&mut self, bps: u64, out: &mut [u8]) -> Result<usize, PeerError> {
        let mut ssrcs = [0u32; 16];
        let mut n = 0;
        for s in self.streams.iter().filter(|s| s.kind == MediaKind::Video) {
            if n < ssrcs.len() {
                ssrcs[n] = s.ssrc;
                n += 1;
            }
        }
        let len = rtcp::build_remb(self.config.rtcp_ssrc, bps, &ssrcs[..n], out)?;
        Ok(self.tx.protect_rtcp(out, len)?)
    }

    /// Transport-cc feedback on what `recorder` saw since its last report,
    /// into `out`; `None` if there is nothing new.
    pub fn transport_cc(
        &mut self,
        recorder: &mut super::bwe::TwccRecorder,
        media_ssrc: u32,
        out: &mut [u8],
    ) -> Result<Option<usize>, PeerError> {
        let Some(len) = recorder.build_feedback(self.config.rtcp_ssrc, media_ssrc, out) else {
            return Ok(None);
        };
        Ok(Some(self.tx.protect_rtcp(out, len)?))
    }

    /// A sender report for video `layer` (RTP timestamp of its last frame)
    /// into `out`.
    pub fn sender_report(
        &mut self,
        layer: usize,
        ntp: u64,
        out: &mut [u8],
    ) -> Result<usize, PeerError> {
        let ssrc = self.config.video[layer].ssrc;
        let info = rtcp::SenderInfo {
            ntp_timestamp: ntp,
            rtp_timestamp: self.layers[layer].ts,
            packet_count: self.report.sent as u32,
            octet_count: 0,
        };
        let len = rtcp::build_sender_report(ssrc, &info, &[], out)?;
        Ok(self.tx.protect_rtcp(out, len)?)
    }

    /// A PLI for received stream `media_ssrc` into `out`.
    pub fn pli(&mut self, media_ssrc: u32, out: &mut [u8]) -> Result<usize, PeerError> {
        let len = rtcp::build_pli(self.config.rtcp_ssrc, media_ssrc, out)?;
        Ok(self.tx.protect_rtcp(out, len)?)
    }

    /// A NACK for the missing numbers of the first video stream that has
    /// any (each number is NACKed a bounded number of times); `None` if
    /// nothing is missing.
    pub fn nack(&mut self, out: &mut [u8]) -> Result<Option<usize>, PeerError> {
        let sender = self.config.rtcp_ssrc;
        for s in self
            .streams
            .iter_mut()
            .filter(|s| s.kind == MediaKind::Video)
        {
            self.nack_scratch.clear();
            for &ext in &s.missing {
                let count = s.nack_counts.entry(ext).or_insert(0);
                if *count < MAX_NACKS_PER_SEQ && self.nack_scratch.len() < MAX_NACK {
                    *count += 1;
                    self.nack_scratch.push(ext as u16);
                }
            }
            if self.nack_scratch.is_empty() {
                continue;
            }
            let len = rtcp::build_nack(sender, s.ssrc, &mut self.nack_scratch, out)?;
            return Ok(Some(self.tx.protect_rtcp(out, len)?));
        }
        Ok(None)
    }

    /// A NACK for `lost` numbers of received stream `media_ssrc` into `out`.
    pub fn nack_seqs(
        &mut self,
        media_ssrc: u32,
        lost: &mut [u16],
        out: &mut [u8],
    ) -> Result<usize, PeerError> {
        let len = rtcp::build_nack(self.config.rtcp_ssrc, media_ssrc, lost, out)?;
        Ok(self.tx.protect_rtcp(out, len)?)
    }

    /// Takes one datagram from the appliance.
    pub fn receive(&mut self, buf: &mut [u8]) -> Result<(), PeerError> {
        if crate::wire::demux::is_rtcp(buf) {
            return self.receive_rtcp(buf);
        }
        let plain = match self.rx.unprotect_rtp(buf) {
            Ok(len) => len,
            Err(e) => {
                self.report.srtp_failures += 1;
                return Err(e.into());
            }
        };
        let rtp = RtpPacket::new_checked(&buf[..plain])?;
        let ssrc = rtp.ssrc();
        let media = &self.config.media;
        let (audio_pt, video_pt, rtx_pt) =
            (media.audio_pt, media.video.map(|(pt, _)| pt), media.rtx_pt);
        let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.ssrc == ssrc || s.rtx_ssrc == Some(ssrc))
        else {
            self.report.unexpected += 1;
            return Err(PeerError::UnexpectedSsrc(ssrc));
        };
        let pt = rtp.payload_type();
        let is_rtx = stream.rtx_ssrc == Some(ssrc);
        let expected_pt = match (is_rtx, stream.kind) {
            (true, _) => rtx_pt,
            (false, MediaKind::Audio) => audio_pt,
            (false, MediaKind::Video) => video_pt,
        };
        if expected_pt != Some(pt) {
            self.report.unexpected += 1;
            return Err(PeerError::UnexpectedPayloadType(pt));
        }
        let (seq, payload) = if is_rtx {
            let p = rtp.payload();
            if p.len() < 2 {
                return Err(WireError::Malformed {
                    layer: "rtx",
                    reason: "no original sequence number",
                }
                .into());
            }
            (u16::from_be_bytes([p[0], p[1]]), &p[2..])
        } else {
            (rtp.sequence_number(), rtp.payload())
        };
        let r = &mut stream.report;
        r.received += 1;
        if is_rtx {
            r.retransmissions += 1;
        }
        match check_trailer(payload) {
            Some(layer) => {
                if let Some(n) = r.per_layer.get_mut(usize::from(layer)) {
                    *n += 1;
                }
            }
            None => r.payload_mismatches += 1,
        }
        let ext = extend_sequence(stream.highest.unwrap_or(1 << 16), seq);
        match stream.highest {
            None => {
                stream.highest = Some(ext);
                stream.last_ts = rtp.timestamp();
            }
            Some(h) if ext > h => {
                for missing in h + 1..ext {
                    stream.missing.insert(missing);
                }
                stream.highest = Some(ext);
                if (rtp.timestamp().wrapping_sub(stream.last_ts) as i32) < 0 {
                    r.timestamp_regressions += 1;
                }
                stream.last_ts = rtp.timestamp();
            }
            Some(_) => {
                if stream.missing.remove(&ext) {
                    r.recovered += 1;
                    if !is_rtx {
                        r.retransmissions += 1;
                    }
                } else {
                    r.duplicates += 1;
                }
            }
        }
        r.missing = stream.missing.len() as u64;
        Ok(())
    }

    fn receive_rtcp(&mut self, buf: &mut [u8]) -> Result<(), PeerError> {
        let plain = match self.rx.unprotect_rtcp(buf) {
            Ok(len) => len,
            Err(e) => {
                self.report.srtp_failures += 1;
                return Err(e.into());
            }
        };
        for packet in rtcp::iter_compound(&buf[..plain]) {
            match packet? {
                RtcpPacket::Pli(p) => {
                    self.report.keyframe_requests += 1;
                    let media = p.media_ssrc();
                    self.request_keyframe(media);
                }
                RtcpPacket::Fir(f) => {
                    self.report.keyframe_requests += 1;
                    let ssrcs: [Option<u32>; 4] = {
                        let mut a = [None; 4];
                        for (slot, e) in a.iter_mut().zip(f.entries()) {
                            *slot = Some(e.ssrc);
                        }
                        a
                    };
                    for ssrc in ssrcs.into_iter().flatten() {
                        self.request_keyframe(ssrc);
                    }
                }
                RtcpPacket::TransportCc(_) => self.report.twcc_feedback += 1,
                RtcpPacket::ReceiverReport(_) => self.report.receiver_reports += 1,
                RtcpPacket::SenderReport(_) => self.report.sender_reports += 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn request_keyframe(&mut self, ssrc: u32) {
        if let Some(i) = self.config.video.iter().position(|l| l.ssrc == ssrc) {
            self.layers[i].keyframe_pending = true;
        }
    }

    /// Sum over received streams of `kind` of what `f` reads.
    pub fn total(&self, kind: MediaKind, f: impl Fn(&StreamReport) -> u64) -> u64 {
        self.streams
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| f(&s.report))
            .sum()
    }
}

/// Master keys for tests and benchmarks, derived from `seed`.
pub fn test_key(profile: SrtpProfile, seed: u64) -> MasterKey {
    let mut bytes = [0u8; 46];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let n = profile.master_key_len() + profile.master_salt_len();
    // The lengths come from the profile itself, so this cannot fail.
    MasterKey::from_concatenated(profile, &bytes[..n]).expect("lengths from the profile")
}
