//! The bandwidth estimate towards a subscriber, and transport-cc feedback
//! towards publishers.
//!
//! # Estimator (towards subscribers)
//!
//! Two inputs, and the estimate is the smaller of those heard in the last
//! [`ESTIMATE_TTL`]:
//!
//! * **REMB**: the receiver's own estimate, taken as it is.
//! * **transport-cc**: the appliance stamps every packet it sends to the
//!   subscriber with its own transport-wide sequence number and remembers
//!   size and send time; feedback gives the arrival times. Two estimates
//!   come from it and the smaller counts:
//!   - *delay-based* ([`DelayEstimator`], Google Congestion Control's delay
//!     controller): a bottleneck queue shows as a rising delay trend before
//!     it drops anything, and overuse sets the estimate to 0.85 × the rate
//!     the receiver acknowledged;
//!   - *loss-based* (GCC's loss rule): above 10 % loss per feedback the
//!     estimate is cut to `estimate × (1 − loss/2)`, and never below nothing
//!     of what was just delivered; under 2 % loss it grows by 5 % per
//!     feedback (about every 100 ms); in between it holds.
//!
//!   The first feedback starts both at twice the delivered rate, and at
//!   least at [`START_ESTIMATE`] when nothing was lost: a subscriber's first
//!   feedback usually covers audio alone (video waits for a key frame), and
//!   starting from that would pause its video until the estimate had grown
//!   past the lowest layer, seconds later.
//!
//! Feedback is hostile input: packets we never sent (or no longer
//! remember), packets reported received twice, arrival times out of order
//! or jumping are counted in [`BweCounters`] and left out.

use std::time::{Duration, Instant};

use super::delay::{DelayCounters, DelayEstimator};
use crate::wire::rtcp::{TransportCc, TwccPacket, TWCC_DELTA_TICK_US, TWCC_REFERENCE_TICK_US};

/// How long an input counts after it was last heard.
pub const ESTIMATE_TTL: Duration = Duration::from_secs(5);
/// The estimate a loss-free first feedback starts from at least (bit/s):
/// the start bitrate WebRTC senders use, enough for a low simulcast layer.
pub const START_ESTIMATE: u64 = 300_000;
/// Estimates are kept within this range (bit/s).
const MIN_ESTIMATE: u64 = 30_000;
const MAX_ESTIMATE: u64 = 100_000_000;
/// Packets whose send record is kept, a power of two.
const HISTORY_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    seq: u16,
    size: u16,
    valid: bool,
    /// Reported received already: a repeat is not new information.
    acked: bool,
    /// Send time, µs since the estimator's epoch.
    send_us: i64,
}

/// Feedback the estimator refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BweCounters {
    /// Reports of sequence numbers not in the send record.
    pub unknown: u64,
    /// Reports of packets already reported received.
    pub duplicate: u64,
    /// Refusals and restarts inside the delay-based estimator.
    pub delay: DelayCounters,
}

/// Send-side transport-cc state and the loss- and delay-based estimates
/// for one subscriber.
#[derive(Debug)]
pub struct TwccEstimator {
    next_seq: u16,
    history: Box<[Sent]>,
    /// Loss-based estimate.
    estimate: Option<u64>,
    delay: DelayEstimator,
    heard: Option<Instant>,
    /// Our clock's origin for send times; set by the first send.
    epoch: Option<Instant>,
    /// Last feedback's reference time (64 ms units), unwrapped from 24 bits.
    reference: Option<i64>,
    unknown: u64,
    duplicate: u64,
}

impl Default for TwccEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl TwccEstimator {
    /// Fresh state.
    pub fn new() -> Self {
        Self {
            next_seq: 0,
            history: vec![Sent::default(); HISTORY_LEN].into_boxed_slice(),
            estimate: None,
            delay: DelayEstimator::new(),
            heard: None,
            epoch: None,
            reference: None,
            unknown: 0,
            duplicate: 0,
        }
    }

    fn micros(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        i64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(i64::MAX)
    }

