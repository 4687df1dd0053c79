//! The session router of a pool on etcd: placements, failover and the
//! records both work on.
//!
//! Keys under `cluster.prefix`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `appliances/<name>` | [`ApplianceRecord`], bound to the box's lease | the box itself ([`crate::cluster`]) |
//! | `consults/<id>` | [`ConsultRecord`] | the router that placed it, the survivor that re-placed it |
//! | `bookings/<name>` | placements made on the box so far | with every placement on it |
//!
//! **Placement.** Any appliance serving `POST /v1/consults` reads the live
//! registrations and placements, runs [`crate::placement::place`] (residency,
//! latency, load: each box's measured load or the consults booked on it,
//! whichever is larger), and writes the consult's record in one
//! transaction that holds only if the consult key does not exist and the
//! chosen box's booking key is unchanged since the read. Two routers racing
//! for the same box (or its last headroom) cannot both win: the loser's
//! compare fails and it places again from a fresh read.
//!
//! **Failover.** Every appliance runs [`Pool::failover_pass`] each third of
//! the lease TTL. A consult whose appliance has no live registration (its
//! lease expired: the box died, or lost etcd) is re-placed among the live
//! boxes by the same rules, ranking regions from the lost box's region so a
//! dark region's consults go to the neighbour the residency allows; the
//! record's generation goes up and it carries a [`Reconnect`] hint that
//! `GET /v1/consults/{id}` shows to the participants. The write compares
//! the record's revision, so exactly one survivor moves each consult. If no
//! allowed region has room the record says so (unplaced, with the reason)
//! and later passes try again; it is never placed outside its residency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cluster::{ApplianceRecord, ClusterError, EtcdClient, KeyValue};
use crate::config::{ClusterConfig, Config};
use crate::overload::{admits_new_consults, Priority};
use crate::placement::{
    self, ApplianceLoad, ConsultRequest, LatencyEstimate, Placement, Refusal, RegionMap,
    SkippedRegion,
};

/// Why a participant should reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnect {
    /// The appliance the consult was on (empty if it was unplaced).
    pub from: String,
    /// Why it moved.
    pub why: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// A consult's record in the pool: where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsultRecord {
    /// Its id.
    pub id: String,
    /// Clinical priority.
    pub priority: Priority,
    /// Residency tag.
    pub residency: String,
    /// Creation time.
    pub created_at: String,
    /// The appliance carrying it; `None` while no allowed region has room.
    pub appliance: Option<String>,
    /// That appliance's region.
    pub region: Option<String>,
    /// Bumped at every move: participants of an older generation must
    /// reconnect.
    pub generation: u64,
    /// Why it is where it is (or why it is unplaced).
    pub reason: String,
    /// Set once it has moved: participants open new WHIP/WHEP resources on
    /// the new appliance.
    pub reconnect: Option<Reconnect>,
}

/// Why the pool could not place a consult.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// etcd did not answer.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The placement rules refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Every attempt lost a race with another router.
    #[error("placement lost {0} races in a row with other routers; retry")]
    Contended(u32),
}

/// A placement written to the pool.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The record as written.
    pub record: ConsultRecord,
    /// How it was chosen.
    pub placement: Placement,
    /// Where the chosen appliance's API listens.
    pub api: String,
    /// The store's revision of the write.
    pub revision: i64,
}

/// What one failover pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverReport {
    /// Consults moved: (id, from, to).
    pub moved: Vec<(String, String, String)>,
    /// Consults no allowed region could take: (id, why).
    pub unplaced: Vec<(String, String)>,
}

/// The pool as one read saw it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Live registrations.
    pub appliances: Vec<ApplianceRecord>,
    /// Placements, with their key-values (for the revision compares).
    pub consults: Vec<(ConsultRecord, KeyValue)>,
    /// Booking keys' last write, by appliance.
    pub bookings: BTreeMap<String, i64>,
    /// The store's revision the read saw.
    pub revision: i64,
}

