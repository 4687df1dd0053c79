//! The subscriber's bandwidth estimate end to end through the SFU core: a
//! simulcast publisher (100, 500, 1500 kbit/s), a subscriber behind a
//! bottleneck queue whose buffer holds seconds (delay grows long before
//! anything drops), transport-cc feedback built from the packets as they
//! come out of the queue. The bottleneck goes 3 Mbit/s → 250 kbit/s →
//! 3 Mbit/s; the layer the core forwards must follow without a packet lost
//! at the bottleneck, and the core must allocate nothing while doing it.
//!
//! Simulated time in 1 ms steps; the allocation counter interposes the C
//! allocator, so this is a binary of its own.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::sfu::bwe::TwccRecorder;
use dataplane::sfu::peer::{test_key, Peer, PeerConfig, PeerLayer};
use dataplane::sfu::{
    Command, ExtensionIds, LegId, MediaConfig, MediaKind, RoomId, Sfu, SfuConfig, SubscribeSpec,
    TransmitQueue, VideoCodec,
};
use dataplane::srtp::SrtpProfile;
use dataplane::wire::rtp::RtpPacket;
use dataplane::wire::rtp_ext;

mod alloc_count;
use alloc_count::allocations;

const ROOM: RoomId = RoomId(9);
const TCC_ID: u8 = 3;
const PROPAGATION_US: i64 = 20_000;
const FEEDBACK_EVERY_MS: u64 = 100;
/// 8 s at 250 kbit/s.
const BUFFER_BYTES: usize = 256 * 1024;
/// Between the publisher's periodic key frames (every 2 s).
const DROP_MS: u64 = 20_500;
const LIFT_MS: u64 = 40_500;
const END_MS: u64 = 60_000;

fn capacity(ms: u64) -> u64 {
    if (DROP_MS..LIFT_MS).contains(&ms) {
        250_000
    } else {
        3_000_000
    }
}

fn config(i: usize, layers: &[u32]) -> PeerConfig {
    let profile = SrtpProfile::AeadAes128Gcm;
    let base = 0x0300_0000 * (i as u32 + 1);
    PeerConfig {
        profile,
        send_key: test_key(profile, 30 + i as u64),
        recv_key: test_key(profile, 40 + i as u64),
        media: MediaConfig {
            audio_pt: Some(111),
            video: Some((96, VideoCodec::Vp8)),
            rtx_pt: Some(97),
            extensions: ExtensionIds {
                rid: Some(4),
                abs_send_time: Some(2),
                transport_cc: Some(TCC_ID),
                audio_level: None,
            },
            nack: false,
        },
        rtcp_ssrc: base + 0xff,
        audio_ssrc: Some(base + 1),
        video: layers
            .iter()
            .enumerate()
            .map(|(l, &kbps)| PeerLayer {
                rid: (layers.len() > 1).then(|| ["q", "h", "f"][l].to_owned()),
                ssrc: base + 0x10 + l as u32,
                kbps,
            })
            .collect(),
        fps: 30,
        audio_payload: 80,
        max_video_payload: 1100,
        keyframe_interval: 60,
        seed: 7 + i as u64,
    }
}

/// A FIFO draining at the current capacity; `None` when the buffer is full.
#[derive(Default)]
struct Bottleneck {
    free_at: i64,
    queue: VecDeque<(i64, usize)>,
    queued: usize,
}

