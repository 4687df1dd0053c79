//! The overload ladder: a sans-IO state machine from measured load to a level,
//! and the policy from a level and a consult's clinical priority to the caps
//! the media plane applies.
//!
//! Load is the larger of egress ÷ practical egress ceiling and CPU ÷
//! practical CPU ceiling, in percent. The level moves one step at a time:
//! up when the load has stayed at or above the next level's enter threshold
//! for the enter hold, down when it has stayed at or below the current
//! level's exit threshold for the exit hold. Any sample that breaks the
//! condition restarts the hold, so a single spike or dip changes nothing.
//!
//! | level | routine | urgent | critical | new consults |
//! |---|---|---|---|---|
//! | 0 | all layers | all layers | all layers | admitted |
//! | 1 | top layer capped | top layer capped | top layer capped | admitted |
//! | 2 | lowest layer | lowest layer | lowest layer | admitted |
//! | 3 | audio only | lowest layer | lowest layer | admitted |
//! | 4 | audio only | audio only | lowest layer | refused (503) |
//!
//! Audio is never capped: [`OverloadCap::AudioOnly`] and the XDP
//! `video_off` cap both drop video only.

use std::time::{Duration, Instant};

use dataplane::layer::OverloadCap;
use dataplane::xdp::LayerCap;
use serde::{Deserialize, Serialize};

/// Highest level.
pub const MAX_LEVEL: u8 = 4;

/// A consult's clinical priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Scheduled follow-up and the like: first to lose video.
    Routine,
    /// Keeps video longer than routine.
    Urgent,
    /// Keeps its lowest video layer at every level.
    Critical,
}

impl Priority {
    /// The name as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routine => "routine",
            Self::Urgent => "urgent",
            Self::Critical => "critical",
        }
    }
}

/// Thresholds and holds of the ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderConfig {
    /// Practical egress ceiling, bit/s.
    pub egress_ceiling_bps: u64,
    /// Practical CPU ceiling, percent.
    pub cpu_ceiling_percent: f64,
    /// Load percent at which levels 1..4 are entered.
    pub enter_percent: [u32; 4],
    /// Load percent at which levels 1..4 are left.
    pub exit_percent: [u32; 4],
    /// Hold before rising.
    pub enter_hold: Duration,
    /// Hold before falling.
    pub exit_hold: Duration,
}

impl From<&crate::config::OverloadConfig> for LadderConfig {
    fn from(c: &crate::config::OverloadConfig) -> Self {
        Self {
            egress_ceiling_bps: c.egress_ceiling_bps,
            cpu_ceiling_percent: c.cpu_ceiling_percent,
            enter_percent: c.enter_percent,
            exit_percent: c.exit_percent,
            enter_hold: c.enter_hold(),
            exit_hold: c.exit_hold(),
        }
    }
}

/// One load measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    /// Egress in bit/s over the last interval.
    pub egress_bps: u64,
    /// CPU use in percent of all cores over the last interval.
    pub cpu_percent: f64,
}

/// Why the effective level changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeReason {
    /// Measured load crossed a threshold for the hold time.
    Measured,
    /// An operator forced the level.
    Forced,
    /// An operator lifted a forced level.
    ForceCleared,
}

impl ChangeReason {
    /// The name as in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::Forced => "forced",
            Self::ForceCleared => "force_cleared",
        }
    }
}

/// A change of the effective level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelChange {
    /// Level before.
    pub from: u8,
    /// Level after.
    pub to: u8,
    /// Why.
    pub reason: ChangeReason,
    /// Load percent of the sample that caused it (last sample otherwise).
    pub load_percent: f64,
}

/// A level out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overload level {0} is outside 0..={MAX_LEVEL}")]
pub struct BadLevel(pub u8);

/// The ladder's state.
#[derive(Debug, Clone)]
pub struct Ladder {
    config: LadderConfig,
    measured: u8,
    forced: Option<u8>,
    /// Since when the load has continuously met the condition for moving
    /// the measured level up (or down); reset whenever it does not.
    up_since: Option<Instant>,
    down_since: Option<Instant>,
    load_percent: f64,
}

impl Ladder {
    /// A ladder at level 0.
    pub fn new(config: LadderConfig) -> Self {
        Self {
            config,
            measured: 0,
            forced: None,
            up_since: None,
            down_since: None,
            load_percent: 0.0,
        }
    }

