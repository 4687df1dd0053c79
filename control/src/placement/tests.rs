use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::config::Config;

/// Two EU regions, one US, one Canadian; Paris, Toronto and New York
/// clients.
const MAP: &str = r#"
[regions]
name = "eu-west"
[regions.residency]
north_america = ["us", "ca"]
[[regions.region]]
name = "eu-west"
jurisdictions = ["eu"]
appliances = ["eu-1", "eu-2"]
[[regions.region]]
name = "eu-central"
jurisdictions = ["eu"]
appliances = ["eu-3"]
[[regions.region]]
name = "us-east"
jurisdictions = ["us"]
appliances = ["us-1"]
[[regions.region]]
name = "ca-central"
jurisdictions = ["ca"]
appliances = ["ca-1"]
[regions.latency_ms.eu-west]
eu-central = 12
us-east = 40
ca-central = 45
[regions.latency_ms.eu-central]
us-east = 48
ca-central = 52
[regions.latency_ms.us-east]
ca-central = 10
[[regions.location]]
name = "paris"
prefixes = ["198.18.0.0/24"]
latency_ms = { eu-west = 8, eu-central = 14, us-east = 45, ca-central = 50 }
[[regions.location]]
name = "warsaw"
prefixes = ["198.18.1.0/24"]
latency_ms = { eu-west = 30, eu-central = 9, us-east = 60, ca-central = 65 }
[[regions.location]]
name = "toronto"
prefixes = ["198.18.2.0/24", "2001:2::/48"]
latency_ms = { eu-west = 50, eu-central = 55, us-east = 12, ca-central = 4 }
[[regions.location]]
name = "sydney"
prefixes = ["198.18.3.0/24"]
latency_ms = { eu-west = 150, eu-central = 145, us-east = 110, ca-central = 115 }
[[regions.location]]
name = "paris-hospital"
prefixes = ["198.18.0.128/25"]
latency_ms = { eu-west = 2, eu-central = 12, us-east = 44, ca-central = 49 }
"#;

fn map() -> RegionMap {
    RegionMap::from_config(&Config::parse(MAP).unwrap().regions).unwrap()
}

fn load(name: &str, percent: u64, level: u8) -> ApplianceLoad {
    ApplianceLoad {
        name: name.to_owned(),
        egress_bps: percent * 10_000_000,
        egress_ceiling_bps: 1_000_000_000,
        cpu_percent: 10.0,
        cpu_ceiling_percent: 50.0,
        level,
    }
}

fn all_idle() -> Vec<ApplianceLoad> {
    ["eu-1", "eu-2", "eu-3", "us-1", "ca-1"]
        .iter()
        .map(|n| load(n, 0, 0))
        .collect()
}

fn req(tag: &str, parties: &[&str]) -> ConsultRequest {
    ConsultRequest {
        residency: tag.to_owned(),
        parties: parties
            .iter()
            .map(|p| Party::Location((*p).to_owned()))
            .collect(),
        egress_bps: 3_000_000,
    }
}

#[test]
fn tags_resolve_to_jurisdictions() {
    let m = map();
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(m.allowed("eu").unwrap(), set(&["eu"]));
    assert_eq!(m.allowed("EU").unwrap(), set(&["eu"]));
    assert_eq!(m.allowed("de").unwrap(), set(&["eu"]));
    assert_eq!(m.allowed("gb").unwrap(), set(&["uk"]));
    assert_eq!(m.allowed("north_america").unwrap(), set(&["ca", "us"]));
    assert!(matches!(
        m.allowed("xx"),
        Err(Refusal::UnknownResidency { .. })
    ));
    assert!(m.region_allows("eu-central", "fr").unwrap());
    assert!(!m.region_allows("us-east", "fr").unwrap());
}

#[test]
fn eu_consult_stays_in_the_eu_even_with_the_us_idle() {
    let m = map();
    // Both EU boxes busy (level 3), the US box idle, parties in Toronto:
    // the US would be nearer and emptier, but residency wins.
    let loads = vec![
        load("eu-1", 110, 3),
        load("eu-2", 108, 3),
        load("eu-3", 112, 3),
        load("us-1", 0, 0),
        load("ca-1", 0, 0),
    ];
    let p = place(&m, &loads, &req("de", &["toronto", "toronto"])).unwrap();
    assert!(p.region.starts_with("eu-"), "{p:?}");
    assert_eq!(p.allowed_jurisdictions, vec!["eu".to_owned()]);
}

