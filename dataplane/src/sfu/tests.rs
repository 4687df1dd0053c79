//! Sans-IO tests of the core: synthetic peers on a virtual clock, no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::peer::{test_key, Peer, PeerConfig, PeerLayer};
use super::*;
use crate::layer::OverloadCap;
use crate::srtp::SrtpProfile;

const PT_OPUS: u8 = 111;
const PT_VP8: u8 = 96;
const PT_RTX: u8 = 97;
const ROOM: RoomId = RoomId(7);

fn local() -> SocketAddr {
    "198.18.0.1:4000".parse().unwrap()
}

fn remote(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, 1, i as u8 + 2], 5000 + i as u16))
}

fn media(rtx: bool) -> MediaConfig {
    MediaConfig {
        audio_pt: Some(PT_OPUS),
        video: Some((PT_VP8, VideoCodec::Vp8)),
        rtx_pt: rtx.then_some(PT_RTX),
        extensions: ExtensionIds {
            rid: Some(10),
            abs_send_time: Some(2),
            transport_cc: Some(3),
            audio_level: None,
        },
        nack: true,
    }
}

fn peer_config(i: usize, layers: &[u32], rtx: bool) -> PeerConfig {
    let profile = if i.is_multiple_of(2) {
        SrtpProfile::AesCm128HmacSha1_80
    } else {
        SrtpProfile::AeadAes128Gcm
    };
    let base = 0x1000_0000 * (i as u32 + 1);
    PeerConfig {
        profile,
        send_key: test_key(profile, 100 + i as u64),
        recv_key: test_key(profile, 200 + i as u64),
        media: media(rtx),
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
        keyframe_interval: 0,
        seed: 7 + i as u64,
    }
}

fn out_ssrcs(sub: usize, publ: usize) -> SubscribeSpec {
    let base = 0x5000_0000 + (sub as u32) * 0x100 + (publ as u32) * 0x10;
    SubscribeSpec {
        audio_ssrc: base + 1,
        video_ssrc: base + 2,
        video_rtx_ssrc: base + 3,
    }
}

/// A room of peers around one core, with a virtual clock.
struct Room {
    sfu: Sfu,
    peers: Vec<Peer>,
    t0: Instant,
    now_us: u64,
    /// Drop every n-th datagram the appliance sends to peer `.0`.
    loss: Option<(usize, u64)>,
    sent_to: Vec<u64>,
    lost: u64,
}

impl Room {
    fn new(configs: Vec<PeerConfig>) -> Self {
        let t0 = Instant::now();
        let mut sfu = Sfu::new(SfuConfig::default(), t0);
        let mut peers = Vec::new();
        for (i, config) in configs.into_iter().enumerate() {
            let leg =
                config.leg_config(LegId(i as u64), ROOM, local(), remote(i), 0xa000 + i as u32);
            sfu.command(t0, Command::AddLeg(Box::new(leg))).unwrap();
            sfu.command(t0, Command::Publish(LegId(i as u64), config.publish_spec()))
                .unwrap();
            peers.push(Peer::new(config).unwrap());
        }
        let n = peers.len();
        Self {
            sfu,
            peers,
            t0,
            now_us: 0,
            loss: None,
            sent_to: vec![0; n],
            lost: 0,
        }
    }

    fn subscribe(&mut self, sub: usize, publ: usize) {
        let ssrcs = out_ssrcs(sub, publ);
        self.sfu
            .command(
                self.t0,
                Command::Subscribe {
                    subscriber: LegId(sub as u64),
                    publisher: LegId(publ as u64),
                    ssrcs,
                },
            )
            .unwrap();
        self.peers[sub].expect(ssrcs);
    }