    /// Replaces thresholds and holds (SIGHUP); running holds restart.
    pub fn reconfigure(&mut self, config: LadderConfig) {
        self.config = config;
        self.up_since = None;
        self.down_since = None;
    }

    /// The level in force: the forced one if any, else the measured one.
    pub fn level(&self) -> u8 {
        self.forced.unwrap_or(self.measured)
    }

    /// The level the measurements alone give.
    pub fn measured_level(&self) -> u8 {
        self.measured
    }

    /// The operator's forced level, if any.
    pub fn forced(&self) -> Option<u8> {
        self.forced
    }

    /// Load percent of the last sample.
    pub fn load_percent(&self) -> f64 {
        self.load_percent
    }

    /// Load percent of `sample` against the ceilings.
    pub fn load_of(&self, sample: LoadSample) -> f64 {
        let egress = sample.egress_bps as f64 * 100.0 / self.config.egress_ceiling_bps as f64;
        let cpu = sample.cpu_percent * 100.0 / self.config.cpu_ceiling_percent;
        egress.max(cpu)
    }

    /// Feeds one sample taken at `now`; returns the change of the effective
    /// level, if any.
    pub fn observe(&mut self, now: Instant, sample: LoadSample) -> Option<LevelChange> {
        let load = self.load_of(sample);
        self.load_percent = load;
        let before = self.level();
        let level = usize::from(self.measured);
        let rising =
            level < usize::from(MAX_LEVEL) && load >= f64::from(self.config.enter_percent[level]);
        let falling = level > 0 && load <= f64::from(self.config.exit_percent[level - 1]);
        self.up_since = rising.then(|| self.up_since.unwrap_or(now));
        self.down_since = falling.then(|| self.down_since.unwrap_or(now));
        if let Some(since) = self.up_since {
            if now.saturating_duration_since(since) >= self.config.enter_hold {
                self.measured += 1;
                self.up_since = None;
            }
        }
        if let Some(since) = self.down_since {
            if now.saturating_duration_since(since) >= self.config.exit_hold {
                self.measured -= 1;
                self.down_since = None;
            }
        }
        let after = self.level();
        (after != before).then_some(LevelChange {
            from: before,
            to: after,
            reason: ChangeReason::Measured,
            load_percent: load,
        })
    }

    /// Forces the effective level (`None` lifts the force); measurements
    /// keep moving the measured level underneath.
    pub fn force(&mut self, level: Option<u8>) -> Result<Option<LevelChange>, BadLevel> {
        if let Some(l) = level {
            if l > MAX_LEVEL {
                return Err(BadLevel(l));
            }
        }
        let before = self.level();
        let reason = if level.is_some() {
            ChangeReason::Forced
        } else {
            ChangeReason::ForceCleared
        };
        self.forced = level;
        let after = self.level();
        Ok((after != before).then_some(LevelChange {
            from: before,
            to: after,
            reason,
            load_percent: self.load_percent,
        }))
    }
}

/// What a consult's video may use at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoCap {
    /// Every layer.
    Full,
    /// Every layer but the top one.
    DropTop,
    /// The lowest layer only.
    LowestOnly,
    /// No video; audio continues.
    AudioOnly,
}

impl VideoCap {
    /// The cap for a consult of `priority` at `level`.
    pub fn for_level(level: u8, priority: Priority) -> Self {
        match (level, priority) {
            (0, _) => Self::Full,
            (1, _) => Self::DropTop,
            (2, _) => Self::LowestOnly,
            (3, Priority::Routine) => Self::AudioOnly,
            (3, _) => Self::LowestOnly,
            (_, Priority::Critical) => Self::LowestOnly,
            (_, _) => Self::AudioOnly,
        }
    }

    /// The layer selector's cap for sources with `layers` simulcast/spatial
    /// layers (`None`: no cap). A single-layer source is never capped to
    /// nothing by `DropTop`: its only layer is also its lowest.
    pub fn overload_cap(self, layers: u8) -> Option<OverloadCap> {
        match self {
            Self::Full => None,
            Self::DropTop if layers <= 1 => None,
            Self::DropTop => Some(OverloadCap::MaxLayer(layers - 2)),
            Self::LowestOnly => Some(OverloadCap::MaxLayer(0)),
            Self::AudioOnly => Some(OverloadCap::AudioOnly),
        }
    }

