//! The estimator against a simulated bottleneck: a FIFO draining at a set
//! rate behind a buffer large enough that delay grows long before anything
//! is dropped, fed by a sender that sends what the estimate allows, with
//! transport-cc feedback built by the receive-side recorder and parsed from
//! the wire format. Simulated time in 1 ms steps; everything deterministic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Usage;
use crate::sfu::bwe::{TwccEstimator, TwccRecorder, START_ESTIMATE};
use crate::wire::rtcp::{build_transport_cc, TransportCc, TwccPacket};

const PROPAGATION_US: i64 = 20_000;
const FEEDBACK_EVERY_MS: u64 = 100;
const AUDIO_BYTES: usize = 120;
const AUDIO_EVERY_MS: u64 = 20;
/// What the sender keeps for audio out of the estimate.
const AUDIO_BPS: u64 = 50_000;
const KBPS: u64 = 1000;

#[derive(Clone, Copy)]
enum Sender {
    /// Video at the estimate (less audio), up to this rate.
    Continuous(u64),
    /// The highest of these simulcast layers the estimate affords.
    Layers(&'static [u64]),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mangle {
    None,
    /// Every feedback message delivered twice.
    Duplicate,
    /// Consecutive feedback messages delivered in swapped order.
    SwapPairs,
    /// Every third feedback message lost.
    DropThird,
}

#[derive(Clone, Copy)]
struct Scenario {
    /// Link capacity (bit/s) until each time (ms); the last entry ends the run.
    phases: &'static [(u64, u64)],
    sender: Sender,
    buffer_bytes: usize,
    /// Extra per-packet delay, uniform in [0, jitter), order kept.
    jitter_us: i64,
    max_packet: usize,
    mangle: Mangle,
}

impl Scenario {
    fn new(phases: &'static [(u64, u64)], sender: Sender) -> Self {
        Self {
            phases,
            sender,
            // 8 s at 250 kbit/s: delay, not loss, is the first sign.
            buffer_bytes: 256 * 1024,
            jitter_us: 0,
            max_packet: 1200,
            mangle: Mangle::None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    ms: u64,
    estimate: u64,
    /// Queueing delay a packet sent now would see, µs.
    queue_us: i64,
}

struct Run {
    samples: Vec<Sample>,
    dropped: u64,
    /// When each drop happened (ms).
    drops: Vec<u64>,
    sent: u64,
    est: TwccEstimator,
}

impl Run {
    /// First sample at or after `from` ms satisfying `f`.
    fn first_after(&self, from: u64, f: impl Fn(&Sample) -> bool) -> Option<Sample> {
        self.samples.iter().find(|s| s.ms >= from && f(s)).copied()
    }

    fn max_queue_us(&self, from: u64, to: u64) -> i64 {
        self.samples
            .iter()
            .filter(|s| (from..to).contains(&s.ms))
            .map(|s| s.queue_us)
            .max()
            .unwrap_or(0)
    }
}

struct Link {
    free_at: i64,
    /// Service end and size of what is queued or in service.
    queue: VecDeque<(i64, usize)>,
    queued_bytes: usize,
    last_arrival: i64,
}

impl Link {
    fn send(
        &mut self,
        s: &Scenario,
        capacity: u64,
        now: i64,
        size: usize,
        jitter: i64,
    ) -> Option<i64> {
        while self.queue.front().is_some_and(|&(end, _)| end <= now) {
            let (_, b) = self.queue.pop_front().unwrap();
            self.queued_bytes -= b;
        }
        if self.queued_bytes + size > s.buffer_bytes {
            return None;
        }
        let start = self.free_at.max(now);
        let end = start + (size as i64 * 8 * 1_000_000) / capacity as i64;
        self.free_at = end;
        self.queue.push_back((end, size));
        self.queued_bytes += size;
        self.last_arrival = self.last_arrival.max(end + PROPAGATION_US + jitter);
        Some(self.last_arrival)
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn simulate(s: Scenario) -> Run {
    let t0 = Instant::now();
    let at = |us: i64| t0 + Duration::from_micros(us as u64);
    let mut est = TwccEstimator::new();
    let mut rec = TwccRecorder::new(t0);
    let mut link = Link {
        free_at: 0,
        queue: VecDeque::new(),
        queued_bytes: 0,
        last_arrival: 0,
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut in_flight: VecDeque<(i64, u16)> = VecDeque::new();
    let mut feedback: VecDeque<(i64, Vec<u8>)> = VecDeque::new();
    let mut held: Option<Vec<u8>> = None;
    let mut fb_index = 0u64;
    let end = s.phases.last().map_or(0, |p| p.0);
    let mut run = Run {
        samples: Vec::new(),
        dropped: 0,
        drops: Vec::new(),
        sent: 0,
        est: TwccEstimator::new(),
    };
    let mut last_frame = u64::MAX;
    for ms in 0..end {
        let now = ms as i64 * 1000;
        let capacity = s
            .phases
            .iter()
            .find(|p| ms < p.0)
            .map_or(s.phases[0].1, |p| p.1);
        let estimate = est.estimate(at(now)).unwrap_or(START_ESTIMATE);
        let mut packets: Vec<usize> = Vec::new();
        if ms % AUDIO_EVERY_MS == 0 {
            packets.push(AUDIO_BYTES);
        }
        let frame = ms * 30 / 1000;
        if frame != last_frame {
            last_frame = frame;
            let video = estimate.saturating_sub(AUDIO_BPS);
            let rate = match s.sender {
                Sender::Continuous(max) => video.clamp(50 * KBPS, max),
                Sender::Layers(layers) => layers
                    .iter()
                    .copied()
                    .filter(|&l| l <= video)
                    .max()
                    .unwrap_or(layers[0]),
            };
            let mut bytes = (rate / 8 / 30) as usize;
            while bytes > 0 {
                let p = bytes.min(s.max_packet);
                packets.push(p);
                bytes -= p;
            }
        }
        for size in packets {
            let seq = est.on_send(size, at(now));
            run.sent += 1;
            let jitter = if s.jitter_us > 0 {
                (rng.next() % s.jitter_us as u64) as i64
            } else {
                0
            };
            match link.send(&s, capacity, now, size, jitter) {
                Some(arrival) => in_flight.push_back((arrival, seq)),
                None => {
                    run.dropped += 1;
                    run.drops.push(ms);
                }
            }
        }
        while in_flight.front().is_some_and(|&(a, _)| a <= now) {
            let (a, seq) = in_flight.pop_front().unwrap();
            rec.on_packet(seq, at(a));
        }
        if ms % FEEDBACK_EVERY_MS == FEEDBACK_EVERY_MS / 2 {
            let mut buf = vec![0u8; 1500];
            if let Some(len) = rec.build_feedback(1, 2, &mut buf) {
                buf.truncate(len);
                fb_index += 1;
                let due = now + PROPAGATION_US;
                match s.mangle {
                    Mangle::None => feedback.push_back((due, buf)),
                    Mangle::Duplicate => {
                        feedback.push_back((due, buf.clone()));
                        feedback.push_back((due, buf));
                    }
                    Mangle::SwapPairs => match held.take() {
                        None => held = Some(buf),
                        Some(first) => {
                            feedback.push_back((due, buf));
                            feedback.push_back((due, first));
                        }
                    },
                    Mangle::DropThird => {
                        if !fb_index.is_multiple_of(3) {
                            feedback.push_back((due, buf));
                        }
                    }
                }
            }
        }
        while feedback.front().is_some_and(|&(due, _)| due <= now) {
            let (_, buf) = feedback.pop_front().unwrap();
            let fb = TransportCc::new_checked(&buf[..]).expect("recorder feedback parses");
            est.on_feedback(&fb, at(now));
        }
        run.samples.push(Sample {
            ms,
            estimate: est.estimate(at(now)).unwrap_or(0),
            queue_us: (link.free_at - now).max(0),
        });
    }
    run.est = est;
    run
}

/// 2 Mbit/s, then 250 kbit/s from 10 s, then 2 Mbit/s again from 30 s.
const STEP: &[(u64, u64)] = &[(10_000, 2_000_000), (30_000, 250_000), (50_000, 2_000_000)];
const DROP_MS: u64 = 10_000;
const LIFT_MS: u64 = 30_000;
const CAPACITY: u64 = 250_000;
const TOP: u64 = 1_500_000;
const LAYERS: &[u64] = &[150_000, 500_000, 1_500_000];

/// Checks the step scenario: the estimate falls below the bottleneck within
/// `detect_ms` of the drop, with nothing lost, and is back at the top rate
/// within `recover_ms` of the lift. Returns (detect, recover) in ms.
fn check_step(run: &Run, detect_ms: u64, recover_ms: u64) -> (u64, u64) {
    let before = run.first_after(DROP_MS - 1, |_| true).unwrap();
    assert!(
        before.estimate >= TOP,
        "reached {} before the drop",
        before.estimate
    );
    let below = run
        .first_after(DROP_MS, |s| s.estimate < CAPACITY)
        .expect("the estimate falls below the bottleneck");
    let detect = below.ms - DROP_MS;
    assert!(detect <= detect_ms, "below {CAPACITY} after {detect} ms");
    assert_eq!(run.dropped, 0, "the queue never overflows");
    let back = run
        .first_after(LIFT_MS, |s| s.estimate >= TOP + AUDIO_BPS)
        .expect("the estimate recovers");
    let recover = back.ms - LIFT_MS;
    assert!(recover <= recover_ms, "recovered after {recover} ms");
    (detect, recover)
}

#[test]
fn continuous_sender_finds_the_bottleneck_before_any_loss_and_recovers() {
    let run = simulate(Scenario::new(STEP, Sender::Continuous(TOP)));
    let (detect, recover) = check_step(&run, 1500, 8000);
    // Once found, the estimate stays around the bottleneck, and the queue
    // built while the feedback was on its way shrinks.
    let found = DROP_MS + detect + 1000;
    let congested: Vec<u64> = run
        .samples
        .iter()
        .filter(|s| (found..LIFT_MS).contains(&s.ms))
        .map(|s| s.estimate)
        .collect();
    let highest = congested.iter().copied().max().unwrap();
    let mean = congested.iter().sum::<u64>() / congested.len() as u64;
    // GCC's sawtooth: up slowly until the queue shows, down to 0.85 × the
    // delivered rate.
    assert!(
        highest < CAPACITY * 7 / 5,
        "estimate up to {highest} at {CAPACITY}"
    );
    assert!(
        mean < CAPACITY * 21 / 20,
        "estimate {mean} on average at {CAPACITY}"
    );
    let peak = run.max_queue_us(DROP_MS, DROP_MS + 5000);
    let at_lift = run.max_queue_us(LIFT_MS - 1000, LIFT_MS);
    // Never growing past what the first detection left; the deep buffer
    // keeps a standing queue, which a trend detector does not see.
    assert!(
        at_lift < peak * 3 / 4,
        "queue {at_lift} µs from a peak of {peak} µs"
    );
    assert!(run.est.counters().delay.overuses >= 1);
    println!(
        "continuous: below the bottleneck {detect} ms after the drop (queue peak {} ms, \
         {} ms at the lift), estimate {mean} on average and ≤ {highest} once found, back at \
         {TOP} after {recover} ms",
        peak / 1000,
        at_lift / 1000
    );
}

#[test]
fn layered_sender_finds_the_bottleneck_before_any_loss_and_recovers() {
    let run = simulate(Scenario::new(STEP, Sender::Layers(LAYERS)));
    let (detect, recover) = check_step(&run, 1500, 8000);
    // At 250 kbit/s only the lowest layer fits; upgrades are tried now and
    // then and must be short.
    let on_top_layers = run
        .samples
        .iter()
        .filter(|s| (DROP_MS + 2000..LIFT_MS).contains(&s.ms) && s.estimate >= 500_000 + AUDIO_BPS)
        .count() as f64
        / (LIFT_MS - DROP_MS - 2000) as f64;
    assert!(
        on_top_layers < 0.15,
        "{on_top_layers} of the time above the bottleneck"
    );
    let drained = run
        .first_after(DROP_MS + detect, |s| s.queue_us < 100_000)
        .map_or(u64::MAX, |s| s.ms - DROP_MS);
    assert!(drained < LIFT_MS - DROP_MS, "the queue never drained");
    println!(
        "layers: below the bottleneck {detect} ms after the drop (queue peak {} ms, under \
         100 ms {drained} ms after the drop), back at {TOP} after {recover} ms, \
         {:.0} % of the congested time estimating the 500k layer",
        run.max_queue_us(DROP_MS, LIFT_MS) / 1000,
        on_top_layers * 100.0
    );
}

#[test]
fn no_congestion_never_overuses() {
    const WIDE: &[(u64, u64)] = &[(60_000, 10_000_000)];
    let mut s = Scenario::new(WIDE, Sender::Continuous(TOP));
    s.jitter_us = 3000;
    let run = simulate(s);
    let c = run.est.counters();
    assert_eq!(c.delay.overuses, 0, "{c:?}");
    assert_eq!((c.unknown, c.duplicate, run.dropped), (0, 0, 0));
    assert!(run.samples.last().unwrap().estimate >= TOP);
    assert_ne!(run.est.delay().usage(), Usage::Overusing);
}

#[test]
fn sequence_numbers_wrap_without_harm() {
    // Small packets: more than 65 536 of them in the run.
    const WIDE: &[(u64, u64)] = &[(80_000, 10_000_000)];
    let mut s = Scenario::new(WIDE, Sender::Continuous(TOP));
    s.max_packet = 200;
    let run = simulate(s);
    assert!(run.sent > 70_000, "{}", run.sent);
    let c = run.est.counters();
    assert_eq!(
        (c.unknown, c.duplicate, c.delay.overuses),
        (0, 0, 0),
        "{c:?}"
    );
    assert!(run.samples.last().unwrap().estimate >= TOP);
}

#[test]
fn duplicated_feedback_is_counted_and_changes_nothing() {
    let clean = simulate(Scenario::new(STEP, Sender::Continuous(TOP)));
    let mut s = Scenario::new(STEP, Sender::Continuous(TOP));
    s.mangle = Mangle::Duplicate;
    let doubled = simulate(s);
    assert!(doubled.est.counters().duplicate > clean.sent / 2);
    let a: Vec<u64> = clean.samples.iter().map(|s| s.estimate).collect();
    let b: Vec<u64> = doubled.samples.iter().map(|s| s.estimate).collect();
    assert!(a == b, "duplicates changed the estimate");
}

#[test]
fn reordered_or_missing_feedback_still_finds_the_bottleneck() {
    for mangle in [Mangle::SwapPairs, Mangle::DropThird] {
        let mut s = Scenario::new(STEP, Sender::Continuous(TOP));
        s.mangle = mangle;
        let run = simulate(s);
        check_step(&run, 3000, 12_000);
        if mangle == Mangle::SwapPairs {
            let c = run.est.counters().delay;
            assert!(c.out_of_order > 0, "{c:?}");
        }
    }
}

#[test]
fn hostile_feedback_never_panics_and_keeps_the_estimate_in_range() {
    let t0 = Instant::now();
    let mut est = TwccEstimator::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut packets = Vec::with_capacity(600);
    let mut buf = vec![0u8; 4096];
    for round in 0..3000u64 {
        let now = t0 + Duration::from_millis(round * 10);
        for _ in 0..5 {
            est.on_send(1000, now);
        }
        packets.clear();
        let base = rng.next() as u16;
        let count = (rng.next() % 300) as usize;
        for i in 0..count {
            let r = rng.next();
            let delta_us = match r % 5 {
                0 => None,
                // Extreme deltas both ways (the format's ±8.19 s).
                1 => Some(i32::from(i16::MAX) * 250),
                2 => Some(i32::from(i16::MIN) * 250),
                _ => Some(((r >> 8) % 256) as i32 * 250),
            };
            packets.push(TwccPacket {
                seq: base.wrapping_add(i as u16),
                delta_us,
            });
        }
        // Reference times anywhere in the 24-bit range, wrapping.
        let reference = ((rng.next() % (1 << 24)) as i32) - (1 << 23);
        let len = build_transport_cc(1, 2, reference, round as u8, &packets, &mut buf).unwrap();
        let fb = TransportCc::new_checked(&buf[..len]).unwrap();
        est.on_feedback(&fb, now);
        if let Some(e) = est.estimate(now) {
            assert!((30_000..=100_000_000).contains(&e), "{e}");
        }
    }
    let c = est.counters();
    assert!(
        c.unknown > 0 && c.delay.arrival_jumps + c.delay.reordered_groups > 0,
        "{c:?}"
    );
}

#[test]
fn a_shallow_buffer_still_brings_the_estimate_below_the_bottleneck() {
    // A tbf-like 100 ms of buffer at 250 kbit/s (plus a 10 kB burst): the
    // queue overflows within the first feedback round trips, so loss and
    // delay both speak; either way the estimate must fall and stay near.
    let mut s = Scenario::new(STEP, Sender::Layers(LAYERS));
    s.buffer_bytes = 13 * 1024;
    let run = simulate(s);
    let below = run
        .first_after(DROP_MS, |s| s.estimate < CAPACITY)
        .expect("the estimate falls below the bottleneck");
    assert!(
        below.ms - DROP_MS <= 1500,
        "after {} ms",
        below.ms - DROP_MS
    );
    // Overflow while the first feedback is on its way, then only when an
    // upgrade is retried now and then (each a few packets).
    let settled = below.ms + 200;
    let late = run.drops.iter().filter(|&&ms| ms > settled).count();
    assert!(
        late <= 20,
        "{late} drops after {settled} ms: {:?}",
        run.drops
    );
    let back = run
        .first_after(LIFT_MS, |s| s.estimate >= TOP + AUDIO_BPS)
        .expect("the estimate recovers");
    assert!(
        back.ms - LIFT_MS <= 12_000,
        "recovered after {} ms",
        back.ms - LIFT_MS
    );
    println!(
        "shallow: below the bottleneck {} ms after the drop, {} of {} packets lost ({late} \
         after the first {} ms), back at {TOP} after {} ms",
        below.ms - DROP_MS,
        run.dropped,
        run.sent,
        settled - DROP_MS,
        back.ms - LIFT_MS
    );
}