    /// The transport-wide sequence number for a packet of `size` bytes about
    /// to be sent at `now`.
    pub fn on_send(&mut self, size: usize, now: Instant) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let send_us = self.micros(now);
        self.history[usize::from(seq) % HISTORY_LEN] = Sent {
            seq,
            size: size.min(usize::from(u16::MAX)) as u16,
            valid: true,
            acked: false,
            send_us,
        };
        seq
    }

    /// The feedback's reference time in µs on a timeline that continues
    /// across the 24-bit wrap (the nearest unwrapping to the last one).
    fn unwrap_reference<T: AsRef<[u8]>>(&mut self, fb: &TransportCc<T>) -> i64 {
        let raw = i64::from(fb.reference_time());
        let unwrapped = match self.reference {
            None => raw,
            Some(last) => {
                let diff = (raw - last).rem_euclid(1 << 24);
                let diff = if diff >= 1 << 23 {
                    diff - (1 << 24)
                } else {
                    diff
                };
                // A hostile run of jumps must not walk the timeline towards
                // overflow: far out, start again from the raw value.
                Some(last + diff)
                    .filter(|u| u.abs() < 1 << 40)
                    .unwrap_or(raw)
            }
        };
        self.reference = Some(unwrapped);
        unwrapped * TWCC_REFERENCE_TICK_US
    }

    /// Consumes one feedback message.
    pub fn on_feedback<T: AsRef<[u8]>>(&mut self, fb: &TransportCc<T>, now: Instant) {
        let now_us = self.micros(now);
        let mut received = 0u32;
        let mut lost = 0u32;
        let mut bytes = 0u64;
        let mut arrival = self.unwrap_reference(fb);
        let mut first_arrival: Option<i64> = None;
        let mut last_arrival = arrival;
        for TwccPacket { seq, delta_us } in fb.packets() {
            // Deltas accumulate over every received packet, known or not.
            if let Some(delta) = delta_us {
                arrival += i64::from(delta);
            }
            let slot = &mut self.history[usize::from(seq) % HISTORY_LEN];
            if !slot.valid || slot.seq != seq {
                self.unknown += 1;
                continue;
            }
            if slot.acked {
                self.duplicate += 1;
                continue;
            }
            let sent = *slot;
            match delta_us {
                Some(_) => {
                    slot.acked = true;
                    self.delay
                        .on_packet(sent.send_us, arrival, usize::from(sent.size));
                    received += 1;
                    // The first packet's bytes arrived before the span starts.
                    if first_arrival.is_none() {
                        first_arrival = Some(arrival);
                    } else {
                        bytes += u64::from(sent.size);
                    }
                    last_arrival = arrival;
                }
                None => lost += 1,
            }
        }
        let total = received + lost;
        if total == 0 {
            return;
        }
        // The delay-based side acts on what it was just fed, once started.
        self.delay.update(now_us);
        let loss = f64::from(lost) / f64::from(total);
        let span_us = first_arrival.map_or(0, |first| last_arrival - first);
        let delivered = (span_us >= i64::from(TWCC_DELTA_TICK_US) * 40)
            .then(|| bytes * 8 * 1_000_000 / span_us as u64);
        let next = match (self.estimate, delivered) {
            (None, Some(d)) if loss < 0.02 => (d * 2).max(START_ESTIMATE),
            (None, Some(d)) => d * 2,
            (None, None) => return,
            (Some(est), d) => {
                if loss > 0.10 {
                    let cut = (est as f64 * (1.0 - loss / 2.0)) as u64;
                    d.map_or(cut, |d| cut.max(d.min(est)))
                } else if loss < 0.02 {
                    est + est / 20
                } else {
                    est
                }
            }
        };
        let next = next.clamp(MIN_ESTIMATE, MAX_ESTIMATE);
        self.estimate = Some(next);
        self.delay.start(next, now_us);
        self.heard = Some(now);
    }

    /// The estimate, the smaller of loss- and delay-based, if feedback was
    /// heard within [`ESTIMATE_TTL`].
    pub fn estimate(&self, now: Instant) -> Option<u64> {
        let heard = self.heard?;
        if now.saturating_duration_since(heard) >= ESTIMATE_TTL {
            return None;
        }
        let loss = self.estimate?;
        Some(self.delay.estimate().map_or(loss, |delay| delay.min(loss)))
    }

    /// The delay-based estimator, for its verdict and figures.
    pub fn delay(&self) -> &DelayEstimator {
        &self.delay
    }

    /// Feedback refused so far.
    pub fn counters(&self) -> BweCounters {
        BweCounters {
            unknown: self.unknown,
            duplicate: self.duplicate,
            delay: self.delay.counters(),
        }
    }
}

