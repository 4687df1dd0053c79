//! The session router's placement, sans-IO: from the region map, the
//! appliances' measured loads and overload levels, a consult's residency
//! tag and its parties' locations to the appliance that carries it, or a
//! typed refusal with the reason.
//!
//! Rules, in order:
//!
//! 1. **Residency** is absolute: the tag resolves to the jurisdictions the
//!    consult's media may pass through (see [`RegionMap::allowed`]); only
//!    regions sitting in one of them are candidates, whatever the load
//!    elsewhere. An unknown tag is refused, never guessed.
//! 2. **Latency**: candidates are ranked by the estimated one-way path
//!    between the parties through the region (party A → region → party B:
//!    the two largest legs added), those within the budget (150 ms, ITU-T
//!    G.114) first, then those whose estimate is unknown, then those over
//!    it; ties go to this appliance's own region, then by name.
//! 3. **Load**: in the first candidate region with an appliance admitting
//!    new consults (overload level below 4) and able to hold it (its load
//!    after adding the consult at most [`THEORETICAL_LIMIT_PERCENT`] of its
//!    practical ceiling: past the practical ceiling the overload ladder
//!    sheds video, past the theoretical one nothing more fits), the consult
//!    goes to the box with the lowest level, then the lowest load after
//!    adding the consult (percent of its practical ceiling). A region whose
//!    boxes are all at level 4 or full, or that has none reporting, is
//!    skipped: the consult spills to the next allowed region, and the
//!    placement says why.
//!
//! [`warm_headroom`] reports the boxes each region needs for the current
//! and the forecast peak, so operators scale ahead of the rush.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{ConfigError, Prefix, RegionsConfig};
use crate::overload::admits_new_consults;

/// The load, in percent of a box's practical ceiling, no placement may
/// take it past: its theoretical ceiling, the practical one being half of
/// it.
pub const THEORETICAL_LIMIT_PERCENT: f64 = 200.0;

/// One region of the map.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Name.
    pub name: String,
    /// Jurisdictions its appliances sit in.
    pub jurisdictions: BTreeSet<String>,
    /// Appliances serving it.
    pub appliances: Vec<String>,
}

/// A client location.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Name.
    pub name: String,
    /// Prefixes of its client addresses.
    pub prefixes: Vec<Prefix>,
    /// One-way latency to each region, ms.
    pub latency_ms: BTreeMap<String, u32>,
}

/// The validated region map.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionMap {
    home: String,
    budget_ms: u32,
    jurisdictions: BTreeMap<String, BTreeSet<String>>,
    residency: BTreeMap<String, BTreeSet<String>>,
    regions: Vec<Region>,
    locations: Vec<Location>,
    inter_region: BTreeMap<String, BTreeMap<String, u32>>,
}

/// Where a party of the consult is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    /// A named location of the map.
    Location(String),
    /// A client address, matched against the locations' prefixes.
    Address(IpAddr),
    /// Not known: the latency estimate is unknown.
    Unknown,
}

/// One appliance's state as the router sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplianceLoad {
    /// Appliance name.
    pub name: String,
    /// Measured egress, bit/s.
    pub egress_bps: u64,
    /// Practical egress ceiling (about half the theoretical), bit/s.
    pub egress_ceiling_bps: u64,
    /// Measured CPU, percent of all cores.
    pub cpu_percent: f64,
    /// Practical CPU ceiling, percent.
    pub cpu_ceiling_percent: f64,
    /// Its overload level, 0..=4.
    pub level: u8,
}

impl ApplianceLoad {
    /// Load in percent of the practical ceiling after adding
    /// `extra_egress_bps`: the larger of egress and CPU, as the overload
    /// ladder measures it. A zero ceiling counts as full.
    pub fn load_percent_with(&self, extra_egress_bps: u64) -> f64 {
        let ratio = |used: f64, ceiling: f64| {
            if ceiling > 0.0 {
                used / ceiling * 100.0
            } else {
                f64::INFINITY
            }
        };
        let egress = ratio(
            self.egress_bps.saturating_add(extra_egress_bps) as f64,
            self.egress_ceiling_bps as f64,
        );
        let cpu = ratio(self.cpu_percent.max(0.0), self.cpu_ceiling_percent);
        egress.max(cpu)
    }
}

