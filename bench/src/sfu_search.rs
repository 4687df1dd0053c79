//! The saturation search of the SFU benchmark: which load (consults or
//! rooms) to try next, given the verdicts of the steps so far, and what the
//! search found.
//!
//! The load doubles from a start value while steps stay clean; after the
//! first failing step it bisects between the largest clean load and the
//! smallest failing one until the gap is within the resolution. A step the
//! generator could not offer (or sink) is a ceiling of what can be measured,
//! not a failure of the forwarder: the search bisects below it like below a
//! failure, but a figure bounded only by such ceilings (or by the top of the
//! range, or by the step budget) is a lower bound, never a limit.
//!
//! The search is pure, so a recorded trace can be replayed and checked.

use serde::Serialize;

/// What one step showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Loss and latency within their bounds, the generator kept up.
    Clean,
    /// The forwarder lost too much or was too slow.
    Overloaded,
    /// The generator could not send or sink the requested load.
    GeneratorLimited,
}

/// How a search is run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SearchConfig {
    /// First load tried.
    pub start: usize,
    /// Highest load ever tried.
    pub max: usize,
    /// Most steps run.
    pub max_steps: usize,
    /// Bisection ends once the gap between the clean and the failing load
    /// is at most this fraction of the clean load (or one unit).
    pub resolution: f64,
}

/// Why a search ended and how its figure is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// A forwarder failure lies within the resolution above the clean load:
    /// the clean load is the limit.
    Limit,
    /// The generator could not offer more: the forwarder handles at least
    /// the clean load.
    AtLeastGeneratorLimited,
    /// The highest load of the range was clean.
    AtLeastTopOfRange,
    /// The step budget ran out before a failure was bracketed closely.
    AtLeastStepBudget,
    /// Not even the smallest load was clean.
    NoneClean,
}

impl Bound {
    /// Whether the clean load is only a lower bound of the limit.
    pub fn is_lower_bound(self) -> bool {
        matches!(
            self,
            Self::AtLeastGeneratorLimited | Self::AtLeastTopOfRange | Self::AtLeastStepBudget
        )
    }
}

/// What a search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Largest clean load.
    pub clean: Option<usize>,
    /// Smallest load the forwarder failed.
    pub failed: Option<usize>,
    /// Smallest load the generator could not offer.
    pub generator_limited: Option<usize>,
    /// How to read `clean`.
    pub bound: Bound,
    /// Steps run.
    pub steps: usize,
}

/// The state of one search.
#[derive(Debug, Clone)]
pub struct Search {
    config: SearchConfig,
    clean: Option<usize>,
    failed: Option<usize>,
    generator_limited: Option<usize>,
    steps: usize,
}

