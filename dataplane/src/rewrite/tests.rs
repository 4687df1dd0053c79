//! Unit tests of [`StreamRewriter`] behaviour, one concern per test.

use super::*;

const OUT_SSRC: u32 = 0x5EB5_C21B;
const SSRCS: [u32; 3] = [0xA0A0_0000, 0xB0B0_0000, 0xC0C0_0000];
const INITIAL_SEQ: u16 = 500;
const INITIAL_TS: u32 = 10_000;

fn payload_types() -> PayloadTypeMap {
    let mut map = PayloadTypeMap::new();
    map.insert(96, 100).unwrap();
    map.insert(111, 109).unwrap();
    map
}

fn config(structure: LayerStructure) -> RewriterConfig {
    RewriterConfig {
        structure,
        initial_seq: INITIAL_SEQ,
        initial_timestamp: INITIAL_TS,
        history_len: 64,
        ..RewriterConfig::new(OUT_SSRC, 90_000, payload_types())
    }
}

struct Bench {
    rw: StreamRewriter,
    t0: Instant,
}

impl Bench {
    fn new(structure: LayerStructure) -> Self {
        Self::with(config(structure))
    }

    fn with(config: RewriterConfig) -> Self {
        Self {
            rw: StreamRewriter::new(config).unwrap(),
            t0: Instant::now(),
        }
    }

    /// A plain delta packet of `layer` (on that layer's simulcast SSRC).
    fn pkt(&self, layer: u8, seq: u16, ts: u32, at_ms: u64) -> IncomingPacket {
        IncomingPacket {
            layer,
            ssrc: SSRCS[usize::from(layer)],
            seq,
            timestamp: ts,
            payload_type: 96,
            marker: false,
            keyframe: false,
            switch_point: false,
            arrival: self.t0 + Duration::from_millis(at_ms),
            discard: None,
        }
    }

    fn key(&self, layer: u8, seq: u16, ts: u32, at_ms: u64) -> IncomingPacket {
        IncomingPacket {
            keyframe: true,
            ..self.pkt(layer, seq, ts, at_ms)
        }
    }

    fn process(&mut self, p: IncomingPacket) -> Decision {
        self.rw.process(&p)
    }

    fn forward(&mut self, p: IncomingPacket) -> Forward {
        match self.process(p) {
            Decision::Forward(f) => f,
            other => panic!("expected a forward of {p:?}, got {other:?}"),
        }
    }

    fn drop(&mut self, p: IncomingPacket) -> DropReason {
        match self.process(p) {
            Decision::Drop(r) => r,
            other => panic!("expected a drop of {p:?}, got {other:?}"),
        }
    }

    /// Targets `layer` and forwards its key frame packet.
    fn start(&mut self, layer: u8, seq: u16, ts: u32, at_ms: u64) -> Forward {
        self.rw.set_target_layer(Some(layer));
        let key = self.key(layer, seq, ts, at_ms);
        self.forward(key)
    }
}

fn discarded(mut p: IncomingPacket, why: Discard) -> IncomingPacket {
    p.discard = Some(why);
    p
}

#[test]
fn config_is_validated() {
    for len in [0, 8, 100, 1 << 16] {
        let cfg = RewriterConfig {
            history_len: len,
            ..config(LayerStructure::Simulcast)
        };
        assert_eq!(
            StreamRewriter::new(cfg).unwrap_err(),
            RewriteError::InvalidHistoryLen(len)
        );
    }
    let cfg = RewriterConfig {
        clock_rate: 0,
        ..config(LayerStructure::Simulcast)
    };
    assert_eq!(
        StreamRewriter::new(cfg).unwrap_err(),
        RewriteError::ZeroClockRate
    );
    for len in [MIN_HISTORY_LEN, DEFAULT_HISTORY_LEN, MAX_HISTORY_LEN] {
        let cfg = RewriterConfig {
            history_len: len,
            ..config(LayerStructure::Simulcast)
        };
        assert!(StreamRewriter::new(cfg).is_ok());
    }
}