    fn full_mesh(&mut self) {
        for s in 0..self.peers.len() {
            for p in 0..self.peers.len() {
                if s != p {
                    self.subscribe(s, p);
                }
            }
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_micros(self.now_us)
    }

    fn send_to_sfu(&mut self, from: usize, packet: &[u8]) {
        let mut buf = packet.to_vec();
        let now = self.now();
        self.sfu
            .handle_datagram(now, local(), remote(from), &mut buf);
    }

    /// Delivers everything queued to the peers.
    fn deliver(&mut self) {
        let mut q = TransmitQueue::new(self.sfu.config().queue_capacity);
        self.sfu.swap_transmits(&mut q);
        for t in q.as_slice() {
            let Some(i) = (0..self.peers.len()).find(|&i| remote(i) == t.remote) else {
                panic!("datagram to unknown {}", t.remote);
            };
            self.sent_to[i] += 1;
            if let Some((lossy, every)) = self.loss {
                let media = !crate::wire::demux::is_rtcp(t.data());
                if lossy == i && media && self.sent_to[i].is_multiple_of(every) {
                    self.lost += 1;
                    continue;
                }
            }
            let mut buf = t.data().to_vec();
            // Failures are counted in the peer's report.
            let _ = self.peers[i].receive(&mut buf);
        }
    }

    /// Runs `ms` of media: audio every 20 ms, video at 30 fps, timers,
    /// and `each_10ms` for test actions.
    fn run(&mut self, ms: u64, mut each_10ms: impl FnMut(&mut Room)) {
        let end = self.now_us + ms * 1000;
        while self.now_us < end {
            let t = self.now_us;
            if t.is_multiple_of(20_000) {
                for i in 0..self.peers.len() {
                    let mut buf = [0u8; 1500];
                    if let Ok(len) = self.peers[i].audio_packet(t, &mut buf) {
                        self.send_to_sfu(i, &buf[..len]);
                    }
                }
            }
            if t % 33_333 < 10_000 && (t / 33_333) != ((t.saturating_sub(10_000)) / 33_333)
                || t == 0
            {
                for i in 0..self.peers.len() {
                    let mut packets = Vec::new();
                    self.peers[i]
                        .video_frame(t, |_, p| packets.push(p.to_vec()))
                        .unwrap();
                    for p in packets {
                        self.send_to_sfu(i, &p);
                        self.deliver();
                    }
                }
            }
            let now = self.now();
            if now >= self.sfu.poll_timeout() {
                self.sfu.handle_timeout(now);
            }
            self.deliver();
            each_10ms(self);
            self.deliver();
            self.now_us += 10_000;
        }
    }

    fn remb(&mut self, from: usize, bps: u64) {
        let mut buf = [0u8; 1500];
        let len = self.peers[from].remb(bps, &mut buf).unwrap();
        self.send_to_sfu(from, &buf[..len]);
    }

    fn leg(&self, i: usize) -> LegStats {
        self.sfu.leg_stats(LegId(i as u64)).unwrap()
    }
}

fn assert_clean(peer: &Peer, expect_streams: usize) {
    let r = peer.report();
    assert_eq!(r.srtp_failures, 0, "{r:?}");
    assert_eq!(r.unexpected, 0, "{r:?}");
    let mut streams = 0;
    for (kind, s) in peer.streams() {
        streams += 1;
        assert!(s.received > 10, "{kind:?} {s:?}");
        assert_eq!(s.payload_mismatches, 0, "{kind:?} {s:?}");
        assert_eq!(s.missing, 0, "{kind:?} {s:?}");
        assert_eq!(s.duplicates, 0, "{kind:?} {s:?}");
        assert_eq!(s.timestamp_regressions, 0, "{kind:?} {s:?}");
    }
    assert_eq!(streams, expect_streams);
}

#[test]
fn two_party_consult_each_side_decrypts_its_own_stream_intact() {
    let mut room = Room::new(vec![
        peer_config(0, &[1500], true),
        peer_config(1, &[1500], true),
    ]);
    room.full_mesh();
    room.run(3000, |_| {});
    for i in 0..2 {
        assert_clean(&room.peers[i], 2);
        let audio = room.peers[i].total(MediaKind::Audio, |s| s.received);
        assert_eq!(audio, 150, "every audio packet of 3 s arrives");
        let video = room.peers[i].total(MediaKind::Video, |s| s.received);
        let sent_by_other = room.peers[1 - i].report().sent - 150;
        assert_eq!(video, sent_by_other);
    }
    let stats = room.sfu.stats();
    assert_eq!(stats.legs, 2);
    assert_eq!(stats.rooms, 1);
    assert_eq!(stats.counters.dropped.total(), 0, "{stats:?}");
    assert_eq!(stats.counters.rtp_received, stats.counters.rtp_sent);
    // Feedback towards the publishers: receiver reports and transport-cc.
    for peer in &room.peers {
        assert!(peer.report().receiver_reports >= 2, "{:?}", peer.report());
        assert!(peer.report().twcc_feedback >= 20, "{:?}", peer.report());
    }
}

#[test]
fn six_party_consult_fans_out_to_every_subscriber() {
    let configs = (0..6).map(|i| peer_config(i, &[500], i % 3 == 0)).collect();
    let mut room = Room::new(configs);
    room.full_mesh();
    room.run(2000, |_| {});
    for i in 0..6 {
        assert_clean(&room.peers[i], 10);
    }
    let stats = room.sfu.stats();
    assert_eq!(stats.counters.rtp_sent, stats.counters.rtp_received * 5);
}

#[test]
fn simulcast_follows_the_remb_estimate_switching_at_key_frames() {
    let mut room = Room::new(vec![
        peer_config(0, &[150, 500, 1500], true),
        peer_config(1, &[], true),
    ]);
    room.subscribe(1, 0);
    // Upgrades wait out the selector's 3 s hold; downgrades are immediate.
    room.run(13_000, |r| {
        let bps = match r.now_us / 1000 {
            0..5000 => 4_000_000,
            5000..8000 => 400_000,
            _ => 4_000_000,
        };
        if r.now_us.is_multiple_of(100_000) {
            r.remb(1, bps);
        }
    });
    let sub = &room.peers[1];
    assert_clean(sub, 2);
    let video = sub.stream(out_ssrcs(1, 0).video_ssrc).unwrap();
    let layers_seen = video.per_layer.iter().filter(|n| **n > 0).count();
    assert!(layers_seen >= 2, "{video:?}");
    let leg = room.leg(1);
    let out = leg
        .out_streams
        .iter()
        .find(|o| o.kind == MediaKind::Video)
        .unwrap();
    assert!(out.switches >= 2, "{out:?}");
    assert_eq!(out.gaps_passed, 0);
    // The switches asked the publisher for key frames.
    assert!(room.leg(0).counters.keyframe_requests_sent >= 2);
    assert!(room.peers[0].report().keyframe_requests >= 2);
    assert!(room.sfu.stats().layer_switches >= 2);
    // The publisher's streams, as the XDP ingress filter registers them.
    let mut published = room.leg(0).published;
    published.sort_by_key(|s| (s.kind == MediaKind::Video, s.layer));
    let shape: Vec<(MediaKind, u8)> = published.iter().map(|s| (s.kind, s.layer)).collect();
    assert_eq!(
        shape,
        [
            (MediaKind::Audio, 0),
            (MediaKind::Video, 0),
            (MediaKind::Video, 1),
            (MediaKind::Video, 2)
        ]
    );
    // The subscriber publishes audio only.
    assert!(room
        .leg(1)
        .published
        .iter()
        .all(|s| s.kind == MediaKind::Audio));
}

fn lossy_room(rtx: bool) -> Room {
    let mut room = Room::new(vec![peer_config(0, &[1500], rtx), peer_config(1, &[], rtx)]);
    room.subscribe(1, 0);
    room.loss = Some((1, 20));
    room.run(3000, |r| {
        if r.now_us.is_multiple_of(20_000) {
            let mut buf = [0u8; 1500];
            if let Ok(Some(len)) = r.peers[1].nack(&mut buf) {
                r.send_to_sfu(1, &buf[..len]);
            }
        }
    });
    room
}

#[test]
fn nacks_are_answered_with_rtx_from_the_cache() {
    let room = lossy_room(true);
    assert!(room.lost > 20, "{}", room.lost);
    let video = room.peers[1].stream(out_ssrcs(1, 0).video_ssrc).unwrap();
    assert_eq!(video.payload_mismatches, 0);
    assert!(video.recovered > 20, "{video:?}");
    assert!(video.missing <= 2, "{video:?}");
    let counters = room.leg(1).counters;
    assert!(counters.retransmitted >= video.recovered, "{counters:?}");
    assert_eq!(counters.nack_misses, 0);
}

#[test]
fn nacks_without_rtx_resend_under_the_original_number() {
    let room = lossy_room(false);
    let video = room.peers[1].stream(out_ssrcs(1, 0).video_ssrc).unwrap();
    assert_eq!(room.peers[1].report().srtp_failures, 0);
    assert!(video.recovered > 20, "{video:?}");
    assert!(video.missing <= 2, "{video:?}");
}

#[test]
fn bad_input_is_counted_and_dropped_without_touching_other_legs() {
    let configs = (0..4).map(|i| peer_config(i, &[500], true)).collect();
    let mut room = Room::new(configs);
    // Two pairs: 0 <-> 1 (attacked) and 2 <-> 3 (bystanders).
    for (a, b) in [(0, 1), (2, 3)] {
        room.subscribe(a, b);
        room.subscribe(b, a);
    }
    let mut captured: Option<Vec<u8>> = None;
    room.run(2000, |r| {
        if r.now_us % 20_000 != 10_000 {
            return;
        }
        let mut buf = [0u8; 1500];
        let len = r.peers[0].audio_packet(r.now_us, &mut buf).unwrap();
        let packet = buf[..len].to_vec();
        // Forged tag, before the genuine packet (after it, the replay check
        // would catch it first).
        let mut forged = packet.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x55;
        r.send_to_sfu(0, &forged);
        r.send_to_sfu(0, &packet);
        // Replay of the previous packet.
        if let Some(old) = captured.replace(packet.clone()) {
            r.send_to_sfu(0, &old);
        }
        // Garbage.
        r.send_to_sfu(0, &[0x80, 0x60, 1, 2, 3]);
        r.send_to_sfu(0, &[0x07; 40]);
        // Unknown SSRC (validly shaped RTP).
        let mut unknown = packet.clone();
        unknown[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        r.send_to_sfu(0, &unknown);
        // Unknown peer.
        let now = r.now();
        let mut copy = packet.clone();
        r.sfu
            .handle_datagram(now, local(), "198.18.9.9:9".parse().unwrap(), &mut copy);
    });
    let c = room.leg(0).counters;
    let d = &c.dropped;
    assert!(d.get(DropReason::Replay) >= 90, "{c:?}");
    assert!(d.get(DropReason::AuthFailed) >= 90, "{c:?}");
    assert!(d.get(DropReason::Malformed) >= 90, "{c:?}");
    assert!(d.get(DropReason::NotMedia) >= 90, "{c:?}");
    // The leg negotiated transport-cc, so an unknown SSRC is authenticated
    // before it is dropped (its transport-wide number would count): the
    // copy with a changed SSRC fails authentication, like the forged tag.
    assert!(
        d.get(DropReason::UnknownSsrc) + d.get(DropReason::AuthFailed) >= 180,
        "{c:?}"
    );
    assert!(
        room.sfu
            .stats()
            .counters
            .dropped
            .get(DropReason::UnknownPeer)
            >= 90
    );
    // Everyone still gets clean media; the bystanders saw nothing of it.
    for i in 0..4 {
        assert_clean(&room.peers[i], 2);
        assert_eq!(room.leg(i).counters.dropped.total() == 0, i != 0);
    }
    // Peer 1 got peer 0's extra (genuine) audio packets too.
    let audio = room.peers[1].total(MediaKind::Audio, |s| s.received);
    assert_eq!(audio, 200);
}

#[test]
fn sender_reports_are_forwarded_with_the_outgoing_ssrc_and_timeline() {
    let mut room = Room::new(vec![
        peer_config(0, &[500], true),
        peer_config(1, &[], true),
    ]);
    room.subscribe(1, 0);
    room.run(1000, |r| {
        if r.now_us == 500_000 {
            let mut buf = [0u8; 1500];
            let len = r.peers[0]
                .sender_report(0, 0xe000_0000_8000_0000, &mut buf)
                .unwrap();
            r.send_to_sfu(0, &buf[..len]);
        }
    });
    assert_eq!(room.peers[1].report().sender_reports, 1);
    assert_eq!(room.leg(1).counters.sr_forwarded, 1);
}

#[test]
fn caps_pause_video_and_never_audio() {
    let mut room = Room::new(vec![
        peer_config(0, &[150, 500], true),
        peer_config(1, &[], true),
    ]);
    room.subscribe(1, 0);
    room.run(1000, |_| {});
    let video_before = room.peers[1].total(MediaKind::Video, |s| s.received);
    assert!(video_before > 0);
    let now = room.now();
    room.sfu
        .command(now, Command::SetRoomCap(ROOM, Some(OverloadCap::AudioOnly)))
        .unwrap();
    room.run(1000, |_| {});
    let video_mid = room.peers[1].total(MediaKind::Video, |s| s.received);
    // At most the rest of the frame in flight.
    assert!(video_mid - video_before < 10, "{video_before} {video_mid}");
    let audio_mid = room.peers[1].total(MediaKind::Audio, |s| s.received);
    assert_eq!(audio_mid, 100);
    let now = room.now();
    room.sfu
        .command(now, Command::SetRoomCap(ROOM, None))
        .unwrap();
    room.run(1000, |_| {});
    assert!(room.peers[1].total(MediaKind::Video, |s| s.received) > video_mid + 20);
}

#[test]
fn commands_are_validated() {
    let mut room = Room::new(vec![
        peer_config(0, &[500], true),
        peer_config(1, &[], true),
    ]);
    let t = room.t0;
    let config = peer_config(5, &[], true);
    let dup = config.leg_config(LegId(0), ROOM, local(), remote(9), 1);
    assert_eq!(
        room.sfu
            .command(t, Command::AddLeg(Box::new(dup)))
            .unwrap_err(),
        CommandError::DuplicateLeg(LegId(0))
    );
    let same_addr = config.leg_config(LegId(9), ROOM, local(), remote(0), 1);
    assert!(matches!(
        room.sfu.command(t, Command::AddLeg(Box::new(same_addr))),
        Err(CommandError::AddressInUse { .. })
    ));
    let other_room = config.leg_config(LegId(9), RoomId(99), local(), remote(9), 1);
    room.sfu
        .command(t, Command::AddLeg(Box::new(other_room)))
        .unwrap();
    let sub = |s, p| Command::Subscribe {
        subscriber: LegId(s),
        publisher: LegId(p),
        ssrcs: out_ssrcs(s as usize, p as usize),
    };
    assert_eq!(
        room.sfu.command(t, sub(9, 0)).unwrap_err(),
        CommandError::DifferentRooms(LegId(9), LegId(0))
    );
    assert_eq!(
        room.sfu.command(t, sub(0, 0)).unwrap_err(),
        CommandError::SelfSubscription(LegId(0))
    );
    assert_eq!(
        room.sfu.command(t, sub(5, 0)).unwrap_err(),
        CommandError::UnknownLeg(LegId(5))
    );
    room.sfu.command(t, sub(1, 0)).unwrap();
    assert!(matches!(
        room.sfu.command(t, sub(1, 0)),
        Err(CommandError::AlreadySubscribed { .. })
    ));
    assert!(matches!(
        room.sfu
            .command(t, Command::Publish(LegId(0), PublishSpec::default())),
        Err(CommandError::InvalidPublication(_))
    ));
    room.sfu
        .command(
            t,
            Command::Unsubscribe {
                subscriber: LegId(1),
                publisher: LegId(0),
            },
        )
        .unwrap();
    assert!(matches!(
        room.sfu.command(
            t,
            Command::Unsubscribe {
                subscriber: LegId(1),
                publisher: LegId(0),
            }
        ),
        Err(CommandError::NotSubscribed { .. })
    ));
    room.sfu.command(t, Command::RemoveLeg(LegId(9))).unwrap();
    assert_eq!(room.sfu.stats().rooms, 1);
    assert_eq!(room.sfu.stats().legs, 2);
}

#[test]
fn a_removed_leg_stops_media_and_its_address_is_unknown() {
    let mut room = Room::new(vec![
        peer_config(0, &[500], true),
        peer_config(1, &[], true),
    ]);
    room.full_mesh();
    room.run(500, |_| {});
    let now = room.now();
    room.sfu.command(now, Command::RemoveLeg(LegId(1))).unwrap();
    let before = room.peers[1].total(MediaKind::Audio, |s| s.received);
    // Peer 1 is gone: sending to it would panic in deliver(); nothing goes.
    let mut buf = [0u8; 1500];
    let len = room.peers[0].audio_packet(room.now_us, &mut buf).unwrap();
    room.send_to_sfu(0, &buf[..len]);
    assert!(room.sfu.transmits().is_empty());
    assert_eq!(
        room.peers[1].total(MediaKind::Audio, |s| s.received),
        before
    );
    assert_eq!(room.sfu.leg_at(local(), remote(1)), None);
}

#[test]
fn a_slow_setup_does_not_pause_video_until_a_key_frame_is_requested() {
    // Setting up many rooms can take longer than two report intervals
    // before any participant sends: a publication that has not started
    // yet must not be taken for one whose layers stopped.
    let configs = (0..6).map(|i| peer_config(i, &[500], false)).collect();
    let mut room = Room::new(configs);
    room.full_mesh();
    let silent_until = room.now_us + 3_500_000;
    while room.now_us < silent_until {
        let now = room.now();
        if now >= room.sfu.poll_timeout() {
            room.sfu.handle_timeout(now);
        }
        room.deliver();
        room.now_us += 10_000;
    }
    // The peers' clocks start with their media.
    room.run(1500, |_| {});
    let stats = room.sfu.stats();
    assert_eq!(stats.counters.rtp_sent, stats.counters.rtp_received * 5);
    for i in 0..6 {
        assert_clean(&room.peers[i], 10);
        assert_eq!(room.leg(i).counters.keyframe_requests_sent, 0);
        assert_eq!(room.peers[i].report().keyframes_sent, 1);
    }
}

#[test]
fn a_key_frame_asked_for_from_outside_reaches_the_publisher_rate_limited() {
    // A cascaded room's downstream viewers are not legs of this core: the
    // control plane asks for their key frames.
    let configs = (0..2).map(|i| peer_config(i, &[500], false)).collect();
    let mut room = Room::new(configs);
    room.full_mesh();
    room.run(200, |_| {});
    let before = room.peers[0].report().keyframe_requests;
    let t = room.now();
    room.sfu
        .command(t, Command::RequestKeyFrame(LegId(0)))
        .unwrap();
    // A second request within the interval is absorbed.
    room.sfu
        .command(t, Command::RequestKeyFrame(LegId(0)))
        .unwrap();
    room.deliver();
    assert_eq!(room.peers[0].report().keyframe_requests, before + 1);
    assert_eq!(room.leg(0).counters.keyframe_requests_sent, 1);
    assert!(matches!(
        room.sfu.command(t, Command::RequestKeyFrame(LegId(9))),
        Err(CommandError::UnknownLeg(LegId(9)))
    ));
}
