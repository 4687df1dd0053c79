//! SFU benchmark: how much one core forwards. The io_uring worker (SRTP
//! decrypt, rewrite, re-encrypt per subscriber), the same sans-IO core on
//! tokio, and a plain `recvmmsg`/`sendmmsg` copy forwarder without crypto
//! (the socket limit) are each driven to saturation, in one run, on the
//! same veth pair and cores.
//!
//! The appliance namespace holds the forwarder under test, pinned to core
//! 1; the generator namespace holds every participant (see [`generator`]),
//! driven by one thread pinned to core 0. Receive packet steering sends
//! each namespace's received packets to its own core, so the kernel's
//! receive work for the forwarder's traffic lands on the forwarder's core
//! and the sinks' on the generator's, as with a NIC's receive queues.
//!
//! Profiles: two-party consults (each side audio at 50 pps and VP8 video
//! at 1.5 Mbit/s, ~240 pps, and receives the other's) and six-party rooms
//! (audio and 500 kbit/s video each, every packet to the five others).
//!
//! Per forwarder and profile, a saturation search ([`bench::sfu_search`])
//! doubles the load from a start value and then bisects. A step is clean
//! when loss < 1 % and the forwarding latency's p99 < 20 ms, and the
//! generator kept up; the figure is the largest clean step. A step the
//! generator could not offer or sink caps the search: the figure is then a
//! lower bound and is reported as such. In the full run a step that is not
//! clean is run once more, and only a second failure counts (the machine is
//! shared; one preempted step should not end a search).
//!
//! Results: `target/bench/sfu.json` and a table. `--short` (CI) runs three
//! steps per search with short windows, exercising every forwarder and the
//! search, not the goals.

#[path = "sfu_bench/forwarder.rs"]
mod forwarder;
#[path = "sfu_bench/generator.rs"]
mod generator;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::lab::{pin_current_thread, Lab};
use bench::sfu_search::{Outcome, Search, SearchConfig, Verdict};
use dataplane::sfu::{Command, LayerSpec, LegConfig, LegId, PublishSpec, Reply, RoomId, SfuConfig};
use dataplane::worker::{Engine, Worker, WorkerConfig};
use generator::{Generator, Measured, Media, Mode};
use serde_json::{json, Value};

const GENERATOR_CORE: usize = 0;
const FORWARDER_CORE: usize = 1;
/// A clean step loses less than this fraction of the media.
const LOSS_BOUND: f64 = 0.01;
/// A clean step's forwarding latency p99 is below this.
const P99_BOUND_US: f64 = 20_000.0;
/// The generator kept up if its sends were at most this late (p99): later
/// than the latency a clean step allows, its bursts would decide the step.
/// (Wake-ups alone take milliseconds at times on a shared virtual machine.)
const LAG_BOUND_US: u64 = 20_000;
/// …it sent at least this fraction of what was due…
const SENT_BOUND: f64 = 0.99;
/// …and it (its socket, its core's receive backlog) dropped at most this
/// fraction of what it should have received.
const GENERATOR_DROP_BOUND: f64 = 0.001;
/// Threads that feed the worker its legs and subscriptions at once.
const SETUP_THREADS: usize = 32;

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

const TARGETS: [Target; 3] = [
    Target::Plain,
    Target::Sfu(Engine::IoUring),
    Target::Sfu(Engine::Tokio),
];

#[derive(Debug, Clone, Copy)]
struct Profile {
    name: &'static str,
    /// What the load counts.
    unit: &'static str,
    media: Media,
    full: SearchConfig,
    short: SearchConfig,
}

const PROFILES: [Profile; 2] = [
    Profile {
        name: "two_party",
        unit: "consults",
        media: Media {
            room_size: 2,
            video_kbps: 1500,
            fps: 30,
            audio_payload: 80,
            max_video_payload: 800,
        },
        full: SearchConfig {
            start: 32,
            max: 8192,
            max_steps: 14,
            resolution: 0.05,
        },
        short: SearchConfig {
            start: 4,
            max: 8192,
            max_steps: 3,
            resolution: 0.25,
        },
    },
    Profile {
        name: "six_party",
        unit: "rooms",
        media: Media {
            room_size: 6,
            video_kbps: 500,
            fps: 30,
            audio_payload: 80,
            max_video_payload: 800,
        },
        full: SearchConfig {
            start: 4,
            max: 2048,
            max_steps: 14,
            resolution: 0.05,
        },
        short: SearchConfig {
            start: 2,
            max: 2048,
            max_steps: 3,
            resolution: 0.25,
        },
    },
];

