//! The sfu leg of the demo: one publisher, the appliance's media core, one
//! subscriber, on a virtual clock. Nothing here touches a socket; the media
//! core is fed bytes and time exactly as the io_uring worker feeds it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::layer::{LayerSelector, SelectorConfig};
use dataplane::rewrite::{
    apply_to_packet, Decision, DropReason, ExtensionIdMap, IncomingPacket, PayloadTypeMap,
    RewriterConfig, StreamRewriter,
};
use dataplane::srtp::{MasterKey, SrtpContext, SrtpProfile};
use dataplane::wire::rtp::{extend_sequence, RtpHeaderBuilder, RtpPacket};
use dataplane::wire::rtp_ext::{self, ExtensionForm, ExtensionIter, ONE_BYTE_PROFILE};
use dataplane::wire::vp8::Vp8Payload;
use serde::Serialize;

use super::config::{profile_by_name, DemoConfig};

/// Publisher's extension ids (as its SDP offer would map them).
const EXT_MID: u8 = 1;
const EXT_RID: u8 = 2;
const EXT_ABS_SEND_TIME: u8 = 3;
const EXT_TRANSPORT_CC: u8 = 4;
/// The subscriber negotiated other ids and no RID (it receives one stream).
const SUB_EXT_ABS_SEND_TIME: u8 = 2;
const SUB_EXT_TRANSPORT_CC: u8 = 3;
const PUB_PT_VP8: u8 = 96;
const PUB_PT_OPUS: u8 = 111;
const SUB_PT_VP8: u8 = 98;
const SUB_PT_OPUS: u8 = 109;
const VIDEO_CLOCK: u32 = 90_000;
const AUDIO_CLOCK: u32 = 48_000;
/// Trailer on every payload: layer, original sequence number, FNV-1a of the rest.
const TRAILER_LEN: usize = 7;
const AUDIO_LAYER_TAG: u8 = 0xff;
/// The worker rate-limits key frame requests to the publisher.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
const SELECTOR_TICK_US: u64 = 100_000;
const BUF_LEN: usize = 1500;

pub struct SfuOutcome {
    pub report: SfuReport,
    /// The publisher's SRTP packets and key, which the relay leg forwards as is.
    pub publisher_key: PublisherMedia,
}

/// What the relay leg reuses from the sfu leg: the publisher's protected
/// packets, tagged with their layer (None for audio), and its key.
pub struct PublisherMedia {
    pub profile: SrtpProfile,
    pub key: MasterKey,
    pub packets: Vec<(Option<u8>, u32, Vec<u8>)>,
    pub video_ssrcs: Vec<u32>,
    pub audio_ssrc: u32,
}

