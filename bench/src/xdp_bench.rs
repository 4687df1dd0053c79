//! The XDP forwarding benchmark: the relay fast path against a bare XDP
//! reflector and against rtpengine, all on one veth pair in one run.
//!
//! Test bench: a generator namespace and an appliance namespace joined by a
//! veth pair. The generator's end runs the sink (an XDP program that counts
//! and drops the returning stream); the appliance's end runs the device
//! under test in native (driver) mode:
//!
//! - the **reflector** (`switchboard_reflect`: swap addresses and ports,
//!   `XDP_TX`), the least an XDP forwarder can do;
//! - the **relay** (`switchboard_xdp` with one relay flow and its stream
//!   registered, as deployed), which rewrites the frame towards the callee
//!   and sends it back out with `XDP_TX`;
//! - **rtpengine** with kernel forwarding off, behind an `XDP_PASS` program,
//!   relaying the same stream in userspace.
//!
//! Load comes from `BPF_PROG_TEST_RUN` live frames on the generator's end
//! (see [`crate::traffic`]), back to back or paced by the generator program
//! itself: the kernel transmits each frame into the veth, where the device
//! under test receives it in its NAPI poll. With two CPUs or more, that poll
//! runs in a kernel thread pinned to a CPU of its own (threaded NAPI), as a
//! NIC queue's interrupt would: the generator has one CPU, the device under
//! test (and the sink, woken from its poll) the other, so a saturating run
//! measures what one core forwards. On one CPU all three share it. The
//! sink's per-frame cost is the same for every configuration and reported
//! from the kernel's BPF statistics. The relay's highest clean rate comes
//! from the same rate search as rtpengine's, on paced live frames.
//!
//! The benchmark's autogroup and its generator's thread run at
//! [`lab::BENCH_NICE`], and rtpengine in a session (autogroup) of its own at
//! that priority, so that builds sharing the machine take as little as
//! possible from either side of a ratio. Paced load at the rates a
//! userspace relay takes (rtpengine's rate search, the equal-load
//! comparisons) comes from a UDP socket in the generator namespace, with
//! the appliance's receive path back in the softirq of the generator's CPU,
//! so rtpengine has a CPU to itself plus its kernel receive path on the
//! other: more than the relay had. Measurements alternate configurations
//! round by round so that noise from the shared machine hits all of them
//! alike, and every ratio is taken between measurements of the same run.

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use dataplane::xdp::{
    ifindex, AttachedMode, FlowAction, FlowMatch, LiveGenerator, Reflector, RelayTarget,
    SinkCounter, StreamKind, StreamSpec, XdpIngress, XdpPass,
};
use serde::Serialize;
use switchboard_common::{Counters, IngressConfig};

use crate::{
    frame::{self, Endpoints},
    lab::{self, Lab},
    rtpengine::{self, Rtpengine},
    traffic::{self, Offered, SocketSender},
};

/// UDP payload sizes measured: an audio-sized and a video-sized SRTP packet.
pub const PAYLOAD_SIZES: [usize; 2] = [160, 1200];
/// The relay's goal against the bare reflector.
pub const GOAL_VS_REFLECTOR: f64 = 0.9;
/// The relay's goal against rtpengine (max clean rates).
pub const GOAL_VS_RTPENGINE: f64 = 20.0;
/// Loss below this fraction counts as clean.
pub const CLEAN_LOSS: f64 = 0.01;

const SENDER_PORT: u16 = 5004;
const CALLEE_PORT: u16 = 6000;
const MEDIA_PORT: u16 = 40_000;
const RELAY_EGRESS_PORT: u16 = 40_002;
const RTPENGINE_PORTS: (u16, u16) = (30_000, 30_999);
const ROOM: u32 = 1;
/// rtpengine's rate search starts here and grows by [`RAMP`] per step.
const RAMP_START_PPS: f64 = 10_000.0;
const RAMP: f64 = 1.5;
/// rtpengine's rate search ends after this many lossy rates in a row.
const RAMP_MISSES: usize = 2;
/// Bound of the rate searches (far above what either relay takes here).
const RAMP_CAP_PPS: f64 = 16_000_000.0;

/// How long and how often to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// "short" (CI) or "full".
    pub name: &'static str,
    /// Seconds per saturating XDP measurement.
    pub xdp_secs: f64,
    /// Rounds of the alternating XDP measurements.
    pub rounds: usize,
    /// Slices each round's measurement of a configuration is cut into,
    /// alternating between the configurations (ABBA), so that a burst of
    /// load from elsewhere on the shared machine falls on both alike.
    pub slices: usize,
    /// Seconds per paced trial (rtpengine search, equal-load comparison).
    pub trial_secs: f64,
    /// Bisection steps after rtpengine's rate search first sees loss.
    pub bisect_steps: usize,
    /// Wait after each measurement for frames still in flight (queues, rtpengine).
    pub drain_secs: f64,
}

impl Plan {
    /// A few seconds per measurement, for CI.
    pub fn short() -> Self {
        Self {
            name: "short",
            xdp_secs: 1.5,
            rounds: 2,
            slices: 2,
            trial_secs: 1.0,
            bisect_steps: 2,
            drain_secs: 0.2,
        }
    }

