//! Property tests of the per-subscriber stream rewriter.
//!
//! Each case generates up to three simulcast layers (own SSRC, sequence and
//! timestamp spaces, key frames at random frames, random deliberate drops),
//! a random target-layer schedule (including pauses), then loses, duplicates
//! and reorders the packets within a bounded window, feeds them to a
//! [`StreamRewriter`] and checks the output against the specification:
//!
//! * **(a) ordering** — extended output sequence numbers are unique and
//!   `seq` is their low 16 bits; the output is a series of segments (one per
//!   start/switch) occupying consecutive ranges of output numbers, each
//!   carrying one layer, and inside a segment output numbers increase
//!   strictly with the input sequence number.
//! * **(b) gaps** — segments abut (the first number of a segment follows the
//!   last one of the segment before, the first segment starts at the
//!   configured number), and between two output numbers of one segment the
//!   gap is exactly the number of input packets in between that were *not*
//!   closed, where an input number is closed iff a deliberately dropped copy
//!   of it reached the rewriter during the segment while its slot was still
//!   open (no later packet of the segment forwarded yet, and not pushed out
//!   of the history window). So losses always show, deliberate drops in
//!   time never do, and switches never do.
//! * **(c) timestamps** — a segment's first timestamp is the newest output
//!   timestamp so far plus the wall time since that timestamp's first
//!   packet at 90 kHz (at least 1 tick), so it is newer than every earlier
//!   output timestamp; within a segment output − input timestamp is
//!   constant.
//!   Bursts of loss and of deliberate drops longer than the history window
//!   exercise slots that leave the window undecided.
//! * **(d) robustness** — no panic and no arithmetic overflow (tests run
//!   with overflow checks), whatever the input.
//!
//! and, to keep the rewriter from satisfying the above by forwarding
//! nothing: segments start only at key frames of the target layer, the first
//! new key frame of the target layer always starts one, every packet not
//! deliberately dropped whose slot is still known (open, or a hole within
//! the history window of the current or previous segment) is forwarded,
//! nothing deliberately dropped is forwarded, only a packet that arrived
//! before is called a duplicate, and `needs_keyframe()` is set exactly while
//! the target is not being forwarded.

use std::time::{Duration, Instant};

use dataplane::rewrite::{
    Decision, Discard, DropReason, Forward, IncomingPacket, PayloadTypeMap, RewriterConfig,
    StreamRewriter,
};
use proptest::prelude::*;

const OUT_SSRC: u32 = 0x0005_EB5C;
const CLOCK_RATE: u32 = 90_000;
const TICKS_PER_FRAME: u32 = 3000;
const MAX_SWITCH_ADVANCE: u64 = 1 << 30;
const PUBLISHER_PT: u8 = 96;
const SUBSCRIBER_PT: u8 = 102;
/// Wall time between two generated packets.
const PACKET_SPACING_US: u64 = 1500;

#[derive(Debug, Clone)]
struct FrameSpec {
    packets: [u8; 3],
    keyframe: [bool; 3],
    /// Per layer and packet: 0 → padding only, 1 → temporal layer above cap,
    /// anything else → forwardable.
    discard: [[u8; 3]; 3],
}

#[derive(Debug, Clone, Copy)]
struct NetSpec {
    lost: bool,
    duplicated: bool,
    delay: u8,
    duplicate_delay: u8,
}

#[derive(Debug, Clone)]
struct Scenario {
    layers: usize,
    history_len: usize,
    start_seq: [u16; 3],
    start_ts: [u32; 3],
    initial_seq: u16,
    initial_ts: u32,
    initial_target: Option<u8>,
    frames: Vec<FrameSpec>,
    /// (position in ‰ of the arrival sequence, target).
    schedule: Vec<(u16, Option<u8>)>,
    reorder_window: u8,
    net: Vec<NetSpec>,
    /// Stretches of generated packets (start in ‰, length) all lost, or all
    /// deliberately dropped: longer than the history window, they push
    /// undecided slots out of it.
    bursts: Vec<(u16, u8, Burst)>,
}

