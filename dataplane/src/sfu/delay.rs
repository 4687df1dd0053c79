//! Delay-based bandwidth estimate towards a subscriber, after Google
//! Congestion Control (draft-ietf-rmcat-gcc-02) with the trendline filter
//! libwebrtc uses in place of the draft's Kalman filter.
//!
//! A bottleneck queue adds delay long before it drops: this estimator sees
//! the queue grow and brings the estimate below the link's capacity while
//! nothing is lost yet. The pipeline, fed one acknowledged packet at a time
//! (send time on our clock, arrival time on the receiver's):
//!
//! 1. **Groups**: packets sent within [`GROUP_SPAN_US`] of a group's first
//!    packet form one group (a video frame leaves in such a burst); a packet
//!    that arrives right after the group's last one and earlier than its
//!    send spacing predicts joins it too (it queued behind the burst).
//! 2. **Delay variation** between consecutive groups: arrival spacing minus
//!    send spacing. Summed, it is the queueing delay built up since the
//!    start; it is smoothed exponentially.
//! 3. **Trend**: the least-squares slope of the smoothed delay against
//!    arrival time over the last [`WINDOW`] groups: positive while a queue
//!    fills.
//! 4. **Detector**: the slope, scaled, against an adaptive threshold: above
//!    it for long enough and still rising is *overuse*, below its negative
//!    is *underuse*, otherwise *normal*. The threshold follows the scaled
//!    slope slowly, so competing traffic's jitter does not read as overuse
//!    forever, and stays within [6, 600] ms.
//! 5. **Rate control** (AIMD): overuse sets the estimate to
//!    [`BETA`] × the rate the receiver acknowledged, and remembers that rate
//!    as the link's capacity; normal grows it, additively (about a packet
//!    per response time) from three deviations below that remembered
//!    capacity, multiplicatively elsewhere; underuse holds it (the queue is
//!    draining).
//!
//! Differences from libwebrtc, because a forwarding SFU cannot pace or
//! probe: its sent rate is whatever the selected layers produce, so the
//! estimate is not capped at 1.5 × the acknowledged rate (it could never
//! reach the next layer), and it grows faster away from a known bottleneck
//! ([`MULTIPLICATIVE_PER_S`]; the loss-based side already grows about as
//! fast), and the remembered capacity is dropped once the acknowledged rate
//! or the estimate goes well past it.
//!
//! Sans-IO and deterministic: every input carries its time; nothing
//! allocates; hostile arrival times (jumps, reordering) are counted and
//! restart the filter rather than feeding it.

/// Send-time span of one packet group (µs).
pub const GROUP_SPAN_US: i64 = 5_000;
/// Packets arriving within this of the group's last one, earlier than
/// their send spacing predicts, belong to its burst (µs).
const BURST_DELTA_US: i64 = 5_000;
/// A burst never spans more than this in arrival time (µs).
const MAX_BURST_US: i64 = 100_000;
/// An arrival spacing further than this from the send spacing is a clock
/// jump, not queueing: the filter restarts (µs).
const ARRIVAL_JUMP_US: i64 = 3_000_000;
/// Consecutive groups arriving out of order before the filter restarts.
const MAX_REORDERED: u32 = 3;

/// Groups the trend is fitted over.
pub const WINDOW: usize = 20;
/// Weight of the past in the smoothed accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by this and by the number of deltas seen (up to
/// [`MIN_DELTAS`]) before it meets the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
const MIN_DELTAS: u32 = 60;
/// Overuse must last this long (ms, in arrival time) before it counts.
const OVERUSE_TIME_MS: f64 = 10.0;
/// Adaptive threshold: start, bounds, gains up and down (ms, per ms).
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A slope this far beyond the threshold does not move it (a spike).
const MAX_ADAPT_OFFSET: f64 = 15.0;

