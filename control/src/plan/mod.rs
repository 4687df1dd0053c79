//! Capacity planning: the sizing arithmetic operators do before a clinic
//! season, as pure functions of typed inputs (`switchboard plan` prints it).
//!
//! Definitions, all per clinic day:
//!
//! * **average concurrency** = consults per day × consult minutes ÷ clinic
//!   window minutes: the consults in progress at an average minute of the
//!   window (Little's law with the window as the period);
//! * **peak concurrency** = average × peak factor (the busiest minute of an
//!   ordinary day), **surge concurrency** = peak × surge factor (the busiest
//!   minute of a flu-season day);
//! * **streams per consult** = the streams the box *sends* for one consult:
//!   each participant's stream goes to every other participant, so
//!   `p × (p − 1)`, 2 for a two-party consult. **Egress per consult** =
//!   streams × bitrate per stream (3 Mbit/s at 1.5 Mbit/s per stream), and
//!   egress at any moment = concurrency × egress per consult;
//! * **per-box capacity** = the practical ceiling: the link's theoretical
//!   consult count ([`hardware::theoretical_capacity`]) × the
//!   practical utilisation (0.5 by default), or, when a measured figure is
//!   given, the smaller of that and measured consults × utilisation (the
//!   CPU can run out before the link does);
//! * **boxes per region** = ⌈surge concurrency of the region ÷ per-box
//!   capacity⌉ + spare boxes (1 by default: N+1, so one box can fail or be
//!   drained for an upgrade at the surge peak without any other box passing
//!   its practical ceiling). A region is sized on its own because residency
//!   forbids sending its consults elsewhere;
//! * **monthly egress volume** = consults per day × consult seconds × egress
//!   per consult ÷ 8 × days per month, in TB (10¹² bytes); the peak factor
//!   moves traffic within the day and does not change the volume, the surge
//!   factor does (a surge month is reported separately).
//!
//! The worked example (10,000 consults/day, 8 h window, 15 min consults,
//! 1.5 Mbit/s per stream, peak 2.5×, surge 1.5×) gives 312.5 average,
//! 781.25 peak and 1,171.9 surge concurrent consults and 3.52 Gbit/s of
//! egress at the surge peak (3.5 Gbit/s, with 312 × 2.5 × 1.5 rounded down
//! to 1,170 × 3 Mbit/s = 3.51 Gbit/s when the figures are rounded first).
//!
//! The demand curve across the day is described in [`DemandCurve`].

pub mod chart;
pub mod cli;
pub mod measured;

use serde::Serialize;

pub use measured::{MeasuredCapacity, MeasuredError};

/// Why a plan's inputs are not acceptable: the input's name and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{input}: {reason}")]
pub struct PlanError {
    /// The input (as the command-line flag names it, without dashes).
    pub input: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(input: &'static str, reason: impl Into<String>) -> PlanError {
    PlanError {
        input,
        reason: reason.into(),
    }
}

/// A region's part of the demand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionShare {
    /// Region name.
    pub name: String,
    /// Weight of the region in the demand; weights are normalised to sum 1.
    pub weight: f64,
}

/// Everything the plan is computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInput {
    /// Consults per clinic day.
    pub consults_per_day: f64,
    /// Hour of the day the clinic window opens (for the curve), 0..24.
    pub window_start_hour: f64,
    /// Length of the clinic window in hours.
    pub window_hours: f64,
    /// Average consult length in minutes.
    pub consult_minutes: f64,
    /// Participants per consult.
    pub participants: u32,
    /// Bitrate of one stream (audio + video of one participant), bit/s.
    pub stream_bps: f64,
    /// Busiest minute of an ordinary day ÷ average, at least 1.
    pub peak_factor: f64,
    /// Busiest minute of a surge day ÷ ordinary peak, at least 1.
    pub surge_factor: f64,
    /// Fraction of the theoretical capacity planned for, in (0, 1].
    pub utilisation: f64,
    /// Egress link of one box, bit/s.
    pub link_bps: u64,
    /// A measured per-box ceiling, when one is known.
    pub measured: Option<MeasuredCapacity>,
    /// Spare boxes per region on top of the surge need (1: N+1).
    pub spare_boxes: u32,
    /// Days per month for the egress volume.
    pub days_per_month: f64,
    /// Where the peak sits, as a fraction of the window, in (0, 1).
    pub peak_at: f64,
    /// The regions and their shares of the demand.
    pub regions: Vec<RegionShare>,
}