#[test]
fn nearest_allowed_region_within_budget_wins() {
    let m = map();
    // Paris patient, Warsaw clinician: eu-west 8 + 30 = 38, eu-central
    // 14 + 9 = 23.
    let p = place(&m, &all_idle(), &req("eu", &["paris", "warsaw"])).unwrap();
    assert_eq!(p.region, "eu-central");
    assert_eq!(p.latency.legs_ms, vec![Some(14), Some(9)]);
    assert_eq!(p.latency.path_ms, Some(23));
    assert_eq!(p.latency.within_budget, Some(true));
    assert!(
        p.reason.contains("fits the 150 ms budget (23 ms)"),
        "{}",
        p.reason
    );
    // North America: Toronto both sides, ca-central 4 + 4.
    let p = place(
        &m,
        &all_idle(),
        &req("north_america", &["toronto", "toronto"]),
    )
    .unwrap();
    assert_eq!(
        (p.region.as_str(), p.appliance.as_str()),
        ("ca-central", "ca-1")
    );
}

#[test]
fn over_budget_regions_rank_last_and_are_reported() {
    let m = map();
    // Sydney ↔ Paris in the EU: eu-west 150 + 8 = 158, eu-central 145 + 14
    // = 159: both over; the smaller is taken and the estimate says so.
    let p = place(&m, &all_idle(), &req("eu", &["sydney", "paris"])).unwrap();
    assert_eq!(p.region, "eu-west");
    assert_eq!(p.latency.path_ms, Some(158));
    assert_eq!(p.latency.within_budget, Some(false));
    assert!(p.reason.contains("over the 150 ms budget"), "{}", p.reason);
}

#[test]
fn addresses_pick_the_longest_prefix() {
    let m = map();
    let parties = vec![
        Party::Address("198.18.0.200".parse().unwrap()),
        Party::Address("198.18.0.7".parse().unwrap()),
    ];
    let e = m.estimate("eu-west", &parties).unwrap();
    // 198.18.0.200 is in paris-hospital's /25 (2 ms), .7 only in paris.
    assert_eq!(e.legs_ms, vec![Some(2), Some(8)]);
    let v6: IpAddr = "2001:2::5".parse().unwrap();
    let e = m.estimate("ca-central", &[Party::Address(v6)]).unwrap();
    assert_eq!(e.legs_ms, vec![Some(4)]);
    assert_eq!(e.path_ms, Some(4));
    // An address in no location: unknown, never a refusal.
    let e = m
        .estimate("eu-west", &[Party::Address("192.0.2.1".parse().unwrap())])
        .unwrap();
    assert_eq!((e.path_ms, e.within_budget), (None, None));
    assert!(matches!(
        m.estimate("eu-west", &[Party::Location("mars".into())]),
        Err(Refusal::UnknownLocation { .. })
    ));
}

#[test]
fn unknown_latency_prefers_home_then_its_neighbour() {
    let m = map();
    let r = ConsultRequest {
        residency: "eu".into(),
        parties: vec![Party::Unknown, Party::Unknown],
        egress_bps: 3_000_000,
    };
    let p = place(&m, &all_idle(), &r).unwrap();
    assert_eq!(p.region, "eu-west");
    assert!(p.reason.contains("no latency estimate"), "{}", p.reason);
}

#[test]
fn least_loaded_box_in_the_region_takes_it() {
    let m = map();
    let mut loads = all_idle();
    loads[0] = load("eu-1", 60, 0);
    loads[1] = load("eu-2", 20, 0);
    let p = place(&m, &loads, &req("eu", &["paris", "paris"])).unwrap();
    assert_eq!(p.appliance, "eu-2");
    // 20 % + 3 Mbit/s of a 1 Gbit/s ceiling.
    assert!((p.load_percent - 20.3).abs() < 1e-9, "{}", p.load_percent);
    // A lower level beats a lower load.
    loads[0] = load("eu-1", 80, 0);
    loads[1] = load("eu-2", 50, 1);
    let p = place(&m, &loads, &req("eu", &["paris", "paris"])).unwrap();
    assert_eq!(p.appliance, "eu-1");
}

#[test]
fn level_4_spills_to_the_next_allowed_region() {
    let m = map();
    let mut loads = all_idle();
    loads[0] = load("eu-1", 120, 4);
    loads[1] = load("eu-2", 118, 4);
    let p = place(&m, &loads, &req("fr", &["paris", "paris"])).unwrap();
    assert_eq!(
        (p.region.as_str(), p.appliance.as_str()),
        ("eu-central", "eu-3")
    );
    assert_eq!(p.spilled_from.len(), 1);
    assert_eq!(p.spilled_from[0].region, "eu-west");
    assert!(
        p.spilled_from[0].why.contains("level 4"),
        "{:?}",
        p.spilled_from
    );
    assert!(p.reason.contains("spilled from eu-west"), "{}", p.reason);
    // Level 3 is not a reason to spill.
    loads[0] = load("eu-1", 110, 3);
    let p = place(&m, &loads, &req("fr", &["paris", "paris"])).unwrap();
    assert_eq!(p.appliance, "eu-1");
    assert!(p.spilled_from.is_empty());
}

