//! SFU benchmark: the io_uring worker (SRTP decrypt, rewrite, re-encrypt per
//! subscriber) against a plain `recvmmsg`/`sendmmsg` copy forwarder without
//! crypto (the socket limit) and against the same core on tokio, in one run
//! on the same veth pair and cores.
//!
//! The appliance namespace holds the forwarder under test, pinned to core 1;
//! the generator namespace holds every participant's socket, driven by one
//! thread pinned to core 0. Each participant is a synthetic WebRTC endpoint
//! with its own SRTP keys. Profiles:
//!
//! * two-party consults: each side sends Opus-sized audio (50 pps) and VP8
//!   video at 1.5 Mbit/s (~240 pps of ~780-byte packets), and receives the
//!   other side's;
//! * six-party rooms: audio plus 500 kbit/s video per participant, each
//!   packet going to the five others.
//!
//! The number of consults (rooms) rises step by step until loss passes 5 %.
//! Per step: offered ingress, egress pps (counted at the forwarder), loss
//! at the receivers, p50/p99 forwarding latency (abs-send-time stamped by
//! the sender, read by the receiver, same clock). Results go to
//! `target/bench/sfu.json` and a table. `--short` keeps the run under three
//! minutes.
//!
//! Every datagram goes between the two namespaces over 198.18.1.0/24.

#[path = "sfu_bench/forwarder.rs"]
mod forwarder;
#[path = "sfu_bench/load.rs"]
mod load;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataplane::sfu::peer::{test_key, Peer, PeerConfig, PeerLayer};
use dataplane::sfu::{
    Command, ExtensionIds, LegId, MediaConfig, RoomId, SfuConfig, SubscribeSpec, VideoCodec,
};
use dataplane::srtp::SrtpProfile;
use dataplane::worker::{Engine, Worker, WorkerConfig};
use e2e::Lab;
use serde_json::json;

const ABS_SEND_TIME_ID: u8 = 2;
const GENERATOR_CORE: usize = 0;
const FORWARDER_CORE: usize = 1;
const LOSS_TARGET: f64 = 0.01;
const LOSS_STOP: f64 = 0.05;

/// Pins the calling thread to `core` (best effort: a machine with fewer
/// cores runs unpinned).
pub fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Plain,
    Sfu(Engine),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain_forwarder",
            Self::Sfu(e) => e.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Profile {
    name: &'static str,
    room_size: usize,
    video_kbps: u32,
    steps: &'static [usize],
    short_steps: &'static [usize],
}

const PROFILES: [Profile; 2] = [
    Profile {
        name: "two_party",
        room_size: 2,
        video_kbps: 1500,
        steps: &[25, 50, 100, 200, 300, 450, 650, 1000],
        short_steps: &[25, 100, 250],
    },
    Profile {
        name: "six_party",
        room_size: 6,
        video_kbps: 500,
        steps: &[2, 5, 10, 20, 35, 50],
        short_steps: &[2, 10, 25],
    },
];

#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    rooms: usize,
    participants: usize,
    ingress_pps: f64,
    scheduled_pps: f64,
    egress_pps: f64,
    loss: f64,
    p50_us: Option<u32>,
    p99_us: Option<u32>,
    /// Engine counters and the core's drops by reason (SFU targets).
    engine: serde_json::Value,
}

fn media() -> MediaConfig {
    MediaConfig {
        audio_pt: Some(111),
        video: Some((96, VideoCodec::Vp8)),
        rtx_pt: Some(97),
        extensions: ExtensionIds {
            rid: None,
            abs_send_time: Some(ABS_SEND_TIME_ID),
            transport_cc: Some(3),
            audio_level: None,
        },
        nack: true,
    }
}

fn peer_config(i: usize, kbps: u32) -> PeerConfig {
    let profile = SrtpProfile::AeadAes128Gcm;
    let base = (i as u32 + 1) << 8;
    PeerConfig {
        profile,
        send_key: test_key(profile, 3 * i as u64 + 1),
        recv_key: test_key(profile, 3 * i as u64 + 2),
        media: media(),
        rtcp_ssrc: base + 0xff,
        audio_ssrc: Some(base + 1),
        video: vec![PeerLayer {
            rid: None,
            ssrc: base + 2,
            kbps,
        }],
        fps: 30,
        audio_payload: 80,
        max_video_payload: 800,
        keyframe_interval: 0,
        seed: i as u64 + 11,
    }
}