    /// The default: longer measurements, more rounds, a finer search.
    pub fn full() -> Self {
        Self {
            name: "full",
            xdp_secs: 5.0,
            // A median of nine same-round ratios: on a shared machine a
            // few disturbed rounds must not decide it.
            rounds: 9,
            slices: 5,
            trial_secs: 3.0,
            bisect_steps: 4,
            drain_secs: 0.3,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durations and repetitions.
    pub plan: Plan,
    /// Where the JSON report goes.
    pub out: PathBuf,
    /// Measure rtpengine too (if it is installed).
    pub rtpengine: bool,
}

/// One measurement of one configuration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Frames the generator sent.
    pub offered: u64,
    /// Frames the sink counted.
    pub forwarded: u64,
    /// Seconds the generator ran.
    pub secs: f64,
    /// Offered frames per second.
    pub offered_pps: f64,
    /// Forwarded frames per second.
    pub pps: f64,
    /// Fraction of offered frames not forwarded.
    pub loss: f64,
}

impl Sample {
    fn new(offered: Offered, forwarded: u64) -> Self {
        let loss = if offered.frames == 0 {
            1.0
        } else {
            (1.0 - forwarded as f64 / offered.frames as f64).max(0.0)
        };
        Self {
            offered: offered.frames,
            forwarded,
            secs: offered.secs,
            offered_pps: offered.pps(),
            pps: if offered.secs > 0.0 {
                forwarded as f64 / offered.secs
            } else {
                0.0
            },
            loss,
        }
    }

    fn clean(&self) -> bool {
        self.forwarded > 0 && self.loss < CLEAN_LOSS
    }
}

/// A configuration's saturating throughput over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Median forwarded packets per second.
    pub pps: f64,
    /// UDP payload bit rate at that packet rate, Gbit/s.
    pub gbps_payload: f64,
    /// Ethernet bit rate at that packet rate, counting FCS, preamble and
    /// inter-frame gap as a NIC would (comparable with line rates), Gbit/s.
    pub gbps_wire: f64,
    /// Largest loss of any round.
    pub worst_loss: f64,
    /// Every round.
    pub samples: Vec<Sample>,
}

impl Throughput {
    fn new(samples: Vec<Sample>, udp_payload: usize) -> Self {
        let pps = median(samples.iter().map(|s| s.pps));
        Self {
            pps,
            gbps_payload: pps * (udp_payload * 8) as f64 / 1e9,
            gbps_wire: pps * ((frame::HEADERS + udp_payload + frame::WIRE_OVERHEAD) * 8) as f64
                / 1e9,
            worst_loss: samples.iter().map(|s| s.loss).fold(0.0, f64::max),
            samples,
        }
    }
}

/// rtpengine's side of one packet size.
#[derive(Debug, Clone, Serialize)]
pub struct RtpengineResult {
    /// Highest offered rate forwarded with loss under 1%, packets per second.
    pub max_clean_pps: f64,
    /// Every trial of the rate search, in order.
    pub search: Vec<Sample>,
}

/// Relay and rtpengine at the same paced offered load.
#[derive(Debug, Clone, Serialize)]
pub struct EqualLoad {
    /// The rate both were asked to be offered, packets per second (each
    /// sample has the rate actually offered).
    pub offered_pps: f64,
    /// The relay's measurement.
    pub relay: Sample,
    /// rtpengine's measurement.
    pub rtpengine: Sample,
    /// Relay forwarded pps ÷ rtpengine forwarded pps (`None` if rtpengine
    /// forwarded nothing).
    pub relay_over_rtpengine: Option<f64>,
}

/// Everything measured for one UDP payload size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    /// UDP payload bytes (RTP header and opaque body).
    pub udp_payload: usize,
    /// Ethernet frame bytes without FCS.
    pub frame_bytes: usize,
    /// The bare reflector, saturating.
    pub reflector: Throughput,
    /// The relay, saturating.
    pub relay: Throughput,
    /// Median over rounds of relay pps ÷ reflector pps in the same round.
    pub relay_over_reflector: f64,
    /// Every round's ratio.
    pub relay_over_reflector_rounds: Vec<f64>,
    /// The relay's highest rate with loss under 1%, from a rate search with
    /// paced live frames (`None` if no trial was clean).
    pub relay_max_clean_pps: Option<f64>,
    /// Every trial of the relay's rate search, in order.
    pub relay_search: Vec<Sample>,
    /// The relay's XDP counters summed over its saturating rounds.
    pub relay_counters: CounterSummary,
    /// Per-frame cost of each XDP program (`None` if the kernel's BPF
    /// statistics could not be enabled).
    pub program_cost: Option<ProgramCost>,
    /// rtpengine, if measured.
    pub rtpengine: Option<RtpengineResult>,
    /// Relay max clean rate ÷ rtpengine max clean rate.
    pub relay_over_rtpengine_max_clean: Option<f64>,
    /// Relay and rtpengine at equal offered loads.
    pub equal_load: Vec<EqualLoad>,
}

/// Average kernel time per run of the XDP programs on the path, from the
/// kernel's BPF run-time statistics, taken in a separate saturating pass
/// (the statistics add two clock reads to every run, so the throughput
/// rounds run without them).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProgramCost {
    /// The reflector, nanoseconds per frame.
    pub reflector_ns: f64,
    /// The relay, nanoseconds per frame.
    pub relay_ns: f64,
    /// The sink, nanoseconds per frame (while the relay ran).
    pub sink_ns: f64,
}

