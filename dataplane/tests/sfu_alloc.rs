//! The SFU's steady state allocates nothing per packet: neither the sans-IO
//! core (decrypt, rewrite, re-encrypt, queue, NACK answers, feedback,
//! timers) nor the io_uring worker around it.
//!
//! This binary interposes the C allocator (which Rust's system allocator and
//! aws-lc both end in) and counts calls per thread and in total; it is a
//! binary of its own because the interposition applies to the process.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dataplane::sfu::peer::{test_key, Peer, PeerConfig, PeerLayer};
use dataplane::sfu::{
    Command, ExtensionIds, LegId, MediaConfig, RoomId, Sfu, SfuConfig, SubscribeSpec,
    TransmitQueue, VideoCodec,
};
use dataplane::srtp::SrtpProfile;
use dataplane::worker::{Engine, Worker, WorkerConfig};

mod alloc_count;
use alloc_count::{allocations, total_allocations};

/// The worker test counts allocations of the whole process: the tests of
/// this binary take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const ROOM: RoomId = RoomId(3);

fn config(i: usize, layers: &[u32]) -> PeerConfig {
    let profile = if i.is_multiple_of(2) {
        SrtpProfile::AeadAes128Gcm
    } else {
        SrtpProfile::AesCm128HmacSha1_80
    };
    let base = 0x0200_0000 * (i as u32 + 1);
    PeerConfig {
        profile,
        send_key: test_key(profile, 10 + i as u64),
        recv_key: test_key(profile, 20 + i as u64),
        media: MediaConfig {
            audio_pt: Some(111),
            video: Some((96, VideoCodec::Vp8)),
            rtx_pt: Some(97),
            extensions: ExtensionIds {
                rid: Some(4),
                abs_send_time: Some(2),
                transport_cc: Some(3),
                audio_level: None,
            },
            nack: true,
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
        seed: 5 + i as u64,
    }
}

fn ssrcs(sub: usize, publ: usize) -> SubscribeSpec {
    let base = 0x6000_0000 + (sub as u32) * 0x100 + (publ as u32) * 0x10;
    SubscribeSpec {
        audio_ssrc: base + 1,
        video_ssrc: base + 2,
        video_rtx_ssrc: base + 3,
    }
}

#[test]
fn the_counter_sees_rust_allocations() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(100));
    std::hint::black_box(&v);
    assert!(allocations() > before);
}

/// Three parties (one simulcast publisher), NACKs, REMB, timers: media of
/// `seconds` pre-built, then fed to the core; returns the allocations the
/// core made while handling it.
#[test]
fn the_core_allocates_nothing_per_packet() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let local: SocketAddr = "198.18.0.1:4000".parse().unwrap();
    let remote = |i: usize| SocketAddr::from(([198, 18, 1, 2 + i as u8], 6000));
    let t0 = Instant::now();
    let mut sfu = Sfu::new(SfuConfig::default(), t0);
    let mut peers = Vec::new();
    for i in 0..3 {
        let c = config(i, if i == 0 { &[150, 500, 1500] } else { &[500] });
        let leg = c.leg_config(LegId(i as u64), ROOM, local, remote(i), 0xa0 + i as u32);
        sfu.command(t0, Command::AddLeg(Box::new(leg))).unwrap();
        sfu.command(t0, Command::Publish(LegId(i as u64), c.publish_spec()))
            .unwrap();
        peers.push(Peer::new(c).unwrap());
    }
    for (s, peer) in peers.iter_mut().enumerate() {
        for p in 0..3 {
            if s != p {
                let spec = ssrcs(s, p);
                sfu.command(
                    t0,
                    Command::Subscribe {
                        subscriber: LegId(s as u64),
                        publisher: LegId(p as u64),
                        ssrcs: spec,
                    },
                )
                .unwrap();
                peer.expect(spec);
            }
        }
    }
    // Pre-built input: (time, from, bytes), with REMBs and NACKs.
    let mut input: Vec<(u64, usize, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 1500];
    for tick in 0..400u64 {
        let t = tick * 10_000;
        for (i, peer) in peers.iter_mut().enumerate() {
            if t % 20_000 == 0 {
                let len = peer.audio_packet(t, &mut buf).unwrap();
                input.push((t, i, buf[..len].to_vec()));
            }
            if t % 30_000 == 0 {
                peer.video_frame(t, |_, p| input.push((t, i, p.to_vec())))
                    .unwrap();
            }
            if t % 100_000 == 0 {
                let bps = if (t / 1_000_000) % 2 == 0 {
                    3_000_000
                } else {
                    400_000
                };
                let len = peer.remb(bps, &mut buf).unwrap();
                input.push((t, i, buf[..len].to_vec()));
                let len = peer
                    .pli(ssrcs(i, (i + 1) % 3).video_ssrc, &mut buf)
                    .unwrap();
                input.push((t, i, buf[..len].to_vec()));
            }
        }
    }
    let mut outgoing = TransmitQueue::new(sfu.config().queue_capacity);
    let mut work = vec![0u8; 2048];
    let mut nacker = peers.remove(1);
    let mut nack_buf = [0u8; 1500];
    let mut run = |sfu: &mut Sfu, from: usize, to: usize, nack_every: usize| {
        for (n, (t, who, bytes)) in input[from..to].iter().enumerate() {
            let now = t0 + Duration::from_micros(*t);
            work[..bytes.len()].copy_from_slice(bytes);
            sfu.handle_datagram(now, local, remote(*who), &mut work[..bytes.len()]);
            if now >= sfu.poll_timeout() {
                sfu.handle_timeout(now);
            }
            sfu.swap_transmits(&mut outgoing);
            // Peer 1 NACKs a video packet it was just sent now and then:
            // answered from the cache, as RTX.
            let mut nack = None;
            if n % nack_every == 0 {
                if let Some(t) = outgoing.as_slice().iter().find(|t| t.remote == remote(1)) {
                    let data = t.data();
                    if !dataplane::wire::demux::is_rtcp(data) && data.len() > 300 {
                        let seq = u16::from_be_bytes([data[2], data[3]]);
                        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
                        let mut lost = [seq];
                        nack = nacker.nack_seqs(ssrc, &mut lost, &mut nack_buf).ok();
                    }
                }
            }
            outgoing.clear();
            if let Some(len) = nack {
                sfu.handle_datagram(now, local, remote(1), &mut nack_buf[..len]);
                sfu.swap_transmits(&mut outgoing);
                outgoing.clear();
            }
        }
    };
    // Warm-up: the first second fills histories, caches and SRTP streams.
    let warm = input.iter().position(|(t, _, _)| *t >= 1_500_000).unwrap();
    run(&mut sfu, 0, warm, 7);
    let before = allocations();
    run(&mut sfu, warm, input.len(), 7);
    let during = allocations() - before;
    let stats = sfu.stats();
    assert!(stats.counters.rtp_sent > 1000, "{stats:?}");
    assert!(stats.counters.remb_received > 10, "{stats:?}");
    assert!(stats.counters.twcc_sent > 10, "{stats:?}");
    assert!(stats.counters.retransmitted > 10, "{stats:?}");
    assert!(stats.counters.keyframe_requests_received > 10, "{stats:?}");
    assert_eq!(during, 0, "{during} allocations on the packet path");
}