#[derive(Debug, Clone, Copy)]
enum Burst {
    Loss,
    Discard,
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        prop::array::uniform3(1u8..=3),
        prop::array::uniform3(prop::bool::weighted(0.25)),
        prop::array::uniform3(prop::array::uniform3(0u8..10)),
    )
        .prop_map(|(packets, keyframe, discard)| FrameSpec {
            packets,
            keyframe,
            discard,
        })
}

fn net_spec() -> impl Strategy<Value = NetSpec> {
    (
        prop::bool::weighted(0.08),
        prop::bool::weighted(0.05),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(lost, duplicated, delay, duplicate_delay)| NetSpec {
            lost,
            duplicated,
            delay,
            duplicate_delay,
        })
}

fn seq_start() -> impl Strategy<Value = u16> {
    // Often close to the wrap, so that it happens inside a case.
    prop_oneof![any::<u16>(), 65_400u16..=65_535]
}

fn target() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![1 => Just(None), 6 => (0u8..3).prop_map(Some)]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (
            1usize..=3,
            prop_oneof![Just(16usize), Just(64), Just(1024)],
            prop::array::uniform3(seq_start()),
            prop::array::uniform3(any::<u32>()),
            seq_start(),
            any::<u32>(),
            target(),
        ),
        prop::collection::vec(frame_spec(), 10..80),
        prop::collection::vec((0u16..1000, target()), 1..12),
        0u8..=24,
        prop::collection::vec(net_spec(), 1..400),
        prop::collection::vec(
            (
                0u16..1000,
                any::<u8>(),
                prop_oneof![Just(Burst::Loss), Just(Burst::Discard)],
            ),
            0..3,
        ),
    )
        .prop_map(
            |(
                (layers, history_len, start_seq, start_ts, initial_seq, initial_ts, initial_target),
                frames,
                schedule,
                reorder_window,
                net,
                bursts,
            )| Scenario {
                layers,
                history_len,
                start_seq,
                start_ts,
                initial_seq,
                initial_ts,
                initial_target,
                frames,
                schedule,
                reorder_window,
                net,
                bursts,
            },
        )
}

/// One generated packet; `index` counts the packets of its layer, which is
/// its sequence number without wrap.
#[derive(Debug, Clone, Copy)]
struct Packet {
    layer: u8,
    index: i64,
    seq: u16,
    ts: u32,
    keyframe: bool,
    marker: bool,
    discard: Option<Discard>,
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    packet: Packet,
    at_us: u64,
    /// Not the first copy of this packet to arrive.
    repeat: bool,
}

fn layer_ssrc(layer: u8) -> u32 {
    0x1000_0000 + u32::from(layer)
}