fn out_ssrcs(publ: usize) -> SubscribeSpec {
    // Unique per publisher; a subscriber sees each publisher once.
    let base = 0x4000_0000 + ((publ as u32) << 4);
    SubscribeSpec {
        audio_ssrc: base + 1,
        video_ssrc: base + 2,
        video_rtx_ssrc: base + 3,
    }
}

fn run_step(
    lab: &Lab,
    target: Target,
    profile: Profile,
    rooms: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Step> {
    let link = &lab.links[0];
    let n = rooms * profile.room_size;
    let configs: Vec<PeerConfig> = (0..n).map(|i| peer_config(i, profile.video_kbps)).collect();
    let peer_addr = |i: usize| SocketAddr::from((link.peer.v4, 20_000 + i as u16));
    let room_of = |i: usize| i / profile.room_size;
    // The forwarder under test, in the appliance namespace.
    let mut sfu_config = SfuConfig {
        max_legs: n + 16,
        // Bounded memory for thousands of legs: ~0.3 s of 1.5 Mbit/s video.
        cache_bytes: 64 * 1024,
        sent_log_len: 512,
        queue_capacity: 2048,
        ..SfuConfig::default()
    };
    sfu_config.selector.up_hold = Duration::from_secs(3);
    let bind: SocketAddr = SocketAddr::from((link.appliance.v4, 0));
    enum Running {
        Plain(forwarder::Forwarder),
        Sfu(Worker),
    }
    let running = match target {
        Target::Plain => {
            let mut routes: HashMap<SocketAddr, Vec<SocketAddr>> = HashMap::new();
            for i in 0..n {
                let others = (0..n)
                    .filter(|&j| j != i && room_of(j) == room_of(i))
                    .map(peer_addr)
                    .collect();
                routes.insert(peer_addr(i), others);
            }
            let f = lab
                .appliance
                .run(move || forwarder::Forwarder::spawn(bind, FORWARDER_CORE, routes))?;
            Running::Plain(f)
        }
        Target::Sfu(engine) => {
            let mut wc = WorkerConfig::new(engine, bind);
            wc.core = Some(FORWARDER_CORE);
            wc.sfu = sfu_config;
            wc.rx_buffers = 2048;
            let worker = lab.appliance.run(move || Worker::spawn(wc))?;
            let local = worker.local_addr();
            for (i, pc) in configs.iter().enumerate() {
                let leg = pc.leg_config(
                    LegId(i as u64),
                    RoomId(room_of(i) as u64),
                    local,
                    peer_addr(i),
                    0xa000_0000 + i as u32,
                );
                worker.command(Command::AddLeg(Box::new(leg)))?;
                worker.command(Command::Publish(LegId(i as u64), pc.publish_spec()))?;
            }
            for s in 0..n {
                for p in 0..n {
                    if s != p && room_of(s) == room_of(p) {
                        worker.command(Command::Subscribe {
                            subscriber: LegId(s as u64),
                            publisher: LegId(p as u64),
                            ssrcs: out_ssrcs(p),
                        })?;
                    }
                }
            }
            Running::Sfu(worker)
        }
    };
    let (server, egress_before) = match &running {
        Running::Plain(f) => (f.local, 0),
        Running::Sfu(w) => (w.local_addr(), 0),
    };
    let _ = egress_before;
    let mut participants = Vec::with_capacity(n);
    for (i, pc) in configs.into_iter().enumerate() {
        let socket = link.peer.ns.run(move || -> Result<UdpSocket> {
            UdpSocket::bind(peer_addr(i)).context("binding a participant")
        })?;
        let phase = (i as u64 * 33_333) / n.max(1) as u64;
        participants.push(load::Participant::new(Peer::new(pc)?, socket, phase)?);
    }
    let egress = |r: &Running| match r {
        Running::Plain(f) => f.sent.load(std::sync::atomic::Ordering::Relaxed),
        Running::Sfu(w) => w.counters().tx_datagrams,
    };
    let before = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let result = {
        let running_ref = &running;
        let before = before.clone();
        let participants = &mut participants;
        link.peer.ns.run(move || {
            pin(GENERATOR_CORE);
            // The egress count is sampled when the window opens.
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    std::thread::sleep(warmup);
                    before.store(egress(running_ref), std::sync::atomic::Ordering::Relaxed);
                });
                load::run(participants, server, warmup, window, ABS_SEND_TIME_ID)
            })
        })?
    };
    let after = egress(&running);
    let mut diagnostics = serde_json::Value::Null;
    if let Running::Sfu(w) = &running {
        let c = w.counters();
        let mut core = (0, 0);
        let drops = match w.command(Command::Stats)? {
            dataplane::sfu::Reply::Stats(s) => {
                core = (s.counters.rtp_received, s.counters.rtp_sent);
                dataplane::sfu::DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str().to_owned(), json!(s.counters.dropped.get(*r))))
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .collect::<serde_json::Map<_, _>>()
            }
            _ => serde_json::Map::new(),
        };
        if std::env::var_os("SFU_BENCH_DEBUG").is_some() {
            for (i, p) in participants.iter().enumerate() {
                if let Ok(dataplane::sfu::Reply::Leg(l)) =
                    w.command(Command::LegStats(LegId(i as u64)))
                {
                    let r = p.peer.report();
                    let stuck: Vec<_> = l
                        .out_streams
                        .iter()
                        .filter(|o| o.kind == dataplane::sfu::MediaKind::Video && o.forwarded < 10)
                        .map(|o| o.publisher.0)
                        .collect();
                    eprintln!("leg {i}: pli_sent {} pli_rcvd_by_peer {} keyframes_sent {} rtcp_sent {} stuck_from {:?}", l.counters.keyframe_requests_sent, r.keyframe_requests, r.keyframes_sent, l.counters.rtcp_sent, stuck);
                }
            }
        }
        diagnostics = json!({
            "rx_datagrams": c.rx_datagrams, "tx_datagrams": c.tx_datagrams,
            "tx_messages": c.tx_messages, "gso_messages": c.gso_messages,
            "tx_errors": c.tx_errors, "batches": c.batches, "rx_arms": c.rx_arms,
            "rx_no_buffers": c.rx_no_buffers, "rx_socket_drops": c.rx_socket_drops, "tx_failed_datagrams": c.tx_failed_datagrams,
            "core_drops": drops, "core_rtp_received": core.0, "core_rtp_sent": core.1,
        });
    }
    let egress_in_window = after.saturating_sub(before.load(std::sync::atomic::Ordering::Relaxed));
    drop(running);
    let secs = result.window.as_secs_f64();
    let fanout = (profile.room_size - 1) as u64;
    let expected = result.sent * fanout;
    let loss = if expected == 0 {
        1.0
    } else {
        (1.0_f64 - result.received as f64 / expected as f64).max(0.0)
    };
    Ok(Step {
        rooms,
        participants: n,
        ingress_pps: result.sent as f64 / secs,
        scheduled_pps: result.scheduled as f64 / secs,
        // Counted from the window's start to the end of its drain.
        egress_pps: egress_in_window as f64 / (secs + 0.2),
        loss,
        p50_us: result.percentile(0.5),
        p99_us: result.percentile(0.99),
        engine: diagnostics,
    })
}