#[derive(Debug, Clone, Copy)]
struct Timing {
    warmup: Duration,
    window: Duration,
    drain: Duration,
    /// Run a step that is not clean a second time.
    confirm: bool,
}

/// One run of one load.
#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    load: usize,
    participants: usize,
    /// A second run of a load whose first run was not clean.
    retry: bool,
    verdict: Verdict,
    /// Why the step is not clean.
    reasons: Vec<String>,
    /// Media packets per second sent into the forwarder / due.
    ingress_pps: f64,
    scheduled_pps: f64,
    /// Media packets per second the sinks received from it.
    egress_pps: f64,
    loss: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    measured: Measured,
    /// Receive-backlog drops (kernel, per core) during the run.
    backlog_drops_generator_core: u64,
    backlog_drops_forwarder_core: u64,
    /// Forwarder counters over the measured window.
    forwarder: Value,
    /// What else the machine did: time the hypervisor held each core off
    /// (steal, ms, over the whole step) and the load average after it.
    steal_ms_generator_core: u64,
    steal_ms_forwarder_core: u64,
    load_average: Option<f64>,
    /// CPU the forwarder used over the measured window, as a fraction of
    /// the window: its thread's run time and that of its core's `ksoftirqd`
    /// (scheduler statistics, ns). Other processes do not count.
    forwarder_core_busy: Option<f64>,
}

/// Receive-backlog drops per CPU (`/proc/net/softnet_stat`, second column).
fn backlog_drops() -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string("/proc/net/softnet_stat") else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Per CPU, the time (ms) the hypervisor held the virtual machine off it
/// (the steal column of `/proc/stat`).
fn steal_ms() -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .nth(8)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1000
                / hz
        })
        .collect()
}

/// CPU time (ns) the forwarder has used so far: the run time of its
/// threads (`sfu-*` workers, the plain forwarder) and of `ksoftirqd/<cpu>`
/// from their scheduler statistics. Softirq work the kernel does in the
/// forwarder's own context is already in its run time; what it defers to
/// `ksoftirqd` on the forwarder's core is added, and nothing is counted
/// twice.
fn forwarder_cpu_ns(cpu: usize) -> Option<u64> {
    let run_ns = |dir: &std::path::Path| -> Option<u64> {
        std::fs::read_to_string(dir.join("schedstat"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let comm = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    };
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let name = comm(&task.path());
        if name.starts_with("sfu-") || name == "plain-forwarder" {
            total += run_ns(&task.path())?;
        }
    }
    let softirqd = format!("ksoftirqd/{cpu}");
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = proc.path();
        let is_pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if is_pid && comm(&path) == softirqd {
            total += run_ns(&path).unwrap_or(0);
            break;
        }
    }
    Some(total)
}

/// The system's one-minute load average.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn drops_on(before: &[u64], after: &[u64], cpu: usize) -> u64 {
    match (before.get(cpu), after.get(cpu)) {
        (Some(b), Some(a)) => a.saturating_sub(*b),
        _ => 0,
    }
}

/// The forwarder under test, running in the appliance namespace.
enum Running {
    Plain(forwarder::Forwarder),
    Sfu(Worker),
}

impl Running {
    fn local(&self) -> SocketAddr {
        match self {
            Self::Plain(f) => f.local,
            Self::Sfu(w) => w.local_addr(),
        }
    }

    /// (received, sent) datagrams so far.
    fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match self {
            Self::Plain(f) => (f.received.load(Relaxed), f.sent.load(Relaxed)),
            Self::Sfu(w) => {
                let c = w.counters();
                (c.rx_datagrams, c.tx_datagrams)
            }
        }
    }
}