#[test]
fn nothing_is_forwarded_without_a_target() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    let key = b.key(0, 1, 0, 0);
    assert_eq!(b.drop(key), DropReason::Paused);
    assert!(!b.rw.needs_keyframe());
    assert_eq!(b.rw.current_layer(), None);
}

#[test]
fn forwarding_starts_at_a_key_frame_with_the_configured_numbering() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.rw.set_target_layer(Some(0));
    let delta = b.pkt(0, 7, 3000, 0);
    assert_eq!(b.drop(delta), DropReason::AwaitingKeyframe);
    assert!(b.rw.needs_keyframe());

    let mut key = b.key(0, 8, 6000, 33);
    key.marker = true;
    let f = b.forward(key);
    assert_eq!(
        f,
        Forward {
            ssrc: OUT_SSRC,
            seq: INITIAL_SEQ,
            extended_seq: u64::from(INITIAL_SEQ),
            timestamp: INITIAL_TS,
            payload_type: 100,
            marker: true,
        }
    );
    assert!(!b.rw.needs_keyframe());
    assert_eq!(b.rw.current_layer(), Some(0));
    assert_eq!(b.rw.counters().starts(), 1);
}

#[test]
fn simulcast_switch_keeps_ssrc_and_sequence_continuity() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    b.rw.set_target_layer(Some(1));
    assert!(b.rw.needs_keyframe());

    // Until layer 1 has a key frame, layer 0 keeps flowing.
    let l1_delta = b.pkt(1, 900, 50_000, 10);
    assert_eq!(b.drop(l1_delta), DropReason::AwaitingKeyframe);
    let l0 = b.pkt(0, 11, 3000, 33);
    assert_eq!(b.forward(l0).seq, INITIAL_SEQ + 1);

    let f = b.forward(b.key(1, 901, 53_000, 40));
    assert_eq!(f.ssrc, OUT_SSRC);
    assert_eq!(f.seq, INITIAL_SEQ + 2);
    assert_eq!(b.rw.current_layer(), Some(1));
    assert!(!b.rw.needs_keyframe());

    let l0_after = b.pkt(0, 12, 6000, 66);
    assert_eq!(b.drop(l0_after), DropReason::NotSelected);
    let f = b.forward(b.pkt(1, 902, 56_000, 70));
    assert_eq!((f.ssrc, f.seq), (OUT_SSRC, INITIAL_SEQ + 3));
    assert_eq!(b.rw.counters().switches(), 1);
}

#[test]
fn switch_timestamp_continues_by_elapsed_wall_time_then_keeps_spacing() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 1_000, 0);
    // Newest frame of layer 0: first packet at 100 ms, second at 105 ms.
    let newest = b.forward(b.pkt(0, 11, 10_000, 100)).timestamp;
    b.forward(b.pkt(0, 12, 10_000, 105));
    b.rw.set_target_layer(Some(1));
    // 40 ms after the newest frame's first packet: 3600 ticks at 90 kHz.
    let first = b.forward(b.key(1, 300, 777_000, 140)).timestamp;
    assert_eq!(first, newest.wrapping_add(3600));
    let next = b.forward(b.pkt(1, 301, 780_000, 173)).timestamp;
    assert_eq!(next, first.wrapping_add(3000));
}

#[test]
fn switch_at_the_same_instant_still_advances_one_tick() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    let first = b.start(0, 10, 1_000, 50).timestamp;
    b.rw.set_target_layer(Some(2));
    let f = b.forward(b.key(2, 5, 0, 50));
    assert_eq!(f.timestamp, first.wrapping_add(1));
}