/// The relay's own view of its saturating rounds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CounterSummary {
    /// Frames its XDP program saw.
    pub received: u64,
    /// Frames it relayed with `XDP_TX`.
    pub tx: u64,
    /// Frames it dropped, all reasons.
    pub dropped: u64,
    /// Frames it passed up.
    pub passed: u64,
}

impl CounterSummary {
    fn delta(before: &Counters, after: &Counters) -> Self {
        Self {
            received: after.received - before.received,
            tx: after.tx - before.tx,
            dropped: after.dropped() - before.dropped(),
            passed: after.passed() - before.passed(),
        }
    }

    fn add(&mut self, o: &Self) {
        self.received += o.received;
        self.tx += o.tx;
        self.dropped += o.dropped;
        self.passed += o.passed;
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Durations and repetitions used.
    pub plan: Plan,
    /// XDP attach mode of the device under test and the sink.
    pub xdp_mode: String,
    /// CPUs the process could use.
    pub cpus: usize,
    /// The CPU that ran the generator.
    pub generator_cpu: usize,
    /// The CPU whose NAPI thread ran the device under test and the sink in
    /// the XDP measurements (`None`: the generator's CPU ran all three).
    pub dut_cpu: Option<usize>,
    /// Kernel release.
    pub kernel: String,
    /// rtpengine's version, when it ran.
    pub rtpengine_version: Option<String>,
    /// Why rtpengine was not measured, when it was not.
    pub rtpengine_skipped: Option<String>,
    /// Per UDP payload size.
    pub sizes: Vec<SizeResult>,
    /// Goals the numbers are read against.
    pub goals: Goals,
}

/// The goals, and whether this run met them (every size).
#[derive(Debug, Clone, Serialize)]
pub struct Goals {
    /// Relay ÷ reflector goal.
    pub relay_over_reflector: f64,
    /// Met for every size.
    pub relay_over_reflector_met: bool,
    /// Relay ÷ rtpengine goal (max clean rates).
    pub relay_over_rtpengine: f64,
    /// Met for every size; `None` without rtpengine.
    pub relay_over_rtpengine_met: Option<bool>,
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// What runs on the appliance's end of the veth; the loaders detach on drop.
enum Dut {
    None,
    Reflector { _program: Reflector },
    Relay,
    Pass { _program: XdpPass },
}

/// How a measurement offers load.
enum Load<'a> {
    /// Live frames from this generator, back to back.
    Saturate(&'a mut LiveGenerator),
    /// Live frames from this generator, `pps` per second.
    PacedLive(&'a mut LiveGenerator, f64),
    /// RTP packets of `udp_payload` bytes from the caller's socket to `to`,
    /// `pps` per second.
    Paced {
        to: SocketAddrV4,
        udp_payload: usize,
        pps: f64,
    },
}

/// Which configuration a measurement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Reflector,
    Relay,
    Rtpengine,
}

/// The test bench with its programs: everything is detached and deleted on
/// drop (fields drop in order: programs, then namespaces).
struct Bench {
    dut: Dut,
    relay: XdpIngress,
    sink: SinkCounter,
    generator_ifindex: u32,
    cpu: usize,
    /// The CPU of the appliance end's NAPI thread, where the device under
    /// test (and, woken from it, the sink) runs; `None`: the generator's.
    dut_cpu: Option<usize>,
    modes: Vec<AttachedMode>,
    lab: Lab,
}

impl Bench {
    fn new() -> Result<Self> {
        let lab = Lab::new().context("building the test bench (namespaces, veth)")?;
        let (g, a) = (lab.generator.clone(), lab.appliance.clone());
        let gname = g.ifname.clone();
        let (sink, generator_ifindex) = g
            .ns
            .run(move || -> Result<_> { Ok((SinkCounter::attach(&gname)?, ifindex(&gname)?)) })??;
        let modes = vec![sink.mode()];
        let ns = a.ns.clone();
        let relay = ns.run(move || configure_relay(&g, &a))??;
        let cpus = lab::allowed_cpus();
        let cpu = cpus.first().copied().unwrap_or(0);
        let dut_cpu = cpus.get(1).copied();
        lab.appliance.napi_thread(dut_cpu)?;
        Ok(Self {
            dut: Dut::None,
            relay,
            sink,
            generator_ifindex,
            cpu,
            dut_cpu,
            modes,
            lab,
        })
    }

    /// Puts `config`'s program on the appliance's end (detaching the previous one).
    fn switch(&mut self, config: Config) -> Result<()> {
        let wanted = match config {
            Config::Reflector => matches!(self.dut, Dut::Reflector { .. }),
            Config::Relay => matches!(self.dut, Dut::Relay),
            Config::Rtpengine => matches!(self.dut, Dut::Pass { .. }),
        };
        if wanted {
            return Ok(());
        }
        let ns = self.lab.appliance.ns.clone();
        let ifname = self.lab.appliance.ifname.clone();
        let old = std::mem::replace(&mut self.dut, Dut::None);
        let relay = &mut self.relay;
        let (dut, mode) = ns.run(move || -> Result<(Dut, AttachedMode)> {
            match old {
                Dut::Relay => relay.detach_all()?,
                other => drop(other),
            }
            Ok(match config {
                Config::Reflector => {
                    let r = Reflector::attach(&ifname)?;
                    let mode = r.mode();
                    (Dut::Reflector { _program: r }, mode)
                }
                Config::Relay => (Dut::Relay, relay.attach(&ifname)?),
                Config::Rtpengine => {
                    let p = XdpPass::attach(&ifname)?;
                    let mode = p.mode();
                    (Dut::Pass { _program: p }, mode)
                }
            })
        })??;
        self.dut = dut;
        self.modes.push(mode);
        if let Some(cpu) = self.dut_cpu {
            self.lab.appliance.pin_napi_thread(cpu)?;
        }
        Ok(())
    }