#[derive(Debug, Default, Serialize)]
pub struct SfuReport {
    pub publisher_profile: &'static str,
    pub subscriber_profile: &'static str,
    pub seconds: u32,
    pub timeline: Vec<SecondReport>,
    pub published_video: u64,
    pub published_audio: u64,
    pub lost_on_publisher_leg: u64,
    pub forwarded_video: u64,
    pub forwarded_audio: u64,
    pub dropped_video: BTreeMap<&'static str, u64>,
    pub layer_switches: u64,
    pub keyframe_requests: u64,
    pub rewriter_gaps_passed: u64,
    pub subscriber: SubscriberReport,
    /// Appliance work per packet (unprotect, parse, select, rewrite, protect), one core.
    pub core_packets: u64,
    pub core_ns_per_packet: f64,
    pub core_kpps: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct SecondReport {
    pub t_s: u32,
    pub estimate_kbps: u64,
    pub target_layer: Option<String>,
    pub forwarded_layer: Option<String>,
    pub reason: &'static str,
    pub video_out_kbps: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct SubscriberReport {
    pub video_received: u64,
    pub audio_received: u64,
    pub srtp_failures: u64,
    pub payload_mismatches: u64,
    pub video_seq_gaps: u64,
    pub audio_seq_gaps: u64,
    pub out_of_order: u64,
    pub ssrc_changes: u64,
    pub timestamp_regressions: u64,
    pub wrong_payload_type: u64,
    pub extension_errors: u64,
    pub received_per_layer: BTreeMap<String, u64>,
}

pub fn run(config: &DemoConfig) -> Result<SfuOutcome> {
    let pub_profile = profile_by_name(&config.consult.publisher_profile)?;
    let sub_profile = profile_by_name(&config.consult.subscriber_profile)?;
    let mut rng = XorShift::new(config.consult.seed);
    let pub_key = demo_key(pub_profile, &mut rng)?;
    let sub_key = demo_key(sub_profile, &mut rng)?;

    let t0 = Instant::now();
    let mut publisher = Publisher::new(config, pub_profile, &pub_key, &mut rng)?;
    let mut appliance = Appliance::new(config, pub_profile, &pub_key, sub_profile, &sub_key, t0)?;
    let mut subscriber = Subscriber::new(config, sub_profile, &sub_key)?;
    let mut report = SfuReport {
        publisher_profile: pub_profile.name(),
        subscriber_profile: sub_profile.name(),
        seconds: config.consult.seconds,
        ..SfuReport::default()
    };
    let mut relay_packets = Vec::new();
    let mut video_out_bytes = vec![0u64; config.consult.seconds as usize + 1];
    let mut core_time = Duration::ZERO;

    let end_us = u64::from(config.consult.seconds) * 1_000_000;
    let audio_step_us = u64::from(config.audio.packet_ms) * 1000;
    let mut next_audio_us = 0u64;
    let mut video_frame = 0u64;
    let mut next_tick_us = 0u64;
    let mut buf = [0u8; BUF_LEN];
    loop {
        let next_video_us = video_frame * 1_000_000 / u64::from(config.video.fps);
        let now_us = next_tick_us.min(next_audio_us).min(next_video_us);
        if now_us >= end_us {
            break;
        }
        let now = t0 + Duration::from_micros(now_us);
        let mut outgoing: Vec<(Option<u8>, Vec<u8>)> = Vec::new();
        if now_us == next_tick_us {
            let estimate = config.estimate_at(now_us as f64 / 1e6);
            appliance.tick(estimate, now);
            if now_us.is_multiple_of(1_000_000) {
                report
                    .timeline
                    .push(appliance.sample(config, now_us, estimate));
            }
            next_tick_us += SELECTOR_TICK_US;
            continue;
        }
        if now_us == next_audio_us {
            outgoing.push((None, publisher.audio_packet(now_us)?));
            next_audio_us += audio_step_us;
        }
        if now_us == next_video_us {
            for layer in 0..config.video.layers.len() as u8 {
                for packet in publisher.video_frame(layer, video_frame, now_us)? {
                    outgoing.push((Some(layer), packet));
                }
            }
            video_frame += 1;
        }
        for (layer, packet) in outgoing {
            match layer {
                Some(_) => report.published_video += 1,
                None => report.published_audio += 1,
            }
            let ssrc = RtpPacket::new_checked_header(&packet[..])
                .map(|p| p.ssrc())
                .unwrap_or_default();
            relay_packets.push((layer, ssrc, packet.clone()));
            if rng.percent() < config.consult.ingress_loss_percent {
                report.lost_on_publisher_leg += 1;
                continue;
            }
            buf[..packet.len()].copy_from_slice(&packet);
            let started = Instant::now();
            let out = appliance.on_packet(&mut buf, packet.len(), now)?;
            core_time += started.elapsed();
            if let Some(layer) = appliance.keyframe_request(now) {
                publisher.request_keyframe(layer);
                report.keyframe_requests += 1;
            }
            if let Some(len) = out {
                let video = subscriber.on_packet(&mut buf[..len])?;
                if video {
                    video_out_bytes[(now_us / 1_000_000) as usize] += len as u64;
                }
            }
        }
    }
    for second in &mut report.timeline {
        second.video_out_kbps = video_out_bytes[second.t_s as usize] as f64 * 8.0 / 1000.0;
    }
    let video = appliance.video.counters();
    report.forwarded_video = video.forwarded();
    report.forwarded_audio = appliance.audio.counters().forwarded();
    for reason in DropReason::ALL {
        let n = video.dropped(reason);
        if n > 0 {
            report.dropped_video.insert(reason.as_str(), n);
        }
    }
    report.layer_switches = video.switches();
    report.rewriter_gaps_passed = video.gaps_passed();
    report.core_packets = appliance.packets;
    report.core_ns_per_packet = core_time.as_nanos() as f64 / appliance.packets.max(1) as f64;
    report.core_kpps = appliance.packets as f64 / core_time.as_secs_f64().max(1e-9) / 1000.0;
    subscriber.report.received_per_layer = subscriber
        .per_layer
        .iter()
        .enumerate()
        .map(|(i, n)| (config.video.layers[i].rid.clone(), *n))
        .collect();
    report.subscriber = subscriber.report;
    Ok(SfuOutcome {
        report,
        publisher_key: PublisherMedia {
            profile: pub_profile,
            key: pub_key,
            packets: relay_packets,
            video_ssrcs: publisher.video.iter().map(|v| v.ssrc).collect(),
            audio_ssrc: publisher.audio_ssrc,
        },
    })
}

pub fn print(config: &DemoConfig, r: &SfuReport) {
    let layers: Vec<String> = config
        .video
        .layers
        .iter()
        .map(|l| format!("{} {} kbit/s", l.rid, l.kbps))
        .collect();
    println!(
        "1. sfu leg: the media core on a virtual clock ({} s of media, no sockets)",
        r.seconds
    );
    println!(
        "   publisher: simulcast [{}] at {} fps + Opus, SRTP {}, {}% loss on its leg",
        layers.join(", "),
        config.video.fps,
        r.publisher_profile,
        config.consult.ingress_loss_percent
    );
    println!(
        "   subscriber: its own key, SRTP {}, other payload types and extension ids",
        r.subscriber_profile
    );
    println!();
    println!("   t(s)  estimate   target  forwarded  reason              video out");
    for s in &r.timeline {
        println!(
            "   {:>4}  {:>5} kb/s  {:>6}  {:>9}  {:<18}  {:>6.0} kb/s",
            s.t_s,
            s.estimate_kbps,
            s.target_layer.as_deref().unwrap_or("-"),
            s.forwarded_layer.as_deref().unwrap_or("-"),
            s.reason,
            s.video_out_kbps
        );
    }
    let sub = &r.subscriber;
    println!();
    println!(
        "   published {} video + {} audio packets; {} lost on the publisher's leg",
        r.published_video, r.published_audio, r.lost_on_publisher_leg
    );
    let dropped: Vec<String> = r
        .dropped_video
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "   forwarded {} video + {} audio; video not forwarded: {}",
        r.forwarded_video,
        r.forwarded_audio,
        dropped.join(", ")
    );
    println!(
        "   layer switches {}, key frame requests to the publisher {}",
        r.layer_switches, r.keyframe_requests
    );
    println!(
        "   subscriber decrypted {} video + {} audio with its own key; per layer: {}",
        sub.video_received,
        sub.audio_received,
        sub.received_per_layer
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "   subscriber checks: SRTP failures {}, payload mismatches {}, SSRC changes {}, timestamp regressions {}, wrong PT {}, extension errors {}",
        sub.srtp_failures,
        sub.payload_mismatches,
        sub.ssrc_changes,
        sub.timestamp_regressions,
        sub.wrong_payload_type,
        sub.extension_errors
    );
    println!(
        "   sequence gaps at the subscriber: video {}, audio {} (real losses passed on for NACK; the forwarder's own drops leave none: rewriter passed {} gaps)",
        sub.video_seq_gaps, sub.audio_seq_gaps, r.rewriter_gaps_passed
    );
    println!(
        "   media core: {} packets received, {:.0} ns each = {:.0} kpps on one core (every packet unprotected; forwarded ones rewritten and protected again)",
        r.core_packets, r.core_ns_per_packet, r.core_kpps
    );
}

fn demo_key(profile: SrtpProfile, rng: &mut XorShift) -> Result<MasterKey> {
    let mut key = [0u8; 32];
    let mut salt = [0u8; 14];
    rng.fill(&mut key);
    rng.fill(&mut salt);
    MasterKey::new(
        &key[..profile.master_key_len()],
        &salt[..profile.master_salt_len()],
    )
    .context("demo master key")
}

struct VideoLayerState {
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    rid: String,
    kbps: u32,
    keyframe_pending: bool,
    picture_id: u16,
}

struct Publisher {
    srtp: SrtpContext,
    video: Vec<VideoLayerState>,
    audio_ssrc: u32,
    audio_seq: u16,
    audio_ts_base: u32,
    audio_payload: usize,
    audio_samples_per_packet: u32,
    fps: u32,
    max_payload: usize,
    keyframe_every: u64,
    transport_seq: u16,
    rng: XorShift,
}

impl Publisher {
    fn new(
        config: &DemoConfig,
        profile: SrtpProfile,
        key: &MasterKey,
        rng: &mut XorShift,
    ) -> Result<Self> {
        let video = config
            .video
            .layers
            .iter()
            .map(|layer| VideoLayerState {
                ssrc: rng.next() as u32,
                seq: rng.next() as u16,
                ts_base: rng.next() as u32,
                rid: layer.rid.clone(),
                kbps: layer.kbps,
                keyframe_pending: true,
                picture_id: rng.next() as u16 & 0x7fff,
            })
            .collect();
        Ok(Self {
            srtp: SrtpContext::new(profile, key)?,
            video,
            audio_ssrc: rng.next() as u32,
            audio_seq: rng.next() as u16,
            audio_ts_base: rng.next() as u32,
            audio_payload: config.audio.payload_bytes,
            audio_samples_per_packet: AUDIO_CLOCK / 1000 * config.audio.packet_ms,
            fps: config.video.fps,
            max_payload: config.video.max_payload_bytes,
            keyframe_every: u64::from(config.video.keyframe_interval_s)
                * u64::from(config.video.fps),
            transport_seq: 0,
            rng: XorShift::new(rng.next()),
        })
    }