#[test]
fn switch_timestamp_never_goes_backwards_across_the_wrap() {
    let cfg = RewriterConfig {
        initial_timestamp: u32::MAX - 10,
        ..config(LayerStructure::Simulcast)
    };
    let mut b = Bench::with(cfg);
    let first = b.start(0, 10, 0, 0).timestamp;
    b.rw.set_target_layer(Some(1));
    let switched = b.forward(b.key(1, 1, 4_000_000_000, 1)).timestamp;
    assert_eq!(switched, first.wrapping_add(90));
    assert!(timestamp::newer(switched, first));
}

#[test]
fn audio_restart_uses_the_audio_clock_rate() {
    let cfg = RewriterConfig {
        clock_rate: 48_000,
        ..config(LayerStructure::Simulcast)
    };
    let mut b = Bench::with(cfg);
    let mut opus = b.key(0, 100, 5_000, 0);
    opus.payload_type = 111;
    b.rw.set_target_layer(Some(0));
    let first = b.forward(opus);
    assert_eq!(first.payload_type, 109);
    // The publisher's stream comes back on a new SSRC 20 ms later.
    let restarted = IncomingPacket {
        ssrc: 0x0DD,
        seq: 40_000,
        timestamp: 123,
        arrival: b.t0 + Duration::from_millis(20),
        ..opus
    };
    let f = b.forward(restarted);
    assert_eq!(f.timestamp, first.timestamp.wrapping_add(960));
    assert_eq!(f.seq, first.seq + 1);
    assert_eq!(b.rw.counters().restarts(), 1);
}

#[test]
fn deliberate_drops_in_order_close_their_gaps() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    let padding = discarded(b.pkt(0, 11, 0, 1), Discard::PaddingOnly);
    assert_eq!(b.drop(padding), DropReason::PaddingOnly);
    let tl2 = discarded(b.pkt(0, 12, 3000, 2), Discard::TemporalLayerAboveCap);
    assert_eq!(b.drop(tl2), DropReason::TemporalLayerAboveCap);
    let other = discarded(b.pkt(0, 13, 3000, 3), Discard::LayerNotSelected);
    assert_eq!(b.drop(other), DropReason::NotSelected);
    assert_eq!(b.forward(b.pkt(0, 14, 6000, 4)).seq, INITIAL_SEQ + 1);
    assert_eq!(b.rw.counters().gaps_passed(), 0);
}

#[test]
fn deliberate_drops_out_of_order_do_not_consume_numbers() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    let mut out = Vec::new();
    // Each discard arrives out of order, but before any later packet has
    // been forwarded.
    let arrivals = [
        (12, Some(Discard::PaddingOnly)),
        (11, None),
        (15, Some(Discard::TemporalLayerAboveCap)),
        (14, Some(Discard::PaddingOnly)),
        (13, None),
        (16, None),
        (18, Some(Discard::TemporalLayerAboveCap)),
        (17, None),
    ];
    for (seq, discard) in arrivals {
        let p = IncomingPacket {
            discard,
            ..b.pkt(0, seq, 3000, 1)
        };
        if let Decision::Forward(f) = b.process(p) {
            out.push((seq, f.seq));
        }
    }
    assert_eq!(
        out,
        [
            (11, INITIAL_SEQ + 1),
            (13, INITIAL_SEQ + 2),
            (16, INITIAL_SEQ + 3),
            (17, INITIAL_SEQ + 4)
        ]
    );
    assert_eq!(b.rw.counters().gaps_passed(), 0);
}

#[test]
fn a_real_loss_passes_through_and_a_late_packet_fills_its_slot() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    assert_eq!(b.forward(b.pkt(0, 13, 3000, 1)).seq, INITIAL_SEQ + 3);
    assert_eq!(b.rw.counters().gaps_passed(), 2);
    let late = b.forward(b.pkt(0, 12, 0, 2));
    assert_eq!(late.seq, INITIAL_SEQ + 2);
    assert_eq!(late.timestamp, INITIAL_TS);
    assert_eq!(b.forward(b.pkt(0, 14, 3000, 3)).seq, INITIAL_SEQ + 4);
    assert_eq!(b.rw.counters().gaps_filled(), 1);
}