/// On overuse the estimate goes to this fraction of the acknowledged rate.
pub const BETA: f64 = 0.85;
/// Growth factor per second away from a known bottleneck.
pub const MULTIPLICATIVE_PER_S: f64 = 1.5;
/// An estimate this many times the remembered capacity's upper bound
/// forgets it.
const STALE_CAPACITY: f64 = 1.5;
/// Round trip assumed for the additive step and the decrease spacing (the
/// forwarder does not measure its subscribers' RTT), µs.
const ASSUMED_RTT_US: i64 = 100_000;
/// Response time the additive step spreads one packet over: RTT + 100 ms.
const RESPONSE_US: i64 = ASSUMED_RTT_US + 100_000;
/// Largest packet the additive step assumes, bits.
const PACKET_BITS: f64 = 1200.0 * 8.0;
/// Least additive growth, bit/s per second.
const MIN_ADDITIVE_BPS: f64 = 4_000.0;
/// Longest interval one increase step accounts for, µs.
const MAX_STEP_US: i64 = 1_000_000;
/// Two decreases are at least this far apart unless the acknowledged rate
/// fell below half the estimate, µs.
const DECREASE_SPACING_US: i64 = 200_000;
/// Acknowledged-rate window and bucket (µs); the first estimate needs at
/// least [`ACKED_MIN_SPAN_US`] of arrivals.
const ACKED_BUCKET_US: i64 = 50_000;
const ACKED_BUCKETS: usize = 10;
const ACKED_MIN_SPAN_US: i64 = 150_000;

/// Estimates are kept within this range (bit/s).
const MIN_RATE: f64 = 30_000.0;
const MAX_RATE: f64 = 100_000_000.0;

/// What the detector makes of the delay trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// No queue building or draining.
    Normal,
    /// A queue is building: the sender exceeds the bottleneck.
    Overusing,
    /// A queue is draining.
    Underusing,
}

/// Inputs the estimator refused or that restarted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayCounters {
    /// Packets sent before the current group's start, reported after it.
    pub out_of_order: u64,
    /// Groups whose arrival preceded the previous group's.
    pub reordered_groups: u64,
    /// Arrival spacings implausibly far from send spacings.
    pub arrival_jumps: u64,
    /// Filter restarts (after jumps or repeated reordering).
    pub resets: u64,
    /// Overuse detections acted on.
    pub overuses: u64,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: i64,
    last_send: i64,
    first_arrival: i64,
    last_arrival: i64,
}