impl Default for PlanInput {
    /// The worked example: 10,000 consults/day, 08:00-16:00, 15 minutes,
    /// two parties at 1.5 Mbit/s, peak 2.5×, surge 1.5×, half of a 10 Gbit/s
    /// link, N+1, one region.
    fn default() -> Self {
        Self {
            consults_per_day: 10_000.0,
            window_start_hour: 8.0,
            window_hours: 8.0,
            consult_minutes: 15.0,
            participants: 2,
            stream_bps: 1_500_000.0,
            peak_factor: 2.5,
            surge_factor: 1.5,
            utilisation: hardware::DEFAULT_PRACTICAL_FRACTION,
            link_bps: 10_000_000_000,
            measured: None,
            spare_boxes: 1,
            days_per_month: 30.0,
            peak_at: 0.35,
            regions: vec![RegionShare {
                name: "all".to_owned(),
                weight: 1.0,
            }],
        }
    }
}

/// Average, peak and surge figures of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Levels {
    /// At the average minute of the window.
    pub average: f64,
    /// At the busiest minute of an ordinary day.
    pub peak: f64,
    /// At the busiest minute of a surge day.
    pub surge: f64,
}

impl Levels {
    fn scaled(self, by: f64) -> Self {
        Self {
            average: self.average * by,
            peak: self.peak * by,
            surge: self.surge * by,
        }
    }
}

/// What one box carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxCapacity {
    /// Consults the link carries in theory.
    pub link_theoretical: f64,
    /// The link's practical ceiling (theoretical × utilisation).
    pub link_practical: f64,
    /// The measured ceiling × utilisation, when measured.
    pub measured_practical: Option<f64>,
    /// The figure planned with: the smaller of the two.
    pub practical: f64,
    /// Which one limits: `"link"` or `"measured"`.
    pub limited_by: &'static str,
}

/// Boxes for one region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionPlan {
    /// Region name.
    pub name: String,
    /// Normalised share of the demand.
    pub share: f64,
    /// Concurrent consults of the region.
    pub concurrency: Levels,
    /// Boxes to carry the ordinary peak within the practical ceiling.
    pub boxes_for_peak: u32,
    /// Boxes to carry the surge peak within the practical ceiling.
    pub boxes_for_surge: u32,
    /// Boxes to run: surge need plus the spares.
    pub boxes: u32,
    /// Load at the surge peak on `boxes`, percent of the practical ceiling.
    pub surge_load_percent: f64,
    /// The same with one box down (`None` with a single box).
    pub surge_load_one_down_percent: Option<f64>,
}

/// Egress volume per month.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MonthlyEgress {
    /// An ordinary month, TB (10¹² bytes).
    pub ordinary_tb: f64,
    /// A month at surge demand all along, TB.
    pub surge_tb: f64,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// What it was computed from.
    pub input: PlanInput,
    /// Streams the box sends per consult.
    pub streams_per_consult: u32,
    /// Egress per consult, bit/s.
    pub egress_per_consult_bps: f64,
    /// Concurrent consults.
    pub concurrency: Levels,
    /// Egress, bit/s.
    pub egress_bps: Levels,
    /// Capacity of one box.
    pub per_box: BoxCapacity,
    /// Boxes per region.
    pub regions: Vec<RegionPlan>,
    /// Boxes over all regions.
    pub total_boxes: u32,
    /// Egress volume per month.
    pub monthly_egress: MonthlyEgress,
}

/// Boxes to carry `consults` at `per_box` each, without spares: the
/// smallest n with n × per_box ≥ consults (0 for no demand). `None` when
/// the per-box figure gives no room at all.
pub fn boxes_needed(consults: f64, per_box: f64) -> Option<u32> {
    // NaN demand counts as none; NaN or infinite capacity as no box.
    if consults.is_nan() || consults <= 0.0 {
        return Some(0);
    }
    if per_box.is_nan() || per_box <= 0.0 || !per_box.is_finite() {
        return None;
    }
    // A relative slack keeps 1000 / 500 at 2 despite rounding noise.
    let n = (consults / per_box * (1.0 - 1e-12)).ceil();
    (n <= f64::from(u32::MAX)).then_some(n as u32)
}

