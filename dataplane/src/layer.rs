//! Layer selection: which simulcast or SVC layer of one source one
//! subscriber should receive.
//!
//! A [`LayerSelector`] is sans-IO: it is told the layers' measured bitrates,
//! the subscriber's bandwidth estimate, the overload policy's cap and the
//! subscriber's preferred maximum, each with the current [`Instant`], and
//! answers with a [`Selection`]: the target layer (or `None`, video paused)
//! and the [`SelectionReason`] that bounds it, for metrics. Hold timers only
//! advance through [`LayerSelector::poll`]; [`LayerSelector::poll_timeout`]
//! says when to call it.
//!
//! # Hysteresis
//!
//! * **Up** to a higher layer only once the estimate has covered that
//!   layer's bitrate × [`SelectorConfig::up_margin_permille`] (default
//!   1.15) continuously for [`SelectorConfig::up_hold`] (default 3 s).
//!   Every upgrade starts with a key frame requested from the publisher,
//!   which all subscribers of that layer then receive. At 30 fps a key frame
//!   about five times a delta frame adds (5 − 1)/30 ≈ 13 % to the layer's
//!   rate over the first second, on top of the ±10 % a one-second bitrate
//!   measurement jitters; 15 % of headroom keeps the upgrade from causing
//!   the congestion that would undo it. Three seconds spans several REMB
//!   reports and many transport-cc feedback rounds, so a probe's transient
//!   overshoot does not count as bandwidth.
//! * **Down** at once when the estimate falls below the current layer's
//!   bitrate × [`SelectorConfig::down_margin_permille`] (default 0.95): the
//!   subscriber's link is full and audio shares it. The 5 % allowance keeps
//!   one noisy sample of the layer's own rate from costing a key frame; the
//!   band between 0.95 and 1.15 means an estimate must fall by more than
//!   17 % after an upgrade before a downgrade follows, so the two do not
//!   oscillate. The new layer is the highest lower one the estimate still
//!   covers; if none, video pauses and resumes like an upgrade.
//! * **Caps** (overload policy, subscriber preference) apply immediately
//!   downwards. Hold timers run only for layers the caps allow, so when a
//!   cap lifts the subscribers climb back after the hold instead of all
//!   requesting key frames at the same moment.
//! * **Inactive** layers (bitrate 0) are never chosen; when the current one
//!   stops, the selector moves to the nearest active layer the estimate
//!   covers, preferring lower ones.

use std::time::{Duration, Instant};

/// Most layers a source may have.
pub const MAX_LAYERS: usize = 16;

/// Misuse of the selector API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// A source with no layers or more than [`MAX_LAYERS`].
    #[error("layer count {0} is outside 1..={MAX_LAYERS}")]
    InvalidLayerCount(usize),
    /// A layer index the source does not have.
    #[error("layer {layer} does not exist (the source has {count})")]
    UnknownLayer {
        /// The index given.
        layer: u8,
        /// How many layers the source has.
        count: usize,
    },
    /// An up margin below 1000 ‰ would upgrade to layers the estimate does
    /// not cover.
    #[error("up margin {0}‰ is below 1000‰")]
    InvalidUpMargin(u32),
    /// A down margin of 0 ‰ or above 1000 ‰.
    #[error("down margin {0}‰ is outside 1..=1000‰")]
    InvalidDownMargin(u32),
}

/// Thresholds of the hysteresis; see the module documentation for the
/// reasoning behind the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// Estimate ≥ bitrate × this / 1000 makes a higher layer affordable.
    pub up_margin_permille: u32,
    /// Estimate < bitrate × this / 1000 forces the current layer down.
    pub down_margin_permille: u32,
    /// How long a higher layer must stay affordable before moving up.
    pub up_hold: Duration,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            up_margin_permille: 1150,
            down_margin_permille: 950,
            up_hold: Duration::from_secs(3),
        }
    }
}

/// A cap from the appliance's overload policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverloadCap {
    /// No layer above this index.
    MaxLayer(u8),
    /// No video at all; audio is never capped.
    AudioOnly,
}