fn generate(s: &Scenario) -> (Vec<Packet>, Vec<Arrival>) {
    let mut packets: Vec<Packet> = Vec::new();
    let mut next_index = [0i64; 3];
    for (f, frame) in s.frames.iter().enumerate() {
        for (layer, next) in next_index.iter_mut().enumerate().take(s.layers) {
            let count = usize::from(frame.packets[layer]);
            for p in 0..count {
                let index = *next;
                *next += 1;
                let keyframe = frame.keyframe[layer] && p == 0;
                let discard = match (keyframe, frame.discard[layer][p]) {
                    (true, _) => None,
                    (false, 0) => Some(Discard::PaddingOnly),
                    (false, 1) => Some(Discard::TemporalLayerAboveCap),
                    _ => None,
                };
                packets.push(Packet {
                    layer: layer as u8,
                    index,
                    seq: s.start_seq[layer].wrapping_add(index as u16),
                    ts: s.start_ts[layer].wrapping_add(f as u32 * TICKS_PER_FRAME),
                    keyframe,
                    marker: p + 1 == count,
                    discard,
                });
            }
        }
    }
    let generated = packets.len();
    let burst_at = |g: usize| {
        s.bursts.iter().find_map(|&(start, len, kind)| {
            let first = usize::from(start) * generated / 1000;
            (first..first + usize::from(len))
                .contains(&g)
                .then_some(kind)
        })
    };
    for (g, packet) in packets.iter_mut().enumerate() {
        if let (Some(Burst::Discard), false) = (burst_at(g), packet.keyframe) {
            packet.discard = Some(Discard::TemporalLayerAboveCap);
        }
    }
    let window = u64::from(s.reorder_window) + 1;
    let mut arrivals: Vec<(u64, usize, u8, Packet)> = Vec::new();
    for (g, packet) in packets.iter().enumerate() {
        let net = s.net[g % s.net.len()];
        if net.lost || matches!(burst_at(g), Some(Burst::Loss)) {
            continue;
        }
        let sent = g as u64;
        arrivals.push((sent + u64::from(net.delay) % window, g, 0, *packet));
        if net.duplicated {
            let at = sent + u64::from(net.duplicate_delay) % window;
            arrivals.push((at, g, 1, *packet));
        }
    }
    arrivals.sort_by_key(|&(at, g, copy, _)| (at, g, copy));
    let mut seen = std::collections::HashSet::new();
    let arrivals = arrivals
        .into_iter()
        .map(|(at, g, _, packet)| Arrival {
            packet,
            at_us: at * PACKET_SPACING_US,
            repeat: !seen.insert(g),
        })
        .collect();
    (packets, arrivals)
}

/// What happened to one arrival.
#[derive(Debug, Clone, Copy)]
struct Record {
    arrival: Arrival,
    target: Option<u8>,
    current_before: Option<u8>,
    decision: Decision,
    /// This arrival started a segment (start, switch or restart).
    started_segment: bool,
}

fn run(s: &Scenario) -> (Vec<Packet>, Vec<Record>, StreamRewriter) {
    let (packets, arrivals) = generate(s);
    let mut pts = PayloadTypeMap::new();
    pts.insert(PUBLISHER_PT, SUBSCRIBER_PT).unwrap();
    let config = RewriterConfig {
        initial_seq: s.initial_seq,
        initial_timestamp: s.initial_ts,
        history_len: s.history_len,
        ..RewriterConfig::new(OUT_SSRC, CLOCK_RATE, pts)
    };
    let mut rw = StreamRewriter::new(config).unwrap();
    let clamp = |t: Option<u8>| t.map(|l| l % s.layers as u8);
    rw.set_target_layer(clamp(s.initial_target));
    let mut schedule: Vec<(usize, Option<u8>)> = s
        .schedule
        .iter()
        .map(|&(permille, t)| (usize::from(permille) * arrivals.len() / 1000, clamp(t)))
        .collect();
    schedule.sort_by_key(|&(pos, _)| pos);
    let t0 = Instant::now();
    let mut records = Vec::with_capacity(arrivals.len());
    let mut next_event = 0;
    for (i, arrival) in arrivals.iter().enumerate() {
        while next_event < schedule.len() && schedule[next_event].0 <= i {
            rw.set_target_layer(schedule[next_event].1);
            next_event += 1;
        }
        let p = arrival.packet;
        let incoming = IncomingPacket {
            layer: p.layer,
            ssrc: layer_ssrc(p.layer),
            seq: p.seq,
            timestamp: p.ts,
            payload_type: PUBLISHER_PT,
            marker: p.marker,
            keyframe: p.keyframe,
            switch_point: false,
            arrival: t0 + Duration::from_micros(arrival.at_us),
            discard: p.discard,
        };
        let segments = |rw: &StreamRewriter| {
            let c = rw.counters();
            c.starts() + c.switches() + c.restarts()
        };
        let before = segments(&rw);
        let current_before = rw.current_layer();
        let decision = rw.process(&incoming);
        let target = rw.target_layer();
        // needs_keyframe() is set exactly while the target is not forwarded.
        assert_eq!(
            rw.needs_keyframe(),
            target.is_some() && rw.current_layer() != target,
            "needs_keyframe after arrival {i}"
        );
        records.push(Record {
            arrival: *arrival,
            target,
            current_before,
            decision,
            started_segment: segments(&rw) > before,
        });
    }
    (packets, records, rw)
}