impl Snapshot {
    /// The registration of `name`, if live.
    pub fn appliance(&self, name: &str) -> Option<&ApplianceRecord> {
        self.appliances.iter().find(|a| a.name == name)
    }
}

/// The load the router sees on each live box: its measured load, or the
/// egress of the consults placed on it, whichever is larger (a placement
/// shows in the measured load only once its media flows).
pub fn loads(
    appliances: &[ApplianceRecord],
    consults: &[ConsultRecord],
    consult_egress_bps: u64,
) -> Vec<ApplianceLoad> {
    let mut placed: BTreeMap<&str, u64> = BTreeMap::new();
    for c in consults {
        if let Some(a) = &c.appliance {
            *placed.entry(a.as_str()).or_default() += 1;
        }
    }
    appliances
        .iter()
        .map(|a| {
            let measured = (a.load_percent.max(0.0) / 100.0 * a.egress_ceiling_bps as f64) as u64;
            let booked = placed
                .get(a.name.as_str())
                .copied()
                .unwrap_or(0)
                .saturating_mul(consult_egress_bps);
            ApplianceLoad {
                name: a.name.clone(),
                egress_bps: measured.max(booked),
                egress_ceiling_bps: a.egress_ceiling_bps,
                cpu_percent: 0.0,
                // The measured load above already holds the CPU share.
                cpu_ceiling_percent: 100.0,
                level: a.overload_level,
            }
        })
        .collect()
}

/// Places `req` over the live boxes: by the region map's rules when there
/// is one; without a map every box of the pool is a candidate (residency
/// is not checked, as on a single box without a map) and the least loaded
/// one with headroom wins.
pub fn route(
    map: Option<&RegionMap>,
    appliances: &[ApplianceRecord],
    loads: &[ApplianceLoad],
    req: &ConsultRequest,
) -> Result<Placement, Refusal> {
    if let Some(map) = map {
        return placement::place(map, loads, req);
    }
    let mut best: Option<(&ApplianceLoad, f64)> = None;
    let (mut at_level_4, mut full) = (0usize, 0usize);
    for load in loads {
        if !admits_new_consults(load.level) {
            at_level_4 += 1;
            continue;
        }
        let after = load.load_percent_with(req.egress_bps);
        if after > placement::THEORETICAL_LIMIT_PERCENT {
            full += 1;
            continue;
        }
        if best.is_none_or(|(b, b_after)| {
            (load.level, after, &load.name) < (b.level, b_after, &b.name)
        }) {
            best = Some((load, after));
        }
    }
    let Some((load, after)) = best else {
        return Err(Refusal::NoRoom {
            tag: req.residency.clone(),
            regions: vec![SkippedRegion {
                region: "pool".to_owned(),
                why: format!(
                    "{} live appliance(s): {at_level_4} at overload level 4, {full} without headroom",
                    loads.len()
                ),
            }],
        });
    };
    let region = appliances
        .iter()
        .find(|a| a.name == load.name)
        .map_or_else(String::new, |a| a.region.clone());
    Ok(Placement {
        appliance: load.name.clone(),
        region,
        allowed_jurisdictions: Vec::new(),
        latency: LatencyEstimate {
            legs_ms: vec![None; req.parties.len()],
            path_ms: None,
            budget_ms: crate::config::DEFAULT_LATENCY_BUDGET_MS,
            within_budget: None,
        },
        load_percent: after,
        level: load.level,
        spilled_from: Vec::new(),
        reason: format!(
            "no region map: the least loaded appliance of the pool; {} at level {}, {after:.0} % \
             of its practical ceiling after this consult",
            load.name, load.level
        ),
    })
}