/// The consult to place.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsultRequest {
    /// Its residency tag.
    pub residency: String,
    /// Where its parties are (usually patient and clinician).
    pub parties: Vec<Party>,
    /// The egress it adds to a box, bit/s (streams sent × bitrate).
    pub egress_bps: u64,
}

/// The latency estimate of a placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyEstimate {
    /// One-way latency of each party to the region, ms (`None`: unknown).
    pub legs_ms: Vec<Option<u32>>,
    /// One-way path between the two farthest parties through the region,
    /// ms; `None` if any leg is unknown.
    pub path_ms: Option<u32>,
    /// The budget it is held against, ms.
    pub budget_ms: u32,
    /// Whether the path fits the budget (`None`: unknown).
    pub within_budget: Option<bool>,
}

/// Why a region was passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRegion {
    /// The region.
    pub region: String,
    /// Why.
    pub why: String,
}

/// A placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// The appliance.
    pub appliance: String,
    /// Its region.
    pub region: String,
    /// The jurisdictions the tag allows.
    pub allowed_jurisdictions: Vec<String>,
    /// The latency estimate.
    pub latency: LatencyEstimate,
    /// The chosen box's load after the consult, percent of its practical
    /// ceiling.
    pub load_percent: f64,
    /// The chosen box's overload level.
    pub level: u8,
    /// Better-ranked allowed regions that could not take it.
    pub spilled_from: Vec<SkippedRegion>,
    /// Why this placement, for people.
    pub reason: String,
}

/// Why a consult could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// The tag is no jurisdiction, residency tag or country of the map.
    #[error("residency tag `{tag}` is not a known jurisdiction, residency tag or country")]
    UnknownResidency {
        /// The tag.
        tag: String,
    },
    /// A party names a location the map does not have.
    #[error("location `{location}` is not in the region map")]
    UnknownLocation {
        /// The location.
        location: String,
    },
    /// No region of the map sits in an allowed jurisdiction.
    #[error(
        "no region may carry residency `{tag}`: it allows {}, and no region is in {}",
        jurisdictions.join(", "),
        if jurisdictions.len() == 1 { "it" } else { "any of them" }
    )]
    NoAllowedRegion {
        /// The tag.
        tag: String,
        /// The jurisdictions it allows.
        jurisdictions: Vec<String>,
    },
    /// This appliance's region is not in a jurisdiction the tag allows.
    #[error(
        "residency `{tag}` allows {}; this appliance's region `{region}` is in {}",
        allowed.join(", "),
        region_jurisdictions.join(", ")
    )]
    NotInThisRegion {
        /// The tag.
        tag: String,
        /// The jurisdictions it allows.
        allowed: Vec<String>,
        /// This appliance's region.
        region: String,
        /// The jurisdictions that region is in.
        region_jurisdictions: Vec<String>,
    },
    /// Every allowed region is full or has no appliance admitting consults.
    #[error(
        "no allowed region has room for residency `{tag}`: {}",
        regions.iter().map(|s| format!("{} ({})", s.region, s.why)).collect::<Vec<_>>().join("; ")
    )]
    NoRoom {
        /// The tag.
        tag: String,
        /// Each allowed region and why it could not take the consult.
        regions: Vec<SkippedRegion>,
    },
}

/// Lower-cases a tag as the map stores them.
fn norm(tag: &str) -> String {
    tag.trim().to_ascii_lowercase()
}

impl RegionMap {
    /// Builds the map from a configuration, validating it first.
    pub fn from_config(c: &RegionsConfig) -> Result<Self, ConfigError> {
        c.validate()?;
        let mut locations = Vec::with_capacity(c.location.len());
        for l in &c.location {
            locations.push(Location {
                name: l.name.clone(),
                prefixes: l
                    .prefixes
                    .iter()
                    .map(|p| Prefix::parse(p).expect("validated"))
                    .collect(),
                latency_ms: l.latency_ms.clone(),
            });
        }
        Ok(Self {
            home: c.name.clone(),
            budget_ms: c.latency_budget_ms,
            jurisdictions: c
                .jurisdictions
                .iter()
                .map(|(j, cs)| (j.clone(), cs.iter().cloned().collect()))
                .collect(),
            residency: c
                .residency
                .iter()
                .map(|(t, js)| (t.clone(), js.iter().cloned().collect()))
                .collect(),
            regions: c
                .region
                .iter()
                .map(|r| Region {
                    name: r.name.clone(),
                    jurisdictions: r.jurisdictions.iter().cloned().collect(),
                    appliances: r.appliances.clone(),
                })
                .collect(),
            locations,
            inter_region: c.latency_ms.clone(),
        })
    }