/// RFC 1982 "a is newer than b" for 32-bit timestamps.
fn ts_newer(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000_0000
}

#[derive(Debug)]
struct Segment {
    layer: u8,
    /// Arrival index of the key frame that started it.
    start: usize,
    /// Arrival index at which it stopped (next segment or pause), exclusive.
    end: usize,
    /// Forwards (arrival index, packet, header) sorted by output number.
    forwards: Vec<(usize, Packet, Forward)>,
}

fn forward_of(r: &Record) -> Option<Forward> {
    match r.decision {
        Decision::Forward(f) => Some(f),
        Decision::Drop(_) => None,
    }
}

fn segments(records: &[Record]) -> Vec<Segment> {
    let starts: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].started_segment)
        .collect();
    let mut segments: Vec<Segment> = starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let layer = records[start].arrival.packet.layer;
            let next = starts.get(n + 1).copied().unwrap_or(records.len());
            // A pause seals the segment at the first packet of its layer
            // dropped as paused.
            let paused = (start + 1..next).find(|&j| {
                records[j].arrival.packet.layer == layer
                    && records[j].decision == Decision::Drop(DropReason::Paused)
            });
            Segment {
                layer,
                start,
                end: paused.unwrap_or(next),
                forwards: Vec::new(),
            }
        })
        .collect();
    let first_outs: Vec<u64> = starts
        .iter()
        .map(|&i| {
            forward_of(&records[i])
                .expect("a segment starts with a forward")
                .extended_seq
        })
        .collect();
    assert!(
        first_outs.windows(2).all(|w| w[0] < w[1]),
        "segments occupy increasing output ranges: {first_outs:?}"
    );
    for (i, r) in records.iter().enumerate() {
        if let Some(f) = forward_of(r) {
            let n = first_outs
                .iter()
                .rposition(|&o| o <= f.extended_seq)
                .expect("every forward lies in some segment's range");
            segments[n].forwards.push((i, r.arrival.packet, f));
        }
    }
    for seg in &mut segments {
        seg.forwards.sort_by_key(|&(_, _, f)| f.extended_seq);
    }
    segments
}

/// Highest input index whose slot segment `seg` had resolved just before
/// arrival `j`: the highest forwarded one, or anything pushed out of the
/// history window by a newer arrival.
fn resolved_before(seg: &Segment, records: &[Record], j: usize, history: i64) -> i64 {
    let forwarded = seg
        .forwards
        .iter()
        .filter(|&&(i, _, _)| i < j)
        .map(|&(_, p, _)| p.index)
        .max()
        .unwrap_or(i64::MIN);
    let newest_arrival = records[seg.start..j]
        .iter()
        .filter(|r| r.arrival.packet.layer == seg.layer)
        .map(|r| r.arrival.packet.index)
        .max()
        .unwrap_or(i64::MIN);
    forwarded.max(newest_arrival.saturating_sub(history))
}

/// Whether input `index` of the segment's layer was closed: a deliberately
/// dropped copy of it reached the segment while its slot was open.
fn closed(seg: &Segment, records: &[Record], index: i64, history: i64) -> bool {
    (seg.start..seg.end).any(|j| {
        let p = records[j].arrival.packet;
        p.layer == seg.layer
            && p.index == index
            && p.discard.is_some()
            && resolved_before(seg, records, j, history) < index
    })
}