/// Starts `target` for `n` participants in rooms of `room_size`.
fn start_forwarder(lab: &Lab, target: Target, media: Media, n: usize) -> Result<Running> {
    let bind = SocketAddr::from((lab.appliance.v4, 0));
    let room_of = |i: usize| i / media.room_size;
    match target {
        Target::Plain => {
            let mut routes: HashMap<SocketAddr, Vec<SocketAddr>> = HashMap::new();
            for i in 0..n {
                let others = (0..n)
                    .filter(|&j| j != i && room_of(j) == room_of(i))
                    .map(|j| SocketAddr::V4(generator::address(j)))
                    .collect();
                routes.insert(SocketAddr::V4(generator::address(i)), others);
            }
            let f = lab
                .appliance
                .ns
                .run(move || forwarder::Forwarder::spawn(bind, FORWARDER_CORE, routes))??;
            Ok(Running::Plain(f))
        }
        Target::Sfu(engine) => {
            let mut config = WorkerConfig::new(engine, bind);
            config.core = Some(FORWARDER_CORE);
            let mut sfu = SfuConfig {
                max_legs: n + 16,
                // Bounded memory for thousands of legs: ~0.3 s of video.
                cache_bytes: 64 * 1024,
                sent_log_len: 512,
                queue_capacity: 2048,
                ..SfuConfig::default()
            };
            sfu.selector.up_hold = Duration::from_secs(3);
            config.sfu = sfu;
            let worker = lab.appliance.ns.run(move || Worker::spawn(config))??;
            // The worker's thread is named after its engine and port.
            let name = format!("sfu-{}-{}", engine.as_str(), worker.local_addr().port());
            if !boost_thread(&name) {
                eprintln!("warning: the {name} thread runs at normal priority");
            }
            configure(&worker, media, n)?;
            Ok(Running::Sfu(worker))
        }
    }
}

/// Gives the thread of this process named `name` (as far as the kernel
/// keeps it: 15 bytes) the highest time-sharing priority, as the generator
/// and the plain forwarder have: the forwarder's core stands for a core of
/// its own, which builds and tests sharing this machine should not take.
fn boost_thread(name: &str) -> bool {
    let comm = &name.as_bytes()[..name.len().min(15)];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read(task.path().join("comm")) else {
            continue;
        };
        if text.strip_suffix(b"\n").unwrap_or(&text) != comm {
            continue;
        }
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        // SAFETY: setpriority on a thread id of this process.
        return unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -20) } == 0;
    }
    false
}

/// Gives the worker every leg, publication and subscription, from several
/// threads at once (the worker applies all waiting commands per wake-up).
fn configure(worker: &Worker, media: Media, n: usize) -> Result<()> {
    let local = worker.local_addr();
    let size = media.room_size;
    let threads = SETUP_THREADS.min(n).max(1);
    let each = |f: &(dyn Fn(usize) -> Result<()> + Sync)| -> Result<()> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| scope.spawn(move || (t..n).step_by(threads).try_for_each(f)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("setup thread panicked"))?
            })
        })
    };
    each(&|i| {
        let (audio, video) = generator::publisher_ssrcs(i);
        let leg = LegConfig {
            id: LegId(i as u64),
            room: RoomId((i / size) as u64),
            local,
            remote: SocketAddr::V4(generator::address(i)),
            profile: generator::profile(),
            remote_key: generator::up_key(i),
            local_key: generator::down_key(i),
            media: generator::media_config(),
            rtcp_ssrc: 0xa000_0000 + i as u32,
        };
        worker.command(Command::AddLeg(Box::new(leg)))?;
        let publish = PublishSpec {
            audio_ssrc: Some(audio),
            video_layers: vec![LayerSpec {
                rid: None,
                ssrc: Some(video),
                nominal_bps: u64::from(media.video_kbps) * 1000,
            }],
        };
        worker.command(Command::Publish(LegId(i as u64), publish))?;
        Ok(())
    })
    .context("adding legs")?;
    each(&|s| {
        let room = s / size * size;
        for p in (room..room + size).filter(|&p| p != s && p < n) {
            worker.command(Command::Subscribe {
                subscriber: LegId(s as u64),
                publisher: LegId(p as u64),
                ssrcs: generator::out_ssrcs(p),
            })?;
        }
        Ok(())
    })
    .context("subscribing")
}