/// What bounds the current selection, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectionReason {
    /// The highest active layer is selected; nothing holds it back.
    TopLayer,
    /// The bandwidth estimate does not cover a higher layer (or any layer,
    /// when video is paused).
    Bandwidth,
    /// A higher layer is affordable and waiting out the hold time.
    UpgradePending,
    /// No bandwidth estimate yet: started at the lowest layer.
    AwaitingEstimate,
    /// The overload policy caps the layer.
    OverloadCap,
    /// The overload policy allows audio only.
    AudioOnly,
    /// The subscriber asked for no higher layer (e.g. a small tile).
    SubscriberPreference,
    /// The publisher sends no active layer.
    NoActiveLayer,
}

impl SelectionReason {
    /// A stable snake_case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TopLayer => "top_layer",
            Self::Bandwidth => "bandwidth",
            Self::UpgradePending => "upgrade_pending",
            Self::AwaitingEstimate => "awaiting_estimate",
            Self::OverloadCap => "overload_cap",
            Self::AudioOnly => "audio_only",
            Self::SubscriberPreference => "subscriber_preference",
            Self::NoActiveLayer => "no_active_layer",
        }
    }
}

/// The selector's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Layer to forward; `None` pauses video.
    pub layer: Option<u8>,
    /// What bounds it.
    pub reason: SelectionReason,
}

/// Per-subscriber, per-source layer selection with hysteresis.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    config: SelectorConfig,
    count: usize,
    bitrates: [u64; MAX_LAYERS],
    estimate: Option<u64>,
    cap: Option<OverloadCap>,
    preferred_max: Option<u8>,
    current: Option<u8>,
    /// Video is paused because the estimate covers no layer; resuming then
    /// follows the upgrade rule.
    paused_for_bandwidth: bool,
    /// Since when each layer above the current one has been affordable.
    affordable_since: [Option<Instant>; MAX_LAYERS],
    selection: Selection,
}

impl LayerSelector {
    /// A selector for a source with `layer_count` layers, all inactive until
    /// their bitrates are reported.
    pub fn new(config: SelectorConfig, layer_count: usize) -> Result<Self, LayerError> {
        if !(1..=MAX_LAYERS).contains(&layer_count) {
            return Err(LayerError::InvalidLayerCount(layer_count));
        }
        if config.up_margin_permille < 1000 {
            return Err(LayerError::InvalidUpMargin(config.up_margin_permille));
        }
        if !(1..=1000).contains(&config.down_margin_permille) {
            return Err(LayerError::InvalidDownMargin(config.down_margin_permille));
        }
        Ok(Self {
            config,
            count: layer_count,
            bitrates: [0; MAX_LAYERS],
            estimate: None,
            cap: None,
            preferred_max: None,
            current: None,
            paused_for_bandwidth: false,
            affordable_since: [None; MAX_LAYERS],
            selection: Selection {
                layer: None,
                reason: SelectionReason::NoActiveLayer,
            },
        })
    }

    /// Number of layers of the source.
    pub fn layer_count(&self) -> usize {
        self.count
    }

    /// Reports the measured bitrate of `layer` in bit/s: what the subscriber
    /// receives while that layer is forwarded (for SVC, including the layers
    /// below it). 0 marks the layer inactive.
    pub fn set_layer_bitrate(
        &mut self,
        layer: u8,
        bps: u64,
        now: Instant,
    ) -> Result<Selection, LayerError> {
        let slot = self
            .bitrates
            .get_mut(usize::from(layer))
            .filter(|_| usize::from(layer) < self.count)
            .ok_or(LayerError::UnknownLayer {
                layer,
                count: self.count,
            })?;
        *slot = bps;
        Ok(self.evaluate(now))
    }

    /// Reports the bandwidth available to this source for this subscriber,
    /// in bit/s (from REMB or transport-cc).
    pub fn set_estimate(&mut self, bps: u64, now: Instant) -> Selection {
        self.estimate = Some(bps);
        self.evaluate(now)
    }