impl PlanInput {
    /// Checks every input; the error names the first bad one.
    pub fn validate(&self) -> Result<(), PlanError> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if !(self.consults_per_day.is_finite() && self.consults_per_day >= 0.0) {
            return Err(bad("consults-per-day", "must be a number of at least 0"));
        }
        if !(finite_pos(self.window_hours) && self.window_hours <= 24.0) {
            return Err(bad("window-hours", "must be above 0 and at most 24"));
        }
        if !(self.window_start_hour.is_finite()
            && self.window_start_hour >= 0.0
            && self.window_start_hour + self.window_hours <= 24.0)
        {
            return Err(bad(
                "window-start",
                format!(
                    "the window must lie within the day: {} h + {} h passes 24 h",
                    self.window_start_hour, self.window_hours
                ),
            ));
        }
        if !(finite_pos(self.consult_minutes) && self.consult_minutes <= self.window_hours * 60.0) {
            return Err(bad(
                "consult-minutes",
                "must be above 0 and no longer than the clinic window",
            ));
        }
        if self.participants < 2 {
            return Err(bad("participants", "a consult has at least 2 participants"));
        }
        if !finite_pos(self.stream_bps) {
            return Err(bad("stream-mbps", "must be above 0"));
        }
        if !(self.peak_factor.is_finite() && self.peak_factor >= 1.0) {
            return Err(bad(
                "peak-factor",
                "must be at least 1 (the peak is never below the average)",
            ));
        }
        if !(self.surge_factor.is_finite() && self.surge_factor >= 1.0) {
            return Err(bad("surge-factor", "must be at least 1"));
        }
        if !(finite_pos(self.utilisation) && self.utilisation <= 1.0) {
            return Err(bad("utilisation", "must be above 0 and at most 1"));
        }
        if self.link_bps == 0 {
            return Err(bad("link-gbps", "must be above 0"));
        }
        if let Some(m) = &self.measured {
            if !finite_pos(m.consults_per_box) {
                return Err(bad("measured", "the measured ceiling must be above 0"));
            }
        }
        if !finite_pos(self.days_per_month) || self.days_per_month > 31.0 {
            return Err(bad("days-per-month", "must be above 0 and at most 31"));
        }
        if !(self.peak_at > 0.0 && self.peak_at < 1.0) {
            return Err(bad(
                "peak-at",
                "must lie strictly between 0 (window opens) and 1 (window closes)",
            ));
        }
        if self.regions.is_empty() {
            return Err(bad("region", "at least one region"));
        }
        for (i, r) in self.regions.iter().enumerate() {
            if r.name.is_empty() {
                return Err(bad("region", "a region needs a name"));
            }
            if !finite_pos(r.weight) {
                return Err(bad(
                    "region",
                    format!("weight of `{}` must be above 0", r.name),
                ));
            }
            if self.regions[..i].iter().any(|o| o.name == r.name) {
                return Err(bad("region", format!("`{}` is given twice", r.name)));
            }
        }
        Ok(())
    }

    /// Streams the box sends per consult: each participant's stream to
    /// every other participant.
    pub fn streams_per_consult(&self) -> u32 {
        self.participants
            .saturating_mul(self.participants.saturating_sub(1))
    }

    /// Egress per consult, bit/s.
    pub fn egress_per_consult_bps(&self) -> f64 {
        f64::from(self.streams_per_consult()) * self.stream_bps
    }

    /// Concurrent consults at the average, peak and surge minute.
    pub fn concurrency(&self) -> Levels {
        let average = self.consults_per_day * self.consult_minutes / (self.window_hours * 60.0);
        let peak = average * self.peak_factor;
        Levels {
            average,
            peak,
            surge: peak * self.surge_factor,
        }
    }

    /// What one box carries.
    pub fn per_box(&self) -> BoxCapacity {
        use hardware::{practical_ceiling, theoretical_capacity};
        // theoretical_capacity takes integer bit/s; sub-bit/s precision does
        // not matter at these rates.
        let link_theoretical = theoretical_capacity(
            self.link_bps,
            self.stream_bps.round() as u64,
            self.streams_per_consult(),
        );
        let link_practical = practical_ceiling(link_theoretical, self.utilisation);
        let measured_practical = self
            .measured
            .as_ref()
            .map(|m| practical_ceiling(m.consults_per_box, self.utilisation));
        let (practical, limited_by) = match measured_practical {
            Some(m) if m < link_practical => (m, "measured"),
            _ => (link_practical, "link"),
        };
        BoxCapacity {
            link_theoretical,
            link_practical,
            measured_practical,
            practical,
            limited_by,
        }
    }

    /// The whole plan.
    pub fn plan(&self) -> Result<Plan, PlanError> {
        self.validate()?;
        let concurrency = self.concurrency();
        let egress_per_consult_bps = self.egress_per_consult_bps();
        let per_box = self.per_box();
        let total_weight: f64 = self.regions.iter().map(|r| r.weight).sum();
        let mut regions = Vec::with_capacity(self.regions.len());
        for r in &self.regions {
            let share = r.weight / total_weight;
            let c = concurrency.scaled(share);
            let need = |consults: f64| {
                boxes_needed(consults, per_box.practical).ok_or_else(|| {
                    bad(
                        "link-gbps",
                        "one box has no practical capacity at this bitrate",
                    )
                })
            };
            let boxes_for_peak = need(c.peak)?;
            let boxes_for_surge = need(c.surge)?;
            let boxes = boxes_for_surge.saturating_add(self.spare_boxes);
            let load = |n: u32| c.surge / (f64::from(n) * per_box.practical) * 100.0;
            regions.push(RegionPlan {
                name: r.name.clone(),
                share,
                concurrency: c,
                boxes_for_peak,
                boxes_for_surge,
                boxes,
                surge_load_percent: if boxes == 0 { 0.0 } else { load(boxes) },
                surge_load_one_down_percent: (boxes > 1).then(|| load(boxes - 1)),
            });
        }
        let total_boxes = regions.iter().map(|r| r.boxes).sum();
        let bytes_per_day =
            self.consults_per_day * self.consult_minutes * 60.0 * egress_per_consult_bps / 8.0;
        let ordinary_tb = bytes_per_day * self.days_per_month / 1e12;
        Ok(Plan {
            input: self.clone(),
            streams_per_consult: self.streams_per_consult(),
            egress_per_consult_bps,
            concurrency,
            egress_bps: concurrency.scaled(egress_per_consult_bps),
            per_box,
            regions,
            total_boxes,
            monthly_egress: MonthlyEgress {
                ordinary_tb,
                surge_tb: ordinary_tb * self.surge_factor,
            },
        })
    }
}