fn run_step(
    lab: &Lab,
    target: Target,
    profile: &Profile,
    load: usize,
    timing: Timing,
    retry: bool,
) -> Result<Step> {
    let media = profile.media;
    let n = load * media.room_size;
    let running = start_forwarder(lab, target, media, n)?;
    let SocketAddr::V4(server) = running.local() else {
        bail!("the lab is IPv4");
    };
    let mode = match target {
        Target::Plain => Mode::Plain,
        Target::Sfu(_) => Mode::Sfu,
    };
    let expected_pps = n as f64 * media.pps_per_participant() * (media.room_size - 1) as f64;
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Instant>();
    let backlog_before = backlog_drops();
    let steal_before = steal_ms();
    let (measured, window_counts) = std::thread::scope(|scope| -> Result<_> {
        let generator = scope.spawn(move || {
            lab.generator.ns.run(move || -> Result<Measured> {
                pin_current_thread(GENERATOR_CORE)?;
                if !generator::high_priority() {
                    eprintln!(
                        "generator runs at normal priority: {}",
                        std::io::Error::last_os_error()
                    );
                }
                let mut g = Generator::new(n, media, mode)?;
                let _ = started_tx.send(Instant::now());
                g.run(
                    server,
                    timing.warmup,
                    timing.window,
                    timing.drain,
                    expected_pps,
                )
            })
        });
        // Forwarder counters over the measured window.
        let counts = started_rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .map(|t0| {
                std::thread::sleep((t0 + timing.warmup).saturating_duration_since(Instant::now()));
                let a = running.counts();
                let (cpu_a, at_a) = (forwarder_cpu_ns(FORWARDER_CORE), Instant::now());
                std::thread::sleep(
                    (t0 + timing.warmup + timing.window).saturating_duration_since(Instant::now()),
                );
                let b = running.counts();
                let (cpu_b, at_b) = (forwarder_cpu_ns(FORWARDER_CORE), Instant::now());
                let busy = cpu_a.zip(cpu_b).map(|(x, y)| {
                    y.saturating_sub(x) as f64 / (at_b - at_a).as_nanos().max(1) as f64
                });
                ((b.0 - a.0, b.1 - a.1), busy)
            });
        let measured = generator
            .join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))???;
        Ok((measured, counts))
    })?;
    let backlog_after = backlog_drops();
    let steal_after = steal_ms();
    let window_s = timing.window.as_secs_f64();
    let forwarder_core_busy = window_counts.and_then(|(_, busy)| busy);
    let (rx, tx) = window_counts.map_or((0, 0), |(counts, _)| counts);
    let mut forwarder = json!({
        "rx_pps": rx as f64 / window_s,
        "tx_pps": tx as f64 / window_s,
    });
    match &running {
        Running::Plain(f) => forwarder["socket_drops"] = json!(f.socket_drops()),
        Running::Sfu(w) => {
            let c = w.counters();
            let mut drops = serde_json::Map::new();
            if let Reply::Stats(s) = w.command(Command::Stats)? {
                for r in dataplane::sfu::DropReason::ALL {
                    let v = s.counters.dropped.get(r);
                    if v != 0 {
                        drops.insert(r.as_str().to_owned(), json!(v));
                    }
                }
            }
            forwarder["engine_totals"] = json!({
                "rx_datagrams": c.rx_datagrams, "tx_datagrams": c.tx_datagrams,
                "tx_messages": c.tx_messages, "gso_messages": c.gso_messages,
                "batches": c.batches, "rx_arms": c.rx_arms,
                "rx_no_buffers": c.rx_no_buffers, "rx_errors": c.rx_errors,
                "tx_errors": c.tx_errors, "tx_failed_datagrams": c.tx_failed_datagrams,
                "socket_drops": c.rx_socket_drops,
            });
            forwarder["core_drops"] = Value::Object(drops);
        }
    }
    drop(running);
    let gen_backlog = drops_on(&backlog_before, &backlog_after, GENERATOR_CORE);
    let fwd_backlog = drops_on(&backlog_before, &backlog_after, FORWARDER_CORE);
    let (verdict, reasons) = judge(&measured, gen_backlog);
    let loss = loss(&measured);
    Ok(Step {
        load,
        participants: n,
        retry,
        verdict,
        reasons,
        ingress_pps: measured.sent as f64 / window_s,
        scheduled_pps: measured.scheduled as f64 / window_s,
        egress_pps: measured.received as f64 / window_s,
        loss,
        p50_us: measured.p50_us,
        p99_us: measured.p99_us,
        backlog_drops_generator_core: gen_backlog,
        backlog_drops_forwarder_core: fwd_backlog,
        measured,
        forwarder,
        steal_ms_generator_core: drops_on(&steal_before, &steal_after, GENERATOR_CORE),
        steal_ms_forwarder_core: drops_on(&steal_before, &steal_after, FORWARDER_CORE),
        load_average: load_average(),
        forwarder_core_busy,
    })
}

fn loss(m: &Measured) -> f64 {
    if m.expected == 0 {
        return 1.0;
    }
    (1.0 - m.received as f64 / m.expected as f64).max(0.0)
}