#[test]
fn a_discard_arriving_after_its_slot_was_committed_leaves_the_gap() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    b.forward(b.pkt(0, 12, 3000, 1));
    let late_padding = discarded(b.pkt(0, 11, 0, 2), Discard::PaddingOnly);
    assert_eq!(b.drop(late_padding), DropReason::PaddingOnly);
    assert_eq!(b.forward(b.pkt(0, 13, 3000, 3)).seq, INITIAL_SEQ + 3);
    assert_eq!(b.rw.counters().discards_in_gaps(), 1);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    b.forward(b.pkt(0, 11, 0, 1));
    let padding = discarded(b.pkt(0, 12, 0, 2), Discard::PaddingOnly);
    b.drop(padding);
    assert_eq!(b.drop(b.key(0, 10, 0, 3)), DropReason::Duplicate);
    assert_eq!(b.drop(b.pkt(0, 11, 0, 4)), DropReason::Duplicate);
    assert_eq!(b.drop(padding), DropReason::Duplicate);
    assert_eq!(b.rw.counters().duplicates(), 3);
    assert_eq!(b.forward(b.pkt(0, 13, 0, 5)).seq, INITIAL_SEQ + 2);
}

#[test]
fn packets_before_the_switch_or_the_history_are_too_late() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 1000, 0, 0);
    assert_eq!(b.drop(b.pkt(0, 999, 0, 1)), DropReason::TooLate);
    b.forward(b.pkt(0, 1100, 0, 2));
    // History is 64: 1100 − 64 = 1036 is the oldest remembered number.
    assert_eq!(b.drop(b.pkt(0, 1036, 0, 3)), DropReason::TooLate);
    assert!(matches!(
        b.process(b.pkt(0, 1037, 0, 4)),
        Decision::Forward(_)
    ));
    assert_eq!(b.rw.counters().too_late(), 2);
}

#[test]
fn input_sequence_wrap_is_continuous() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 65_534, 0, 0);
    let seqs: Vec<u16> = [65_535, 0, 1]
        .iter()
        .map(|&s| b.forward(b.pkt(0, s, 0, 1)).seq)
        .collect();
    assert_eq!(seqs, [INITIAL_SEQ + 1, INITIAL_SEQ + 2, INITIAL_SEQ + 3]);
}

#[test]
fn output_sequence_wrap_carries_into_the_extended_number() {
    let cfg = RewriterConfig {
        initial_seq: 65_535,
        ..config(LayerStructure::Simulcast)
    };
    let mut b = Bench::with(cfg);
    let first = b.start(0, 10, 0, 0);
    assert_eq!((first.seq, first.extended_seq), (65_535, 65_535));
    let next = b.forward(b.pkt(0, 11, 0, 1));
    assert_eq!((next.seq, next.extended_seq), (0, 65_536));
}

#[test]
fn unmapped_payload_types_are_dropped_without_a_gap() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    let mut red = b.pkt(0, 11, 0, 1);
    red.payload_type = 63;
    assert_eq!(b.drop(red), DropReason::UnmappedPayloadType);
    let f = b.forward(b.pkt(0, 12, 0, 2));
    assert_eq!((f.seq, f.payload_type), (INITIAL_SEQ + 1, 100));

    let mut map = payload_types();
    map.insert(63, 120).unwrap();
    b.rw.set_payload_types(map);
    let mut red = b.pkt(0, 13, 0, 3);
    red.payload_type = 63;
    assert_eq!(b.forward(red).payload_type, 120);
}

#[test]
fn a_key_frame_of_an_unmapped_payload_type_does_not_start_forwarding() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.rw.set_target_layer(Some(0));
    let mut key = b.key(0, 10, 0, 0);
    key.payload_type = 35;
    assert_eq!(b.drop(key), DropReason::AwaitingKeyframe);
    assert!(b.rw.needs_keyframe());
}