/// The shape of demand across the day.
///
/// Outside the clinic window demand is 0. Inside it, with x the fraction of
/// the window elapsed, demand is `average × P × sin(π · x^γ)^k`: zero at
/// opening and closing, a single smooth peak of exactly P × average at
/// x = `peak_at` (γ = ln ½ ÷ ln peak_at puts the sine's top there; 0.35 by
/// default, the late-morning rush), and k chosen so the mean over the window
/// is exactly the average, which keeps the area under the curve equal to the
/// day's consult-minutes. P = 1 gives a flat window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandCurve {
    start_hour: f64,
    window_hours: f64,
    average: f64,
    peak_factor: f64,
    gamma: f64,
    k: f64,
}

/// Samples of the window used to take its mean.
const CURVE_SAMPLES: u32 = 4096;

fn shape(x: f64, gamma: f64, k: f64) -> f64 {
    if !(0.0..=1.0).contains(&x) {
        return 0.0;
    }
    let s = (std::f64::consts::PI * x.powf(gamma)).sin().max(0.0);
    if k == 0.0 {
        1.0
    } else {
        s.powf(k)
    }
}

fn shape_mean(gamma: f64, k: f64) -> f64 {
    // Midpoint rule: the shape is smooth, 4096 samples are far finer than
    // any chart or figure reads.
    let n = f64::from(CURVE_SAMPLES);
    (0..CURVE_SAMPLES)
        .map(|i| shape((f64::from(i) + 0.5) / n, gamma, k))
        .sum::<f64>()
        / n
}