/// The verdict on a step and the reasons it is not clean.
fn judge(m: &Measured, generator_backlog_drops: u64) -> (Verdict, Vec<String>) {
    let g = &m.generator;
    let mut generator = Vec::new();
    if (m.sent as f64) < m.scheduled as f64 * SENT_BOUND {
        generator.push(format!("sent {} of {} due", m.sent, m.scheduled));
    }
    if g.lag_p99_us > LAG_BOUND_US {
        generator.push(format!("send lag p99 {} us", g.lag_p99_us));
    }
    if g.send_failures as f64 > m.sent as f64 * GENERATOR_DROP_BOUND {
        generator.push(format!("{} sends failed", g.send_failures));
    }
    let sink_drops = g.socket_drops + generator_backlog_drops;
    if sink_drops as f64 > m.expected as f64 * GENERATOR_DROP_BOUND {
        generator.push(format!(
            "sinks dropped {} (socket {}, backlog {})",
            sink_drops, g.socket_drops, generator_backlog_drops
        ));
    }
    if m.sent == 0 {
        generator.push("nothing sent".into());
    }
    if !generator.is_empty() {
        return (Verdict::GeneratorLimited, generator);
    }
    let mut reasons = Vec::new();
    let loss = loss(m);
    if loss > LOSS_BOUND {
        reasons.push(format!("loss {:.2}%", loss * 100.0));
    }
    match m.p99_us {
        Some(p99) if p99 > P99_BOUND_US => reasons.push(format!("p99 {p99:.0} us")),
        Some(_) => {}
        None => reasons.push("no latency sample".into()),
    }
    if m.srtp_failures + m.payload_mismatches > 0 {
        reasons.push(format!(
            "{} SRTP failures, {} payload mismatches",
            m.srtp_failures, m.payload_mismatches
        ));
    }
    if reasons.is_empty() {
        (Verdict::Clean, reasons)
    } else {
        (Verdict::Overloaded, reasons)
    }
}

fn print_step(profile: &Profile, target: Target, s: &Step) {
    let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    eprintln!(
        "{:<9} {:<15} {:>5} {:<8}: in {:>8.0} pps, out {:>8.0} pps, loss {:>6.2}%, p50 {:>6} us, p99 {:>6} us, gen busy {:>3.0}% lag p99 {:>5} us, load {:.1}, steal {}/{} ms{} -> {:?}{}",
        profile.name,
        target.name(),
        s.load,
        profile.unit,
        s.ingress_pps,
        s.egress_pps,
        s.loss * 100.0,
        us(s.p50_us),
        us(s.p99_us),
        s.measured.generator.busy * 100.0,
        s.measured.generator.lag_p99_us,
        s.load_average.unwrap_or(0.0),
        s.steal_ms_generator_core,
        s.steal_ms_forwarder_core,
        if s.retry { " (retry)" } else { "" },
        s.verdict,
        if s.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reasons.join("; "))
        },
    );
}

/// One saturation search.
struct SearchResult {
    config: SearchConfig,
    steps: Vec<Step>,
    trace: Vec<(usize, Verdict)>,
    outcome: Outcome,
}

impl SearchResult {
    /// The step that gives the figure: the first clean run of the largest
    /// clean load.
    fn best(&self) -> Option<&Step> {
        let load = self.outcome.clean?;
        self.steps
            .iter()
            .find(|s| s.load == load && s.verdict == Verdict::Clean)
    }

    /// The best clean step scaled to a whole forwarder core: `(load, egress
    /// pps)` ÷ the CPU fraction the forwarder used, and that fraction. A
    /// projection from the CPU the step used, not a saturation measurement;
    /// `None` below 2 %, where fixed per-wake-up costs dominate.
    fn per_core(&self) -> Option<(f64, f64, f64)> {
        let best = self.best()?;
        let busy = best.forwarder_core_busy.filter(|b| *b >= 0.02)?;
        Some((best.load as f64 / busy, best.egress_pps / busy, busy))
    }

    fn figure(&self, unit: &str) -> String {
        match (self.outcome.clean, self.outcome.bound) {
            (None, _) => "none clean".into(),
            (Some(c), b) if b.is_lower_bound() => format!("at least {c} {unit}"),
            (Some(c), _) => format!("{c} {unit}"),
        }
    }

    fn to_json(&self, unit: &str) -> Value {
        let best = self.best();
        json!({
            "search": self.config,
            "trace": self.trace,
            "outcome": self.outcome,
            "figure": self.figure(unit),
            "clean_load": self.outcome.clean,
            "is_lower_bound": self.outcome.bound.is_lower_bound(),
            "max_clean_egress_pps": best.map(|s| s.egress_pps),
            "max_clean_ingress_pps": best.map(|s| s.ingress_pps),
            "p50_us": best.and_then(|s| s.p50_us),
            "p99_us": best.and_then(|s| s.p99_us),
            "cpu_normalized": self.per_core().map(|(load, pps, busy)| json!({
                "forwarder_core_busy": busy,
                "load_per_core": load,
                "egress_pps_per_core": pps,
                "reading": "projection: the largest clean step's load and egress divided by the CPU fraction the forwarder used (its thread's and its core's ksoftirqd run time)",
            })),
            "steps": self.steps,
        })
    }
}