fn check(s: &Scenario, packets: &[Packet], records: &[Record], rw: &StreamRewriter) {
    let history = s.history_len as i64;
    let forwards: Vec<(usize, Forward)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| forward_of(r).map(|f| (i, f)))
        .collect();

    // Header basics, and nothing deliberately dropped is forwarded.
    for &(i, f) in &forwards {
        assert_eq!(f.ssrc, OUT_SSRC);
        assert_eq!(f.payload_type, SUBSCRIBER_PT);
        assert_eq!(f.seq, f.extended_seq as u16);
        let p = records[i].arrival.packet;
        assert_eq!(f.marker, p.marker);
        assert!(p.discard.is_none(), "forwarded a deliberate drop: {p:?}");
    }

    // Only a packet that arrived before is called a duplicate.
    for r in records {
        if r.decision == Decision::Drop(DropReason::Duplicate) {
            assert!(r.arrival.repeat, "first copy called a duplicate: {r:?}");
        }
    }

    // (a) unique output numbers.
    let mut outs: Vec<u64> = forwards.iter().map(|&(_, f)| f.extended_seq).collect();
    outs.sort_unstable();
    assert!(
        outs.windows(2).all(|w| w[0] != w[1]),
        "duplicate output number"
    );

    let segs = segments(records);
    let mut previous_last_out: Option<u64> = None;
    for (n, seg) in segs.iter().enumerate() {
        let start_record = &records[seg.start];
        let key = start_record.arrival.packet;
        // Segments start only at a key frame of the target layer.
        assert!(key.keyframe && Some(key.layer) == start_record.target);

        // (a) one layer per segment, output increasing with input.
        for w in seg.forwards.windows(2) {
            assert!(
                w[0].1.index < w[1].1.index,
                "segment {n}: output order differs from input order"
            );
        }
        assert!(seg.forwards.iter().all(|&(_, p, _)| p.layer == seg.layer));

        // (b) segments abut.
        let first = seg.forwards[0].2;
        match previous_last_out {
            None => assert_eq!(first.extended_seq, u64::from(s.initial_seq)),
            Some(last) => assert_eq!(first.extended_seq, last + 1, "gap at a switch"),
        }
        previous_last_out = seg.forwards.last().map(|&(_, _, f)| f.extended_seq);

        // (b) gaps inside a segment are exactly the unclosed input numbers.
        for w in seg.forwards.windows(2) {
            let ((_, p1, f1), (_, p2, f2)) = (w[0], w[1]);
            let gap = f2.extended_seq - f1.extended_seq - 1;
            let unclosed = (p1.index + 1..p2.index)
                .filter(|&k| !closed(seg, records, k, history))
                .count() as u64;
            assert_eq!(
                gap, unclosed,
                "segment {n}: gap between inputs {} and {}",
                p1.index, p2.index
            );
        }

        // Every forwardable first copy whose slot is still known is
        // forwarded: open slots and holes while the segment is current, and
        // holes while it is the previous segment (until the one after it
        // ends; well within the two seconds a sealed segment is kept).
        let kept_until = segs.get(n + 1).map_or(records.len(), |next| next.end);
        for j in seg.start..kept_until {
            let r = &records[j];
            let p = r.arrival.packet;
            if p.layer != seg.layer
                || p.discard.is_some()
                || r.arrival.repeat
                || p.index < key.index
            {
                continue;
            }
            let newest = records[seg.start..j]
                .iter()
                .filter(|r| r.arrival.packet.layer == seg.layer)
                .map(|r| r.arrival.packet.index)
                .max()
                .unwrap_or(i64::MIN);
            let in_window = p.index > newest.saturating_sub(history);
            let known = if j < seg.end {
                in_window
            } else {
                let last_forwarded = seg
                    .forwards
                    .iter()
                    .filter(|&&(i, _, _)| i < j)
                    .map(|&(_, p, _)| p.index)
                    .max()
                    .unwrap_or(i64::MIN);
                in_window && p.index < last_forwarded
            };
            if known {
                assert!(
                    forward_of(r).is_some(),
                    "segment {n}: slot {} still known but not forwarded: {:?}",
                    p.index,
                    r.decision
                );
            }
        }

        // (c) within a segment, timestamps keep the input spacing.
        let offset = first.timestamp.wrapping_sub(key.ts);
        for &(_, p, f) in &seg.forwards {
            assert_eq!(f.timestamp.wrapping_sub(p.ts), offset);
        }

        // (c) the first timestamp continues from the newest one so far.
        let mut newest: Option<(u32, u64)> = None;
        for &(i, f) in forwards.iter().filter(|&&(i, _)| i < seg.start) {
            if newest.is_none_or(|(ts, _)| ts_newer(f.timestamp, ts)) {
                newest = Some((f.timestamp, records[i].arrival.at_us));
            }
        }
        match newest {
            None => assert_eq!(first.timestamp, s.initial_ts),
            Some((ts, at_us)) => {
                let elapsed_us = start_record.arrival.at_us - at_us;
                let ticks =
                    (elapsed_us * u64::from(CLOCK_RATE) / 1_000_000).clamp(1, MAX_SWITCH_ADVANCE);
                assert_eq!(first.timestamp, ts.wrapping_add(ticks as u32));
                for &(_, f) in forwards.iter().filter(|&&(i, _)| i < seg.start) {
                    assert!(
                        ts_newer(first.timestamp, f.timestamp),
                        "timestamp went back"
                    );
                }
            }
        }
    }

    // The first new key frame of the target layer starts a segment whenever
    // another layer (or none) is being forwarded.
    let mut newest_index = [i64::MIN; 3];
    for r in records {
        let p = r.arrival.packet;
        let is_new = p.index > newest_index[usize::from(p.layer)];
        newest_index[usize::from(p.layer)] = newest_index[usize::from(p.layer)].max(p.index);
        if is_new && p.keyframe && r.target == Some(p.layer) && r.current_before != Some(p.layer) {
            assert!(
                r.started_segment,
                "key frame of the target did not switch: {p:?}"
            );
        }
    }

    let c = rw.counters();
    assert_eq!(c.forwarded() + c.dropped_total(), records.len() as u64);
    assert_eq!(c.forwarded(), forwards.len() as u64);
    assert!(packets.len() as u64 * 2 >= records.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rewritten_stream_meets_the_specification(s in scenario()) {
        let (packets, records, rw) = run(&s);
        check(&s, &packets, &records, &rw);
    }
}