impl DemandCurve {
    /// The curve for a validated input (`average` is the average
    /// concurrency).
    pub fn new(input: &PlanInput, average: f64) -> Self {
        let gamma = 0.5f64.ln() / input.peak_at.ln();
        let target = 1.0 / input.peak_factor;
        // The mean falls monotonically from 1 (k = 0) towards 0 as k grows:
        // bracket, then bisect.
        let mut hi = 1.0;
        while shape_mean(gamma, hi) > target && hi < 1e6 {
            hi *= 2.0;
        }
        let mut lo = 0.0;
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if shape_mean(gamma, mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let k = if input.peak_factor <= 1.0 {
            0.0
        } else {
            (lo + hi) / 2.0
        };
        Self {
            start_hour: input.window_start_hour,
            window_hours: input.window_hours,
            average,
            peak_factor: input.peak_factor,
            gamma,
            k,
        }
    }

    /// Concurrent consults at `hour` (0..24) of an ordinary day.
    pub fn at(&self, hour: f64) -> f64 {
        let x = (hour - self.start_hour) / self.window_hours;
        self.average * self.peak_factor * shape(x, self.gamma, self.k)
    }

    /// The hour of the peak.
    pub fn peak_hour(&self) -> f64 {
        self.start_hour + self.window_hours * 0.5f64.powf(1.0 / self.gamma)
    }
}

/// One point of the demand curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Hour of the day.
    pub hour: f64,
    /// Concurrent consults, ordinary day.
    pub ordinary: f64,
    /// Concurrent consults, surge day.
    pub surge: f64,
}

impl Plan {
    /// The demand curve of the whole plan.
    pub fn curve(&self) -> DemandCurve {
        DemandCurve::new(&self.input, self.concurrency.average)
    }

    /// The curve sampled every `step_minutes` from 00:00 to 24:00.
    pub fn curve_points(&self, step_minutes: u32) -> Vec<CurvePoint> {
        let curve = self.curve();
        let step = f64::from(step_minutes.max(1)) / 60.0;
        let n = (24.0 / step).round() as u32;
        (0..=n)
            .map(|i| {
                let hour = f64::from(i) * step;
                let ordinary = curve.at(hour);
                CurvePoint {
                    hour,
                    ordinary,
                    surge: ordinary * self.input.surge_factor,
                }
            })
            .collect()
    }