    fn request_keyframe(&mut self, layer: u8) {
        if let Some(v) = self.video.get_mut(usize::from(layer)) {
            v.keyframe_pending = true;
        }
    }

    fn audio_packet(&mut self, now_us: u64) -> Result<Vec<u8>> {
        let index = now_us
            / (u64::from(self.audio_samples_per_packet) * 1_000_000 / u64::from(AUDIO_CLOCK));
        let ts = self
            .audio_ts_base
            .wrapping_add((index as u32).wrapping_mul(self.audio_samples_per_packet));
        let seq = self.audio_seq;
        self.audio_seq = seq.wrapping_add(1);
        let mut payload = vec![0u8; self.audio_payload];
        fill_payload(&mut payload, 0, AUDIO_LAYER_TAG, seq, &mut self.rng);
        self.packet(
            PUB_PT_OPUS,
            seq,
            ts,
            self.audio_ssrc,
            false,
            b"1",
            None,
            &payload,
            now_us,
        )
    }

    fn video_frame(&mut self, layer: u8, frame: u64, now_us: u64) -> Result<Vec<Vec<u8>>> {
        let fps = self.fps;
        let max_payload = self.max_payload;
        let periodic = frame.is_multiple_of(self.keyframe_every);
        let v = &mut self.video[usize::from(layer)];
        let keyframe = v.keyframe_pending || periodic;
        v.keyframe_pending = false;
        let picture_id = v.picture_id;
        v.picture_id = (picture_id + 1) & 0x7fff;
        let mut frame_bytes = (v.kbps as usize * 1000 / 8 / fps as usize).max(64);
        if keyframe {
            frame_bytes *= 3;
        }
        let ts = v
            .ts_base
            .wrapping_add((frame * u64::from(VIDEO_CLOCK) / u64::from(fps)) as u32);
        let (ssrc, rid) = (v.ssrc, v.rid.clone());
        let count = frame_bytes.div_ceil(max_payload - 8);
        let mut packets = Vec::with_capacity(count);
        for i in 0..count {
            let seq = self.video[usize::from(layer)].seq;
            self.video[usize::from(layer)].seq = seq.wrapping_add(1);
            let first = i == 0;
            let body = (frame_bytes / count).max(TRAILER_LEN + 8);
            let mut payload = vec![0u8; body];
            // VP8 payload descriptor (RFC 7741): X, S on the first packet, 15-bit PictureID.
            payload[0] = 0x80 | if first { 0x10 } else { 0 };
            payload[1] = 0x80;
            payload[2] = 0x80 | (picture_id >> 8) as u8;
            payload[3] = picture_id as u8;
            // VP8 payload header: P bit clear on key frames.
            payload[4] = if first && keyframe { 0x00 } else { 0x01 };
            fill_payload(&mut payload, 5, layer, seq, &mut self.rng);
            let marker = i + 1 == count;
            packets.push(self.packet(
                PUB_PT_VP8,
                seq,
                ts,
                ssrc,
                marker,
                b"0",
                Some(rid.as_bytes()),
                &payload,
                now_us,
            )?);
        }
        Ok(packets)
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        marker: bool,
        mid: &[u8],
        rid: Option<&[u8]>,
        payload: &[u8],
        now_us: u64,
    ) -> Result<Vec<u8>> {
        let abs = rtp_ext::AbsSendTime::from_duration(Duration::from_micros(now_us)).raw();
        let abs = abs.to_be_bytes();
        let twcc = self.transport_seq.to_be_bytes();
        self.transport_seq = self.transport_seq.wrapping_add(1);
        let mut elements: Vec<(u8, &[u8])> = vec![(EXT_MID, mid)];
        if let Some(rid) = rid {
            elements.push((EXT_RID, rid));
        }
        elements.push((EXT_ABS_SEND_TIME, &abs[1..]));
        elements.push((EXT_TRANSPORT_CC, &twcc));
        let mut ext = [0u8; 64];
        let ext_len = rtp_ext::write_elements(&mut ext, ExtensionForm::OneByte, &elements)?;
        let mut buf = vec![0u8; BUF_LEN];
        let header = RtpHeaderBuilder::new(pt, seq, ts, ssrc)
            .marker(marker)
            .extension(ONE_BYTE_PROFILE, &ext[..ext_len])
            .write(&mut buf)?;
        let len = header + payload.len();
        buf[header..len].copy_from_slice(payload);
        let protected = self.srtp.protect_rtp(&mut buf, len)?;
        buf.truncate(protected);
        Ok(buf)
    }
}

/// Fills `payload` from `filler_from` on with filler, then the trailer the
/// subscriber verifies (its hash covers the whole payload before it).
fn fill_payload(payload: &mut [u8], filler_from: usize, layer: u8, seq: u16, rng: &mut XorShift) {
    let body = payload.len() - TRAILER_LEN;
    rng.fill(&mut payload[filler_from..body]);
    payload[body] = layer;
    payload[body + 1..body + 3].copy_from_slice(&seq.to_be_bytes());
    let hash = fnv1a(&payload[..body + 3]);
    payload[body + 3..].copy_from_slice(&hash.to_be_bytes());
}

fn trailer_ok(payload: &[u8]) -> bool {
    let Some(body) = payload.len().checked_sub(4) else {
        return false;
    };
    let hash = fnv1a(&payload[..body]);
    payload[body..] == hash.to_be_bytes()
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The appliance's side of the consult: what one io_uring worker does per
/// packet for this publisher → subscriber pair.
struct Appliance {
    publisher_rx: SrtpContext,
    subscriber_tx: SrtpContext,
    selector: LayerSelector,
    video: StreamRewriter,
    audio: StreamRewriter,
    extension_ids: ExtensionIdMap,
    rids: Vec<String>,
    last_keyframe_request: Option<Instant>,
    packets: u64,
}

impl Appliance {
    fn new(
        config: &DemoConfig,
        pub_profile: SrtpProfile,
        pub_key: &MasterKey,
        sub_profile: SrtpProfile,
        sub_key: &MasterKey,
        now: Instant,
    ) -> Result<Self> {
        let mut selector =
            LayerSelector::new(SelectorConfig::default(), config.video.layers.len())?;
        for (i, layer) in config.video.layers.iter().enumerate() {
            selector.set_layer_bitrate(i as u8, u64::from(layer.kbps) * 1000, now)?;
        }
        let mut video_pts = PayloadTypeMap::new();
        video_pts.insert(PUB_PT_VP8, SUB_PT_VP8)?;
        let mut audio_pts = PayloadTypeMap::new();
        audio_pts.insert(PUB_PT_OPUS, SUB_PT_OPUS)?;
        let mut video_cfg = RewriterConfig::new(0x5b0a_0001, VIDEO_CLOCK, video_pts);
        video_cfg.initial_seq = 1000;
        let mut audio_cfg = RewriterConfig::new(0x5b0a_0002, AUDIO_CLOCK, audio_pts);
        audio_cfg.initial_seq = 5000;
        let mut audio = StreamRewriter::new(audio_cfg)?;
        audio.set_target_layer(Some(0));
        let mut extension_ids = ExtensionIdMap::new();
        extension_ids.insert(EXT_MID, EXT_MID)?;
        extension_ids.insert(EXT_ABS_SEND_TIME, SUB_EXT_ABS_SEND_TIME)?;
        extension_ids.insert(EXT_TRANSPORT_CC, SUB_EXT_TRANSPORT_CC)?;
        Ok(Self {
            publisher_rx: SrtpContext::new(pub_profile, pub_key)?,
            subscriber_tx: SrtpContext::new(sub_profile, sub_key)?,
            selector,
            video: StreamRewriter::new(video_cfg)?,
            audio,
            extension_ids,
            rids: config.video.layers.iter().map(|l| l.rid.clone()).collect(),
            last_keyframe_request: None,
            packets: 0,
        })
    }

    fn tick(&mut self, estimate_bps: u64, now: Instant) {
        let selection = self.selector.set_estimate(estimate_bps, now);
        self.video.set_target_layer(selection.layer);
    }

    fn sample(&self, config: &DemoConfig, now_us: u64, estimate_bps: u64) -> SecondReport {
        let name =
            |layer: Option<u8>| layer.map(|l| config.video.layers[usize::from(l)].rid.clone());
        let selection = self.selector.selection();
        SecondReport {
            t_s: (now_us / 1_000_000) as u32,
            estimate_kbps: estimate_bps / 1000,
            target_layer: name(selection.layer),
            forwarded_layer: name(self.video.current_layer()),
            reason: selection.reason.as_str(),
            video_out_kbps: 0.0,
        }
    }

    /// A key frame request for the publisher, if the rewriter waits for one
    /// and the last request is old enough.
    fn keyframe_request(&mut self, now: Instant) -> Option<u8> {
        if !self.video.needs_keyframe() {
            return None;
        }
        if self
            .last_keyframe_request
            .is_some_and(|last| now.duration_since(last) < KEYFRAME_REQUEST_INTERVAL)
        {
            return None;
        }
        self.last_keyframe_request = Some(now);
        self.video.target_layer()
    }

    /// One packet from the publisher: returns the length of the packet to
    /// send to the subscriber (protected in place), if any.
    fn on_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Result<Option<usize>> {
        self.packets += 1;
        let plain = self.publisher_rx.unprotect_rtp(&mut buf[..len])?;
        let rtp = RtpPacket::new_checked(&buf[..plain])?;
        let (rewriter, layer, keyframe) = match rtp.payload_type() {
            PUB_PT_VP8 => {
                let rid = match (rtp.extension_profile(), rtp.extension_data()) {
                    (Some(profile), Some(data)) => rtp_ext::find(profile, data, EXT_RID)?
                        .map(rtp_ext::read_rid)
                        .transpose()?,
                    _ => None,
                };
                let Some(layer) = rid.and_then(|rid| self.rids.iter().position(|r| r == rid))
                else {
                    bail!("video packet without a known RID");
                };
                let vp8 = Vp8Payload::new_checked(rtp.payload())?;
                let keyframe = vp8.is_keyframe();
                (&mut self.video, layer as u8, keyframe)
            }
            PUB_PT_OPUS => (&mut self.audio, 0, true),
            other => bail!("unexpected payload type {other}"),
        };
        let incoming = IncomingPacket {
            layer,
            ssrc: rtp.ssrc(),
            seq: rtp.sequence_number(),
            timestamp: rtp.timestamp(),
            payload_type: rtp.payload_type(),
            marker: rtp.marker(),
            keyframe,
            switch_point: false,
            arrival: now,
            discard: None,
        };
        match rewriter.process(&incoming) {
            Decision::Forward(forward) => {
                apply_to_packet(&mut buf[..plain], &forward, &self.extension_ids)?;
                let protected = self.subscriber_tx.protect_rtp(buf, plain)?;
                Ok(Some(protected))
            }
            Decision::Drop(_) => Ok(None),
        }
    }
}

struct Subscriber {
    srtp: SrtpContext,
    video: StreamCheck,
    audio: StreamCheck,
    per_layer: Vec<u64>,
    report: SubscriberReport,
}

#[derive(Default)]
struct StreamCheck {
    ssrc: Option<u32>,
    highest: Option<u64>,
    last_ts: Option<u32>,
}

impl Subscriber {
    fn new(config: &DemoConfig, profile: SrtpProfile, key: &MasterKey) -> Result<Self> {
        Ok(Self {
            srtp: SrtpContext::new(profile, key)?,
            video: StreamCheck::default(),
            audio: StreamCheck::default(),
            per_layer: vec![0; config.video.layers.len()],
            report: SubscriberReport::default(),
        })
    }

    /// Checks one packet as the subscriber receives it; true if it was video.
    fn on_packet(&mut self, buf: &mut [u8]) -> Result<bool> {
        let Ok(plain) = self.srtp.unprotect_rtp(buf) else {
            self.report.srtp_failures += 1;
            return Ok(false);
        };
        let rtp = RtpPacket::new_checked(&buf[..plain])?;
        let video = match rtp.payload_type() {
            SUB_PT_VP8 => true,
            SUB_PT_OPUS => false,
            _ => {
                self.report.wrong_payload_type += 1;
                return Ok(false);
            }
        };
        let r = &mut self.report;
        let (check, gaps) = if video {
            r.video_received += 1;
            (&mut self.video, &mut r.video_seq_gaps)
        } else {
            r.audio_received += 1;
            (&mut self.audio, &mut r.audio_seq_gaps)
        };
        if check.ssrc.is_some_and(|s| s != rtp.ssrc()) {
            r.ssrc_changes += 1;
        }
        check.ssrc = Some(rtp.ssrc());
        let ext = extend_sequence(check.highest.unwrap_or(0), rtp.sequence_number());
        match check.highest {
            None => check.highest = Some(ext),
            Some(highest) if ext > highest => {
                *gaps += ext - highest - 1;
                check.highest = Some(ext);
            }
            Some(_) => r.out_of_order += 1,
        }
        if let Some(last) = check.last_ts {
            if (rtp.timestamp().wrapping_sub(last) as i32) < 0 {
                r.timestamp_regressions += 1;
            }
        }
        check.last_ts = Some(rtp.timestamp());
        // The subscriber negotiated MID, abs-send-time and transport-cc on its own ids, no RID.
        let ext_ok = match (rtp.extension_profile(), rtp.extension_data()) {
            (Some(profile), Some(data)) => {
                let has = |id: u8, len: usize| {
                    rtp_ext::find(profile, data, id)
                        .ok()
                        .flatten()
                        .is_some_and(|v| v.len() == len)
                };
                // Exactly those three elements: RID was erased, nothing else crept in.
                let only_three = ExtensionIter::new(profile, data)
                    .is_ok_and(|it| it.map(|e| e.is_ok()).filter(|ok| *ok).count() == 3);
                has(EXT_MID, 1)
                    && has(SUB_EXT_ABS_SEND_TIME, 3)
                    && has(SUB_EXT_TRANSPORT_CC, 2)
                    && only_three
            }
            _ => false,
        };
        if !ext_ok {
            r.extension_errors += 1;
        }
        let payload = rtp.payload();
        if !trailer_ok(payload) {
            r.payload_mismatches += 1;
        } else if video {
            let layer = payload[payload.len() - TRAILER_LEN];
            if let Some(n) = self.per_layer.get_mut(usize::from(layer)) {
                *n += 1;
            }
        }
        Ok(video)
    }
}

/// Deterministic filler and loss pattern (xorshift64*), so runs repeat.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn percent(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_consult_is_clean_end_to_end() {
        let outcome = run(&DemoConfig::embedded()).expect("demo runs");
        let r = &outcome.report;
        let sub = &r.subscriber;
        assert_eq!(sub.srtp_failures, 0);
        assert_eq!(sub.payload_mismatches, 0);
        assert_eq!(sub.ssrc_changes, 0);
        assert_eq!(sub.timestamp_regressions, 0);
        assert_eq!(sub.wrong_payload_type, 0);
        assert_eq!(sub.extension_errors, 0);
        assert_eq!(sub.out_of_order, 0);
        assert_eq!(sub.video_received, r.forwarded_video);
        assert_eq!(sub.audio_received, r.forwarded_audio);
        // Audio is never dropped by the forwarder: only network loss is missing.
        assert!(r.forwarded_audio + r.lost_on_publisher_leg >= r.published_audio);
        // The estimate drop to 700 kbit/s forces a switch down and the recovery a switch up.
        assert!(r.layer_switches >= 2, "{r:?}");
        let layers_seen = sub.received_per_layer.values().filter(|n| **n > 0).count();
        assert!(layers_seen >= 2, "{:?}", sub.received_per_layer);
        // Every gap the subscriber sees is a packet lost on the publisher's leg.
        assert!(sub.video_seq_gaps + sub.audio_seq_gaps <= r.lost_on_publisher_leg);
        assert_eq!(sub.video_seq_gaps, r.rewriter_gaps_passed);
    }

    #[test]
    fn without_loss_the_subscriber_sees_no_gap() {
        let mut config = DemoConfig::embedded();
        config.consult.ingress_loss_percent = 0.0;
        let r = run(&config).expect("demo runs").report;
        assert_eq!(r.lost_on_publisher_leg, 0);
        assert_eq!(r.subscriber.video_seq_gaps, 0);
        assert_eq!(r.subscriber.audio_seq_gaps, 0);
        assert_eq!(r.forwarded_audio, r.published_audio);
    }
}