    /// The XDP room cap for a room whose sources have at most `layers`
    /// layers (`None`: lift the cap).
    pub fn xdp_cap(self, layers: u8) -> Option<LayerCap> {
        let max_spatial = match self.overload_cap(layers)? {
            OverloadCap::MaxLayer(l) => l,
            OverloadCap::AudioOnly => 0,
        };
        Some(LayerCap {
            max_spatial,
            max_temporal: None,
            video_off: self == Self::AudioOnly,
        })
    }
}

/// Whether new consults are admitted at `level`.
pub fn admits_new_consults(level: u8) -> bool {
    level < MAX_LEVEL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LadderConfig {
        LadderConfig {
            egress_ceiling_bps: 1_000_000,
            cpu_ceiling_percent: 50.0,
            enter_percent: [85, 95, 105, 115],
            exit_percent: [70, 80, 90, 100],
            enter_hold: Duration::from_secs(5),
            exit_hold: Duration::from_secs(30),
        }
    }

    /// A sample at `percent` of the egress ceiling, CPU idle.
    fn at(percent: u64) -> LoadSample {
        LoadSample {
            egress_bps: percent * 10_000,
            cpu_percent: 0.0,
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn load_is_the_larger_of_egress_and_cpu() {
        let l = Ladder::new(config());
        let s = LoadSample {
            egress_bps: 500_000,
            cpu_percent: 40.0,
        };
        assert!((l.load_of(s) - 80.0).abs() < 1e-9);
        let s = LoadSample {
            egress_bps: 900_000,
            cpu_percent: 10.0,
        };
        assert!((l.load_of(s) - 90.0).abs() < 1e-9);
    }

    #[test]
    fn rises_only_after_the_enter_hold() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        assert_eq!(l.observe(t0, at(90)), None);
        assert_eq!(l.observe(secs(t0, 4), at(90)), None);
        let c = l.observe(secs(t0, 5), at(90)).expect("level 1 after 5 s");
        assert_eq!((c.from, c.to, c.reason), (0, 1, ChangeReason::Measured));
        assert_eq!(l.level(), 1);
    }

    #[test]
    fn a_dip_restarts_the_enter_hold() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        l.observe(t0, at(90));
        l.observe(secs(t0, 4), at(84));
        assert_eq!(l.observe(secs(t0, 6), at(90)), None);
        assert_eq!(l.observe(secs(t0, 10), at(90)), None);
        assert!(l.observe(secs(t0, 11), at(90)).is_some());
    }

    #[test]
    fn climbs_every_level_one_step_per_hold() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        let mut t = 0;
        for expected in 1..=4u8 {
            l.observe(secs(t0, t), at(200));
            let c = l.observe(secs(t0, t + 5), at(200)).expect("step");
            assert_eq!((c.from, c.to), (expected - 1, expected));
            t += 6;
        }
        l.observe(secs(t0, t), at(500));
        assert_eq!(l.observe(secs(t0, t + 60), at(500)), None, "no level 5");
        assert_eq!(l.level(), MAX_LEVEL);
    }

    #[test]
    fn hysteresis_band_holds_the_level() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        l.observe(t0, at(90));
        l.observe(secs(t0, 5), at(90));
        assert_eq!(l.level(), 1);
        // Between exit (70) and enter-next (95): stays at 1 indefinitely.
        for s in 6..200 {
            assert_eq!(l.observe(secs(t0, s), at(75)), None);
        }
        assert_eq!(l.level(), 1);
    }

    #[test]
    fn falls_only_after_the_exit_hold() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        l.observe(t0, at(90));
        l.observe(secs(t0, 5), at(90));
        assert_eq!(l.observe(secs(t0, 10), at(70)), None);
        assert_eq!(l.observe(secs(t0, 39), at(60)), None);
        let c = l.observe(secs(t0, 40), at(60)).expect("back to 0");
        assert_eq!((c.from, c.to), (1, 0));
    }

    #[test]
    fn a_spike_restarts_the_exit_hold() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        l.observe(t0, at(90));
        l.observe(secs(t0, 5), at(90));
        l.observe(secs(t0, 10), at(60));
        l.observe(secs(t0, 30), at(71));
        assert_eq!(l.observe(secs(t0, 45), at(60)), None);
        assert_eq!(l.observe(secs(t0, 74), at(60)), None);
        assert!(l.observe(secs(t0, 75), at(60)).is_some());
    }

    #[test]
    fn descends_every_level() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        let mut t = 0;
        for _ in 0..4 {
            l.observe(secs(t0, t), at(200));
            l.observe(secs(t0, t + 5), at(200));
            t += 6;
        }
        assert_eq!(l.level(), 4);
        for expected in (0..4u8).rev() {
            l.observe(secs(t0, t), at(0));
            let c = l.observe(secs(t0, t + 30), at(0)).expect("step down");
            assert_eq!((c.from, c.to), (expected + 1, expected));
            t += 31;
        }
        assert_eq!(l.observe(secs(t0, t + 100), at(0)), None);
    }

    #[test]
    fn force_overrides_and_clears() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        let c = l.force(Some(4)).unwrap().unwrap();
        assert_eq!((c.from, c.to, c.reason), (0, 4, ChangeReason::Forced));
        // Measurements move the measured level but not the effective one.
        l.observe(t0, at(90));
        assert_eq!(l.observe(secs(t0, 5), at(90)), None);
        assert_eq!((l.level(), l.measured_level()), (4, 1));
        let c = l.force(None).unwrap().unwrap();
        assert_eq!((c.from, c.to, c.reason), (4, 1, ChangeReason::ForceCleared));
        assert_eq!(l.force(Some(1)).unwrap(), None, "same level: no change");
        assert_eq!(l.force(Some(5)), Err(BadLevel(5)));
    }

    #[test]
    fn reconfigure_applies_new_thresholds() {
        let t0 = Instant::now();
        let mut l = Ladder::new(config());
        let mut c = config();
        c.enter_percent = [50, 60, 70, 80];
        c.exit_percent = [40, 50, 60, 70];
        c.enter_hold = Duration::from_secs(1);
        l.reconfigure(c);
        l.observe(t0, at(55));
        assert!(l.observe(secs(t0, 1), at(55)).is_some());
    }

    #[test]
    fn policy_table() {
        use Priority::*;
        use VideoCap::*;
        let expect = [
            (0, [Full, Full, Full]),
            (1, [DropTop, DropTop, DropTop]),
            (2, [LowestOnly, LowestOnly, LowestOnly]),
            (3, [AudioOnly, LowestOnly, LowestOnly]),
            (4, [AudioOnly, AudioOnly, LowestOnly]),
        ];
        for (level, caps) in expect {
            for (p, cap) in [Routine, Urgent, Critical].into_iter().zip(caps) {
                assert_eq!(VideoCap::for_level(level, p), cap, "level {level} {p:?}");
            }
        }
        assert!(admits_new_consults(3));
        assert!(!admits_new_consults(4));
    }

    #[test]
    fn critical_keeps_video_longest() {
        for level in 0..=MAX_LEVEL {
            let rank = |p| match VideoCap::for_level(level, p) {
                VideoCap::Full => 3,
                VideoCap::DropTop => 2,
                VideoCap::LowestOnly => 1,
                VideoCap::AudioOnly => 0,
            };
            assert!(rank(Priority::Critical) >= rank(Priority::Urgent));
            assert!(rank(Priority::Urgent) >= rank(Priority::Routine));
            assert_ne!(
                VideoCap::for_level(level, Priority::Critical),
                VideoCap::AudioOnly
            );
        }
    }

    #[test]
    fn caps_map_to_dataplane_types() {
        assert_eq!(VideoCap::Full.overload_cap(3), None);
        assert_eq!(VideoCap::Full.xdp_cap(3), None);
        assert_eq!(
            VideoCap::DropTop.overload_cap(3),
            Some(OverloadCap::MaxLayer(1))
        );
        assert_eq!(VideoCap::DropTop.overload_cap(1), None);
        assert_eq!(
            VideoCap::LowestOnly.overload_cap(3),
            Some(OverloadCap::MaxLayer(0))
        );
        assert_eq!(
            VideoCap::AudioOnly.overload_cap(3),
            Some(OverloadCap::AudioOnly)
        );
        assert_eq!(
            VideoCap::DropTop.xdp_cap(3),
            Some(LayerCap {
                max_spatial: 1,
                max_temporal: None,
                video_off: false
            })
        );
        assert_eq!(
            VideoCap::AudioOnly.xdp_cap(3),
            Some(LayerCap {
                max_spatial: 0,
                max_temporal: None,
                video_off: true
            })
        );
    }
}