impl Bottleneck {
    fn send(&mut self, now: i64, rate: u64, size: usize) -> Option<i64> {
        while self.queue.front().is_some_and(|&(end, _)| end <= now) {
            self.queued -= self.queue.pop_front().map_or(0, |(_, b)| b);
        }
        if self.queued + size > BUFFER_BYTES {
            return None;
        }
        let end = self.free_at.max(now) + (size as i64 * 8_000_000) / rate as i64;
        self.free_at = end;
        self.queue.push_back((end, size));
        self.queued += size;
        Some(end + PROPAGATION_US)
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    ms: u64,
    estimate: u64,
    layer: Option<u8>,
    queue_ms: i64,
}

#[test]
fn forwarded_layer_follows_a_bottleneck_by_delay_without_loss_or_allocation() {
    let local: SocketAddr = "198.18.0.1:4000".parse().unwrap();
    let remote = |i: usize| SocketAddr::from(([198, 18, 2, 2 + i as u8], 6000));
    let t0 = Instant::now();
    let at = |us: i64| t0 + Duration::from_micros(us as u64);
    let mut sfu = Sfu::new(SfuConfig::default(), t0);
    let mut publisher = Peer::new(config(0, &[100, 500, 1500])).unwrap();
    let mut subscriber = Peer::new(config(1, &[150])).unwrap();
    for (i, peer) in [&publisher, &subscriber].into_iter().enumerate() {
        let c = peer.config();
        let leg = c.leg_config(LegId(i as u64), ROOM, local, remote(i), 0xb0 + i as u32);
        sfu.command(t0, Command::AddLeg(Box::new(leg))).unwrap();
    }
    sfu.command(
        t0,
        Command::Publish(LegId(0), publisher.config().publish_spec()),
    )
    .unwrap();
    let spec = SubscribeSpec {
        audio_ssrc: 0x7000_0001,
        video_ssrc: 0x7000_0002,
        video_rtx_ssrc: 0x7000_0003,
    };
    sfu.command(
        t0,
        Command::Subscribe {
            subscriber: LegId(1),
            publisher: LegId(0),
            ssrcs: spec,
        },
    )
    .unwrap();
    subscriber.expect(spec);

    let mut link = Bottleneck::default();
    let mut recorder = TwccRecorder::new(t0);
    let mut in_flight: VecDeque<(i64, Vec<u8>)> = VecDeque::new();
    let mut outgoing = TransmitQueue::new(sfu.config().queue_capacity);
    let mut work = vec![0u8; 2048];
    let mut input: Vec<Vec<u8>> = Vec::new();
    let mut fb = [0u8; 1500];
    let (mut lost, mut core_allocs, mut samples) = (0u64, 0u64, Vec::new());
    let warm_ms = 5_000;
    for ms in 0..END_MS {
        let now = ms as i64 * 1000;
        let t_us = ms * 1000;
        input.clear();
        if ms % 20 == 0 {
            let len = publisher.audio_packet(t_us, &mut work).unwrap();
            input.push(work[..len].to_vec());
        }
        if ms == 0 || ms * 30 / 1000 != (ms - 1) * 30 / 1000 {
            publisher
                .video_frame(t_us, |_, p| input.push(p.to_vec()))
                .unwrap();
        }
        let mut feedback = None;
        if ms % FEEDBACK_EVERY_MS == FEEDBACK_EVERY_MS / 2 {
            // Received by the core after the (uncongested) return path;
            // close enough to send it at once at this resolution.
            feedback = subscriber
                .transport_cc(&mut recorder, spec.video_ssrc, &mut fb)
                .unwrap();
        }
        // Only the core's own allocations count, not the harness's.
        let before = allocations();
        for packet in &input {
            work[..packet.len()].copy_from_slice(packet);
            sfu.handle_datagram(at(now), local, remote(0), &mut work[..packet.len()]);
        }
        if let Some(len) = feedback {
            sfu.handle_datagram(at(now), local, remote(1), &mut fb[..len]);
        }
        if at(now) >= sfu.poll_timeout() {
            sfu.handle_timeout(at(now));
        }
        sfu.swap_transmits(&mut outgoing);
        if ms >= warm_ms {
            core_allocs += allocations() - before;
        }
        for t in outgoing.as_slice().iter().filter(|t| t.remote == remote(1)) {
            // IPv4 and UDP headers count on the link too.
            match link.send(now, capacity(ms), t.data().len() + 28) {
                Some(arrival) => in_flight.push_back((arrival, t.data().to_vec())),
                None => lost += 1,
            }
        }
        // The publisher's link is not under test: it answers keyframe
        // requests at once, as browsers do.
        for t in outgoing.as_slice().iter().filter(|t| t.remote == remote(0)) {
            let mut data = t.data().to_vec();
            let _ = publisher.receive(&mut data);
        }
        outgoing.clear();
        while in_flight.front().is_some_and(|(a, _)| *a <= now) {
            let (arrival, mut data) = in_flight.pop_front().unwrap();
            // The RTP header, extensions included, is not encrypted.
            if let Ok(rtp) = RtpPacket::new_checked_header(&data[..]) {
                if let (Some(profile), Some(ext)) = (rtp.extension_profile(), rtp.extension_data())
                {
                    if let Ok(Some(seq)) = rtp_ext::find(profile, ext, TCC_ID)
                        .map(|e| e.and_then(|e| rtp_ext::read_transport_cc(e).ok()))
                    {
                        recorder.on_packet(seq, at(arrival));
                    }
                }
            }
            let _ = subscriber.receive(&mut data);
        }
        if ms % 100 == 0 {
            let stats = sfu.leg_stats(LegId(1)).unwrap();
            let video = stats
                .out_streams
                .iter()
                .find(|o| o.kind == MediaKind::Video)
                .unwrap();
            samples.push(Sample {
                ms,
                estimate: stats.estimate_bps.unwrap_or(0),
                layer: video.target_layer,
                queue_ms: (link.free_at - now).max(0) / 1000,
            });
        }
    }
    let trace: Vec<String> = samples
        .iter()
        .filter(|s| s.ms % 1000 == 500 || (DROP_MS..DROP_MS + 2000).contains(&s.ms))
        .map(|s| {
            format!(
                "{}s:{}k/L{:?}/{}ms",
                s.ms / 1000,
                s.estimate / 1000,
                s.layer,
                s.queue_ms
            )
        })
        .collect();
    let trace = trace.join(" ");
    let first = |from: u64, f: &dyn Fn(&Sample) -> bool| {
        samples
            .iter()
            .find(|s| s.ms >= from && f(s))
            .map(|s| s.ms - from)
    };
    let top = first(0, &|s| s.layer == Some(2)).expect(&trace);
    assert!(top < DROP_MS, "{trace}");
    let down = first(DROP_MS, &|s| s.layer == Some(0)).expect(&trace);
    let below = first(DROP_MS, &|s| s.estimate < 250_000).expect(&trace);
    let back = first(LIFT_MS, &|s| s.layer == Some(2)).expect(&trace);
    let peak = samples
        .iter()
        .filter(|s| (DROP_MS..LIFT_MS).contains(&s.ms))
        .map(|s| s.queue_ms)
        .max()
        .unwrap();
    println!(
        "top layer at {top} ms; after the drop to 250 kbit/s: estimate below it in {below} ms, \
         lowest layer in {down} ms, queue peak {peak} ms, lost {lost}; top layer again \
         {back} ms after the lift\n{trace}"
    );
    assert_eq!(lost, 0, "the bottleneck never overflowed: {trace}");
    assert!(below <= 2_000, "{trace}");
    assert!(down <= 2_000, "{trace}");
    assert!(back <= 10_000, "{trace}");
    // The subscriber got video throughout and the core forwarded it intact.
    let report = subscriber.stream(spec.video_ssrc).unwrap();
    assert!(
        report.received > 1000 && report.payload_mismatches == 0,
        "{report:?}"
    );
    assert!(sfu.leg_stats(LegId(1)).unwrap().counters.twcc_received > 400);
    assert_eq!(core_allocs, 0, "{core_allocs} allocations in the core");
}