    /// Sets or lifts the overload policy's cap; a lower cap applies at once.
    pub fn set_cap(&mut self, cap: Option<OverloadCap>, now: Instant) -> Selection {
        self.cap = cap;
        self.evaluate(now)
    }

    /// Sets or clears the highest layer the subscriber wants; a lower
    /// preference applies at once.
    pub fn set_preferred_max(&mut self, layer: Option<u8>, now: Instant) -> Selection {
        self.preferred_max = layer;
        self.evaluate(now)
    }

    /// Re-evaluates at `now`, completing any upgrade whose hold has elapsed.
    pub fn poll(&mut self, now: Instant) -> Selection {
        self.evaluate(now)
    }

    /// When the next pending upgrade's hold elapses, if one is pending: the
    /// instant to call [`Self::poll`] at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.affordable_since
            .iter()
            .flatten()
            .filter_map(|since| since.checked_add(self.config.up_hold))
            .min()
    }

    /// The latest selection.
    pub fn selection(&self) -> Selection {
        self.selection
    }

    /// Highest layer the caps allow, or `None` for audio only.
    fn effective_max(&self) -> Option<usize> {
        let top = self.count - 1;
        let preferred = self.preferred_max.map_or(top, usize::from);
        match self.cap {
            Some(OverloadCap::AudioOnly) => None,
            Some(OverloadCap::MaxLayer(m)) => Some(top.min(preferred).min(usize::from(m))),
            None => Some(top.min(preferred)),
        }
    }

    fn active(&self, layer: usize) -> bool {
        self.bitrates[layer] > 0
    }

    fn allowed(&self, layer: usize, max: Option<usize>) -> bool {
        max.is_some_and(|max| layer <= max) && self.active(layer)
    }

    /// Estimate ≥ `layer`'s bitrate × `permille` / 1000.
    fn covers(&self, layer: usize, permille: u32) -> Option<bool> {
        let estimate = u128::from(self.estimate?);
        let need = u128::from(self.bitrates[layer]) * u128::from(permille);
        Some(estimate * 1000 >= need)
    }

    /// Not below the down threshold (an unknown estimate covers anything).
    fn fits(&self, layer: usize) -> bool {
        self.covers(layer, self.config.down_margin_permille)
            .unwrap_or(true)
    }

    fn affordable(&self, layer: usize) -> bool {
        self.covers(layer, self.config.up_margin_permille)
            .unwrap_or(false)
    }

    fn evaluate(&mut self, now: Instant) -> Selection {
        let max = self.effective_max();
        self.update_hold_timers(now, max);
        let next = self.choose(now, max);
        if next.is_some() {
            self.paused_for_bandwidth = false;
        }
        if next != self.current {
            self.current = next;
            // Timers are relative to the current layer.
            self.update_hold_timers(now, max);
        }
        self.selection = Selection {
            layer: next,
            reason: self.reason(max),
        };
        self.selection
    }

    /// Starts the hold timer of every allowed layer above the current one
    /// that the estimate now affords, and stops all others.
    fn update_hold_timers(&mut self, now: Instant, max: Option<usize>) {
        for layer in 0..self.count {
            let above_current = self.current.is_none_or(|c| layer > usize::from(c));
            if above_current && self.allowed(layer, max) && self.affordable(layer) {
                self.affordable_since[layer].get_or_insert(now);
            } else {
                self.affordable_since[layer] = None;
            }
        }
    }

    fn choose(&mut self, now: Instant, max: Option<usize>) -> Option<u8> {
        let lowest_allowed = (0..self.count).find(|&l| self.allowed(l, max))?;
        let next = match self.current.map(usize::from) {
            Some(c) if self.allowed(c, max) => {
                if self.fits(c) {
                    Some(self.sustained_upgrade(now).unwrap_or(c))
                } else {
                    self.highest_fitting_below(c, max)
                }
            }
            // Capped below the current layer, or the current layer stopped.
            Some(c) => self
                .highest_fitting_below(c, max)
                .or_else(|| (c + 1..self.count).find(|&l| self.allowed(l, max) && self.fits(l))),
            None if self.paused_for_bandwidth => self.sustained_upgrade(now),
            None => self.fits(lowest_allowed).then_some(lowest_allowed),
        };
        if next.is_none() {
            self.paused_for_bandwidth = true;
        }
        next.and_then(|l| u8::try_from(l).ok())
    }

    fn highest_fitting_below(&self, layer: usize, max: Option<usize>) -> Option<usize> {
        (0..layer)
            .rev()
            .find(|&l| self.allowed(l, max) && self.fits(l))
    }

    /// The highest layer whose hold has elapsed.
    fn sustained_upgrade(&self, now: Instant) -> Option<usize> {
        (0..self.count).rev().find(|&l| {
            self.affordable_since[l]
                .is_some_and(|since| now.saturating_duration_since(since) >= self.config.up_hold)
        })
    }

    fn reason(&self, max: Option<usize>) -> SelectionReason {
        let Some(max) = max else {
            return SelectionReason::AudioOnly;
        };
        let Some(top_active) = (0..self.count).rev().find(|&l| self.active(l)) else {
            return SelectionReason::NoActiveLayer;
        };
        let Some(top_allowed) = (0..=max).rev().find(|&l| self.active(l)) else {
            return self.binding_limit();
        };
        if self.current.map(usize::from) == Some(top_allowed) {
            return if top_active > top_allowed {
                self.binding_limit()
            } else {
                SelectionReason::TopLayer
            };
        }
        if self.estimate.is_none() {
            SelectionReason::AwaitingEstimate
        } else if self.affordable_since.iter().any(Option::is_some) {
            SelectionReason::UpgradePending
        } else {
            SelectionReason::Bandwidth
        }
    }

    /// Which cap is the lower one; the policy's when they are equal.
    fn binding_limit(&self) -> SelectionReason {
        match (self.cap, self.preferred_max) {
            (Some(OverloadCap::MaxLayer(cap)), Some(preferred)) if preferred < cap => {
                SelectionReason::SubscriberPreference
            }
            (Some(_), _) => SelectionReason::OverloadCap,
            (None, _) => SelectionReason::SubscriberPreference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KBPS: u64 = 1000;
    const RATES: [u64; 3] = [150 * KBPS, 500 * KBPS, 1500 * KBPS];

    struct Clock {
        t0: Instant,
    }

    impl Clock {
        fn new() -> Self {
            Self { t0: Instant::now() }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
    }

    /// A three-layer selector with all layers active.
    fn selector(clock: &Clock) -> LayerSelector {
        let mut s = LayerSelector::new(SelectorConfig::default(), 3).unwrap();
        for (layer, rate) in RATES.iter().enumerate() {
            s.set_layer_bitrate(layer as u8, *rate, clock.at(0))
                .unwrap();
        }
        s
    }

    /// Just enough for `layer` with the default up margin.
    fn up_estimate(layer: usize) -> u64 {
        RATES[layer] * 1150 / 1000
    }

    fn sel(layer: Option<u8>, reason: SelectionReason) -> Selection {
        Selection { layer, reason }
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let cfg = SelectorConfig::default();
        assert_eq!(
            LayerSelector::new(cfg, 0).unwrap_err(),
            LayerError::InvalidLayerCount(0)
        );
        assert_eq!(
            LayerSelector::new(cfg, MAX_LAYERS + 1).unwrap_err(),
            LayerError::InvalidLayerCount(MAX_LAYERS + 1)
        );
        let low_up = SelectorConfig {
            up_margin_permille: 999,
            ..cfg
        };
        assert_eq!(
            LayerSelector::new(low_up, 3).unwrap_err(),
            LayerError::InvalidUpMargin(999)
        );
        for down in [0, 1001] {
            let bad = SelectorConfig {
                down_margin_permille: down,
                ..cfg
            };
            assert_eq!(
                LayerSelector::new(bad, 3).unwrap_err(),
                LayerError::InvalidDownMargin(down)
            );
        }
    }

    #[test]
    fn unknown_layers_are_refused() {
        let clock = Clock::new();
        let mut s = LayerSelector::new(SelectorConfig::default(), 2).unwrap();
        assert_eq!(
            s.set_layer_bitrate(2, 1, clock.at(0)).unwrap_err(),
            LayerError::UnknownLayer { layer: 2, count: 2 }
        );
        assert_eq!(
            s.set_layer_bitrate(200, 1, clock.at(0)).unwrap_err(),
            LayerError::UnknownLayer {
                layer: 200,
                count: 2
            }
        );
    }

    #[test]
    fn nothing_is_selected_before_any_layer_is_active() {
        let clock = Clock::new();
        let mut s = LayerSelector::new(SelectorConfig::default(), 3).unwrap();
        assert_eq!(
            s.set_estimate(10_000 * KBPS, clock.at(0)),
            sel(None, SelectionReason::NoActiveLayer)
        );
    }

    #[test]
    fn starts_at_the_lowest_layer_before_an_estimate() {
        let clock = Clock::new();
        let s = selector(&clock);
        assert_eq!(
            s.selection(),
            sel(Some(0), SelectionReason::AwaitingEstimate)
        );
    }

    #[test]
    fn upgrade_waits_for_the_hold_time() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        let first = s.set_estimate(up_estimate(1), clock.at(1000));
        assert_eq!(first, sel(Some(0), SelectionReason::UpgradePending));
        assert_eq!(s.poll_timeout(), Some(clock.at(4000)));
        assert_eq!(s.poll(clock.at(3999)).layer, Some(0));
        assert_eq!(
            s.poll(clock.at(4000)),
            sel(Some(1), SelectionReason::Bandwidth)
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn upgrade_needs_the_margin_however_long_it_waits() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        // 10 % over layer 1's rate is not enough.
        s.set_estimate(RATES[1] * 110 / 100, clock.at(0));
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(
            s.poll(clock.at(60_000)),
            sel(Some(0), SelectionReason::Bandwidth)
        );
    }

    #[test]
    fn a_dip_during_the_hold_restarts_it() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(1), clock.at(0));
        s.set_estimate(up_estimate(1) - 1, clock.at(2000));
        s.set_estimate(up_estimate(1), clock.at(2500));
        assert_eq!(s.poll(clock.at(5000)).layer, Some(0));
        assert_eq!(s.poll(clock.at(5500)).layer, Some(1));
    }

    #[test]
    fn upgrade_goes_to_the_highest_layer_that_held() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(2), clock.at(0));
        assert_eq!(
            s.poll(clock.at(3000)),
            sel(Some(2), SelectionReason::TopLayer)
        );
    }

    #[test]
    fn upgrade_takes_only_layers_whose_own_hold_elapsed() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(1), clock.at(0));
        s.set_estimate(up_estimate(2), clock.at(2000));
        assert_eq!(s.poll(clock.at(3000)).layer, Some(1));
        assert_eq!(s.poll_timeout(), Some(clock.at(5000)));
        assert_eq!(s.poll(clock.at(5000)).layer, Some(2));
    }

    #[test]
    fn downgrade_is_immediate_below_the_down_margin() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(2), clock.at(0));
        s.poll(clock.at(3000));
        // 97 % of layer 2's rate is within the allowance.
        assert_eq!(
            s.set_estimate(RATES[2] * 97 / 100, clock.at(4000)).layer,
            Some(2)
        );
        // 90 % is not: straight to the highest layer the estimate covers.
        assert_eq!(
            s.set_estimate(RATES[2] * 90 / 100, clock.at(4001)),
            sel(Some(1), SelectionReason::Bandwidth)
        );
        assert_eq!(
            s.set_estimate(RATES[0], clock.at(4002)),
            sel(Some(0), SelectionReason::Bandwidth)
        );
    }

    #[test]
    fn video_pauses_when_no_layer_fits_and_resumes_after_the_hold() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(RATES[0], clock.at(0));
        assert_eq!(
            s.set_estimate(RATES[0] / 2, clock.at(100)),
            sel(None, SelectionReason::Bandwidth)
        );
        // Covering the layer again is not enough without the margin and hold.
        assert_eq!(s.set_estimate(RATES[0], clock.at(200)).layer, None);
        assert_eq!(
            s.set_estimate(up_estimate(0), clock.at(300)),
            sel(None, SelectionReason::UpgradePending)
        );
        assert_eq!(s.poll(clock.at(3299)).layer, None);
        assert_eq!(s.poll(clock.at(3300)).layer, Some(0));
    }

    #[test]
    fn a_start_with_too_little_bandwidth_pauses() {
        let clock = Clock::new();
        let mut s = LayerSelector::new(SelectorConfig::default(), 3).unwrap();
        s.set_estimate(RATES[0] / 10, clock.at(0));
        assert_eq!(
            s.set_layer_bitrate(0, RATES[0], clock.at(0)).unwrap(),
            sel(None, SelectionReason::Bandwidth)
        );
    }

    #[test]
    fn the_overload_cap_applies_at_once_and_its_lift_waits_for_the_hold() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(2), clock.at(0));
        s.poll(clock.at(3000));
        assert_eq!(
            s.set_cap(Some(OverloadCap::MaxLayer(0)), clock.at(4000)),
            sel(Some(0), SelectionReason::OverloadCap)
        );
        // While capped, higher layers do not accumulate hold time.
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll(clock.at(10_000)).layer, Some(0));
        assert_eq!(
            s.set_cap(None, clock.at(10_000)),
            sel(Some(0), SelectionReason::UpgradePending)
        );
        assert_eq!(s.poll(clock.at(12_999)).layer, Some(0));
        assert_eq!(s.poll(clock.at(13_000)).layer, Some(2));
    }

    #[test]
    fn audio_only_pauses_video_at_once() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(1), clock.at(0));
        assert_eq!(
            s.set_cap(Some(OverloadCap::AudioOnly), clock.at(1)),
            sel(None, SelectionReason::AudioOnly)
        );
        assert_eq!(s.poll(clock.at(10_000)).layer, None);
        // Lifted: video returns at the lowest layer, then climbs after the hold.
        assert_eq!(
            s.set_cap(None, clock.at(10_000)),
            sel(Some(0), SelectionReason::UpgradePending)
        );
        assert_eq!(s.poll(clock.at(13_000)).layer, Some(1));
    }

    #[test]
    fn the_preferred_maximum_is_respected_and_reported() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(2) * 10, clock.at(0));
        s.poll(clock.at(3000));
        assert_eq!(
            s.set_preferred_max(Some(1), clock.at(3001)),
            sel(Some(1), SelectionReason::SubscriberPreference)
        );
        // With both caps, the lower one is the reason.
        assert_eq!(
            s.set_cap(Some(OverloadCap::MaxLayer(0)), clock.at(3002)),
            sel(Some(0), SelectionReason::OverloadCap)
        );
        assert_eq!(
            s.set_cap(Some(OverloadCap::MaxLayer(1)), clock.at(3003)),
            sel(Some(0), SelectionReason::UpgradePending)
        );
        assert_eq!(
            s.poll(clock.at(6003)),
            sel(Some(1), SelectionReason::OverloadCap)
        );
        s.set_cap(Some(OverloadCap::MaxLayer(2)), clock.at(6004));
        assert_eq!(
            s.selection(),
            sel(Some(1), SelectionReason::SubscriberPreference)
        );
    }

    #[test]
    fn inactive_layers_are_skipped_going_up() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_layer_bitrate(1, 0, clock.at(0)).unwrap();
        s.set_estimate(up_estimate(2), clock.at(0));
        assert_eq!(s.poll(clock.at(3000)).layer, Some(2));
    }

    #[test]
    fn when_the_current_layer_stops_the_selector_moves_to_an_active_one() {
        let clock = Clock::new();
        let mut s = selector(&clock);
        s.set_estimate(up_estimate(1), clock.at(0));
        s.poll(clock.at(3000));
        assert_eq!(
            s.set_layer_bitrate(1, 0, clock.at(4000)).unwrap(),
            sel(Some(0), SelectionReason::Bandwidth)
        );
        // Only a higher layer left: taken at once if the estimate covers it.
        let mut s = selector(&clock);
        s.set_estimate(RATES[1], clock.at(0));
        s.set_layer_bitrate(0, 0, clock.at(1)).unwrap();
        assert_eq!(s.selection().layer, Some(1));
        s.set_layer_bitrate(1, 0, clock.at(2)).unwrap();
        assert_eq!(s.selection(), sel(None, SelectionReason::Bandwidth));
        s.set_layer_bitrate(2, 0, clock.at(3)).unwrap();
        assert_eq!(s.selection(), sel(None, SelectionReason::NoActiveLayer));
    }

    #[test]
    fn the_top_layer_with_nothing_above_reports_top_layer() {
        let clock = Clock::new();
        let mut s = LayerSelector::new(SelectorConfig::default(), 1).unwrap();
        s.set_layer_bitrate(0, RATES[0], clock.at(0)).unwrap();
        assert_eq!(s.selection(), sel(Some(0), SelectionReason::TopLayer));
        assert_eq!(SelectionReason::TopLayer.as_str(), "top_layer");
    }

    #[test]
    fn huge_rates_do_not_overflow() {
        let clock = Clock::new();
        let mut s = LayerSelector::new(SelectorConfig::default(), 2).unwrap();
        s.set_layer_bitrate(0, u64::MAX, clock.at(0)).unwrap();
        s.set_layer_bitrate(1, u64::MAX, clock.at(0)).unwrap();
        assert_eq!(s.set_estimate(u64::MAX, clock.at(0)).layer, Some(0));
        assert_eq!(s.poll(clock.at(10_000)).layer, Some(0));
    }

    /// One input to the selector in a generated history.
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Estimate(u64),
        Bitrate(u8, u64),
        Cap(Option<OverloadCap>),
        Preferred(Option<u8>),
        Poll,
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        let rate = prop_oneof![1 => Just(0u64), 4 => 100_000u64..2_000_000];
        let cap = prop_oneof![
            Just(None),
            Just(Some(OverloadCap::AudioOnly)),
            (0u8..4).prop_map(|l| Some(OverloadCap::MaxLayer(l))),
        ];
        prop_oneof![
            4 => (0u64..3_000_000).prop_map(Event::Estimate),
            2 => (0u8..3, rate).prop_map(|(l, r)| Event::Bitrate(l, r)),
            1 => cap.prop_map(Event::Cap),
            1 => proptest::option::of(0u8..4).prop_map(Event::Preferred),
            3 => Just(Event::Poll),
        ]
    }

    /// The inputs in force after an event, as the specification sees them.
    #[derive(Debug, Clone, Copy)]
    struct Inputs {
        at: Instant,
        rates: [u64; 3],
        estimate: Option<u64>,
        cap: Option<OverloadCap>,
        preferred: Option<u8>,
    }

    impl Inputs {
        fn allowed(&self, layer: u8) -> bool {
            let capped = match self.cap {
                Some(OverloadCap::AudioOnly) => true,
                Some(OverloadCap::MaxLayer(m)) => layer > m,
                None => false,
            };
            !capped
                && self.preferred.is_none_or(|p| layer <= p)
                && self.rates[usize::from(layer)] > 0
        }

        fn estimate_covers(&self, layer: u8, permille: u128) -> Option<bool> {
            let need = u128::from(self.rates[usize::from(layer)]) * permille;
            self.estimate.map(|e| u128::from(e) * 1000 >= need)
        }
    }

    proptest::proptest! {
        /// Whatever the history of inputs: the selection is an active layer
        /// within both caps; the current layer is left at once when the
        /// estimate falls below its down threshold and only then (unless it
        /// stopped or was capped); an upgrade from a layer still allowed
        /// happens only after the new layer was allowed and affordable with
        /// the up margin for the whole hold time; and the same history
        /// always gives the same selections.
        #[test]
        fn selections_respect_caps_and_hysteresis(
            events in proptest::collection::vec((0u64..1500, event()), 1..120)
        ) {
            let clock = Clock::new();
            let config = SelectorConfig::default();
            let replay = || {
                let mut s = LayerSelector::new(config, 3).unwrap();
                let mut inputs = Inputs {
                    at: clock.at(0),
                    rates: [0; 3],
                    estimate: None,
                    cap: None,
                    preferred: None,
                };
                let mut history = vec![(inputs, s.selection())];
                for &(step_ms, event) in &events {
                    inputs.at += Duration::from_millis(step_ms);
                    let now = inputs.at;
                    let selection = match event {
                        Event::Estimate(bps) => {
                            inputs.estimate = Some(bps);
                            s.set_estimate(bps, now)
                        }
                        Event::Bitrate(layer, bps) => {
                            inputs.rates[usize::from(layer)] = bps;
                            s.set_layer_bitrate(layer, bps, now).unwrap()
                        }
                        Event::Cap(cap) => {
                            inputs.cap = cap;
                            s.set_cap(cap, now)
                        }
                        Event::Preferred(layer) => {
                            inputs.preferred = layer;
                            s.set_preferred_max(layer, now)
                        }
                        Event::Poll => s.poll(now),
                    };
                    history.push((inputs, selection));
                }
                history
            };
            let history = replay();
            for (i, &(inputs, selection)) in history.iter().enumerate().skip(1) {
                let before = history[i - 1].1.layer;
                if let Some(layer) = selection.layer {
                    proptest::prop_assert!(inputs.allowed(layer), "{selection:?} under {inputs:?}");
                }
                if inputs.cap == Some(OverloadCap::AudioOnly) {
                    proptest::prop_assert_eq!(selection.reason, SelectionReason::AudioOnly);
                }
                let Some(old) = before.filter(|&l| inputs.allowed(l)) else {
                    continue;
                };
                let below_down = inputs.estimate_covers(old, 950) == Some(false);
                let went_down = selection.layer.is_none_or(|l| l < old);
                proptest::prop_assert_eq!(went_down, below_down, "from {} at {}", old, i);
                if let Some(new) = selection.layer.filter(|&l| l > old) {
                    // The inputs in force since `now − hold` all afforded it.
                    let since = inputs.at.checked_sub(config.up_hold);
                    let first = since.and_then(|since| {
                        history[..=i].iter().rposition(|(inp, _)| inp.at <= since)
                    });
                    proptest::prop_assert!(first.is_some(), "upgrade before any hold elapsed");
                    for (inp, _) in &history[first.unwrap_or(0)..=i] {
                        proptest::prop_assert!(
                            inp.allowed(new) && inp.estimate_covers(new, 1150) == Some(true),
                            "upgrade to {} at {} without a sustained margin: {:?}",
                            new, i, inp
                        );
                    }
                }
            }
            let again: Vec<Selection> = replay().iter().map(|&(_, s)| s).collect();
            let first: Vec<Selection> = history.iter().map(|&(_, s)| s).collect();
            proptest::prop_assert_eq!(first, again);
        }
    }

    #[test]
    fn identical_inputs_give_identical_selections() {
        let clock = Clock::new();
        let run = || {
            let mut s = selector(&clock);
            let mut out = Vec::new();
            for (i, estimate) in [200, 700, 2000, 1600, 400, 2500].iter().enumerate() {
                let at = clock.at(i as u64 * 1700);
                out.push(s.set_estimate(estimate * KBPS, at));
                out.push(s.poll(at + Duration::from_millis(900)));
            }
            out
        };
        assert_eq!(run(), run());
    }
}