/// The io_uring worker over loopback: after a warm-up, no thread of the
/// process allocates while media flows through it (the peers are built not
/// to allocate either).
#[test]
fn the_io_uring_worker_allocates_nothing_in_steady_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let worker = Worker::spawn(WorkerConfig::new(
        Engine::IoUring,
        "127.0.0.1:0".parse().unwrap(),
    ))
    .unwrap();
    let local = worker.local_addr();
    let mut peers = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..2 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let remote = socket.local_addr().unwrap();
        let c = config(i, &[800]);
        let leg = c.leg_config(LegId(i as u64), ROOM, local, remote, 0xa0 + i as u32);
        worker.command(Command::AddLeg(Box::new(leg))).unwrap();
        worker
            .command(Command::Publish(LegId(i as u64), c.publish_spec()))
            .unwrap();
        peers.push(Peer::new(c).unwrap());
        sockets.push(socket);
    }
    for (s, p) in [(0usize, 1usize), (1, 0)] {
        let spec = ssrcs(s, p);
        worker
            .command(Command::Subscribe {
                subscriber: LegId(s as u64),
                publisher: LegId(p as u64),
                ssrcs: spec,
            })
            .unwrap();
        peers[s].expect(spec);
    }
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut next_audio = Duration::ZERO;
    let mut next_video = Duration::ZERO;
    let mut counted_from = None;
    let total = Duration::from_millis(3500);
    while start.elapsed() < total {
        let t = start.elapsed();
        if counted_from.is_none() && t >= Duration::from_millis(1500) {
            counted_from = Some((total_allocations(), worker.counters()));
        }
        if t >= next_audio {
            for (i, peer) in peers.iter_mut().enumerate() {
                let len = peer.audio_packet(t.as_micros() as u64, &mut buf).unwrap();
                sockets[i].send_to(&buf[..len], local).unwrap();
            }
            next_audio += Duration::from_millis(20);
        }
        if t >= next_video {
            for (i, peer) in peers.iter_mut().enumerate() {
                let socket = &sockets[i];
                peer.video_frame(t.as_micros() as u64, |_, p| {
                    let _ = socket.send_to(p, local);
                })
                .unwrap();
            }
            next_video += Duration::from_millis(33);
        }
        for (i, peer) in peers.iter_mut().enumerate() {
            while let Ok((n, _)) = sockets[i].recv_from(&mut buf) {
                let _ = peer.receive(&mut buf[..n]);
            }
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    let (before, counters_before) = counted_from.unwrap();
    let during = total_allocations() - before;
    let counters = worker.counters();
    let forwarded = counters.tx_datagrams - counters_before.tx_datagrams;
    assert!(forwarded > 500, "{counters:?}");
    for (i, peer) in peers.iter().enumerate() {
        assert_eq!(peer.report().srtp_failures, 0, "peer {i}");
        for (_, s) in peer.streams() {
            assert!(
                s.received > 50 && s.payload_mismatches == 0,
                "peer {i}: {s:?}"
            );
        }
    }
    assert_eq!(
        during, 0,
        "{during} allocations in the process while the worker forwarded {forwarded} datagrams"
    );
}