impl Group {
    fn new(send: i64, arrival: i64) -> Self {
        Self {
            first_send: send,
            last_send: send,
            first_arrival: arrival,
            last_arrival: arrival,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateState {
    Hold,
    Increase,
}

/// Delay-based estimate for one subscriber.
#[derive(Debug, Clone)]
pub struct DelayEstimator {
    // Grouping.
    current: Option<Group>,
    prev: Option<Group>,
    reordered_run: u32,
    // Trendline.
    first_arrival: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    window: [(f64, f64); WINDOW],
    window_len: usize,
    window_next: usize,
    deltas: u32,
    trend: f64,
    time_over_ms: Option<f64>,
    over_count: u32,
    threshold: f64,
    threshold_at: Option<i64>,
    usage: Usage,
    // Acknowledged rate: (bucket index, bytes) by arrival time.
    acked: [(i64, u64); ACKED_BUCKETS],
    acked_first: Option<i64>,
    acked_last: i64,
    // Rate control.
    rate: Option<f64>,
    state: RateState,
    changed_at: Option<i64>,
    decreased_at: Option<i64>,
    /// Remembered bottleneck: mean (bit/s) and normalised variance.
    capacity: Option<(f64, f64)>,
    counters: DelayCounters,
}

impl Default for DelayEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayEstimator {
    /// Fresh state, with no estimate until [`Self::start`].
    pub fn new() -> Self {
        Self {
            current: None,
            prev: None,
            reordered_run: 0,
            first_arrival: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            window: [(0.0, 0.0); WINDOW],
            window_len: 0,
            window_next: 0,
            deltas: 0,
            trend: 0.0,
            time_over_ms: None,
            over_count: 0,
            threshold: THRESHOLD_START,
            threshold_at: None,
            usage: Usage::Normal,
            acked: [(i64::MIN, 0); ACKED_BUCKETS],
            acked_first: None,
            acked_last: i64::MIN,
            rate: None,
            state: RateState::Hold,
            changed_at: None,
            decreased_at: None,
            capacity: None,
            counters: DelayCounters::default(),
        }
    }

    /// Sets the starting estimate if there is none yet (bit/s).
    pub fn start(&mut self, bps: u64, now_us: i64) {
        if self.rate.is_none() {
            self.rate = Some((bps as f64).clamp(MIN_RATE, MAX_RATE));
            self.changed_at = Some(now_us);
        }
    }

    /// The estimate (bit/s), once started.
    pub fn estimate(&self) -> Option<u64> {
        self.rate.map(|r| r as u64)
    }

    /// The detector's latest verdict.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The rate the receiver acknowledged over the last half second (bit/s).
    pub fn acknowledged(&self) -> Option<u64> {
        let first = self.acked_first?;
        let newest = self.acked_last.div_euclid(ACKED_BUCKET_US);
        let oldest = newest - (ACKED_BUCKETS as i64 - 1);
        let start = (oldest * ACKED_BUCKET_US).max(first);
        let span = self.acked_last - start;
        if span < ACKED_MIN_SPAN_US {
            return None;
        }
        let bytes: u64 = self
            .acked
            .iter()
            .filter(|(i, _)| (oldest..=newest).contains(i))
            .map(|&(_, b)| b)
            .sum();
        Some(bytes.saturating_mul(8_000_000) / span as u64)
    }

    /// Counters of refused input.
    pub fn counters(&self) -> DelayCounters {
        self.counters
    }

    /// One acknowledged packet: sent at `send_us` (our clock), arrived at
    /// `arrival_us` (the receiver's clock), `size` bytes. Feed a feedback
    /// message's packets in sequence order, then call [`Self::update`].
    pub fn on_packet(&mut self, send_us: i64, arrival_us: i64, size: usize) {
        self.record_acked(arrival_us, size);
        let Some(mut current) = self.current else {
            self.current = Some(Group::new(send_us, arrival_us));
            return;
        };
        if send_us < current.first_send {
            self.counters.out_of_order += 1;
            return;
        }
        if !self.starts_group(&current, send_us, arrival_us) {
            current.last_send = current.last_send.max(send_us);
            current.last_arrival = arrival_us;
            self.current = Some(current);
            return;
        }
        if let Some(prev) = self.prev {
            let send_delta = current.last_send - prev.last_send;
            let arrival_delta = current.last_arrival - prev.last_arrival;
            if (arrival_delta - send_delta).abs() > ARRIVAL_JUMP_US {
                self.counters.arrival_jumps += 1;
                self.reset();
                self.current = Some(Group::new(send_us, arrival_us));
                return;
            }
            if arrival_delta < 0 {
                self.counters.reordered_groups += 1;
                self.reordered_run += 1;
                if self.reordered_run >= MAX_REORDERED {
                    self.reset();
                    self.current = Some(Group::new(send_us, arrival_us));
                }
                return;
            }
            self.reordered_run = 0;
            self.on_delta(send_delta, arrival_delta, current.last_arrival);
        }
        self.prev = Some(current);
        self.current = Some(Group::new(send_us, arrival_us));
    }

    fn starts_group(&self, current: &Group, send_us: i64, arrival_us: i64) -> bool {
        let arrival_delta = arrival_us - current.last_arrival;
        let send_delta = send_us - current.last_send;
        let burst = send_delta == 0
            || (arrival_delta - send_delta < 0
                && arrival_delta <= BURST_DELTA_US
                && arrival_us - current.first_arrival < MAX_BURST_US);
        !burst && send_us - current.first_send > GROUP_SPAN_US
    }

    /// Forgets the filter after input it cannot make sense of; the rate
    /// control keeps its estimate.
    fn reset(&mut self) {
        self.counters.resets += 1;
        self.current = None;
        self.prev = None;
        self.reordered_run = 0;
        self.first_arrival = None;
        self.accumulated_ms = 0.0;
        self.smoothed_ms = 0.0;
        self.window_len = 0;
        self.window_next = 0;
        self.deltas = 0;
        self.trend = 0.0;
        self.time_over_ms = None;
        self.over_count = 0;
        self.threshold_at = None;
        self.usage = Usage::Normal;
    }

    fn record_acked(&mut self, arrival_us: i64, size: usize) {
        let first = *self.acked_first.get_or_insert(arrival_us);
        if arrival_us < first {
            self.acked_first = Some(arrival_us);
        }
        // A jump far from what is on record (a hostile or reset clock)
        // restarts the window rather than averaging over the gap.
        if self.acked_last != i64::MIN && (arrival_us - self.acked_last).abs() > ARRIVAL_JUMP_US {
            self.acked = [(i64::MIN, 0); ACKED_BUCKETS];
            self.acked_first = Some(arrival_us);
            self.acked_last = arrival_us;
        }
        self.acked_last = self.acked_last.max(arrival_us);
        let index = arrival_us.div_euclid(ACKED_BUCKET_US);
        let slot = &mut self.acked[index.rem_euclid(ACKED_BUCKETS as i64) as usize];
        if slot.0 == index {
            slot.1 = slot.1.saturating_add(size as u64);
        } else if slot.0 < index {
            *slot = (index, size as u64);
        }
        // An arrival older than the slot's bucket is outside the window.
    }

    /// One inter-group delta into the trendline and the detector.
    fn on_delta(&mut self, send_delta_us: i64, arrival_delta_us: i64, arrival_us: i64) {
        let variation_ms = (arrival_delta_us - send_delta_us) as f64 / 1000.0;
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated_ms += variation_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let first = *self.first_arrival.get_or_insert(arrival_us);
        let x = (arrival_us - first) as f64 / 1000.0;
        self.window[self.window_next] = (x, self.smoothed_ms);
        self.window_next = (self.window_next + 1) % WINDOW;
        self.window_len = (self.window_len + 1).min(WINDOW);
        let previous_trend = self.trend;
        if self.window_len == WINDOW {
            if let Some(slope) = slope(&self.window) {
                self.trend = slope;
            }
        }
        self.detect(previous_trend, send_delta_us as f64 / 1000.0, arrival_us);
    }

    fn detect(&mut self, previous_trend: f64, send_delta_ms: f64, arrival_us: i64) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let scaled = f64::from(self.deltas.min(MIN_DELTAS)) * self.trend * THRESHOLD_GAIN;
        if scaled > self.threshold {
            let over = match self.time_over_ms {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && self.trend >= previous_trend {
                self.time_over_ms = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if scaled < -self.threshold {
            self.time_over_ms = None;
            self.over_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_ms = None;
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.adapt_threshold(scaled, arrival_us);
    }

    fn adapt_threshold(&mut self, scaled: f64, arrival_us: i64) {
        let last = *self.threshold_at.get_or_insert(arrival_us);
        self.threshold_at = Some(arrival_us);
        let magnitude = scaled.abs();
        if magnitude > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if magnitude < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let elapsed_ms = ((arrival_us - last) as f64 / 1000.0).clamp(0.0, 100.0);
        self.threshold += k * (magnitude - self.threshold) * elapsed_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }

    /// Applies the detector's verdict after a feedback message, at `now_us`
    /// (our clock). Does nothing before [`Self::start`].
    pub fn update(&mut self, now_us: i64) {
        let Some(rate) = self.rate else {
            return;
        };
        let acked = self.acknowledged().map(|a| a as f64);
        let next = match self.usage {
            Usage::Overusing => {
                let due = self
                    .decreased_at
                    .is_none_or(|at| now_us - at >= DECREASE_SPACING_US)
                    || acked.is_some_and(|a| a < rate / 2.0);
                if !due {
                    return;
                }
                self.counters.overuses += 1;
                let mut cut = acked.map_or(rate * BETA, |a| a * BETA);
                if let (Some(a), Some((mean, var))) = (acked, self.capacity) {
                    if a < lower_bound(mean, var) {
                        self.capacity = None;
                    }
                }
                if cut > rate {
                    // The receiver got more than we estimated: go by the
                    // bottleneck on record if it is lower.
                    cut = self
                        .capacity
                        .map_or(rate, |(mean, _)| (mean * BETA).min(rate));
                }
                if let Some(a) = acked {
                    self.note_capacity(a);
                }
                self.state = RateState::Hold;
                self.decreased_at = Some(now_us);
                cut
            }
            Usage::Underusing => {
                self.state = RateState::Hold;
                rate
            }
            Usage::Normal => {
                let since = self.changed_at.map_or(0, |at| now_us - at);
                if self.state == RateState::Hold {
                    self.state = RateState::Increase;
                    rate
                } else {
                    self.increased(rate, acked, since.clamp(0, MAX_STEP_US))
                }
            }
        };
        if next.is_finite() {
            self.rate = Some(next.clamp(MIN_RATE, MAX_RATE));
        }
        self.changed_at = Some(now_us);
    }

    fn increased(&mut self, rate: f64, acked: Option<f64>, step_us: i64) -> f64 {
        if let Some((mean, var)) = self.capacity {
            // Well past the bottleneck on record, by what was delivered or by
            // where the estimate got to without a new overuse: it is stale.
            // (The second because a forwarder's rate moves in layer steps:
            // it sends no more until the estimate affords the next layer.)
            let upper = upper_bound(mean, var);
            if acked.is_some_and(|a| a > upper) || rate > STALE_CAPACITY * upper {
                self.capacity = None;
            }
        }
        let seconds = step_us as f64 / 1e6;
        match self.capacity {
            // Additive from just below the bottleneck on record; further
            // below it no queue is near.
            Some((mean, var)) if rate >= lower_bound(mean, var) => {
                // One packet per response time, the packet size what a 30 fps
                // video at this rate would send (as libwebrtc): audio alone
                // must not make the step tiny.
                let frame_bits = rate / 30.0;
                let packets = (frame_bits / PACKET_BITS).ceil().max(1.0);
                let per_s = (frame_bits / packets * 1e6 / RESPONSE_US as f64).max(MIN_ADDITIVE_BPS);
                rate + per_s * seconds
            }
            _ => rate * MULTIPLICATIVE_PER_S.powf(seconds),
        }
    }

    /// Folds an acknowledged rate at overuse into the remembered capacity.
    fn note_capacity(&mut self, bps: f64) {
        const ALPHA: f64 = 0.05;
        let kbps = bps / 1000.0;
        let (mean, var) = match self.capacity {
            None => (kbps, 0.4),
            Some((mean, var)) => {
                let mean_k = mean / 1000.0;
                let mean_k = (1.0 - ALPHA) * mean_k + ALPHA * kbps;
                let error = mean_k - kbps;
                let var = (1.0 - ALPHA) * var + ALPHA * error * error / mean_k.max(1.0);
                (mean_k, var)
            }
        };
        self.capacity = Some((mean * 1000.0, var.clamp(0.4, 2.5)));
    }
}

/// Capacity bounds: mean ± 3 deviations, the variance normalised by the
/// mean (kbit/s arithmetic, as libwebrtc).
fn upper_bound(mean: f64, var: f64) -> f64 {
    let k = mean / 1000.0;
    (k + 3.0 * (var * k).sqrt()) * 1000.0
}

fn lower_bound(mean: f64, var: f64) -> f64 {
    let k = mean / 1000.0;
    ((k - 3.0 * (var * k).sqrt()) * 1000.0).max(0.0)
}

/// Least-squares slope of `points` (x, y); `None` when x does not vary.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0 && num.is_finite()).then(|| num / den)
}

#[cfg(test)]
#[path = "delay_sim.rs"]
mod sim;