/// Warm headroom over the pool: each region's concurrent consults now (the
/// placements in `snap`), its forecast peak (`forecast`, by region; the
/// current count where none is given), and the boxes it needs for both
/// and for the forecast × `surge_factor`, at `per_box` consults per box
/// plus `spare` boxes. `None` if `per_box` is not above 0.
pub fn headroom(
    map: &RegionMap,
    snap: &Snapshot,
    forecast: &BTreeMap<String, f64>,
    per_box: f64,
    surge_factor: f64,
    spare: u32,
) -> Option<Vec<placement::RegionHeadroom>> {
    let demand: Vec<placement::RegionDemand> = map
        .regions()
        .iter()
        .map(|r| {
            let current = snap
                .consults
                .iter()
                .filter(|(c, _)| c.region.as_deref() == Some(r.name.as_str()))
                .count() as f64;
            placement::RegionDemand {
                region: r.name.clone(),
                current,
                forecast_peak: forecast.get(&r.name).copied().unwrap_or(current),
            }
        })
        .collect();
    placement::warm_headroom(map, &demand, per_box, surge_factor, spare)
}

fn now_rfc3339() -> String {
    crate::audit::rfc3339_utc(SystemTime::now())
}

/// Most placement attempts before a create gives up to contention.
const PLACE_ATTEMPTS: u32 = 8;

/// This appliance's view of the pool.
#[derive(Debug, Clone)]
pub struct Pool {
    client: EtcdClient,
    config: ClusterConfig,
    map: Option<RegionMap>,
}

impl Pool {
    /// The pool of `config` (which has `cluster.etcd`).
    pub fn new(config: &Config) -> Result<Self, ClusterError> {
        let period = Self::period_of(&config.cluster);
        let client = EtcdClient::new(&config.cluster.etcd, period.max(Duration::from_millis(500)))?;
        let map = if config.regions.region.is_empty() {
            None
        } else {
            // Validated with the configuration.
            RegionMap::from_config(&config.regions).ok()
        };
        Ok(Self {
            client,
            config: config.cluster.clone(),
            map,
        })
    }

    fn period_of(config: &ClusterConfig) -> Duration {
        Duration::from_secs(config.lease_ttl_secs) / 3
    }

    /// How often failover passes run: a third of the lease TTL.
    pub fn period(&self) -> Duration {
        Self::period_of(&self.config)
    }