#[test]
fn no_room_in_any_allowed_region_is_refused_with_reasons() {
    let m = map();
    let mut loads = all_idle();
    loads[0] = load("eu-1", 120, 4);
    loads[1] = load("eu-2", 118, 4);
    loads.remove(2); // eu-3 reports nothing
    let e = place(&m, &loads, &req("eu", &["paris", "paris"])).unwrap_err();
    match &e {
        Refusal::NoRoom { tag, regions } => {
            assert_eq!(tag, "eu");
            assert_eq!(regions.len(), 2);
            assert!(regions
                .iter()
                .any(|r| r.region == "eu-west" && r.why.contains("level 4")));
            assert!(regions
                .iter()
                .any(|r| r.region == "eu-central" && r.why.contains("reports")));
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("no allowed region has room"), "{text}");
    // The idle US box was not used.
    assert!(!text.contains("us-east"), "{text}");
}

#[test]
fn a_jurisdiction_without_regions_is_refused() {
    let m = map();
    let e = place(&m, &all_idle(), &req("uk", &["paris"])).unwrap_err();
    assert_eq!(
        e,
        Refusal::NoAllowedRegion {
            tag: "uk".into(),
            jurisdictions: vec!["uk".into()],
        }
    );
    assert!(e.to_string().contains("no region may carry residency `uk`"));
    let e = place(&m, &all_idle(), &req("zz", &["paris"])).unwrap_err();
    assert!(matches!(e, Refusal::UnknownResidency { .. }));
}

#[test]
fn this_appliance_admits_only_its_jurisdictions() {
    let regions = Config::parse(MAP).unwrap().regions;
    // eu-west is this appliance's region.
    admit_locally(&regions, "eu").unwrap();
    admit_locally(&regions, "de").unwrap();
    let e = admit_locally(&regions, "us").unwrap_err();
    assert!(matches!(e, Refusal::NotInThisRegion { .. }));
    assert_eq!(
        e.to_string(),
        "residency `us` allows us; this appliance's region `eu-west` is in eu"
    );
    assert!(matches!(
        admit_locally(&regions, "xx"),
        Err(Refusal::UnknownResidency { .. })
    ));
    // No map: nothing is declared about this box, so nothing is refused.
    admit_locally(&Config::default().regions, "us").unwrap();
}

#[test]
fn refusals_serialise_with_their_kind() {
    let v = serde_json::to_value(Refusal::UnknownResidency { tag: "zz".into() }).unwrap();
    assert_eq!(v["refusal"], "unknown_residency");
    assert_eq!(v["tag"], "zz");
}

#[test]
fn cpu_counts_as_load_too() {
    let mut l = load("eu-1", 10, 0);
    l.cpu_percent = 40.0;
    assert!((l.load_percent_with(0) - 80.0).abs() < 1e-9);
    l.egress_ceiling_bps = 0;
    assert!(l.load_percent_with(0).is_infinite());
}

#[test]
fn warm_headroom_sizes_each_region() {
    let m = map();
    let demand = vec![
        RegionDemand {
            region: "eu-west".into(),
            current: 300.0,
            forecast_peak: 900.0,
        },
        RegionDemand {
            region: "us-east".into(),
            current: 50.0,
            forecast_peak: 20.0,
        },
    ];
    let h = warm_headroom(&m, &demand, 500.0, 1.5, 1).unwrap();
    assert_eq!(h.len(), 4);
    let eu = &h[0];
    assert_eq!(eu.region, "eu-west");
    // 300 → 1 + 1; 900 → 2 + 1; 1350 → 3 + 1; two declared → 2 short.
    assert_eq!(
        (
            eu.boxes_now,
            eu.boxes_forecast,
            eu.boxes_surge,
            eu.shortfall
        ),
        (2, 3, 4, 2)
    );
    assert_eq!(eu.surge_peak, 1350.0);
    let us = h.iter().find(|r| r.region == "us-east").unwrap();
    // The forecast never sizes below what runs now.
    assert_eq!(us.forecast_peak, 50.0);
    assert_eq!((us.boxes_forecast, us.shortfall), (2, 1));
    let ca = h.iter().find(|r| r.region == "ca-central").unwrap();
    assert_eq!((ca.boxes_now, ca.boxes_surge, ca.shortfall), (1, 1, 0));
    assert!(warm_headroom(&m, &demand, 0.0, 1.5, 1).is_none());
}

fn arb_load(name: &'static str) -> impl Strategy<Value = Option<ApplianceLoad>> {
    proptest::option::weighted(
        0.9,
        (0u64..2_000_000_000, 0.0f64..100.0, 0u8..=4).prop_map(move |(egress, cpu, level)| {
            ApplianceLoad {
                name: name.to_owned(),
                egress_bps: egress,
                egress_ceiling_bps: 1_000_000_000,
                cpu_percent: cpu,
                cpu_ceiling_percent: 50.0,
                level,
            }
        }),
    )
}

fn arb_party() -> impl Strategy<Value = Party> {
    prop_oneof![
        Just(Party::Unknown),
        prop::sample::select(vec![
            "paris",
            "warsaw",
            "toronto",
            "sydney",
            "paris-hospital"
        ])
        .prop_map(|l| Party::Location(l.to_owned())),
        (0u8..4, any::<u8>()).prop_map(|(c, d)| Party::Address(IpAddr::from([198, 18, c, d]))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the loads and parties: a placement is in a region the tag
    /// allows, on a box of that region admitting consults and able to hold
    /// it; a refusal for lack of room only when every allowed box is at
    /// level 4, full or silent.
    #[test]
    fn placement_never_breaks_residency(
        tag in prop::sample::select(vec!["eu", "de", "fr", "us", "ca", "north_america", "uk", "xx"]),
        loads in (
            arb_load("eu-1"), arb_load("eu-2"), arb_load("eu-3"), arb_load("us-1"), arb_load("ca-1"),
        ),
        parties in prop::collection::vec(arb_party(), 0..4),
    ) {
        let m = map();
        let loads: Vec<ApplianceLoad> =
            [loads.0, loads.1, loads.2, loads.3, loads.4].into_iter().flatten().collect();
        let r = ConsultRequest { residency: tag.to_owned(), parties, egress_bps: 3_000_000 };
        match place(&m, &loads, &r) {
            Ok(p) => {
                prop_assert!(m.region_allows(&p.region, tag).unwrap());
                prop_assert_eq!(m.region_of(&p.appliance).map(|x| x.name.as_str()), Some(p.region.as_str()));
                let l = loads.iter().find(|l| l.name == p.appliance).unwrap();
                prop_assert!(l.level < 4);
                prop_assert!(l.load_percent_with(r.egress_bps) <= THEORETICAL_LIMIT_PERCENT);
                // Every region it spilled from is allowed too.
                for s in &p.spilled_from {
                    prop_assert!(m.region_allows(&s.region, tag).unwrap());
                }
                // No better-ranked allowed region with an admitting box was skipped.
                prop_assert!(p.spilled_from.iter().all(|s| s.why.contains("level 4")
                    || s.why.contains("headroom") || s.why.contains("reports")
                    || s.why.contains("no appliances")));
            }
            Err(Refusal::NoRoom { regions, .. }) => {
                for s in &regions {
                    prop_assert!(m.region_allows(&s.region, tag).unwrap());
                }
                let allowed_boxes = loads.iter().filter(|l| {
                    m.region_of(&l.name).is_some_and(|reg| m.region_allows(&reg.name, tag).unwrap())
                });
                for l in allowed_boxes {
                    prop_assert!(
                        l.level == 4 || l.load_percent_with(r.egress_bps) > THEORETICAL_LIMIT_PERCENT
                    );
                }
            }
            Err(Refusal::UnknownResidency { .. }) => prop_assert_eq!(tag, "xx"),
            Err(Refusal::NoAllowedRegion { .. }) => prop_assert_eq!(tag, "uk"),
            Err(e) => prop_assert!(false, "unexpected refusal {e}"),
        }
    }

    /// With every box idle, the chosen region's path is no longer than any
    /// other allowed region's when the parties' locations are known.
    #[test]
    fn idle_map_takes_the_shortest_allowed_path(
        tag in prop::sample::select(vec!["eu", "north_america", "us"]),
        a in prop::sample::select(vec!["paris", "warsaw", "toronto", "sydney"]),
        b in prop::sample::select(vec!["paris", "warsaw", "toronto", "sydney"]),
    ) {
        let m = map();
        let r = req(tag, &[a, b]);
        let p = place(&m, &all_idle(), &r).unwrap();
        for region in m.regions() {
            if m.region_allows(&region.name, tag).unwrap() {
                let e = m.estimate(&region.name, &r.parties).unwrap();
                prop_assert!(p.latency.path_ms <= e.path_ms, "{} vs {}", p.region, region.name);
            }
        }
    }
}