#[test]
fn pause_finishes_the_frame_and_resume_continues_the_numbering() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 3000, 0);
    b.rw.set_target_layer(None);
    assert!(!b.rw.needs_keyframe());
    // Rest of the frame being forwarded.
    assert_eq!(b.forward(b.pkt(0, 11, 3000, 1)).seq, INITIAL_SEQ + 1);
    assert_eq!(b.drop(b.pkt(0, 12, 6000, 33)), DropReason::Paused);
    assert_eq!(b.rw.current_layer(), None);
    assert_eq!(b.drop(b.key(0, 13, 9000, 66)), DropReason::Paused);

    b.rw.set_target_layer(Some(0));
    assert!(b.rw.needs_keyframe());
    assert_eq!(
        b.drop(b.pkt(0, 14, 12_000, 99)),
        DropReason::AwaitingKeyframe
    );
    let resumed = b.forward(b.key(0, 15, 15_000, 1000));
    assert_eq!(resumed.seq, INITIAL_SEQ + 2);
    // 1 s after the newest forwarded frame's first packet.
    assert_eq!(resumed.timestamp, INITIAL_TS + 90_000);
    assert_eq!(b.rw.counters().starts(), 2);
    assert_eq!(b.rw.counters().switches(), 0);
}

#[test]
fn a_late_packet_of_the_previous_layer_fills_its_hole_after_a_switch() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 3000, 0);
    b.forward(b.pkt(0, 12, 3000, 1));
    b.rw.set_target_layer(Some(1));
    let switched = b.forward(b.key(1, 70, 0, 30));
    assert_eq!(switched.seq, INITIAL_SEQ + 3);
    let late = b.forward(b.pkt(0, 11, 3000, 40));
    assert_eq!(late.seq, INITIAL_SEQ + 1);
    assert_eq!(late.timestamp, INITIAL_TS);
    // The old layer's new packets are not its to place.
    assert_eq!(b.drop(b.pkt(0, 13, 6000, 45)), DropReason::NotSelected);
    assert_eq!(b.rw.counters().gaps_filled(), 1);
}

#[test]
fn the_previous_layer_stops_filling_holes_after_its_time() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 3000, 0);
    b.forward(b.pkt(0, 12, 3000, 1));
    b.rw.set_target_layer(Some(1));
    b.forward(b.key(1, 70, 0, 30));
    let too_late = b.pkt(0, 11, 3000, 30 + 2000);
    assert_eq!(b.drop(too_late), DropReason::NotSelected);
}

#[test]
fn returning_to_the_current_layer_cancels_a_pending_switch() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    b.rw.set_target_layer(Some(2));
    assert!(b.rw.needs_keyframe());
    b.rw.set_target_layer(Some(0));
    assert!(!b.rw.needs_keyframe());
    assert_eq!(b.drop(b.key(2, 1, 0, 1)), DropReason::NotSelected);
    assert_eq!(b.forward(b.pkt(0, 11, 0, 2)).seq, INITIAL_SEQ + 1);
}

#[test]
fn simulcast_ignores_switch_points_and_discarded_key_frames() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    b.rw.set_target_layer(Some(1));
    let mut sync = b.pkt(1, 50, 0, 1);
    sync.switch_point = true;
    assert_eq!(b.drop(sync), DropReason::AwaitingKeyframe);
    let padded_key = discarded(b.key(1, 51, 0, 2), Discard::PaddingOnly);
    assert_eq!(b.drop(padded_key), DropReason::AwaitingKeyframe);
    assert_eq!(b.rw.current_layer(), Some(0));
}

#[test]
fn a_new_ssrc_on_the_forwarded_layer_waits_for_its_key_frame() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    assert!(!b.rw.needs_keyframe());
    let mut restarted = b.pkt(0, 30_000, 99, 10);
    restarted.ssrc = 0xFEED;
    assert_eq!(b.drop(restarted), DropReason::AwaitingKeyframe);
    assert!(b.rw.needs_keyframe());
    restarted.seq += 1;
    restarted.keyframe = true;
    assert_eq!(b.forward(restarted).seq, INITIAL_SEQ + 1);
    assert!(!b.rw.needs_keyframe());
    assert_eq!(b.rw.counters().restarts(), 1);
}