    /// A table for people.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let i = &self.input;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "inputs: {} consults/day, window {:02}:{:02} + {} h, {} min per consult, \
             {} participants at {} Mbit/s per stream",
            fmt_num(i.consults_per_day, 0),
            i.window_start_hour.trunc() as u32,
            (i.window_start_hour.fract() * 60.0).round() as u32,
            fmt_num(i.window_hours, 2),
            fmt_num(i.consult_minutes, 2),
            i.participants,
            fmt_num(i.stream_bps / 1e6, 3),
        );
        let _ = writeln!(
            s,
            "        peak {}×, surge {}×, utilisation {} %, {} spare box(es) per region",
            fmt_num(i.peak_factor, 2),
            fmt_num(i.surge_factor, 2),
            fmt_num(i.utilisation * 100.0, 1),
            i.spare_boxes,
        );
        let _ = writeln!(
            s,
            "egress per consult: {} streams × {} Mbit/s = {} Mbit/s",
            self.streams_per_consult,
            fmt_num(i.stream_bps / 1e6, 3),
            fmt_num(self.egress_per_consult_bps / 1e6, 3),
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<10} {:>12} {:>14}", "", "concurrent", "egress Gbit/s");
        for (name, c, e) in [
            ("average", self.concurrency.average, self.egress_bps.average),
            ("peak", self.concurrency.peak, self.egress_bps.peak),
            ("surge", self.concurrency.surge, self.egress_bps.surge),
        ] {
            let _ = writeln!(
                s,
                "{:<10} {:>12} {:>14}",
                name,
                fmt_num(c, 2),
                fmt_num(e / 1e9, 3)
            );
        }
        let _ = writeln!(s);
        let b = &self.per_box;
        let _ = writeln!(
            s,
            "per box: link {} Gbit/s → {} consults theoretical, {} practical",
            fmt_num(i.link_bps as f64 / 1e9, 2),
            fmt_num(b.link_theoretical, 0),
            fmt_num(b.link_practical, 0),
        );
        if let (Some(m), Some(mp)) = (&i.measured, b.measured_practical) {
            let _ = writeln!(
                s,
                "         measured {}{} consults ({}) → {} practical",
                if m.lower_bound { "at least " } else { "" },
                fmt_num(m.consults_per_box, 0),
                m.source,
                fmt_num(mp, 0),
            );
        }
        let _ = writeln!(
            s,
            "         planned with {} consults per box (limited by {})",
            fmt_num(b.practical, 0),
            b.limited_by
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<14} {:>7} {:>9} {:>9} {:>10} {:>11} {:>6} {:>12} {:>14}",
            "region",
            "share",
            "peak",
            "surge",
            "boxes@peak",
            "boxes@surge",
            "boxes",
            "surge load",
            "one box down"
        );
        for r in &self.regions {
            let _ = writeln!(
                s,
                "{:<14} {:>5} % {:>9} {:>9} {:>10} {:>11} {:>6} {:>10} % {:>14}",
                r.name,
                fmt_num(r.share * 100.0, 1),
                fmt_num(r.concurrency.peak, 2),
                fmt_num(r.concurrency.surge, 2),
                r.boxes_for_peak,
                r.boxes_for_surge,
                r.boxes,
                fmt_num(r.surge_load_percent, 1),
                r.surge_load_one_down_percent
                    .map(|p| format!("{} %", fmt_num(p, 1)))
                    .unwrap_or_else(|| "-".to_owned()),
            );
        }
        let _ = writeln!(s, "total boxes: {}", self.total_boxes);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "egress volume: {} TB per month ({} days), {} TB in a surge month",
            fmt_num(self.monthly_egress.ordinary_tb, 1),
            fmt_num(i.days_per_month, 1),
            fmt_num(self.monthly_egress.surge_tb, 1),
        );
        let curve = self.curve();
        let peak_hour = curve.peak_hour();
        let _ = writeln!(
            s,
            "demand peaks at {:02}:{:02}",
            peak_hour.trunc() as u32,
            (peak_hour.fract() * 60.0).round() as u32 % 60
        );
        s
    }
}