impl Search {
    /// A search with `config` (start and max at least 1, start ≤ max).
    pub fn new(config: SearchConfig) -> Self {
        let max = config.max.max(1);
        let config = SearchConfig {
            start: config.start.clamp(1, max),
            max,
            ..config
        };
        Self {
            config,
            clean: None,
            failed: None,
            generator_limited: None,
            steps: 0,
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> SearchConfig {
        self.config
    }

    /// The smallest load known not to be measurable as clean: a forwarder
    /// failure or a generator ceiling.
    fn ceiling(&self) -> Option<usize> {
        match (self.failed, self.generator_limited) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next load to try; `None` once the search is over.
    pub fn next(&self) -> Option<usize> {
        if self.steps >= self.config.max_steps {
            return None;
        }
        let Some(hi) = self.ceiling() else {
            return match self.clean {
                None => Some(self.config.start),
                Some(c) if c >= self.config.max => None,
                Some(c) => Some((c * 2).min(self.config.max)),
            };
        };
        let lo = self.clean.unwrap_or(0);
        if hi <= lo + 1 {
            return None;
        }
        if lo > 0 && (hi - lo) as f64 <= lo as f64 * self.config.resolution {
            return None;
        }
        // Below the first load, halve rather than bisect towards zero.
        let mid = if lo == 0 { hi / 2 } else { lo + (hi - lo) / 2 };
        (mid > lo && mid < hi).then_some(mid)
    }

    /// Records the verdict of a step at `load`.
    pub fn record(&mut self, load: usize, verdict: Verdict) {
        self.steps += 1;
        match verdict {
            Verdict::Clean => self.clean = Some(self.clean.map_or(load, |c| c.max(load))),
            Verdict::Overloaded => self.failed = Some(self.failed.map_or(load, |f| f.min(load))),
            Verdict::GeneratorLimited => {
                self.generator_limited = Some(self.generator_limited.map_or(load, |g| g.min(load)));
            }
        }
    }

    /// What the search found so far.
    pub fn outcome(&self) -> Outcome {
        let bound = match (self.clean, self.failed, self.ceiling()) {
            (None, _, _) => Bound::NoneClean,
            (Some(c), _, None) if c >= self.config.max => Bound::AtLeastTopOfRange,
            (Some(_), _, None) => Bound::AtLeastStepBudget,
            // A failure is the nearest ceiling and the bisection finished
            // (or the budget ended it, still bracketing a failure).
            (Some(_), Some(f), Some(h)) if f == h && self.next().is_none() => {
                if self.steps >= self.config.max_steps && !self.bracket_closed() {
                    Bound::AtLeastStepBudget
                } else {
                    Bound::Limit
                }
            }
            (Some(_), _, Some(_)) if self.generator_limited == self.ceiling() => {
                Bound::AtLeastGeneratorLimited
            }
            (Some(_), _, Some(_)) => Bound::AtLeastStepBudget,
        };
        Outcome {
            clean: self.clean,
            failed: self.failed,
            generator_limited: self.generator_limited,
            bound,
            steps: self.steps,
        }
    }

    /// Whether the gap between the clean load and the ceiling is within the
    /// resolution.
    fn bracket_closed(&self) -> bool {
        match (self.clean, self.ceiling()) {
            (Some(lo), Some(hi)) => {
                hi <= lo + 1 || (hi - lo) as f64 <= lo as f64 * self.config.resolution
            }
            _ => false,
        }
    }
}

/// Replays a recorded trace of (load, verdict) through a fresh search and
/// checks that every load is the one the search asks for and that the
/// search ends with the trace; returns the outcome, or what went wrong.
pub fn replay(config: SearchConfig, trace: &[(usize, Verdict)]) -> Result<Outcome, String> {
    let mut search = Search::new(config);
    for (i, &(load, verdict)) in trace.iter().enumerate() {
        match search.next() {
            Some(want) if want == load => search.record(load, verdict),
            Some(want) => return Err(format!("step {i}: ran {load}, the search asks for {want}")),
            None => return Err(format!("step {i}: ran {load} after the search ended")),
        }
    }
    if let Some(want) = search.next() {
        return Err(format!("the trace ends while the search asks for {want}"));
    }
    Ok(search.outcome())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(start: usize, max: usize, max_steps: usize) -> SearchConfig {
        SearchConfig {
            start,
            max,
            max_steps,
            resolution: 0.05,
        }
    }

    /// Runs a search against a forwarder that is clean up to `limit` and a
    /// generator that offers up to `generator`.
    fn run(config: SearchConfig, limit: usize, generator: usize) -> (Outcome, Vec<usize>) {
        let mut search = Search::new(config);
        let mut loads = Vec::new();
        while let Some(load) = search.next() {
            assert!(!loads.contains(&load), "load {load} tried twice: {loads:?}");
            loads.push(load);
            let verdict = if load > generator {
                Verdict::GeneratorLimited
            } else if load > limit {
                Verdict::Overloaded
            } else {
                Verdict::Clean
            };
            search.record(load, verdict);
            assert!(loads.len() <= config.max_steps);
        }
        (search.outcome(), loads)
    }

    #[test]
    fn doubles_then_bisects_to_the_resolution() {
        let (out, loads) = run(config(16, 4096, 30), 700, usize::MAX);
        assert_eq!(&loads[..7], &[16, 32, 64, 128, 256, 512, 1024]);
        assert_eq!(out.bound, Bound::Limit);
        let clean = out.clean.unwrap();
        assert!(clean <= 700 && 700 - clean <= 35, "{out:?} {loads:?}");
        assert!(out.failed.unwrap() > 700);
    }

    #[test]
    fn exact_limit_at_unit_resolution() {
        let c = SearchConfig {
            resolution: 0.0,
            ..config(1, 64, 30)
        };
        for limit in 1..64 {
            let (out, _) = run(c, limit, usize::MAX);
            assert_eq!(out.clean, Some(limit));
            assert_eq!(out.failed, Some(limit + 1));
            assert_eq!(out.bound, Bound::Limit);
        }
    }

    #[test]
    fn a_failing_start_halves() {
        let (out, loads) = run(config(64, 4096, 30), 5, usize::MAX);
        assert_eq!(&loads[..5], &[64, 32, 16, 8, 4]);
        assert_eq!(out.clean, Some(5));
        assert_eq!(out.bound, Bound::Limit);
        let (out, loads) = run(config(4, 4096, 30), 0, usize::MAX);
        assert_eq!(loads, [4, 2, 1]);
        assert_eq!(out.bound, Bound::NoneClean);
        assert_eq!(out.clean, None);
    }

    #[test]
    fn a_generator_ceiling_gives_a_lower_bound() {
        let (out, _) = run(config(16, 4096, 30), 700, 300);
        assert_eq!(out.bound, Bound::AtLeastGeneratorLimited);
        let clean = out.clean.unwrap();
        assert!(clean <= 300 && 300 - clean <= 15, "{out:?}");
        assert!(out.bound.is_lower_bound());
        assert_eq!(out.failed, None);
    }

    #[test]
    fn a_failure_below_the_generator_ceiling_is_a_limit() {
        let (out, _) = run(config(16, 4096, 30), 200, 300);
        assert_eq!(out.bound, Bound::Limit);
        assert!(out.clean.unwrap() <= 200);
        assert!(out.failed.unwrap() <= 300);
    }

    #[test]
    fn top_of_range_and_step_budget_are_lower_bounds() {
        let (out, loads) = run(config(16, 100, 30), 1000, usize::MAX);
        assert_eq!(loads, [16, 32, 64, 100]);
        assert_eq!(out.bound, Bound::AtLeastTopOfRange);
        let (out, loads) = run(config(16, 4096, 3), 1000, usize::MAX);
        assert_eq!(loads, [16, 32, 64]);
        assert_eq!(out.bound, Bound::AtLeastStepBudget);
        assert_eq!(out.clean, Some(64));
        // A failure bracketed only coarsely when the budget ends.
        let (out, loads) = run(config(16, 4096, 4), 40, usize::MAX);
        assert_eq!(loads, [16, 32, 64, 48]);
        assert_eq!(out.bound, Bound::AtLeastStepBudget);
        assert_eq!((out.clean, out.failed), (Some(32), Some(48)));
    }

    #[test]
    fn replay_accepts_the_search_and_rejects_anything_else() {
        let c = config(16, 4096, 30);
        let mut search = Search::new(c);
        let mut trace = Vec::new();
        while let Some(load) = search.next() {
            let v = if load > 300 {
                Verdict::Overloaded
            } else {
                Verdict::Clean
            };
            search.record(load, v);
            trace.push((load, v));
        }
        assert_eq!(replay(c, &trace), Ok(search.outcome()));
        let mut wrong = trace.clone();
        wrong[3].0 += 1;
        assert!(replay(c, &wrong).is_err());
        assert!(replay(c, &trace[..trace.len() - 1]).is_err());
        let mut longer = trace.clone();
        longer.push((5, Verdict::Clean));
        assert!(replay(c, &longer).is_err());
    }
}