#[test]
fn a_backward_jump_of_the_forwarded_stream_resyncs_at_a_key_frame() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 40_000, 0, 0);
    b.forward(b.pkt(0, 40_001, 0, 1));
    for i in 0..RESYNC_STALE_RUN {
        let jumped = b.pkt(0, 10_000 + i as u16, 0, 2);
        assert_eq!(b.drop(jumped), DropReason::TooLate);
    }
    assert!(b.rw.needs_keyframe());
    let key = b.key(0, 10_100, 0, 3);
    assert_eq!(b.forward(key).seq, INITIAL_SEQ + 2);
    assert!(!b.rw.needs_keyframe());
    assert_eq!(b.rw.counters().restarts(), 1);
    assert_eq!(b.forward(b.pkt(0, 10_101, 0, 4)).seq, INITIAL_SEQ + 3);
}

#[test]
fn a_single_late_key_frame_does_not_restart_the_stream() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 1000, 0, 0);
    b.forward(b.pkt(0, 1200, 0, 1));
    assert_eq!(b.drop(b.key(0, 1100, 0, 2)), DropReason::TooLate);
    assert_eq!(b.rw.counters().restarts(), 0);
    assert!(!b.rw.needs_keyframe());
}

/// An SVC packet: every layer on one SSRC.
fn svc(b: &Bench, layer: u8, seq: u16, ts: u32) -> IncomingPacket {
    IncomingPacket {
        ssrc: SSRCS[0],
        ..b.pkt(layer, seq, ts, u64::from(seq))
    }
}

#[test]
fn svc_forwards_the_layers_up_to_the_selected_one_without_gaps() {
    let mut b = Bench::new(LayerStructure::Svc);
    b.rw.set_target_layer(Some(1));
    let key = IncomingPacket {
        keyframe: true,
        ..svc(&b, 0, 10, 0)
    };
    assert_eq!(b.forward(key).seq, INITIAL_SEQ);
    assert_eq!(b.forward(svc(&b, 1, 11, 0)).seq, INITIAL_SEQ + 1);
    assert_eq!(b.drop(svc(&b, 2, 12, 0)), DropReason::NotSelected);
    assert_eq!(b.forward(svc(&b, 0, 13, 3000)).seq, INITIAL_SEQ + 2);
    assert_eq!(b.drop(svc(&b, 2, 15, 3000)), DropReason::NotSelected);
    assert_eq!(b.forward(svc(&b, 1, 14, 3000)).seq, INITIAL_SEQ + 3);
    assert_eq!(b.rw.counters().gaps_passed(), 0);
}

#[test]
fn svc_switches_down_at_a_switch_point_without_a_key_frame() {
    let mut b = Bench::new(LayerStructure::Svc);
    b.rw.set_target_layer(Some(2));
    b.forward(IncomingPacket {
        keyframe: true,
        ..svc(&b, 0, 10, 0)
    });
    b.rw.set_target_layer(Some(0));
    assert!(!b.rw.needs_keyframe());
    assert_eq!(b.forward(svc(&b, 2, 11, 0)).seq, INITIAL_SEQ + 1);
    let switch_point = IncomingPacket {
        switch_point: true,
        ..svc(&b, 0, 12, 3000)
    };
    assert_eq!(b.forward(switch_point).seq, INITIAL_SEQ + 2);
    assert_eq!(b.rw.current_layer(), Some(0));
    assert_eq!(b.drop(svc(&b, 1, 13, 3000)), DropReason::NotSelected);
    assert_eq!(b.forward(svc(&b, 0, 14, 6000)).seq, INITIAL_SEQ + 3);
    assert_eq!(b.rw.counters().switches(), 1);
}