    /// The regions.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The same map seen from `region` (ties and spills rank regions by
    /// their latency from it), e.g. to re-place the consults of a region
    /// that went dark with its neighbours first. `None` if the map has no
    /// such region.
    pub fn seen_from(&self, region: &str) -> Option<Self> {
        self.regions.iter().any(|r| r.name == region).then(|| Self {
            home: region.to_owned(),
            ..self.clone()
        })
    }

    /// Whether a region map is configured at all.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// This appliance's region.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// The region an appliance serves.
    pub fn region_of(&self, appliance: &str) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.appliances.iter().any(|a| a == appliance))
    }

    /// The jurisdictions a residency tag allows.
    pub fn allowed(&self, tag: &str) -> Result<BTreeSet<String>, Refusal> {
        let t = norm(tag);
        if self.jurisdictions.contains_key(&t) {
            return Ok(BTreeSet::from([t]));
        }
        if let Some(js) = self.residency.get(&t) {
            return Ok(js.clone());
        }
        let of_country: BTreeSet<String> = self
            .jurisdictions
            .iter()
            .filter(|(_, cs)| cs.contains(&t))
            .map(|(j, _)| j.clone())
            .collect();
        // Validation leaves at most one jurisdiction per country tag.
        if of_country.len() == 1 {
            return Ok(of_country);
        }
        Err(Refusal::UnknownResidency {
            tag: tag.to_owned(),
        })
    }

    /// Whether a consult with `tag` may be carried in `region`.
    pub fn region_allows(&self, region: &str, tag: &str) -> Result<bool, Refusal> {
        let allowed = self.allowed(tag)?;
        Ok(self
            .regions
            .iter()
            .find(|r| r.name == region)
            .is_some_and(|r| !r.jurisdictions.is_disjoint(&allowed)))
    }

    fn location(&self, party: &Party) -> Result<Option<&Location>, Refusal> {
        match party {
            Party::Unknown => Ok(None),
            Party::Location(name) => self
                .locations
                .iter()
                .find(|l| &l.name == name)
                .map(Some)
                .ok_or_else(|| Refusal::UnknownLocation {
                    location: name.clone(),
                }),
            Party::Address(a) => Ok(self
                .locations
                .iter()
                .filter_map(|l| {
                    l.prefixes
                        .iter()
                        .filter(|p| p.contains(*a))
                        .map(|p| p.len)
                        .max()
                        .map(|len| (len, l))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, l)| l)),
        }
    }

    /// The latency estimate of carrying a consult of these parties in
    /// `region`.
    pub fn estimate(&self, region: &str, parties: &[Party]) -> Result<LatencyEstimate, Refusal> {
        let mut legs = Vec::with_capacity(parties.len());
        for p in parties {
            legs.push(
                self.location(p)?
                    .and_then(|l| l.latency_ms.get(region).copied()),
            );
        }
        let path_ms = if legs.is_empty() || legs.iter().any(Option::is_none) {
            None
        } else {
            let mut known: Vec<u32> = legs.iter().flatten().copied().collect();
            known.sort_unstable_by(|a, b| b.cmp(a));
            // Media between the two farthest parties crosses the box: in on
            // one leg, out on the other. A lone party only has its leg.
            Some(known[0].saturating_add(known.get(1).copied().unwrap_or(0)))
        };
        Ok(LatencyEstimate {
            legs_ms: legs,
            path_ms,
            budget_ms: self.budget_ms,
            within_budget: path_ms.map(|p| p <= self.budget_ms),
        })
    }

    /// One-way latency between two regions (0 within one region).
    pub fn latency_between(&self, a: &str, b: &str) -> Option<u32> {
        if a == b {
            return Some(0);
        }
        let get = |x: &str, y: &str| self.inter_region.get(x).and_then(|r| r.get(y)).copied();
        get(a, b).or_else(|| get(b, a))
    }
}