fn main() -> Result<()> {
    let short = std::env::args().any(|a| a == "--short");
    let out = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .unwrap_or_else(|| "target/bench/sfu.json".to_owned());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("sfu_bench needs root (network namespaces, veth)");
    }
    let (warmup, window) = if short {
        (Duration::from_millis(500), Duration::from_millis(1500))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    let lab = Lab::star(1)?;
    let targets = [
        Target::Plain,
        Target::Sfu(Engine::IoUring),
        Target::Sfu(Engine::Tokio),
    ];
    let mut report = serde_json::Map::new();
    let mut table = Vec::new();
    // Narrowing a run to one profile, forwarder or step list helps when
    // chasing one number; the full report needs none of these.
    let only_profile = std::env::var("SFU_BENCH_PROFILE").ok();
    let only_target = std::env::var("SFU_BENCH_TARGET").ok();
    let only_steps: Option<Vec<usize>> = std::env::var("SFU_BENCH_STEPS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
    for profile in PROFILES {
        if only_profile.as_deref().is_some_and(|p| p != profile.name) {
            continue;
        }
        let steps = if let Some(s) = only_steps.as_deref() {
            s
        } else if short {
            profile.short_steps
        } else {
            profile.steps
        };
        let mut per_target = serde_json::Map::new();
        let mut summary: HashMap<&str, (f64, usize)> = HashMap::new();
        for target in targets {
            if only_target.as_deref().is_some_and(|t| t != target.name()) {
                continue;
            }
            let mut results = Vec::new();
            for &rooms in steps {
                let step = run_step(&lab, target, profile, rooms, warmup, window)
                    .with_context(|| format!("{} {} x{rooms}", profile.name, target.name()))?;
                eprintln!(
                    "{:<10} {:<16} rooms {:>5}: ingress {:>8.0} pps (scheduled {:>8.0}), egress {:>8.0} pps, loss {:>6.2}%, p50 {:>6} us, p99 {:>6} us",
                    profile.name,
                    target.name(),
                    rooms,
                    step.ingress_pps,
                    step.scheduled_pps,
                    step.egress_pps,
                    step.loss * 100.0,
                    step.p50_us.map_or("-".into(), |v| v.to_string()),
                    step.p99_us.map_or("-".into(), |v| v.to_string()),
                );
                if !step.engine.is_null() {
                    eprintln!("           {}", step.engine);
                }
                let stop = step.loss > LOSS_STOP;
                results.push(step);
                if stop {
                    break;
                }
            }
            let best_egress = results.iter().map(|s| s.egress_pps).fold(0.0, f64::max);
            let best_rooms = results
                .iter()
                .filter(|s| s.loss < LOSS_TARGET)
                .map(|s| s.rooms)
                .max()
                .unwrap_or(0);
            summary.insert(target.name(), (best_egress, best_rooms));
            let at_best = results.iter().find(|s| s.rooms == best_rooms);
            table.push(format!(
                "| {:<9} | {:<15} | {:>11.0} | {:>14} | {:>8} | {:>8} |",
                profile.name,
                target.name(),
                best_egress,
                best_rooms,
                at_best
                    .and_then(|s| s.p50_us)
                    .map_or("-".into(), |v| v.to_string()),
                at_best
                    .and_then(|s| s.p99_us)
                    .map_or("-".into(), |v| v.to_string()),
            ));
            per_target.insert(
                target.name().to_owned(),
                json!({
                    "steps": results,
                    "max_egress_pps": best_egress,
                    "rooms_under_1pct_loss": best_rooms,
                    "top_step_reached": results.len() == steps.len() && results.last().is_some_and(|s| s.loss < LOSS_TARGET),
                }),
            );
        }
        let get = |k: &str| summary.get(k).copied().unwrap_or((0.0, 0));
        let (uring, uring_rooms) = get("io_uring");
        let (plain, _) = get("plain_forwarder");
        let (tokio, tokio_rooms) = get("tokio");
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        per_target.insert(
            "ratios".to_owned(),
            json!({
                "io_uring_over_plain_forwarder": ratio(uring, plain),
                "io_uring_over_tokio": ratio(uring, tokio),
                "io_uring_rooms_under_1pct_loss_per_core": uring_rooms,
                "tokio_rooms_under_1pct_loss_per_core": tokio_rooms,
            }),
        );
        table.push(format!(
            "| {:<9} | ratios          | io_uring/plain {:.2}, io_uring/tokio {:.2} |",
            profile.name,
            ratio(uring, plain),
            ratio(uring, tokio)
        ));
        report.insert(
            profile.name.to_owned(),
            serde_json::Value::Object(per_target),
        );
    }
    report.insert(
        "setup".to_owned(),
        json!({
            "short": short,
            "warmup_s": warmup.as_secs_f64(),
            "window_s": window.as_secs_f64(),
            "generator_core": GENERATOR_CORE,
            "forwarder_core": FORWARDER_CORE,
            "srtp_profile": "AEAD_AES_128_GCM",
            "note": "egress = datagrams the forwarder sent; loss = 1 - received/(sent x fanout) at the receivers; rooms = consults for two_party",
        }),
    );
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!(
        "| profile   | forwarder       | egress pps  | rooms <1% loss | p50 (us) | p99 (us) |"
    );
    println!(
        "|-----------|-----------------|-------------|----------------|----------|----------|"
    );
    for line in table {
        println!("{line}");
    }
    println!("results: {out}");
    Ok(())
}