/// A number with thousands separators and at most `decimals` decimals
/// (trailing zeros dropped).
fn fmt_num(v: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, v);
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f.trim_end_matches('0')),
        None => (text.as_str(), ""),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (n, ch) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn worked_example() {
        let plan = PlanInput::default().plan().unwrap();
        assert_eq!(plan.streams_per_consult, 2);
        assert!(close(plan.egress_per_consult_bps, 3e6, 1e-6));
        // 10,000 × 15 ÷ 480 = 312.5; × 2.5 = 781.25; × 1.5 = 1171.875.
        assert!(close(plan.concurrency.average, 312.5, 1e-9));
        assert!(close(plan.concurrency.peak, 781.25, 1e-9));
        assert!(close(plan.concurrency.surge, 1171.875, 1e-9));
        // The article's ~312 / ~780 / ~1,170 are these, rounded down.
        assert_eq!(plan.concurrency.average.floor(), 312.0);
        assert_eq!((plan.concurrency.peak / 10.0).floor() * 10.0, 780.0);
        assert_eq!((plan.concurrency.surge / 10.0).floor() * 10.0, 1170.0);
        // Surge egress: 1171.875 × 2 streams × 1.5 Mbit/s = 3.515625 Gbit/s.
        assert!(close(plan.egress_bps.surge, 3.515625e9, 1.0));
        assert_eq!(format!("{:.1}", plan.egress_bps.surge / 1e9), "3.5");
        // The article's 1,170 × 3 Mbit/s = 3.51 Gbit/s is the same formula.
        assert!(close(1170.0 * plan.egress_per_consult_bps, 3.51e9, 1.0));
        assert!(close(plan.egress_bps.average, 937.5e6, 1.0));
        assert!(close(plan.egress_bps.peak, 2.34375e9, 1.0));
    }

    #[test]
    fn worked_example_boxes_and_volume() {
        let plan = PlanInput::default().plan().unwrap();
        // 10 Gbit/s ÷ 3 Mbit/s = 3333.3 theoretical, half of it practical.
        assert!(close(plan.per_box.link_theoretical, 10_000.0 / 3.0, 1e-6));
        assert!(close(plan.per_box.practical, 5_000.0 / 3.0, 1e-6));
        assert_eq!(plan.per_box.limited_by, "link");
        let r = &plan.regions[0];
        assert_eq!((r.boxes_for_peak, r.boxes_for_surge, r.boxes), (1, 1, 2));
        assert_eq!(plan.total_boxes, 2);
        assert!(close(
            r.surge_load_percent,
            1171.875 / (2.0 * 5000.0 / 3.0) * 100.0,
            1e-9
        ));
        assert!(close(
            r.surge_load_one_down_percent.unwrap(),
            1171.875 / (5000.0 / 3.0) * 100.0,
            1e-9
        ));
        // 10,000 × 900 s × 3 Mbit/s ÷ 8 = 3.375 TB a day, × 30 days.
        assert!(close(plan.monthly_egress.ordinary_tb, 101.25, 1e-9));
        assert!(close(plan.monthly_egress.surge_tb, 151.875, 1e-9));
    }

    #[test]
    fn measured_capacity_limits_when_lower() {
        let mut input = PlanInput {
            measured: Some(MeasuredCapacity {
                consults_per_box: 500.0,
                lower_bound: false,
                source: "test".into(),
            }),
            ..PlanInput::default()
        };
        let plan = input.plan().unwrap();
        assert_eq!(plan.per_box.limited_by, "measured");
        assert!(close(plan.per_box.practical, 250.0, 1e-9));
        // 1171.875 ÷ 250 → 5 boxes, + 1 spare.
        assert_eq!(plan.regions[0].boxes_for_surge, 5);
        assert_eq!(plan.regions[0].boxes, 6);
        // 781.25 ÷ 250 → 4.
        assert_eq!(plan.regions[0].boxes_for_peak, 4);
        input.measured.as_mut().unwrap().consults_per_box = 100_000.0;
        assert_eq!(input.plan().unwrap().per_box.limited_by, "link");
    }

    #[test]
    fn regions_are_sized_separately() {
        let input = PlanInput {
            consults_per_day: 40_000.0,
            regions: vec![
                RegionShare {
                    name: "eu".into(),
                    weight: 3.0,
                },
                RegionShare {
                    name: "us".into(),
                    weight: 1.0,
                },
            ],
            ..PlanInput::default()
        };
        let plan = input.plan().unwrap();
        // 4687.5 surge consults: eu 3515.6 → 3 boxes + 1, us 1171.9 → 1 + 1.
        assert!(close(plan.regions[0].share, 0.75, 1e-12));
        assert_eq!(plan.regions[0].boxes, 4);
        assert_eq!(plan.regions[1].boxes, 2);
        assert_eq!(plan.total_boxes, 6);
        let sum: f64 = plan.regions.iter().map(|r| r.concurrency.surge).sum();
        assert!(close(sum, plan.concurrency.surge, 1e-9));
    }

    #[test]
    fn boxes_needed_is_the_exact_ceiling() {
        assert_eq!(boxes_needed(0.0, 100.0), Some(0));
        assert_eq!(boxes_needed(1.0, 100.0), Some(1));
        assert_eq!(boxes_needed(100.0, 100.0), Some(1));
        assert_eq!(boxes_needed(100.0001, 100.0), Some(2));
        assert_eq!(boxes_needed(1000.0, 500.0), Some(2));
        assert_eq!(boxes_needed(10.0, 0.0), None);
        assert_eq!(boxes_needed(10.0, f64::NAN), None);
    }

    #[test]
    fn more_participants_send_more_streams() {
        let input = PlanInput {
            participants: 3,
            ..PlanInput::default()
        };
        assert_eq!(input.streams_per_consult(), 6);
        assert!(close(input.egress_per_consult_bps(), 9e6, 1e-6));
    }

    #[test]
    fn bad_inputs_are_named() {
        let cases: Vec<(PlanInput, &str)> = vec![
            (
                PlanInput {
                    peak_factor: 0.5,
                    ..PlanInput::default()
                },
                "peak-factor",
            ),
            (
                PlanInput {
                    window_start_hour: 20.0,
                    ..PlanInput::default()
                },
                "window-start",
            ),
            (
                PlanInput {
                    consult_minutes: 0.0,
                    ..PlanInput::default()
                },
                "consult-minutes",
            ),
            (
                PlanInput {
                    participants: 1,
                    ..PlanInput::default()
                },
                "participants",
            ),
            (
                PlanInput {
                    utilisation: 1.5,
                    ..PlanInput::default()
                },
                "utilisation",
            ),
            (
                PlanInput {
                    link_bps: 0,
                    ..PlanInput::default()
                },
                "link-gbps",
            ),
            (
                PlanInput {
                    peak_at: 1.0,
                    ..PlanInput::default()
                },
                "peak-at",
            ),
            (
                PlanInput {
                    consults_per_day: f64::NAN,
                    ..PlanInput::default()
                },
                "consults-per-day",
            ),
            (
                PlanInput {
                    regions: vec![
                        RegionShare {
                            name: "eu".into(),
                            weight: 1.0,
                        },
                        RegionShare {
                            name: "eu".into(),
                            weight: 1.0,
                        },
                    ],
                    ..PlanInput::default()
                },
                "region",
            ),
        ];
        for (input, name) in cases {
            assert_eq!(input.plan().unwrap_err().input, name);
        }
    }

    #[test]
    fn curve_has_the_average_as_mean_and_the_peak_as_max() {
        for (peak, at) in [
            (2.5, 0.35),
            (1.0, 0.5),
            (1.3, 0.2),
            (4.0, 0.6),
            (10.0, 0.35),
        ] {
            let input = PlanInput {
                peak_factor: peak,
                peak_at: at,
                ..PlanInput::default()
            };
            let plan = input.plan().unwrap();
            let curve = plan.curve();
            // Mean over the window (fine sampling) equals the average.
            let n = 20_000;
            let mean = (0..n)
                .map(|i| curve.at(8.0 + 8.0 * (i as f64 + 0.5) / n as f64))
                .sum::<f64>()
                / n as f64;
            assert!(
                close(
                    mean,
                    plan.concurrency.average,
                    plan.concurrency.average * 2e-3
                ),
                "peak {peak}: mean {mean}"
            );
            let max = (0..n)
                .map(|i| curve.at(8.0 + 8.0 * i as f64 / n as f64))
                .fold(0.0, f64::max);
            assert!(
                close(max, plan.concurrency.peak, plan.concurrency.peak * 1e-3),
                "peak {peak}: max {max}"
            );
            let peak_hour = curve.peak_hour();
            assert!(close(peak_hour, 8.0 + 8.0 * at, 1e-9));
            assert!(close(curve.at(peak_hour), plan.concurrency.peak, 1e-6));
            // Closed outside the window.
            assert_eq!(curve.at(7.9), 0.0);
            assert_eq!(curve.at(16.1), 0.0);
        }
    }

    #[test]
    fn curve_points_carry_the_surge() {
        let plan = PlanInput::default().plan().unwrap();
        let points = plan.curve_points(15);
        assert_eq!(points.len(), 97);
        assert_eq!(points[0].hour, 0.0);
        assert_eq!(points[96].hour, 24.0);
        for p in &points {
            assert!(close(p.surge, p.ordinary * 1.5, 1e-9));
        }
        let max = points.iter().map(|p| p.surge).fold(0.0, f64::max);
        assert!(max <= plan.concurrency.surge + 1e-6);
        assert!(max > plan.concurrency.surge * 0.95);
    }

    #[test]
    fn text_and_json_carry_the_figures() {
        let plan = PlanInput::default().plan().unwrap();
        let text = plan.render_text();
        assert!(text.contains("1,171.88"), "{text}");
        assert!(text.contains("3.516"), "{text}");
        assert!(text.contains("total boxes: 2"), "{text}");
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["concurrency"]["surge"], 1171.875);
        assert_eq!(json["regions"][0]["boxes"], 2);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(10_000.0, 0), "10,000");
        assert_eq!(fmt_num(1171.875, 1), "1,171.9");
        assert_eq!(fmt_num(312.5, 2), "312.5");
        assert_eq!(fmt_num(-1234.0, 0), "-1,234");
        assert_eq!(fmt_num(100.0, 1), "100");
    }
}