/// Whether this appliance (the only one, in `regions.name`) may carry a
/// consult tagged `tag`. Without a region map no jurisdiction is declared
/// for the box and every well-formed tag is admitted.
pub fn admit_locally(regions: &RegionsConfig, tag: &str) -> Result<(), Refusal> {
    if regions.region.is_empty() {
        return Ok(());
    }
    let map = RegionMap::from_config(regions).map_err(|_| Refusal::UnknownResidency {
        tag: tag.to_owned(),
    })?;
    let allowed = map.allowed(tag)?;
    let home = map
        .regions
        .iter()
        .find(|r| r.name == map.home)
        .expect("validated: regions.name is a region of the map");
    if home.jurisdictions.is_disjoint(&allowed) {
        return Err(Refusal::NotInThisRegion {
            tag: tag.to_owned(),
            allowed: allowed.into_iter().collect(),
            region: home.name.clone(),
            region_jurisdictions: home.jurisdictions.iter().cloned().collect(),
        });
    }
    Ok(())
}

/// Ranking class of a region's latency estimate: within budget, unknown,
/// over budget.
fn latency_class(e: &LatencyEstimate) -> u8 {
    match e.within_budget {
        Some(true) => 0,
        None => 1,
        Some(false) => 2,
    }
}

/// Places a consult: see the module documentation for the rules.
pub fn place(
    map: &RegionMap,
    loads: &[ApplianceLoad],
    req: &ConsultRequest,
) -> Result<Placement, Refusal> {
    let allowed = map.allowed(&req.residency)?;
    let allowed_list: Vec<String> = allowed.iter().cloned().collect();
    let mut candidates = Vec::new();
    for r in map
        .regions
        .iter()
        .filter(|r| !r.jurisdictions.is_disjoint(&allowed))
    {
        let estimate = map.estimate(&r.name, &req.parties)?;
        candidates.push((r, estimate));
    }
    if candidates.is_empty() {
        return Err(Refusal::NoAllowedRegion {
            tag: req.residency.clone(),
            jurisdictions: allowed_list,
        });
    }
    candidates.sort_by(|(ra, ea), (rb, eb)| {
        let key = |r: &Region, e: &LatencyEstimate| {
            (
                latency_class(e),
                e.path_ms.unwrap_or(u32::MAX),
                // The nearest to this appliance first (its own region at 0):
                // the neighbour a spill goes to.
                map.latency_between(&map.home, &r.name).unwrap_or(u32::MAX),
            )
        };
        key(ra, ea)
            .cmp(&key(rb, eb))
            .then_with(|| ra.name.cmp(&rb.name))
    });

    let mut skipped = Vec::new();
    for (region, latency) in candidates {
        let mut reported = 0usize;
        let mut at_level_4 = 0usize;
        let mut full = 0usize;
        let mut best: Option<(&ApplianceLoad, f64)> = None;
        for a in &region.appliances {
            let Some(load) = loads.iter().find(|l| &l.name == a) else {
                continue;
            };
            reported += 1;
            if !admits_new_consults(load.level) {
                at_level_4 += 1;
                continue;
            }
            let after = load.load_percent_with(req.egress_bps);
            if after > THEORETICAL_LIMIT_PERCENT {
                full += 1;
                continue;
            }
            let better = match best {
                None => true,
                Some((b, b_after)) => (load.level, after, &load.name) < (b.level, b_after, &b.name),
            };
            if better {
                best = Some((load, after));
            }
        }
        let Some((load, after)) = best else {
            let why = if region.appliances.is_empty() {
                "no appliances".to_owned()
            } else if reported == 0 {
                format!(
                    "none of its {} appliance(s) reports its load",
                    region.appliances.len()
                )
            } else if full == 0 {
                format!(
                    "all {at_level_4} reporting appliance(s) at overload level 4, admitting no \
                     new consults"
                )
            } else {
                format!(
                    "no headroom: {full} reporting appliance(s) would pass their theoretical \
                     ceiling with this consult, {at_level_4} at overload level 4"
                )
            };
            skipped.push(SkippedRegion {
                region: region.name.clone(),
                why,
            });
            continue;
        };
        let mut reason = format!(
            "residency `{}` allows {}; region {} ",
            req.residency,
            allowed_list.join(", "),
            region.name
        );
        match (latency.path_ms, latency.within_budget) {
            (Some(p), Some(true)) => {
                reason += &format!("fits the {} ms budget ({p} ms)", latency.budget_ms)
            }
            (Some(p), _) => {
                reason += &format!(
                    "is over the {} ms budget ({p} ms) but no allowed region with room fits it",
                    latency.budget_ms
                )
            }
            (None, _) => reason += "has no latency estimate (a party's location is unknown)",
        }
        if !skipped.is_empty() {
            reason += &format!(
                "; spilled from {}",
                skipped
                    .iter()
                    .map(|s: &SkippedRegion| format!("{} ({})", s.region, s.why))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        reason += &format!(
            "; {} at level {}, {:.0} % of its practical ceiling after this consult",
            load.name, load.level, after
        );
        return Ok(Placement {
            appliance: load.name.clone(),
            region: region.name.clone(),
            allowed_jurisdictions: allowed_list,
            latency,
            load_percent: after,
            level: load.level,
            spilled_from: skipped,
            reason,
        });
    }
    Err(Refusal::NoRoom {
        tag: req.residency.clone(),
        regions: skipped,
    })
}

/// A region's demand, now and forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionDemand {
    /// The region.
    pub region: String,
    /// Concurrent consults now.
    pub current: f64,
    /// Forecast peak of concurrent consults (e.g. tomorrow's morning rush).
    pub forecast_peak: f64,
}

/// Boxes a region needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionHeadroom {
    /// The region.
    pub region: String,
    /// Appliances the map declares for it.
    pub appliances: u32,
    /// Concurrent consults now.
    pub current: f64,
    /// Forecast peak.
    pub forecast_peak: f64,
    /// Forecast peak × surge factor.
    pub surge_peak: f64,
    /// Boxes for the current load, spares included.
    pub boxes_now: u32,
    /// Boxes for the forecast peak, spares included.
    pub boxes_forecast: u32,
    /// Boxes for the surge peak, spares included.
    pub boxes_surge: u32,
    /// Boxes to add before the surge peak (0 if enough are declared).
    pub shortfall: u32,
}