fn search(
    lab: &Lab,
    target: Target,
    profile: &Profile,
    config: SearchConfig,
    timing: Timing,
) -> Result<SearchResult> {
    let mut s = Search::new(config);
    let mut steps = Vec::new();
    let mut trace = Vec::new();
    while let Some(load) = s.next() {
        if bench::stop::requested() {
            bail!("interrupted");
        }
        let mut step = run_step(lab, target, profile, load, timing, false)
            .with_context(|| format!("{} {} at {load}", profile.name, target.name()))?;
        print_step(profile, target, &step);
        if step.verdict != Verdict::Clean && timing.confirm {
            steps.push(step);
            step = run_step(lab, target, profile, load, timing, true)
                .with_context(|| format!("{} {} at {load}", profile.name, target.name()))?;
            print_step(profile, target, &step);
        }
        s.record(load, step.verdict);
        trace.push((load, step.verdict));
        steps.push(step);
    }
    Ok(SearchResult {
        config: s.config(),
        steps,
        trace,
        outcome: s.outcome(),
    })
}

/// a ÷ b of two figures, each exact or a lower bound, and how to read it.
fn ratio(a: &SearchResult, b: &SearchResult) -> Value {
    let (Some(x), Some(y)) = (a.best(), b.best()) else {
        return json!({ "value": null, "reading": "no clean step on one side" });
    };
    let value = x.egress_pps / y.egress_pps.max(1e-9);
    let reading = match (
        a.outcome.bound.is_lower_bound(),
        b.outcome.bound.is_lower_bound(),
    ) {
        (false, false) => "measured",
        (true, false) => "at_least",
        (false, true) => "at_most",
        (true, true) => "undetermined",
    };
    json!({ "value": value, "reading": reading })
}

/// a ÷ b of egress pps per busy forwarder core, each from its largest clean
/// step: how much CPU each spends per forwarded packet, at loads both
/// handled.
fn cpu_ratio(a: &SearchResult, b: &SearchResult) -> Value {
    match (a.per_core(), b.per_core()) {
        (Some((_, x, _)), Some((_, y, _))) => {
            json!({ "value": x / y.max(1e-9), "reading": "cpu_normalized" })
        }
        _ => json!({ "value": null, "reading": "no clean step with a measurable busy fraction" }),
    }
}

/// Whether `ratio` (as from [`ratio`]) meets `goal`: true, false or null
/// when a bound cannot tell.
fn meets(r: &Value, goal: f64) -> Value {
    let Some(v) = r["value"].as_f64() else {
        return Value::Null;
    };
    match r["reading"].as_str() {
        Some("measured") => json!(v >= goal),
        Some("at_least") if v >= goal => json!(true),
        Some("at_most") if v < goal => json!(false),
        _ => Value::Null,
    }
}