/// The same properties on a hand-written worst case: a switch while the old
/// layer's packets are still reordered, with late discards and a wrap.
#[test]
fn switch_under_reordering_near_the_wrap() {
    let frame = |key: [bool; 3]| FrameSpec {
        packets: [2, 3, 3],
        keyframe: key,
        discard: [[9, 0, 9], [9, 1, 9], [9, 9, 0]],
    };
    let mut frames = vec![frame([true, true, true])];
    frames.extend((0..40).map(|f| frame([f % 7 == 0, f % 5 == 4, f % 6 == 3])));
    let s = Scenario {
        layers: 3,
        history_len: 16,
        start_seq: [65_530, 65_500, 10],
        start_ts: [u32::MAX - 5000, 7, 1 << 31],
        initial_seq: 65_534,
        initial_ts: u32::MAX - 2,
        initial_target: Some(0),
        frames,
        schedule: vec![(100, Some(2)), (300, Some(1)), (450, None), (520, Some(0))],
        reorder_window: 12,
        bursts: vec![(650, 150, Burst::Loss), (880, 120, Burst::Discard)],
        net: (0..97u8)
            .map(|i| NetSpec {
                lost: i % 11 == 3,
                duplicated: i % 13 == 5,
                delay: i.wrapping_mul(37),
                duplicate_delay: i.wrapping_mul(53),
            })
            .collect(),
    };
    let (packets, records, rw) = run(&s);
    check(&s, &packets, &records, &rw);
    let c = rw.counters();
    assert!(c.switches() >= 2, "the schedule switches layers: {c:?}");
    assert!(c.starts() >= 2, "the schedule pauses and resumes: {c:?}");
    assert!(c.gaps_passed() > 0 && c.gaps_filled() > 0 && c.duplicates() > 0);
}