    /// Offers `load` for `secs` to `config` and counts what comes back to
    /// `sink_port` (after `drain` seconds for frames still in flight).
    fn measure(
        &mut self,
        config: Config,
        load: Load<'_>,
        secs: f64,
        drain: f64,
        sink_port: u16,
    ) -> Result<Sample> {
        self.switch(config)?;
        self.sink.set_port(sink_port)?;
        let before = self.sink.counters()?.packets;
        let (ifindex, cpu) = (self.generator_ifindex, self.cpu);
        let duration = Duration::from_secs_f64(secs);
        let from = SocketAddrV4::new(self.lab.generator.v4, SENDER_PORT);
        let offered = self.lab.generator.ns.run(move || -> Result<Offered> {
            lab::pin_current_thread(cpu)?;
            lab::prioritize_current_thread()?;
            match load {
                Load::Saturate(generator) => traffic::saturate_for(generator, ifindex, duration),
                Load::PacedLive(generator, pps) => {
                    generator.set_rate(Some(pps))?;
                    let offered = traffic::saturate_for(generator, ifindex, duration);
                    generator.set_rate(None)?;
                    offered
                }
                Load::Paced {
                    to,
                    udp_payload,
                    pps,
                } => {
                    let mut sender = SocketSender::new(from, to, udp_payload)?;
                    traffic::paced_for(&mut sender, pps, duration)
                }
            }
        })??;
        std::thread::sleep(Duration::from_secs_f64(drain));
        let forwarded = self.sink.counters()?.packets - before;
        Ok(Sample::new(offered, forwarded))
    }

    /// Runs the appliance end's receive path in the softirq of the CPU that
    /// queued the frames again (the generator's) instead of its own thread.
    fn napi_on_generator_cpu(&mut self) -> Result<()> {
        if self.dut_cpu.take().is_some() {
            self.lab.appliance.napi_thread(None)?;
        }
        Ok(())
    }