/// Routes the participants' /17 to the generator namespace (local there)
/// and steers each namespace's received packets to its own core.
fn prepare_lab(lab: &Lab, steer: bool) -> Result<Value> {
    let net = format!("{}/{}", generator::NET, generator::NET_PREFIX);
    lab.generator
        .ns
        .ip(&["route", "add", "local", &net, "dev", "lo"])?;
    lab.appliance.ns.ip(&[
        "route",
        "add",
        &net,
        "via",
        &lab.generator.v4.to_string(),
        "dev",
        &lab.appliance.ifname,
    ])?;
    // Transmit checksum offload back on (the lab turns it off for XDP
    // rewrites): UDP GSO needs it, as it has on any NIC.
    for end in [&lab.generator, &lab.appliance] {
        let status = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                end.ns.name(),
                "ethtool",
                "-K",
                &end.ifname,
                "tx",
                "on",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running ethtool")?;
        if !status.success() {
            bail!("ethtool -K {} tx on failed", end.ifname);
        }
    }
    let mut rps = serde_json::Map::new();
    if !steer {
        return Ok(Value::Object(rps));
    }
    for (end, core) in [
        (&lab.generator, GENERATOR_CORE),
        (&lab.appliance, FORWARDER_CORE),
    ] {
        let path = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", end.ifname);
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", end.ns.name(), "sh", "-c"])
            .arg(format!("echo {:x} > {path}", 1u64 << core))
            .status()
            .context("running ip netns exec")?;
        rps.insert(end.ifname.clone(), json!(status.success().then_some(core)));
        if !status.success() {
            eprintln!("warning: receive packet steering on {} failed; its receive work stays on the sending core", end.ifname);
        }
    }
    Ok(Value::Object(rps))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let short = args.iter().any(|a| a == "--short");
    let out = args
        .iter()
        .skip_while(|a| *a != "--out")
        .nth(1)
        .cloned()
        .unwrap_or_else(|| "target/bench/sfu.json".to_owned());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("sfu_bench needs root (network namespaces, veth, routes)");
    }
    if bench::lab::online_cpus() < 2 {
        bail!("sfu_bench needs two cores: one for the generator, one for the forwarder");
    }
    bench::stop::install_handler()?;
    let timing = if short {
        Timing {
            warmup: Duration::from_millis(400),
            window: Duration::from_millis(800),
            drain: Duration::from_millis(250),
            confirm: false,
        }
    } else {
        Timing {
            warmup: Duration::from_millis(1500),
            window: Duration::from_secs(4),
            drain: Duration::from_millis(300),
            confirm: true,
        }
    };
    // Narrowing a run to one profile or forwarder helps when chasing one
    // number; the full report needs neither.
    let only_profile = std::env::var("SFU_BENCH_PROFILE").ok();
    let only_target = std::env::var("SFU_BENCH_TARGET").ok();
    let lab = Lab::new()?;
    let rps = prepare_lab(&lab, std::env::var("SFU_BENCH_RPS").is_ok_and(|v| v == "1"))?;
    let started = Instant::now();
    let mut report = serde_json::Map::new();
    let mut table = Vec::new();
    for profile in &PROFILES {
        if only_profile.as_deref().is_some_and(|p| p != profile.name) {
            continue;
        }
        let mut config = if short { profile.short } else { profile.full };
        if let Some(start) = std::env::var("SFU_BENCH_START")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.start = start;
        }
        let mut results: Vec<(Target, SearchResult)> = Vec::new();
        for target in TARGETS {
            if only_target.as_deref().is_some_and(|t| t != target.name()) {
                continue;
            }
            let r = search(&lab, target, profile, config, timing)?;
            eprintln!(
                "{:<9} {:<15} => {} ({:?})",
                profile.name,
                target.name(),
                r.figure(profile.unit),
                r.outcome.bound
            );
            results.push((target, r));
        }
        let get = |t: Target| results.iter().find(|(x, _)| *x == t).map(|(_, r)| r);
        let mut forwarders = serde_json::Map::new();
        for (target, r) in &results {
            forwarders.insert(target.name().into(), r.to_json(profile.unit));
            let best = r.best();
            let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
            table.push(format!(
                "| {:<9} | {:<15} | {:>26} | {:>10.0} | {:>10.0} | {:>7} | {:>7} | {:>5} |",
                profile.name,
                target.name(),
                r.figure(profile.unit),
                best.map_or(0.0, |s| s.egress_pps),
                best.map_or(0.0, |s| s.ingress_pps),
                us(best.and_then(|s| s.p50_us)),
                us(best.and_then(|s| s.p99_us)),
                r.steps.len(),
            ));
            if let Some((load, pps, busy)) = r.per_core() {
                table.push(format!(
                    "| {:<9} | {:<15} | per core: forwarder used {:.0}% of a core at its largest clean load -> {:.0} {} / {:.0} egress pps per core (projection) |",
                    profile.name,
                    target.name(),
                    busy * 100.0,
                    load,
                    profile.unit,
                    pps,
                ));
            }
        }
        let uring = get(Target::Sfu(Engine::IoUring));
        let mut ratios = serde_json::Map::new();
        if let (Some(u), Some(p)) = (uring, get(Target::Plain)) {
            ratios.insert("io_uring_over_plain_forwarder".into(), ratio(u, p));
        }
        if let (Some(u), Some(t)) = (uring, get(Target::Sfu(Engine::Tokio))) {
            ratios.insert("io_uring_over_tokio".into(), ratio(u, t));
            ratios.insert("io_uring_over_tokio_cpu_normalized".into(), cpu_ratio(u, t));
        }
        if let (Some(u), Some(p)) = (uring, get(Target::Plain)) {
            ratios.insert(
                "io_uring_over_plain_forwarder_cpu_normalized".into(),
                cpu_ratio(u, p),
            );
        }
        for (name, r) in &ratios {
            table.push(format!(
                "| {:<9} | {:<31} {:>10} ({}) |",
                profile.name,
                name,
                r["value"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.2}")),
                r["reading"].as_str().unwrap_or("-"),
            ));
        }
        let mut section = json!({
            "unit": profile.unit,
            "room_size": profile.media.room_size,
            "video_kbps": profile.media.video_kbps,
            "media_pps_per_participant": profile.media.pps_per_participant(),
            "forwarders": forwarders,
            "ratios": ratios,
        });
        if profile.name == "two_party" {
            let consults = uring.map(|u| {
                json!({
                    "value": u.outcome.clean,
                    "is_lower_bound": u.outcome.bound.is_lower_bound(),
                    "met": match (u.outcome.clean, u.outcome.bound.is_lower_bound()) {
                        (Some(c), _) if c >= 1000 => json!(true),
                        (_, false) => json!(false),
                        _ => Value::Null,
                    },
                    "cpu_normalized_projection": u.per_core().map(|(load, _, _)| load),
                })
            });
            section["goals"] = json!({
                "io_uring_over_plain_forwarder_at_least_0_5": ratios.get("io_uring_over_plain_forwarder").map(|r| meets(r, 0.5)),
                "io_uring_over_tokio_at_least_2": ratios.get("io_uring_over_tokio").map(|r| meets(r, 2.0)),
                "io_uring_consults_per_core_at_least_1000": consults,
            });
        }
        // The generator's capacity, as measured against the plain forwarder.
        if let Some(p) = get(Target::Plain) {
            let kept_up = p
                .steps
                .iter()
                .filter(|s| s.verdict != Verdict::GeneratorLimited)
                .max_by(|a, b| a.load.cmp(&b.load));
            let limited = p
                .steps
                .iter()
                .filter(|s| s.verdict == Verdict::GeneratorLimited)
                .min_by(|a, b| a.load.cmp(&b.load));
            let brief = |s: &Step| {
                json!({
                    "load": s.load, "offered_pps": s.ingress_pps, "sunk_pps": s.egress_pps,
                    "busy": s.measured.generator.busy, "lag_p99_us": s.measured.generator.lag_p99_us,
                    "reasons": s.reasons,
                })
            };
            section["generator_vs_plain_forwarder"] = json!({
                "largest_load_kept_up": kept_up.map(brief),
                "smallest_load_not_kept_up": limited.map(brief),
            });
            if let Some(s) = kept_up {
                table.push(format!(
                    "| {:<9} | generator kept up to {} {} ({:.0} pps out, {:.0} pps sunk, busy {:.0}%){} |",
                    profile.name,
                    s.load,
                    profile.unit,
                    s.ingress_pps,
                    s.egress_pps,
                    s.measured.generator.busy * 100.0,
                    limited.map_or(String::new(), |l| format!(
                        "; fell short at {} ({:.0} pps out, {:.0} sunk)",
                        l.load, l.ingress_pps, l.egress_pps
                    )),
                ));
            }
        }
        report.insert(profile.name.into(), section);
    }
    report.insert(
        "setup".into(),
        json!({
            "short": short,
            "warmup_s": timing.warmup.as_secs_f64(),
            "window_s": timing.window.as_secs_f64(),
            "drain_s": timing.drain.as_secs_f64(),
            "failures_confirmed_by_a_second_run": timing.confirm,
            "generator_core": GENERATOR_CORE,
            "forwarder_core": FORWARDER_CORE,
            "receive_packet_steering": rps,
            "srtp_profile": "AEAD_AES_128_GCM",
            "clean_step": {
                "loss_below": LOSS_BOUND,
                "p99_latency_below_us": P99_BOUND_US,
            },
            "generator_kept_up": {
                "send_lag_p99_at_most_us": LAG_BOUND_US,
                "sent_at_least_fraction_of_due": SENT_BOUND,
                "sink_drops_at_most_fraction": GENERATOR_DROP_BOUND,
            },
            "duration_s": started.elapsed().as_secs_f64(),
            "note": "egress/ingress pps = media packets per second received by the sinks / sent by the generator in the window; loss = 1 - received/(sent x (room size - 1)); latency = kernel receive time at the sink - send time in the (encrypted) payload, on sampled packets; load = consults (two_party) or rooms (six_party); ratios compare max clean egress pps",
        }),
    );
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!(
        "| profile   | forwarder       | clean load (loss<1%, p99<20ms) | egress pps | ingress pps | p50 us  | p99 us  | steps |"
    );
    println!(
        "|-----------|-----------------|----------------------------|------------|------------|---------|---------|-------|"
    );
    for line in table {
        println!("{line}");
    }
    println!("results: {out}");
    Ok(())
}