/// Warm headroom: the boxes each region of the map needs for its current
/// and forecast peak demand, and for the forecast × `surge_factor`, at
/// `per_box` concurrent consults per box (the practical ceiling, see
/// [`crate::plan`]) plus `spare` boxes (N+1 with 1). A region without a
/// demand entry counts as idle. `None` if `per_box` is not above 0.
pub fn warm_headroom(
    map: &RegionMap,
    demand: &[RegionDemand],
    per_box: f64,
    surge_factor: f64,
    spare: u32,
) -> Option<Vec<RegionHeadroom>> {
    use crate::plan::boxes_needed;
    if !(per_box > 0.0 && per_box.is_finite()) {
        return None;
    }
    let surge_factor = if surge_factor.is_finite() {
        surge_factor.max(1.0)
    } else {
        1.0
    };
    map.regions
        .iter()
        .map(|r| {
            let d = demand.iter().find(|d| d.region == r.name);
            let current = d.map_or(0.0, |d| d.current.max(0.0));
            // A forecast below the present load would size for less than
            // is already running.
            let forecast_peak = d.map_or(0.0, |d| d.forecast_peak.max(0.0)).max(current);
            let surge_peak = forecast_peak * surge_factor;
            let with_spare = |c: f64| boxes_needed(c, per_box).map(|n| n.saturating_add(spare));
            let boxes_surge = with_spare(surge_peak)?;
            let appliances = u32::try_from(r.appliances.len()).unwrap_or(u32::MAX);
            Some(RegionHeadroom {
                region: r.name.clone(),
                appliances,
                current,
                forecast_peak,
                surge_peak,
                boxes_now: with_spare(current)?,
                boxes_forecast: with_spare(forecast_peak)?,
                boxes_surge,
                shortfall: boxes_surge.saturating_sub(appliances),
            })
        })
        .collect()
}