#[test]
fn svc_switches_up_only_at_a_key_frame_or_a_switch_point_of_the_target() {
    let mut b = Bench::new(LayerStructure::Svc);
    b.rw.set_target_layer(Some(0));
    b.forward(IncomingPacket {
        keyframe: true,
        ..svc(&b, 0, 10, 0)
    });
    b.rw.set_target_layer(Some(2));
    assert!(b.rw.needs_keyframe());
    assert_eq!(b.drop(svc(&b, 2, 11, 0)), DropReason::NotSelected);
    // A switch point of another layer is not the target's.
    let l1_switch = IncomingPacket {
        switch_point: true,
        ..svc(&b, 1, 12, 0)
    };
    assert_eq!(b.drop(l1_switch), DropReason::NotSelected);
    let l2_switch = IncomingPacket {
        switch_point: true,
        ..svc(&b, 2, 13, 3000)
    };
    assert_eq!(b.forward(l2_switch).seq, INITIAL_SEQ + 1);
    assert_eq!(b.rw.current_layer(), Some(2));
    assert!(!b.rw.needs_keyframe());

    // Down to 0 at a switch point, then back up at a key frame, whose first
    // packet is a base-layer packet.
    b.rw.set_target_layer(Some(0));
    let l0_switch = IncomingPacket {
        switch_point: true,
        ..svc(&b, 0, 14, 6000)
    };
    assert_eq!(b.forward(l0_switch).seq, INITIAL_SEQ + 2);
    assert_eq!(b.drop(svc(&b, 2, 15, 6000)), DropReason::NotSelected);
    b.rw.set_target_layer(Some(2));
    let key = IncomingPacket {
        keyframe: true,
        ..svc(&b, 0, 16, 9000)
    };
    assert_eq!(b.forward(key).seq, INITIAL_SEQ + 3);
    assert_eq!(b.rw.current_layer(), Some(2));
    assert_eq!(b.forward(svc(&b, 2, 17, 9000)).seq, INITIAL_SEQ + 4);
    assert_eq!(b.rw.counters().switches(), 3);
}

#[test]
fn svc_resume_after_pause_needs_a_key_frame() {
    let mut b = Bench::new(LayerStructure::Svc);
    b.rw.set_target_layer(Some(1));
    b.forward(IncomingPacket {
        keyframe: true,
        ..svc(&b, 0, 10, 0)
    });
    b.rw.set_target_layer(None);
    assert_eq!(b.drop(svc(&b, 0, 11, 3000)), DropReason::Paused);
    b.rw.set_target_layer(Some(1));
    let switch_point = IncomingPacket {
        switch_point: true,
        ..svc(&b, 1, 12, 3000)
    };
    assert_eq!(b.drop(switch_point), DropReason::AwaitingKeyframe);
    assert!(b.rw.needs_keyframe());
    let key = IncomingPacket {
        keyframe: true,
        ..svc(&b, 0, 13, 6000)
    };
    assert_eq!(b.forward(key).seq, INITIAL_SEQ + 1);
}

#[test]
fn counters_account_for_every_packet() {
    let mut b = Bench::new(LayerStructure::Simulcast);
    b.start(0, 10, 0, 0);
    b.forward(b.pkt(0, 12, 0, 1));
    b.drop(b.pkt(0, 12, 0, 2));
    b.drop(b.pkt(1, 5, 0, 3));
    b.drop(discarded(b.pkt(0, 13, 0, 4), Discard::PaddingOnly));
    let c = b.rw.counters();
    assert_eq!(c.forwarded(), 2);
    assert_eq!(c.dropped_total(), 3);
    assert_eq!(c.dropped(DropReason::NotSelected), 1);
    assert_eq!(c.dropped(DropReason::PaddingOnly), 1);
    assert_eq!(c.duplicates(), 1);
    assert_eq!(c.gaps_passed(), 1);
    let names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), DropReason::COUNT);
    assert!(DropReason::ALL
        .iter()
        .enumerate()
        .all(|(i, r)| r.index() == i));
}