    /// This appliance's name in the pool.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.config.prefix)
    }

    /// The key of consult `id`'s record.
    pub fn consult_key(&self, id: &str) -> String {
        self.key("consults", id)
    }

    /// Reads registrations, placements and bookings in one read (one
    /// revision: a placement is seen with its booking or not at all).
    pub async fn snapshot(&self) -> Result<Snapshot, ClusterError> {
        let prefix = &self.config.prefix;
        let (all, revision) = self.client.list_at(prefix).await?;
        let (apps, consults, bookings) = (
            format!("{prefix}appliances/"),
            format!("{prefix}consults/"),
            format!("{prefix}bookings/"),
        );
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in all {
            if kv.key.starts_with(&apps) {
                if let Ok(a) = serde_json::from_slice(&kv.value) {
                    snap.appliances.push(a);
                }
            } else if kv.key.starts_with(&consults) {
                if let Ok(c) = serde_json::from_slice(&kv.value) {
                    snap.consults.push((c, kv));
                }
            } else if let Some(name) = kv.key.strip_prefix(&bookings) {
                snap.bookings.insert(name.to_owned(), kv.mod_revision);
            }
        }
        Ok(snap)
    }

    /// Writes `record` to `target` if `record_rev` (0: a new consult) and
    /// the target's booking are unchanged; the revision written at.
    async fn book(
        &self,
        snap: &Snapshot,
        record: &ConsultRecord,
        record_rev: i64,
    ) -> Result<Option<i64>, ClusterError> {
        let key = self.consult_key(&record.id);
        let value = serde_json::to_vec(record).unwrap_or_default();
        let Some(target) = &record.appliance else {
            return self
                .client
                .put_if_unchanged(&[(&key, record_rev)], &[(&key, &value)])
                .await;
        };
        let booking = self.key("bookings", target);
        let booking_rev = snap.bookings.get(target).copied().unwrap_or(0);
        let count = snap
            .consults
            .iter()
            .filter(|(c, _)| c.appliance.as_deref() == Some(target.as_str()))
            .count()
            + 1;
        let count = count.to_string();
        self.client
            .put_if_unchanged(
                &[(&key, record_rev), (&booking, booking_rev)],
                &[(&key, &value), (&booking, count.as_bytes())],
            )
            .await
    }

    /// Places a new consult (`record` without appliance, region and
    /// reason) and writes it.
    pub async fn place_new(
        &self,
        mut record: ConsultRecord,
        req: &ConsultRequest,
    ) -> Result<Placed, PoolError> {
        for _ in 0..PLACE_ATTEMPTS {
            let snap = self.snapshot().await?;
            let records: Vec<ConsultRecord> =
                snap.consults.iter().map(|(c, _)| c.clone()).collect();
            let loads = loads(&snap.appliances, &records, self.config.consult_egress_bps);
            let placement = route(self.map.as_ref(), &snap.appliances, &loads, req)?;
            record.appliance = Some(placement.appliance.clone());
            record.region = Some(placement.region.clone());
            record.reason = placement.reason.clone();
            record.generation = 1;
            if let Some(revision) = self.book(&snap, &record, 0).await? {
                let api = snap
                    .appliance(&placement.appliance)
                    .map(|a| a.api.clone())
                    .unwrap_or_default();
                return Ok(Placed {
                    record,
                    placement,
                    api,
                    revision,
                });
            }
        }
        Err(PoolError::Contended(PLACE_ATTEMPTS))
    }

    /// Consult `id`'s record and its revision.
    pub async fn record(&self, id: &str) -> Result<Option<(ConsultRecord, i64)>, ClusterError> {
        Ok(self
            .client
            .get(&self.consult_key(id))
            .await?
            .and_then(|kv| Some((serde_json::from_slice(&kv.value).ok()?, kv.mod_revision))))
    }

    /// The API address of appliance `name`, if it is live.
    pub async fn api_of(&self, name: &str) -> Result<Option<String>, ClusterError> {
        let kv = self.client.get(&self.key("appliances", name)).await?;
        Ok(kv
            .and_then(|kv| serde_json::from_slice::<ApplianceRecord>(&kv.value).ok())
            .map(|a| a.api))
    }

    /// The region map the router places with, if any.
    pub fn map(&self) -> Option<&RegionMap> {
        self.map.as_ref()
    }

    /// Deletes consult `id`'s record; whether it existed.
    pub async fn remove(&self, id: &str) -> Result<bool, ClusterError> {
        self.client.delete(&self.consult_key(id)).await
    }

    /// Re-places every consult whose appliance has left the pool (and
    /// retries the unplaced), over `snap`; see the module documentation.
    pub async fn failover_pass(&self, snap: &Snapshot) -> Result<FailoverReport, ClusterError> {
        let live: BTreeSet<&str> = snap.appliances.iter().map(|a| a.name.as_str()).collect();
        let mut records: Vec<ConsultRecord> =
            snap.consults.iter().map(|(c, _)| c.clone()).collect();
        let mut report = FailoverReport::default();
        let mut snap = snap.clone();
        for (record, kv) in &snap.consults.clone() {
            let lost = match &record.appliance {
                Some(a) if live.contains(a.as_str()) => continue,
                Some(a) => a.clone(),
                None => String::new(),
            };
            let parties = Vec::new();
            let req = ConsultRequest {
                residency: record.residency.clone(),
                parties,
                egress_bps: self.config.consult_egress_bps,
            };
            // Rank from the lost box's region: its neighbours first.
            let seen = match (&self.map, &record.region) {
                (Some(m), Some(r)) => m.seen_from(r).or_else(|| Some(m.clone())),
                (m, _) => m.clone(),
            };
            let loads = loads(&snap.appliances, &records, self.config.consult_egress_bps);
            let mut moved = record.clone();
            moved.generation = record.generation.saturating_add(1);
            let why = if lost.is_empty() {
                "placed after waiting for room".to_owned()
            } else {
                format!("appliance {lost} left the pool (its lease expired)")
            };
            match route(seen.as_ref(), &snap.appliances, &loads, &req) {
                Ok(p) => {
                    moved.appliance = Some(p.appliance.clone());
                    moved.region = Some(p.region.clone());
                    moved.reason = p.reason;
                    moved.reconnect = Some(Reconnect {
                        from: lost.clone(),
                        why,
                        at: now_rfc3339(),
                    });
                    if let Some(rev) = self.book(&snap, &moved, kv.mod_revision).await? {
                        report
                            .moved
                            .push((moved.id.clone(), lost, p.appliance.clone()));
                        // Later moves of this pass see this one.
                        if let Some(r) = records.iter_mut().find(|r| r.id == moved.id) {
                            *r = moved.clone();
                        }
                        let name = p.appliance;
                        snap.bookings.insert(name, rev);
                        if let Some(entry) =
                            snap.consults.iter_mut().find(|(c, _)| c.id == moved.id)
                        {
                            entry.0 = moved;
                        }
                    }
                }
                Err(refusal) => {
                    report
                        .unplaced
                        .push((record.id.clone(), refusal.to_string()));
                    // Recorded once; later passes retry without rewriting.
                    if record.appliance.is_some() {
                        moved.appliance = None;
                        moved.region = None;
                        moved.reason = format!("unplaced: {refusal}");
                        moved.reconnect = Some(Reconnect {
                            from: lost,
                            why,
                            at: now_rfc3339(),
                        });
                        self.book(&snap, &moved, kv.mod_revision).await?;
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn appliance(name: &str, region: &str, load: f64, level: u8) -> ApplianceRecord {
        ApplianceRecord {
            name: name.to_owned(),
            region: region.to_owned(),
            api: format!("{name}:8080"),
            media: Vec::new(),
            egress_ceiling_bps: 10_000_000,
            load_percent: load,
            overload_level: level,
        }
    }

    fn consult(id: &str, on: Option<&str>) -> ConsultRecord {
        ConsultRecord {
            id: id.to_owned(),
            priority: Priority::Routine,
            residency: "eu".to_owned(),
            created_at: String::new(),
            appliance: on.map(str::to_owned),
            region: None,
            generation: 1,
            reason: String::new(),
            reconnect: None,
        }
    }

    fn req(residency: &str) -> ConsultRequest {
        ConsultRequest {
            residency: residency.to_owned(),
            parties: Vec::new(),
            egress_bps: 3_000_000,
        }
    }

    #[test]
    fn booked_consults_count_until_the_measured_load_shows_them() {
        let apps = [appliance("a", "r", 10.0, 0), appliance("b", "r", 50.0, 0)];
        let consults = [
            consult("1", Some("a")),
            consult("2", Some("a")),
            consult("3", None),
        ];
        let l = loads(&apps, &consults, 3_000_000);
        // a: measured 1 Mbit/s, booked 2 × 3 Mbit/s.
        assert_eq!(l[0].egress_bps, 6_000_000);
        // b: measured 5 Mbit/s, nothing booked.
        assert_eq!(l[1].egress_bps, 5_000_000);
        assert_eq!(l[1].level, 0);
    }

    #[test]
    fn without_a_map_the_least_loaded_box_with_headroom_wins() {
        let apps = [
            appliance("a", "r1", 20.0, 0),
            appliance("b", "r2", 10.0, 4),
            appliance("c", "r2", 30.0, 0),
        ];
        let l = loads(&apps, &[], 3_000_000);
        let p = route(None, &apps, &l, &req("anything")).unwrap();
        assert_eq!((p.appliance.as_str(), p.region.as_str()), ("a", "r1"));
        assert!((p.load_percent - 50.0).abs() < 1e-9, "{}", p.load_percent);
        // 18 Mbit/s measured + 3 passes twice the 10 Mbit/s practical
        // ceiling.
        let apps = [
            appliance("a", "r1", 180.0, 0),
            appliance("b", "r1", 10.0, 4),
        ];
        let l = loads(&apps, &[], 3_000_000);
        let e = route(None, &apps, &l, &req("eu")).unwrap_err();
        assert!(matches!(e, Refusal::NoRoom { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("1 at overload level 4, 1 without headroom"),
            "{e}"
        );
    }

    fn two_region_map() -> RegionMap {
        let c = Config::parse(
            "[regions]\nname = \"de-fra\"\n\
             [regions.jurisdictions]\nde = [\"de\"]\nfr = [\"fr\"]\n\
             [regions.residency]\neu = [\"de\", \"fr\"]\n\
             [[regions.region]]\nname = \"de-fra\"\njurisdictions = [\"de\"]\nappliances = [\"a\", \"b\"]\n\
             [[regions.region]]\nname = \"fr-par\"\njurisdictions = [\"fr\"]\nappliances = [\"c\"]\n\
             [regions.latency_ms.de-fra]\nfr-par = 10\n",
        )
        .unwrap();
        RegionMap::from_config(&c.regions).unwrap()
    }

    #[test]
    fn headroom_counts_placements_by_region() {
        let map = two_region_map();
        let mut snap = Snapshot::default();
        for (i, region) in ["de-fra", "de-fra", "de-fra", "fr-par"].iter().enumerate() {
            let mut c = consult(&i.to_string(), Some("a"));
            c.region = Some((*region).to_owned());
            snap.consults.push((
                c,
                KeyValue {
                    key: String::new(),
                    value: Vec::new(),
                    mod_revision: 1,
                    lease: 0,
                },
            ));
        }
        let forecast = BTreeMap::from([("fr-par".to_owned(), 9.0)]);
        let h = headroom(&map, &snap, &forecast, 2.0, 1.5, 1).unwrap();
        let de = &h[0];
        // 3 now → 2 + 1 spare; no forecast: 3 → 2 + 1; surge 4.5 → 3 + 1.
        assert_eq!(
            (
                de.region.as_str(),
                de.boxes_now,
                de.boxes_forecast,
                de.boxes_surge
            ),
            ("de-fra", 3, 3, 4)
        );
        assert_eq!(de.shortfall, 2);
        let fr = &h[1];
        // 1 now; forecast 9 → 5 + 1; surge 13.5 → 7 + 1, one declared.
        assert_eq!(
            (
                fr.boxes_now,
                fr.boxes_forecast,
                fr.boxes_surge,
                fr.shortfall
            ),
            (2, 6, 8, 7)
        );
        assert!(headroom(&map, &snap, &forecast, 0.0, 1.5, 1).is_none());
    }

    #[test]
    fn residency_holds_when_the_allowed_region_is_full() {
        let map = two_region_map();
        let apps = [
            appliance("a", "de-fra", 0.0, 0),
            appliance("b", "de-fra", 0.0, 0),
            appliance("c", "fr-par", 0.0, 0),
        ];
        // Six consults (18 Mbit/s) booked on each German box: a seventh
        // would pass twice the practical ceiling.
        let consults: Vec<ConsultRecord> = (0..12)
            .map(|i| consult(&i.to_string(), Some(if i < 6 { "a" } else { "b" })))
            .collect();
        let l = loads(&apps, &consults, 3_000_000);
        let e = route(Some(&map), &apps, &l, &req("de")).unwrap_err();
        assert!(matches!(e, Refusal::NoRoom { .. }), "{e}");
        assert!(e.to_string().contains("no headroom"), "{e}");
        // A consult that may also go to France spills there.
        let p = route(Some(&map), &apps, &l, &req("eu")).unwrap();
        assert_eq!(p.appliance, "c");
        assert_eq!(p.spilled_from.len(), 1, "{:?}", p.spilled_from);
        // The German region dark: seen from it, its neighbour is next.
        let live = [appliance("c", "fr-par", 0.0, 0)];
        let l = loads(&live, &[], 3_000_000);
        let seen = map.seen_from("de-fra").unwrap();
        assert_eq!(
            route(Some(&seen), &live, &l, &req("eu")).unwrap().appliance,
            "c"
        );
        assert!(route(Some(&seen), &live, &l, &req("de")).is_err());
        assert!(map.seen_from("nowhere").is_none());
    }
}