/// Packets whose arrival a [`TwccRecorder`] keeps, a power of two.
const RECORD_LEN: usize = 2048;
/// Most packets one feedback message describes.
pub const MAX_FEEDBACK_PACKETS: usize = 512;

/// Receive-side transport-cc: arrival times of a publisher's packets, and
/// the feedback messages that report them.
#[derive(Debug)]
pub struct TwccRecorder {
    epoch: Instant,
    /// Arrival in µs since `epoch`, or -1, by extended sequence number.
    arrivals: Box<[(u64, i64)]>,
    highest: Option<u64>,
    /// First extended sequence number not yet reported.
    next_report: u64,
    fb_count: u8,
    scratch: Vec<TwccPacket>,
}

impl TwccRecorder {
    /// A recorder whose clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            arrivals: vec![(u64::MAX, -1); RECORD_LEN].into_boxed_slice(),
            highest: None,
            next_report: 0,
            fb_count: 0,
            scratch: Vec::with_capacity(MAX_FEEDBACK_PACKETS),
        }
    }

    /// Records the arrival of transport-wide sequence number `seq`.
    pub fn on_packet(&mut self, seq: u16, now: Instant) {
        let ext = match self.highest {
            None => {
                self.next_report = u64::from(seq) + (1 << 16);
                u64::from(seq) + (1 << 16)
            }
            Some(h) => crate::wire::rtp::extend_sequence(h, seq),
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        let at = now.saturating_duration_since(self.epoch).as_micros() as i64;
        self.arrivals[(ext as usize) % RECORD_LEN] = (ext, at);
    }

    /// Builds feedback for everything received since the last feedback into
    /// `out`; returns its length, or `None` if there is nothing to report.
    pub fn build_feedback(
        &mut self,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut [u8],
    ) -> Option<usize> {
        let highest = self.highest?;
        if highest < self.next_report {
            return None;
        }
        // Skip what fell out of the record (or is too much for one message).
        let first = self
            .next_report
            .max((highest + 1).saturating_sub(MAX_FEEDBACK_PACKETS as u64))
            .max((highest + 1).saturating_sub(RECORD_LEN as u64));
        // The report must start with a received packet: its arrival sets
        // the reference time.
        let mut start = first;
        while start <= highest && self.arrival(start).is_none() {
            start += 1;
        }
        let reference_at = self.arrival(start)?;
        let reference = reference_at.div_euclid(TWCC_REFERENCE_TICK_US);
        let tick = i64::from(TWCC_DELTA_TICK_US);
        let mut prev_ticks = reference * TWCC_REFERENCE_TICK_US / tick;
        self.scratch.clear();
        for ext in start..=highest {
            let delta_us = self.arrival(ext).map(|at| {
                let ticks = at / tick;
                let delta = (ticks - prev_ticks).clamp(i64::from(i16::MIN), i64::from(i16::MAX));
                prev_ticks += delta;
                (delta * tick) as i32
            });
            self.scratch.push(TwccPacket {
                seq: ext as u16,
                delta_us,
            });
        }
        let reference = (reference & 0x7f_ffff) as i32;
        let len = crate::wire::rtcp::build_transport_cc(
            sender_ssrc,
            media_ssrc,
            reference,
            self.fb_count,
            &self.scratch,
            out,
        )
        .ok()?;
        self.fb_count = self.fb_count.wrapping_add(1);
        self.next_report = highest + 1;
        Some(len)
    }

    fn arrival(&self, ext: u64) -> Option<i64> {
        let (seq, at) = self.arrivals[(ext as usize) % RECORD_LEN];
        (seq == ext && at >= 0).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feedback(rec: &mut TwccRecorder) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let len = rec.build_feedback(1, 2, &mut buf).expect("feedback");
        buf.truncate(len);
        buf
    }

    #[test]
    fn recorder_reports_arrivals_and_losses() {
        let t0 = Instant::now();
        let mut rec = TwccRecorder::new(t0);
        for (seq, ms) in [(100u16, 10u64), (101, 12), (103, 20)] {
            rec.on_packet(seq, t0 + Duration::from_millis(ms));
        }
        let buf = feedback(&mut rec);
        let fb = TransportCc::new_checked(&buf[..]).unwrap();
        let packets: Vec<_> = fb.packets().collect();
        assert_eq!(packets.len(), 4);
        assert_eq!(packets[0].seq, 100);
        assert_eq!(packets[1].delta_us, Some(2000));
        assert_eq!(packets[2].delta_us, None);
        assert_eq!(packets[3].delta_us, Some(8000));
        // Nothing new: no feedback.
        assert!(rec.build_feedback(1, 2, &mut [0u8; 1500]).is_none());
        rec.on_packet(104, t0 + Duration::from_millis(30));
        let buf = feedback(&mut rec);
        let fb = TransportCc::new_checked(&buf[..]).unwrap();
        assert_eq!(fb.base_seq(), 104);
        assert_eq!(fb.fb_pkt_count(), 1);
    }

    #[test]
    fn estimator_backs_off_on_loss_and_grows_without() {
        let t0 = Instant::now();
        let mut est = TwccEstimator::new();
        let mut rec = TwccRecorder::new(t0);
        // 100 packets of 1000 bytes over 100 ms: 8 Mbit/s delivered... of
        // which the feedback reports all received.
        for i in 0..100u16 {
            let seq = est.on_send(1000, t0);
            rec.on_packet(seq, t0 + Duration::from_millis(u64::from(i)));
        }
        let buf = feedback(&mut rec);
        est.on_feedback(&TransportCc::new_checked(&buf[..]).unwrap(), t0);
        let first = est.estimate(t0).unwrap();
        assert!((14_000_000..18_000_000).contains(&first), "{first}");
        // Next round: 30 % lost.
        for i in 0..100u16 {
            let seq = est.on_send(1000, t0);
            if i % 10 >= 3 {
                rec.on_packet(seq, t0 + Duration::from_millis(200 + u64::from(i)));
            }
        }
        let buf = feedback(&mut rec);
        est.on_feedback(&TransportCc::new_checked(&buf[..]).unwrap(), t0);
        let cut = est.estimate(t0).unwrap();
        assert!(cut < first, "{cut} < {first}");
        // And a clean round grows it again.
        for i in 0..100u16 {
            let seq = est.on_send(1000, t0);
            rec.on_packet(seq, t0 + Duration::from_millis(400 + u64::from(i)));
        }
        let buf = feedback(&mut rec);
        est.on_feedback(&TransportCc::new_checked(&buf[..]).unwrap(), t0);
        assert!(est.estimate(t0).unwrap() > cut);
        assert!(est.estimate(t0 + ESTIMATE_TTL).is_none());
    }

    /// Feedback covering `packets` of 100 bytes over 100 ms, every
    /// `lose_every`-th lost (0: none), into a fresh estimator.
    fn first_estimate(packets: u16, lose_every: u16) -> u64 {
        let t0 = Instant::now();
        let mut est = TwccEstimator::new();
        let mut rec = TwccRecorder::new(t0);
        for i in 0..packets {
            let seq = est.on_send(100, t0);
            if lose_every == 0 || i % lose_every != 0 {
                rec.on_packet(
                    seq,
                    t0 + Duration::from_millis(u64::from(i) * 100 / u64::from(packets)),
                );
            }
        }
        let buf = feedback(&mut rec);
        est.on_feedback(&TransportCc::new_checked(&buf[..]).unwrap(), t0);
        est.estimate(t0).unwrap()
    }

    #[test]
    fn a_clean_start_on_audio_alone_starts_at_the_start_estimate() {
        // Ten 100-byte packets in 100 ms: about 72 kbit/s delivered.
        assert_eq!(first_estimate(10, 0), START_ESTIMATE);
        // With loss on the first feedback, twice what was delivered.
        let lossy = first_estimate(10, 3);
        assert!(lossy < START_ESTIMATE, "{lossy}");
    }
}
