//! `[regions]`: this appliance's region and the region map the session
//! router places consults with (see [`crate::placement`]).
//!
//! Every check names the exact key, e.g. `regions.region[1].appliances`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;

use super::ConfigError;

/// The built-in jurisdictions and their member countries (ISO 3166-1
/// alpha-2, lower case), used when the file has no
/// `[regions.jurisdictions]` table.
pub const DEFAULT_JURISDICTIONS: &[(&str, &[&str])] = &[
    (
        "eu",
        &[
            "at", "be", "bg", "cy", "cz", "de", "dk", "ee", "es", "fi", "fr", "gr", "hr", "hu",
            "ie", "it", "lt", "lu", "lv", "mt", "nl", "pl", "pt", "ro", "se", "si", "sk",
        ],
    ),
    ("us", &["us"]),
    ("ca", &["ca"]),
    ("uk", &["gb"]),
    ("ch", &["ch"]),
    ("au", &["au"]),
];

/// The G.114 one-way budget for interactive conversation, ms.
pub const DEFAULT_LATENCY_BUDGET_MS: u32 = 150;

/// `[regions]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionsConfig {
    /// This appliance's region.
    pub name: String,
    /// One-way mouth-to-ear budget a placement should fit, ms.
    pub latency_budget_ms: u32,
    /// Jurisdiction → its member countries.
    pub jurisdictions: BTreeMap<String, Vec<String>>,
    /// Extra residency tags → the jurisdictions they allow.
    pub residency: BTreeMap<String, Vec<String>>,
    /// The regions of the map (`[[regions.region]]`); empty: no map.
    pub region: Vec<RegionEntry>,
    /// One-way latency between regions, ms: `latency_ms.A.B`.
    pub latency_ms: BTreeMap<String, BTreeMap<String, u32>>,
    /// Client locations (`[[regions.location]]`).
    pub location: Vec<LocationEntry>,
}

/// `[[regions.region]]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionEntry {
    /// Region name.
    pub name: String,
    /// Jurisdictions every appliance of the region sits in.
    pub jurisdictions: Vec<String>,
    /// Appliances serving the region.
    pub appliances: Vec<String>,
}

/// `[[regions.location]]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocationEntry {
    /// Location name.
    pub name: String,
    /// Client address prefixes (CIDR) of the location.
    pub prefixes: Vec<String>,
    /// One-way latency from the location to each region, ms.
    pub latency_ms: BTreeMap<String, u32>,
}

impl Default for RegionsConfig {
    fn default() -> Self {
        Self {
            name: "local".to_owned(),
            latency_budget_ms: DEFAULT_LATENCY_BUDGET_MS,
            jurisdictions: DEFAULT_JURISDICTIONS
                .iter()
                .map(|(j, cs)| {
                    (
                        (*j).to_owned(),
                        cs.iter().map(|c| (*c).to_owned()).collect(),
                    )
                })
                .collect(),
            residency: BTreeMap::new(),
            region: Vec::new(),
            latency_ms: BTreeMap::new(),
            location: Vec::new(),
        }
    }
}

/// An address prefix, `ADDR/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// Parses `ADDR/LEN`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("/{len} is longer than {max} bits"));
        }
        let p = Self { addr, len };
        if p.network(addr) != addr {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(p)
    }

    fn network(&self, a: IpAddr) -> IpAddr {
        match a {
            IpAddr::V4(v) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::from((u32::from(v) & mask).to_be_bytes())
            }
            IpAddr::V6(v) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::from((u128::from(v) & mask).to_be_bytes())
            }
        }
    }

    /// Whether `a` is inside the prefix (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, a: IpAddr) -> bool {
        let a = match a {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        };
        a.is_ipv4() == self.addr.is_ipv4() && self.network(a) == self.addr
    }
}

fn at(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidAt {
        key,
        reason: reason.into(),
    }
}