    fn xdp_mode(&self) -> String {
        let first = self.modes.first().copied();
        if self.modes.iter().all(|m| Some(*m) == first) {
            first.map_or_else(|| "none".into(), |m| m.to_string())
        } else {
            let mut all: Vec<String> = self.modes.iter().map(|m| m.to_string()).collect();
            all.dedup();
            format!("mixed: {}", all.join(", "))
        }
    }
}

/// Loads the relay with one flow, as the control plane sets up a relay leg:
/// the caller's stream to our media port, relayed to the callee on the same
/// link (so `XDP_TX`, like the reflector), its SSRC registered as video.
fn configure_relay(g: &lab::End, a: &lab::End) -> Result<XdpIngress> {
    let mut relay = XdpIngress::load(IngressConfig {
        port_min: MEDIA_PORT,
        port_max: MEDIA_PORT + 99,
        drop_malformed: 1,
        drop_unknown: 1,
        _pad: [0; 2],
    })?;
    let egress = relay.add_egress(&a.ifname)?;
    relay.add_local_address(IpAddr::V4(a.v4))?;
    relay.set_flow(
        FlowMatch {
            remote: SocketAddr::new(g.v4.into(), SENDER_PORT),
            local_port: MEDIA_PORT,
        },
        &FlowAction::Relay(vec![RelayTarget {
            ifindex: egress,
            local: SocketAddr::new(a.v4.into(), RELAY_EGRESS_PORT),
            remote: SocketAddr::new(g.v4.into(), CALLEE_PORT),
            src_mac: a.mac,
            next_hop_mac: g.mac,
        }]),
    )?;
    relay.set_stream(
        frame::SSRC,
        &StreamSpec {
            room: ROOM,
            kind: StreamKind::Video,
            spatial_layer: 0,
            dependency_descriptor: None,
        },
    )?;
    Ok(relay)
}

/// Runs the benchmark, writes the JSON report and returns it.
pub fn run(options: &Options) -> Result<Report> {
    let plan = options.plan.clone();
    // Both sides of every ratio at the same priority against the rest of the
    // shared machine: this process here, rtpengine in its own session.
    let _priority = lab::AutogroupPriority::raise()?;
    let mut bench = Bench::new()?;
    let (g, a) = (bench.lab.generator.clone(), bench.lab.appliance.clone());
    let to_media = Endpoints {
        src_mac: g.mac,
        dst_mac: a.mac,
        src: SocketAddrV4::new(g.v4, SENDER_PORT),
        dst: SocketAddrV4::new(a.v4, MEDIA_PORT),
    };

    // Saturating XDP rounds: reflector and relay on identical frames, each
    // round's time cut into slices that alternate ABBA between them.
    let mut generators = PAYLOAD_SIZES
        .iter()
        .map(|&size| LiveGenerator::load(&frame::rtp_frame(&to_media, size)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut reflector_samples = vec![Vec::new(); PAYLOAD_SIZES.len()];
    let mut relay_samples = vec![Vec::new(); PAYLOAD_SIZES.len()];
    let mut relay_counters = vec![CounterSummary::default(); PAYLOAD_SIZES.len()];
    let slices = plan.slices.max(1);
    for round in 0..plan.rounds {
        for (i, generator) in generators.iter_mut().enumerate() {
            // Frames offered, seconds and frames forwarded, per configuration.
            let mut totals = [(0u64, 0.0f64, 0u64); 2];
            for slice in 0..slices {
                let order = if (round + slice) % 2 == 0 {
                    [Config::Reflector, Config::Relay]
                } else {
                    [Config::Relay, Config::Reflector]
                };
                for config in order {
                    let counters_before = bench.relay.counters()?;
                    let (port, total) = match config {
                        Config::Reflector => (SENDER_PORT, &mut totals[0]),
                        _ => (CALLEE_PORT, &mut totals[1]),
                    };
                    let sample = bench.measure(
                        config,
                        Load::Saturate(generator),
                        plan.xdp_secs / slices as f64,
                        plan.drain_secs.min(0.1),
                        port,
                    )?;
                    total.0 += sample.offered;
                    total.1 += sample.secs;
                    total.2 += sample.forwarded;
                    if config == Config::Relay {
                        let after = bench.relay.counters()?;
                        relay_counters[i].add(&CounterSummary::delta(&counters_before, &after));
                    }
                }
            }
            for (config, (frames, secs, forwarded)) in
                [Config::Reflector, Config::Relay].into_iter().zip(totals)
            {
                let sample = Sample::new(Offered { frames, secs }, forwarded);
                eprintln!(
                    "round {}/{} {:>4} B {:<9} {:>9.0} pps (offered {:.0}, loss {:.2}%)",
                    round + 1,
                    plan.rounds,
                    PAYLOAD_SIZES[i],
                    format!("{config:?}").to_lowercase(),
                    sample.pps,
                    sample.offered_pps,
                    sample.loss * 100.0
                );
                match config {
                    Config::Reflector => reflector_samples[i].push(sample),
                    _ => relay_samples[i].push(sample),
                }
            }
        }
    }

    let mut sizes = Vec::new();
    for (i, &size) in PAYLOAD_SIZES.iter().enumerate() {
        let rounds: Vec<f64> = reflector_samples[i]
            .iter()
            .zip(&relay_samples[i])
            .map(|(r, x)| if r.pps > 0.0 { x.pps / r.pps } else { 0.0 })
            .collect();
        let relay = Throughput::new(relay_samples[i].clone(), size);
        sizes.push(SizeResult {
            udp_payload: size,
            frame_bytes: frame::HEADERS + size,
            reflector: Throughput::new(reflector_samples[i].clone(), size),
            relay,
            relay_over_reflector: median(rounds.iter().copied()),
            relay_over_reflector_rounds: rounds,
            relay_max_clean_pps: None,
            relay_search: Vec::new(),
            relay_counters: relay_counters[i],
            program_cost: None,
            rtpengine: None,
            relay_over_rtpengine_max_clean: None,
            equal_load: Vec::new(),
        });
    }

    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(_stats) => {
            for (size, generator) in sizes.iter_mut().zip(generators.iter_mut()) {
                size.program_cost = Some(program_cost(&mut bench, generator, &plan)?);
            }
        }
        Err(err) => eprintln!("BPF run-time statistics unavailable ({err}); no per-program costs"),
    }

    // The relay's highest clean rate, found the way rtpengine's is.
    for (size, generator) in sizes.iter_mut().zip(generators.iter_mut()) {
        let udp_payload = size.udp_payload;
        let search = rate_search(&plan, |rate| {
            let s = bench.measure(
                Config::Relay,
                Load::PacedLive(generator, rate),
                plan.trial_secs,
                plan.drain_secs,
                CALLEE_PORT,
            )?;
            eprintln!(
                "relay     {:>4} B offered {:>8.0} pps forwarded {:>8.0} pps loss {:.2}%",
                udp_payload,
                s.offered_pps,
                s.pps,
                s.loss * 100.0
            );
            Ok(s)
        })?;
        size.relay_max_clean_pps = max_clean(&search);
        size.relay_search = search;
    }
    let dut_cpu = bench.dut_cpu;

    let mut rtpengine_version = None;
    let rtpengine_skipped = if !options.rtpengine {
        Some("disabled (--no-rtpengine)".to_owned())
    } else if !rtpengine::available() {
        Some(format!(
            "{} not found on PATH (Debian package {})",
            rtpengine::BINARY,
            rtpengine::PACKAGE
        ))
    } else {
        rtpengine_version = rtpengine::version();
        measure_rtpengine(
            &mut bench,
            &plan,
            &mut sizes,
            options.out.with_file_name("rtpengine.log"),
        )?;
        None
    };

    let report = Report {
        xdp_mode: bench.xdp_mode(),
        cpus: lab::online_cpus(),
        generator_cpu: bench.cpu,
        dut_cpu,
        kernel: kernel_release(),
        rtpengine_version,
        rtpengine_skipped,
        goals: Goals {
            relay_over_reflector: GOAL_VS_REFLECTOR,
            relay_over_reflector_met: sizes
                .iter()
                .all(|s| s.relay_over_reflector >= GOAL_VS_REFLECTOR),
            relay_over_rtpengine: GOAL_VS_RTPENGINE,
            relay_over_rtpengine_met: sizes
                .iter()
                .map(|s| s.relay_over_rtpengine_max_clean)
                .collect::<Option<Vec<f64>>>()
                .map(|r| r.iter().all(|&x| x >= GOAL_VS_RTPENGINE)),
        },
        sizes,
        plan,
    };
    drop(bench);
    write_report(&report, &options.out)?;
    Ok(report)
}

/// Measures the per-frame cost of the reflector, the relay and the sink with
/// the kernel's BPF run-time statistics on (the caller holds them enabled).
fn program_cost(
    bench: &mut Bench,
    generator: &mut LiveGenerator,
    plan: &Plan,
) -> Result<ProgramCost> {
    let slices = plan.slices.max(1);
    let secs = plan.xdp_secs.min(1.0);
    // Kernel run time and run count of the device under test and of the
    // sink, per configuration, over alternating (ABBA) slices.
    let mut totals = [[(Duration::ZERO, 0u64); 2]; 2];
    for slice in 0..slices {
        let order = if slice % 2 == 0 {
            [Config::Reflector, Config::Relay]
        } else {
            [Config::Relay, Config::Reflector]
        };
        for config in order {
            let (port, total) = match config {
                Config::Reflector => (SENDER_PORT, &mut totals[0]),
                _ => (CALLEE_PORT, &mut totals[1]),
            };
            bench.switch(config)?;
            let (g, a) = (&bench.lab.generator, &bench.lab.appliance);
            let dut =
                a.ns.xdp_program_id(&a.ifname)?
                    .context("no XDP program on the appliance's end")?;
            let sink =
                g.ns.xdp_program_id(&g.ifname)?
                    .context("no XDP program on the generator's end")?;
            let before = [run_stats(dut)?, run_stats(sink)?];
            bench.measure(config, Load::Saturate(generator), secs, 0.05, port)?;
            let after = [run_stats(dut)?, run_stats(sink)?];
            for ((t, b), a) in total.iter_mut().zip(before).zip(after) {
                t.0 += a.0.saturating_sub(b.0);
                t.1 += a.1.saturating_sub(b.1);
            }
        }
    }
    let ns = |(time, runs): (Duration, u64)| ns_per_run((Duration::ZERO, 0), (time, runs));
    Ok(ProgramCost {
        reflector_ns: ns(totals[0][0]),
        relay_ns: ns(totals[1][0]),
        sink_ns: ns(totals[1][1]),
    })
}

/// Total run time and run count of the BPF program with id `id`.
fn run_stats(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing BPF programs")?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    bail!("BPF program {id} is not loaded")
}

fn ns_per_run(before: (Duration, u64), after: (Duration, u64)) -> f64 {
    let runs = after.1.saturating_sub(before.1);
    if runs == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0).as_nanos() as f64 / runs as f64
}

/// The highest forwarded rate of the clean (loss under 1%) trials.
fn max_clean(trials: &[Sample]) -> Option<f64> {
    trials
        .iter()
        .filter(|s| s.clean())
        .map(|s| s.pps)
        .reduce(f64::max)
}

/// Starts rtpengine and, per size, finds its highest clean rate and
/// compares it with the relay at equal offered loads.
///
/// Every trial gets a call of its own: once rtpengine has found more than
/// 50 packets queued on a media socket five times, it stops reading that
/// socket for the rest of the call (its overload protection), so an
/// overloaded trial would otherwise spoil every later one.
fn measure_rtpengine(
    bench: &mut Bench,
    plan: &Plan,
    sizes: &mut [SizeResult],
    rtpengine_log: PathBuf,
) -> Result<()> {
    let (g, a) = (bench.lab.generator.clone(), bench.lab.appliance.clone());
    // rtpengine's threads get the CPUs the generator does not use, and the
    // kernel's receive path for its packets runs on the generator's, as a
    // NIC's interrupts would on a core of their own: rtpengine gets more CPU
    // than the relay had (its NAPI thread did all its kernel work), which
    // can only flatter rtpengine. The equal-load comparisons below run the
    // relay the same way.
    bench.napi_on_generator_cpu()?;
    bench.switch(Config::Rtpengine)?;
    // Declared after `bench`, so it is killed before the namespaces go.
    let log = rtpengine_log;
    let mut engine = Rtpengine::start(&a.ns, a.v4, RTPENGINE_PORTS, 0, Some(bench.cpu), log)?;
    let caller = SocketAddrV4::new(g.v4, SENDER_PORT);
    let callee = SocketAddrV4::new(g.v4, CALLEE_PORT);
    let mut calls = 0u32;
    for size in sizes.iter_mut() {
        let udp_payload = size.udp_payload;
        let mut trial = |bench: &mut Bench, rate: f64| -> Result<Sample> {
            calls += 1;
            let call_id = format!("switchboard-bench-{}-{calls}", std::process::id());
            let call = engine.call(&call_id, caller, callee)?;
            let sample = bench.measure(
                Config::Rtpengine,
                Load::Paced {
                    to: call.send_to,
                    udp_payload,
                    pps: rate,
                },
                plan.trial_secs,
                plan.drain_secs,
                CALLEE_PORT,
            )?;
            engine.delete(&call_id)?;
            Ok(sample)
        };
        let search = rate_search(plan, |rate| {
            let s = trial(bench, rate)?;
            eprintln!(
                "rtpengine {:>4} B offered {:>8.0} pps forwarded {:>8.0} pps loss {:.2}%",
                udp_payload,
                s.offered_pps,
                s.pps,
                s.loss * 100.0
            );
            Ok(s)
        })?;
        let max_clean_pps = max_clean(&search).unwrap_or(0.0);
        // Equal offered loads: where rtpengine is clean, and twice that.
        let loads = if max_clean_pps > 0.0 {
            vec![max_clean_pps, 2.0 * max_clean_pps]
        } else {
            vec![RAMP_START_PPS]
        };
        for load in loads {
            let relay = bench.measure(
                Config::Relay,
                Load::Paced {
                    to: SocketAddrV4::new(a.v4, MEDIA_PORT),
                    udp_payload,
                    pps: load,
                },
                plan.trial_secs,
                plan.drain_secs,
                CALLEE_PORT,
            )?;
            let engine = trial(bench, load)?;
            eprintln!(
                "equal load {:>4} B {:>8.0} pps: relay {:>8.0} pps, rtpengine {:>8.0} pps",
                udp_payload, load, relay.pps, engine.pps
            );
            size.equal_load.push(EqualLoad {
                offered_pps: load,
                relay_over_rtpengine: (engine.pps > 0.0).then(|| relay.pps / engine.pps),
                relay,
                rtpengine: engine,
            });
        }
        size.relay_over_rtpengine_max_clean = size
            .relay_max_clean_pps
            .filter(|_| max_clean_pps > 0.0)
            .map(|relay| relay / max_clean_pps);
        size.rtpengine = Some(RtpengineResult {
            max_clean_pps,
            search,
        });
    }
    drop(engine);
    Ok(())
}

/// Raises the offered rate by [`RAMP`] from [`RAMP_START_PPS`] until
/// [`RAMP_MISSES`] rates in a row lose 1% or more, then bisects between the
/// highest clean rate and the lossy rate above it. A rate counts as lossy
/// only if a second trial at it loses too. The machine is shared, and
/// rtpengine stops reading a call's socket for good after a few backlogs
/// (its overload protection), so one scheduling hiccup can spoil a trial
/// well below its capacity; stopping at the first lossy rate would end the
/// search below rtpengine's best clean rate and flatter the relay.
fn rate_search(plan: &Plan, mut trial: impl FnMut(f64) -> Result<Sample>) -> Result<Vec<Sample>> {
    let mut trials = Vec::new();
    let mut clean_at = |rate: f64, trials: &mut Vec<Sample>| -> Result<bool> {
        for _ in 0..2 {
            let s = trial(rate)?;
            trials.push(s);
            if s.clean() {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let mut good = 0.0;
    // The lowest lossy rate above `good`.
    let mut bad = None;
    let mut misses = 0;
    let mut rate = RAMP_START_PPS;
    while rate <= RAMP_CAP_PPS {
        if clean_at(rate, &mut trials)? {
            good = rate;
            bad = None;
            misses = 0;
        } else {
            bad = bad.or(Some(rate));
            misses += 1;
            if misses == RAMP_MISSES {
                break;
            }
        }
        rate *= RAMP;
    }
    let Some(mut bad) = bad else {
        return Ok(trials);
    };
    for _ in 0..plan.bisect_steps {
        let mid = (good + bad) / 2.0;
        if clean_at(mid, &mut trials)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(trials)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Writes `report` as pretty JSON to `path`, creating its directory.
pub fn write_report(report: &Report, path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The report as a table for a terminal.
pub fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let placement = match report.dut_cpu {
        Some(dut) => format!(
            "generator on CPU {}, device under test and sink on CPU {dut} (threaded NAPI)",
            report.generator_cpu
        ),
        None => format!(
            "generator, device under test and sink on CPU {}",
            report.generator_cpu
        ),
    };
    let _ = writeln!(
        t,
        "XDP forwarding benchmark ({} run; XDP mode: {}; kernel {}; {placement}; {} CPUs)",
        report.plan.name, report.xdp_mode, report.kernel, report.cpus
    );
    let _ = writeln!(
        t,
        "{:<10} {:>7} {:>12} {:>10} {:>10} {:>10}",
        "config", "payload", "pps", "Gbit/s", "Gbit/s", "worst"
    );
    let _ = writeln!(
        t,
        "{:<10} {:>7} {:>12} {:>10} {:>10} {:>10}",
        "", "bytes", "(median)", "payload", "wire", "loss"
    );
    for s in &report.sizes {
        for (name, tp) in [("reflector", &s.reflector), ("relay", &s.relay)] {
            let _ = writeln!(
                t,
                "{:<10} {:>7} {:>12.0} {:>10.3} {:>10.3} {:>9.2}%",
                name,
                s.udp_payload,
                tp.pps,
                tp.gbps_payload,
                tp.gbps_wire,
                tp.worst_loss * 100.0
            );
        }
        if let Some(r) = &s.rtpengine {
            let pps = r.max_clean_pps;
            let _ = writeln!(
                t,
                "{:<10} {:>7} {:>12.0} {:>10.3} {:>10.3} {:>10}",
                "rtpengine",
                s.udp_payload,
                pps,
                pps * (s.udp_payload * 8) as f64 / 1e9,
                pps * ((s.frame_bytes + frame::WIRE_OVERHEAD) * 8) as f64 / 1e9,
                "(<1%)"
            );
        }
    }
    let _ = writeln!(t);
    for s in &report.sizes {
        let _ = writeln!(
            t,
            "{:>4} B  relay ÷ reflector: {:.3} (goal ≥ {GOAL_VS_REFLECTOR}; rounds: {})",
            s.udp_payload,
            s.relay_over_reflector,
            s.relay_over_reflector_rounds
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        if let Some(c) = &s.program_cost {
            let _ = writeln!(
                t,
                "{:>4} B  XDP program time per frame (kernel BPF stats): reflector {:.0} ns, relay {:.0} ns, sink {:.0} ns",
                s.udp_payload, c.reflector_ns, c.relay_ns, c.sink_ns
            );
        }
        match (&s.rtpengine, s.relay_over_rtpengine_max_clean) {
            (Some(r), Some(ratio)) => {
                let _ = writeln!(
                    t,
                    "{:>4} B  relay ÷ rtpengine, max clean rate (loss < 1%): {:.1} ({:.0} ÷ {:.0} pps; goal ≥ {GOAL_VS_RTPENGINE})",
                    s.udp_payload,
                    ratio,
                    s.relay_max_clean_pps.unwrap_or(0.0),
                    r.max_clean_pps
                );
                for e in &s.equal_load {
                    let _ = writeln!(
                        t,
                        "{:>4} B  equal load, {:.0} pps asked: relay {:.0} of {:.0} pps ({:.2}% loss), rtpengine {:.0} of {:.0} pps ({:.2}% loss): ratio {}",
                        s.udp_payload,
                        e.offered_pps,
                        e.relay.pps,
                        e.relay.offered_pps,
                        e.relay.loss * 100.0,
                        e.rtpengine.pps,
                        e.rtpengine.offered_pps,
                        e.rtpengine.loss * 100.0,
                        e.relay_over_rtpengine
                            .map_or_else(|| "rtpengine forwarded nothing".into(), |r| format!("{r:.2}"))
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    t,
                    "{:>4} B  relay ÷ rtpengine: not measured ({})",
                    s.udp_payload,
                    report.rtpengine_skipped.as_deref().unwrap_or("no result")
                );
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offered: u64, forwarded: u64) -> Sample {
        Sample::new(
            Offered {
                frames: offered,
                secs: 1.0,
            },
            forwarded,
        )
    }

    #[test]
    fn loss_and_cleanliness() {
        assert!(sample(1000, 995).clean());
        assert!(!sample(1000, 989).clean());
        assert!(!sample(0, 0).clean());
        assert_eq!(sample(1000, 1000).loss, 0.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn rate_search_finds_the_knee() {
        // A relay that loses everything above 37k pps.
        let trials = rate_search(&Plan::full(), |rate| {
            let fwd = if rate <= 37_000.0 { rate } else { 37_000.0 };
            Ok(sample(rate as u64, fwd as u64))
        })
        .unwrap();
        let best = trials
            .iter()
            .filter(|s| s.clean())
            .map(|s| s.pps)
            .fold(0.0, f64::max);
        assert!((33_750.0..=37_000.0).contains(&best), "{best}");
        assert!(trials.len() < 20);
    }

    #[test]
    fn one_disturbed_trial_does_not_end_the_search() {
        // Loses everything above 37k pps, and once at 22.5k pps (noise).
        let mut calls = 0;
        let trials = rate_search(&Plan::full(), |rate| {
            calls += 1;
            let fwd = if calls == 3 || rate > 37_000.0 {
                rate / 2.0
            } else {
                rate
            };
            Ok(sample(rate as u64, fwd as u64))
        })
        .unwrap();
        assert!(!trials[2].clean(), "the third trial was the disturbed one");
        let best = trials
            .iter()
            .filter(|s| s.clean())
            .map(|s| s.pps)
            .fold(0.0, f64::max);
        assert!((33_750.0..=37_000.0).contains(&best), "{best}");
    }

    #[test]
    fn a_lossy_rate_below_the_knee_does_not_end_the_search() {
        // Loses everything above 60k pps, and at 22.5k pps in both trials.
        let trials = rate_search(&Plan::full(), |rate| {
            let lossy = (22_000.0..23_000.0).contains(&rate) || rate > 60_000.0;
            let fwd = if lossy { rate / 2.0 } else { rate };
            Ok(sample(rate as u64, fwd as u64))
        })
        .unwrap();
        let best = trials
            .iter()
            .filter(|s| s.clean())
            .map(|s| s.pps)
            .fold(0.0, f64::max);
        assert!((55_000.0..=60_000.0).contains(&best), "{best}");
        assert!(trials.len() < 30, "{}", trials.len());
    }

    #[test]
    fn rate_search_is_bounded_when_nothing_is_lost() {
        let trials =
            rate_search(&Plan::short(), |rate| Ok(sample(rate as u64, rate as u64))).unwrap();
        assert!(trials.len() < 20);
        assert!(trials.iter().all(Sample::clean));
    }
}