/// Names of regions, appliances, locations, jurisdictions and tags.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Jurisdictions, countries and tags: lower case, as the API lowers tags.
fn code_ok(s: &str) -> bool {
    name_ok(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

impl RegionsConfig {
    /// Checks what the types cannot; errors name the exact key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !name_ok(&self.name) {
            return Err(at(
                "regions.name".into(),
                "must be 1-64 characters of letters, digits, '-' or '_'",
            ));
        }
        if !(1..=10_000).contains(&self.latency_budget_ms) {
            return Err(at(
                "regions.latency_budget_ms".into(),
                "must be between 1 and 10000",
            ));
        }
        let mut country_of: BTreeMap<&str, &str> = BTreeMap::new();
        for (j, countries) in &self.jurisdictions {
            let key = format!("regions.jurisdictions.{j}");
            if !code_ok(j) {
                return Err(at(
                    key,
                    "a jurisdiction is 1-64 lower-case letters, digits, '-' or '_'",
                ));
            }
            for c in countries {
                if !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_lowercase())) {
                    return Err(at(
                        key,
                        format!("`{c}` is not a lower-case ISO 3166-1 alpha-2 country code"),
                    ));
                }
                if let Some(other) = country_of.insert(c, j) {
                    // A country tag must resolve to one jurisdiction; a
                    // national rule is a jurisdiction or tag of its own name.
                    if !(self.jurisdictions.contains_key(c.as_str())
                        || self.residency.contains_key(c.as_str()))
                    {
                        return Err(at(
                            key,
                            format!(
                                "country `{c}` is also in `{other}`: the tag `{c}` would be \
                                 ambiguous; declare a jurisdiction or a [regions.residency] \
                                 tag named `{c}`"
                            ),
                        ));
                    }
                }
            }
        }
        for (tag, allowed) in &self.residency {
            let key = format!("regions.residency.{tag}");
            if !code_ok(tag) || tag.len() > 32 {
                return Err(at(
                    key,
                    "a tag is 1-32 lower-case letters, digits, '-' or '_'",
                ));
            }
            if self.jurisdictions.contains_key(tag) {
                return Err(at(
                    key,
                    format!("`{tag}` is already a jurisdiction (which allows only itself)"),
                ));
            }
            if allowed.is_empty() {
                return Err(at(key, "allows no jurisdiction"));
            }
            if let Some(j) = allowed
                .iter()
                .find(|j| !self.jurisdictions.contains_key(j.as_str()))
            {
                return Err(at(
                    key,
                    format!("unknown jurisdiction `{j}` (not in regions.jurisdictions)"),
                ));
            }
        }
        let mut regions: BTreeSet<&str> = BTreeSet::new();
        let mut appliance_region: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, r) in self.region.iter().enumerate() {
            let key = |field: &str| format!("regions.region[{i}].{field}");
            if !name_ok(&r.name) {
                return Err(at(
                    key("name"),
                    "must be 1-64 characters of letters, digits, '-' or '_'",
                ));
            }
            if !regions.insert(&r.name) {
                return Err(at(
                    key("name"),
                    format!("region `{}` is declared twice", r.name),
                ));
            }
            if r.jurisdictions.is_empty() {
                return Err(at(
                    key("jurisdictions"),
                    "needs at least one jurisdiction (where the region's media is)",
                ));
            }
            if let Some(j) = r
                .jurisdictions
                .iter()
                .find(|j| !self.jurisdictions.contains_key(j.as_str()))
            {
                return Err(at(
                    key("jurisdictions"),
                    format!("unknown jurisdiction `{j}` (not in regions.jurisdictions)"),
                ));
            }
            for a in &r.appliances {
                if !name_ok(a) {
                    return Err(at(
                        key("appliances"),
                        format!("`{a}` is not 1-64 letters, digits, '-' or '_'"),
                    ));
                }
                if let Some(other) = appliance_region.insert(a, &r.name) {
                    return Err(at(
                        key("appliances"),
                        format!(
                            "appliance `{a}` is already in region `{other}`: an appliance \
                             serves one region"
                        ),
                    ));
                }
            }
        }
        if !self.region.is_empty() && !regions.contains(self.name.as_str()) {
            return Err(at(
                "regions.name".into(),
                format!(
                    "`{}` is not one of the regions in regions.region",
                    self.name
                ),
            ));
        }
        self.validate_latency(&regions)?;
        self.validate_locations(&regions)
    }

    fn validate_latency(&self, regions: &BTreeSet<&str>) -> Result<(), ConfigError> {
        for (a, row) in &self.latency_ms {
            if !regions.contains(a.as_str()) {
                return Err(at(
                    format!("regions.latency_ms.{a}"),
                    format!("unknown region `{a}`"),
                ));
            }
            for (b, ms) in row {
                let key = format!("regions.latency_ms.{a}.{b}");
                if !regions.contains(b.as_str()) {
                    return Err(at(key, format!("unknown region `{b}`")));
                }
                if a == b {
                    return Err(at(
                        key,
                        "a region's latency to itself is not part of the matrix",
                    ));
                }
                if let Some(back) = self.latency_ms.get(b).and_then(|r| r.get(a)) {
                    if back != ms {
                        return Err(at(
                            key,
                            format!(
                                "{ms} ms but regions.latency_ms.{b}.{a} is {back} ms: one-way \
                                 latency is symmetric, give one value"
                            ),
                        ));
                    }
                }
            }
        }
        let all: Vec<&str> = regions.iter().copied().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if self.latency_between(a, b).is_none() {
                    return Err(at(
                        format!("regions.latency_ms.{a}.{b}"),
                        format!("missing: every pair of regions needs a latency ({a} ↔ {b})"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_locations(&self, regions: &BTreeSet<&str>) -> Result<(), ConfigError> {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        let mut prefixes: BTreeMap<Prefix, &str> = BTreeMap::new();
        for (i, l) in self.location.iter().enumerate() {
            let key = |field: &str| format!("regions.location[{i}].{field}");
            if !name_ok(&l.name) {
                return Err(at(
                    key("name"),
                    "must be 1-64 characters of letters, digits, '-' or '_'",
                ));
            }
            if !names.insert(&l.name) {
                return Err(at(
                    key("name"),
                    format!("location `{}` is declared twice", l.name),
                ));
            }
            for p in &l.prefixes {
                let prefix = Prefix::parse(p).map_err(|e| at(key("prefixes"), e))?;
                if let Some(other) = prefixes.insert(prefix, &l.name) {
                    return Err(at(
                        key("prefixes"),
                        format!("{p} is already a prefix of location `{other}`"),
                    ));
                }
            }
            for r in l.latency_ms.keys() {
                if !regions.contains(r.as_str()) {
                    return Err(at(
                        format!("regions.location[{i}].latency_ms.{r}"),
                        format!("unknown region `{r}`"),
                    ));
                }
            }
            if let Some(r) = regions.iter().find(|r| !l.latency_ms.contains_key(**r)) {
                return Err(at(
                    format!("regions.location[{i}].latency_ms.{r}"),
                    format!(
                        "missing: location `{}` needs a latency to every region",
                        l.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One-way latency between two distinct regions, whichever direction
    /// the file gives it in.
    pub fn latency_between(&self, a: &str, b: &str) -> Option<u32> {
        let get = |x: &str, y: &str| self.latency_ms.get(x).and_then(|r| r.get(y)).copied();
        get(a, b).or_else(|| get(b, a))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const MAP: &str = r#"
[regions]
name = "eu-west"
[[regions.region]]
name = "eu-west"
jurisdictions = ["eu"]
appliances = ["sb-eu-1", "sb-eu-2"]
[[regions.region]]
name = "eu-central"
jurisdictions = ["eu"]
appliances = ["sb-eu-3"]
[[regions.region]]
name = "us-east"
jurisdictions = ["us"]
appliances = ["sb-us-1"]
[regions.latency_ms.eu-west]
eu-central = 12
us-east = 40
[regions.latency_ms.us-east]
eu-central = 48
[[regions.location]]
name = "paris"
prefixes = ["198.18.0.0/24"]
latency_ms = { eu-west = 8, eu-central = 14, us-east = 45 }
"#;

    #[test]
    fn a_full_map_parses() {
        let c = Config::parse(MAP).unwrap();
        assert_eq!(c.regions.region.len(), 3);
        assert_eq!(c.regions.latency_between("eu-central", "us-east"), Some(48));
        assert_eq!(c.regions.latency_between("eu-central", "eu-west"), Some(12));
        assert_eq!(c.regions.jurisdictions["eu"].len(), 27);
    }

    #[test]
    fn the_name_alone_still_works() {
        let c = Config::parse("[regions]\nname = \"clinic-a\"\n").unwrap();
        assert_eq!(c.regions.name, "clinic-a");
        assert!(c.regions.region.is_empty());
    }

    fn rejected(text: &str) -> ConfigError {
        Config::parse(text).expect_err("must be rejected")
    }

    #[test]
    fn bad_maps_name_the_key_and_reason() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                MAP.replace("jurisdictions = [\"us\"]", "jurisdictions = [\"mars\"]"),
                "regions.region[2].jurisdictions",
                "unknown jurisdiction `mars`",
            ),
            (
                MAP.replace("[\"sb-eu-3\"]", "[\"sb-eu-1\"]"),
                "regions.region[1].appliances",
                "already in region `eu-west`",
            ),
            (
                MAP.replace("eu-central = 48", "eu-west = 41"),
                "regions.latency_ms.eu-west.us-east",
                "symmetric",
            ),
            (
                MAP.replace("eu-central = 48\n", ""),
                "regions.latency_ms.eu-central.us-east",
                "missing",
            ),
            (
                MAP.replace("us-east = 40", "us-west = 40"),
                "regions.latency_ms.eu-west.us-west",
                "unknown region",
            ),
            (
                MAP.replace(", us-east = 45", ""),
                "regions.location[0].latency_ms.us-east",
                "missing",
            ),
            (
                MAP.replace("198.18.0.0/24", "198.18.0.1/24"),
                "regions.location[0].prefixes",
                "host bits",
            ),
            (
                MAP.replace("name = \"eu-west\"\n[[", "name = \"nowhere\"\n[["),
                "regions.name",
                "not one of the regions",
            ),
            (
                MAP.replace("name = \"eu-central\"", "name = \"eu-west\""),
                "regions.region[1].name",
                "twice",
            ),
            (
                MAP.replace("eu-central = 12", "eu-central = 12\neu-west = 1"),
                "regions.latency_ms.eu-west.eu-west",
                "itself",
            ),
            (
                format!("{MAP}[regions.residency]\nnorth_america = [\"us\", \"mx\"]\n"),
                "regions.residency.north_america",
                "unknown jurisdiction `mx`",
            ),
            (
                "[regions.jurisdictions]\neu = [\"de\"]\neea = [\"de\", \"no\"]\n".into(),
                "regions.jurisdictions.eu",
                "ambiguous",
            ),
            (
                "[regions.jurisdictions]\neu = [\"DE\"]\n".into(),
                "regions.jurisdictions.eu",
                "country code",
            ),
            (
                "[regions]\nlatency_budget_ms = 0\n".into(),
                "regions.latency_budget_ms",
                "between",
            ),
        ];
        for (text, key, reason) in cases {
            let e = rejected(&text);
            assert_eq!(e.key(), key, "{e}");
            assert!(e.to_string().contains(reason), "{e}");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn a_national_rule_resolves_an_overlap() {
        let text = "[regions.jurisdictions]\neu = [\"de\", \"fr\"]\nde = [\"de\"]\n";
        Config::parse(text).unwrap();
    }

    #[test]
    fn unknown_keys_in_the_map_are_named() {
        let e = rejected("[[regions.region]]\nname = \"a\"\njurisdiction = [\"eu\"]\n");
        assert_eq!(e.key(), "regions.region[0].jurisdiction");
    }

    #[test]
    fn prefixes_match_their_addresses() {
        let p = Prefix::parse("198.18.0.0/15").unwrap();
        assert!(p.contains("198.19.255.1".parse().unwrap()));
        assert!(!p.contains("198.20.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:198.18.1.1".parse().unwrap()));
        let p6 = Prefix::parse("2001:2::/48").unwrap();
        assert!(p6.contains("2001:2::1".parse().unwrap()));
        assert!(!p6.contains("2001:3::1".parse().unwrap()));
        assert!(Prefix::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Prefix::parse("198.18.0.0/33").is_err());
        assert!(Prefix::parse("198.18.0.0").is_err());
    }
}
