//! `switchboard run` configuration: TOML, every key optional over an embedded
//! default, unknown keys rejected, and semantic checks that name the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod regions;
pub use regions::{
    LocationEntry, Prefix, RegionEntry, RegionsConfig, DEFAULT_JURISDICTIONS,
    DEFAULT_LATENCY_BUDGET_MS,
};

/// The embedded default configuration, with a comment on every key; printed
/// by `switchboard run --print-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A configuration that could not be read or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not match the schema (syntax, unknown key, wrong type).
    #[error("config key `{key}`: {reason}")]
    Schema {
        /// Dotted path of the offending key (its table for an unknown key).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A value not acceptable at a key named at run time (an entry of a
    /// list or table, e.g. `regions.region[1].appliances`).
    #[error("config key `{key}`: {reason}")]
    InvalidAt {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Read { .. } => "",
            Self::Schema { key, .. } => key,
            Self::Invalid { key, .. } => key,
            Self::InvalidAt { key, .. } => key,
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP API.
    pub http: HttpConfig,
    /// Admin credential.
    pub admin: AdminConfig,
    /// Media addresses, ports and workers.
    pub media: MediaConfig,
    /// The XDP ingress filter in front of the media ports.
    pub xdp: XdpConfig,
    /// Join tokens.
    pub tokens: TokenConfig,
    /// The overload ladder.
    pub overload: OverloadConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Regions.
    pub regions: RegionsConfig,
    /// Appliance pools on etcd.
    pub cluster: ClusterConfig,
    /// Shutdown.
    pub drain: DrainConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port of the HTTP API.
    pub listen: SocketAddr,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 65536,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin bearer token inline.
    pub token: String,
    /// A file whose trimmed content is the admin bearer token.
    pub token_file: String,
}

/// Which I/O engine the media workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// io_uring: the hot path.
    IoUring,
    /// tokio `UdpSocket`: the baseline.
    Tokio,
}

/// `[media]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Addresses advertised as ICE host candidates.
    pub advertised_addresses: Vec<IpAddr>,
    /// First UDP media port.
    pub port_min: u16,
    /// Last UDP media port (inclusive).
    pub port_max: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// I/O engine.
    pub engine: Engine,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            advertised_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            port_min: 40000,
            port_max: 40099,
            workers: 0,
            engine: Engine::IoUring,
        }
    }
}

/// `[tokens]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// File holding the signing key; empty: generated at start.
    pub signing_key_file: String,
    /// Token lifetime in seconds.
    pub lifetime_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            signing_key_file: String::new(),
            lifetime_secs: 3600,
        }
    }
}

/// `[overload]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Practical egress ceiling in bit/s.
    pub egress_ceiling_bps: u64,
    /// Practical CPU ceiling in percent of all cores.
    pub cpu_ceiling_percent: f64,
    /// Load percent entering levels 1..4.
    pub enter_percent: [u32; 4],
    /// Load percent leaving levels 1..4.
    pub exit_percent: [u32; 4],
    /// Seconds above an enter threshold before rising.
    pub enter_hold_secs: u64,
    /// Seconds below an exit threshold before falling.
    pub exit_hold_secs: u64,
    /// Seconds between load samples.
    pub sample_interval_secs: u64,
    /// Retry-After on 503 answers at level 4.
    pub retry_after_secs: u64,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            egress_ceiling_bps: 5_000_000_000,
            cpu_ceiling_percent: 50.0,
            enter_percent: [85, 95, 105, 115],
            exit_percent: [70, 80, 90, 100],
            enter_hold_secs: 5,
            exit_hold_secs: 30,
            sample_interval_secs: 1,
            retry_after_secs: 30,
        }
    }
}

/// When the audit log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// fsync after every event.
    EveryEvent,
    /// fsync groups of events, at most `group_commit_ms` after the first.
    Group,
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// fsync policy.
    pub fsync: FsyncMode,
    /// Group commit window in milliseconds.
    pub group_commit_ms: u64,
    /// Rotation size in bytes.
    pub rotate_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("switchboard-audit.jsonl"),
            fsync: FsyncMode::EveryEvent,
            group_commit_ms: 20,
            rotate_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://host:port`); empty: a single box with its
    /// embedded store.
    pub etcd: Vec<String>,
    /// This appliance's name in the pool (unique).
    pub name: String,
    /// Lease of the appliance's registration, seconds.
    pub lease_ttl_secs: u64,
    /// Prefix of every key the pool writes.
    pub prefix: String,
    /// Egress one consult adds to the box carrying it, bit/s: what the
    /// router books for a placement until the box's measured load shows it.
    pub consult_egress_bps: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            name: String::new(),
            lease_ttl_secs: 5,
            prefix: "/switchboard/".to_owned(),
            consult_egress_bps: 3_100_000,
        }
    }
}

/// What the XDP ingress filter does with a class of packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Dropped in the driver and counted.
    Drop,
    /// Passed up to the kernel's stack (the worker's socket) and counted.
    Pass,
}

/// `[xdp]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// Interfaces the media arrives on; empty: no XDP filter.
    pub interfaces: Vec<String>,
    /// RTP/RTCP to a media port from a sender that is no leg's.
    pub unknown_senders: Disposition,
    /// Frames to a media port whose headers lie or are cut short.
    pub malformed: Disposition,
    /// Refuse to start where the driver has no native XDP (instead of
    /// running in generic mode with a warning).
    pub require_driver_mode: bool,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            unknown_senders: Disposition::Drop,
            malformed: Disposition::Drop,
            require_driver_mode: false,
        }
    }
}

/// `[drain]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Longest wait for consults to end after SIGTERM, in seconds.
    pub timeout_secs: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self { timeout_secs: 300 }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter directive.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Parses and validates `text` (keys it leaves out take their defaults).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Schema {
                key: if key == "." { String::new() } else { key },
                reason: inner.message().to_owned(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file; `None` is the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::parse(DEFAULT_TOML),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.max_body_bytes < 4096 {
            return Err(invalid(
                "http.max_body_bytes",
                "must be at least 4096 (an SDP offer does not fit otherwise)",
            ));
        }
        if !self.admin.token.is_empty() && !self.admin.token_file.is_empty() {
            return Err(invalid(
                "admin.token",
                "give either admin.token or admin.token_file, not both",
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        if self.media.advertised_addresses.is_empty() {
            return Err(invalid(
                "media.advertised_addresses",
                "needs at least one address (participants could not reach the media ports)",
            ));
        }
        if let Some(a) = self
            .media
            .advertised_addresses
            .iter()
            .find(|a| a.is_unspecified() || a.is_multicast())
        {
            return Err(invalid(
                "media.advertised_addresses",
                format!("{a} is not a unicast address participants can reach"),
            ));
        }
        if self.media.port_min == 0 {
            return Err(invalid("media.port_min", "must not be 0"));
        }
        if self.media.port_max < self.media.port_min {
            return Err(invalid(
                "media.port_max",
                format!(
                    "{} is below media.port_min ({})",
                    self.media.port_max, self.media.port_min
                ),
            ));
        }
        let ports = usize::from(self.media.port_max - self.media.port_min) + 1;
        if self.media.workers > ports {
            return Err(invalid(
                "media.workers",
                format!(
                    "{} workers need a port each but the range has {ports}",
                    self.media.workers
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, name) in self.xdp.interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 with the terminating NUL.
            if name.is_empty()
                || name.len() > 15
                || name
                    .bytes()
                    .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
            {
                return Err(ConfigError::InvalidAt {
                    key: format!("xdp.interfaces[{i}]"),
                    reason: format!(
                        "{name:?} is not an interface name (1-15 bytes, no '/', ':' or spaces)"
                    ),
                });
            }
            if !seen.insert(name) {
                return Err(ConfigError::InvalidAt {
                    key: format!("xdp.interfaces[{i}]"),
                    reason: format!("{name:?} is listed twice"),
                });
            }
        }
        for (i, url) in self.cluster.etcd.iter().enumerate() {
            let rest = url.strip_prefix("http://").unwrap_or("");
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(ConfigError::InvalidAt {
                    key: format!("cluster.etcd[{i}]"),
                    reason: format!(
                        "{url:?} is not an etcd client URL like http://198.18.0.10:2379"
                    ),
                });
            }
        }
        if !self.cluster.etcd.is_empty() {
            let name = &self.cluster.name;
            if name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(invalid(
                    "cluster.name",
                    "with cluster.etcd set, give the appliance a unique name of 1-63 letters, digits, '-', '_' or '.'",
                ));
            }
            // The router finds a box's region through the map.
            if let Some(home) = self
                .regions
                .region
                .iter()
                .find(|r| r.name == self.regions.name)
            {
                if !home.appliances.iter().any(|a| a == name) {
                    return Err(invalid(
                        "cluster.name",
                        "with a region map, the appliance's name must be one of the appliances of its region (regions.name)",
                    ));
                }
            }
        }
        if self.cluster.consult_egress_bps == 0 {
            return Err(invalid("cluster.consult_egress_bps", "must be above 0"));
        }
        if !(2..=300).contains(&self.cluster.lease_ttl_secs) {
            return Err(invalid(
                "cluster.lease_ttl_secs",
                "must be between 2 and 300",
            ));
        }
        if !self.cluster.prefix.starts_with('/') || !self.cluster.prefix.ends_with('/') {
            return Err(invalid("cluster.prefix", "must start and end with '/'"));
        }
        if self.tokens.lifetime_secs == 0 || self.tokens.lifetime_secs > 7 * 24 * 3600 {
            return Err(invalid(
                "tokens.lifetime_secs",
                "must be between 1 and 604800 (one week)",
            ));
        }
        self.overload.validate()?;
        if self.audit.path.as_os_str().is_empty() {
            return Err(invalid("audit.path", "must not be empty"));
        }
        if self.audit.fsync == FsyncMode::Group && !(1..=1000).contains(&self.audit.group_commit_ms)
        {
            return Err(invalid(
                "audit.group_commit_ms",
                "must be between 1 and 1000 with fsync = \"group\"",
            ));
        }
        if self.audit.rotate_bytes < 4096 {
            return Err(invalid("audit.rotate_bytes", "must be at least 4096"));
        }
        self.regions.validate()?;
        if self.drain.timeout_secs == 0 {
            return Err(invalid("drain.timeout_secs", "must be at least 1"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("not a tracing filter: {e}")));
        }
        Ok(())
    }

    /// The keys that differ between `self` and `new` and that only a restart
    /// applies (for the SIGHUP warning).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.http != new.http {
            out.push("http");
        }
        if self.admin != new.admin {
            out.push("admin");
        }
        if self.media != new.media {
            out.push("media");
        }
        if self.xdp != new.xdp {
            out.push("xdp");
        }
        if self.cluster != new.cluster {
            out.push("cluster");
        }
        if self.tokens.signing_key_file != new.tokens.signing_key_file {
            out.push("tokens.signing_key_file");
        }
        let (mut a, mut b) = (self.overload.clone(), new.overload.clone());
        for o in [&mut a, &mut b] {
            o.enter_percent = [0; 4];
            o.exit_percent = [0; 4];
            o.enter_hold_secs = 0;
            o.exit_hold_secs = 0;
        }
        if a != b {
            out.push("overload (ceilings, sampling, retry_after_secs)");
        }
        if self.audit != new.audit {
            out.push("audit");
        }
        if self.regions != new.regions {
            out.push("regions");
        }
        if self.drain != new.drain {
            out.push("drain");
        }
        out
    }
}

impl OverloadConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.egress_ceiling_bps == 0 {
            return Err(invalid("overload.egress_ceiling_bps", "must not be 0"));
        }
        if !(self.cpu_ceiling_percent > 0.0 && self.cpu_ceiling_percent <= 100.0) {
            return Err(invalid(
                "overload.cpu_ceiling_percent",
                "must be above 0 and at most 100",
            ));
        }
        if self.enter_percent.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "overload.enter_percent",
                "thresholds must rise strictly from level 1 to level 4",
            ));
        }
        if self.exit_percent.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "overload.exit_percent",
                "thresholds must rise strictly from level 1 to level 4",
            ));
        }
        if let Some(level) = (0..4).find(|&i| self.exit_percent[i] >= self.enter_percent[i]) {
            return Err(invalid(
                "overload.exit_percent",
                format!(
                    "level {} exits at {} % but enters at {} %: exit must be below enter, \
                     or the level would flap",
                    level + 1,
                    self.exit_percent[level],
                    self.enter_percent[level]
                ),
            ));
        }
        if self.enter_percent[0] == 0 {
            return Err(invalid(
                "overload.enter_percent",
                "level 1 must enter above 0 %",
            ));
        }
        if self.sample_interval_secs == 0 {
            return Err(invalid(
                "overload.sample_interval_secs",
                "must be at least 1",
            ));
        }
        if self.retry_after_secs == 0 {
            return Err(invalid("overload.retry_after_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// The hold before rising a level.
    pub fn enter_hold(&self) -> Duration {
        Duration::from_secs(self.enter_hold_secs)
    }

    /// The hold before falling a level.
    pub fn exit_hold(&self) -> Duration {
        Duration::from_secs(self.exit_hold_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_matches_default_impl() {
        let parsed = Config::parse(DEFAULT_TOML).expect("embedded default parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_file_overrides_only_its_keys() {
        let c = Config::parse("[media]\nengine = \"tokio\"\nworkers = 2\n").unwrap();
        assert_eq!(c.media.engine, Engine::Tokio);
        assert_eq!(c.media.workers, 2);
        assert_eq!(c.media.port_min, 40000);
        assert_eq!(c.http, HttpConfig::default());
    }

    fn err(text: &str) -> ConfigError {
        Config::parse(text).expect_err("config must be rejected")
    }

    #[test]
    fn cluster_settings_are_checked() {
        let c =
            Config::parse("[cluster]\netcd = [\"http://198.18.0.10:2379\"]\nname = \"edge-1\"\n")
                .unwrap();
        assert_eq!(c.cluster.lease_ttl_secs, 5);
        for (text, key) in [
            (
                "[cluster]\netcd = [\"198.18.0.10:2379\"]\nname = \"a\"\n",
                "cluster.etcd[0]",
            ),
            (
                "[cluster]\netcd = [\"http://198.18.0.10:2379\"]\n",
                "cluster.name",
            ),
            (
                "[cluster]\netcd = [\"http://198.18.0.10:2379\"]\nname = \"a b\"\n",
                "cluster.name",
            ),
            ("[cluster]\nlease_ttl_secs = 1\n", "cluster.lease_ttl_secs"),
            ("[cluster]\nprefix = \"switchboard\"\n", "cluster.prefix"),
            ("[cluster]\nconsult_egress_bps = 0\n", "cluster.consult_egress_bps"),
            (
                "[regions]\nname = \"r\"\n[[regions.region]]\nname = \"r\"\njurisdictions = [\"eu\"]\n\
                 appliances = [\"b\"]\n[cluster]\netcd = [\"http://198.18.0.10:2379\"]\nname = \"a\"\n",
                "cluster.name",
            ),
        ] {
            assert_eq!(err(text).key(), key, "{text}");
        }
    }

    #[test]
    fn xdp_interfaces_are_checked_one_by_one() {
        let c = Config::parse(
            "[xdp]
interfaces = [\"eth0\", \"ens1f0\"]
unknown_senders = \"pass\"
",
        )
        .unwrap();
        assert_eq!(c.xdp.interfaces, ["eth0", "ens1f0"]);
        assert_eq!(c.xdp.unknown_senders, Disposition::Pass);
        assert_eq!(c.xdp.malformed, Disposition::Drop);
        for (text, key, reason) in [
            (
                "[xdp]\ninterfaces = [\"eth0\", \"\"]\n",
                "xdp.interfaces[1]",
                "not an interface",
            ),
            (
                "[xdp]\ninterfaces = [\"a-very-long-interface\"]\n",
                "xdp.interfaces[0]",
                "1-15 bytes",
            ),
            (
                "[xdp]\ninterfaces = [\"eth 0\"]\n",
                "xdp.interfaces[0]",
                "no '/'",
            ),
            (
                "[xdp]\ninterfaces = [\"eth0\", \"eth0\"]\n",
                "xdp.interfaces[1]",
                "twice",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.key(), key, "{text}");
            assert!(e.to_string().contains(reason), "{e}");
        }
        let e = err("[xdp]\nunknown_senders = \"ignore\"\n");
        assert_eq!(e.key(), "xdp.unknown_senders");
    }

    #[test]
    fn unknown_key_is_named_exactly() {
        let e = err("[media]\nengin = \"tokio\"\n");
        assert_eq!(e.key(), "media.engin");
        assert!(e.to_string().contains("unknown field `engin`"), "{e}");
    }

    #[test]
    fn unknown_table_is_rejected() {
        let e = err("[medai]\n");
        assert!(e.to_string().contains("unknown field `medai`"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err("[tokens]\nlifetime_secs = \"long\"\n");
        assert_eq!(e.key(), "tokens.lifetime_secs");
        let e = err("[http]\nlisten = \"not an address\"\n");
        assert_eq!(e.key(), "http.listen");
        let e = err("[media]\nengine = \"epoll\"\n");
        assert_eq!(e.key(), "media.engine");
        assert!(e.to_string().contains("io_uring"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key_and_reason() {
        let cases = [
            (
                "[media]\nport_min = 5000\nport_max = 4000\n",
                "media.port_max",
                "below",
            ),
            (
                "[media]\nadvertised_addresses = []\n",
                "media.advertised_addresses",
                "at least one",
            ),
            (
                "[media]\nadvertised_addresses = [\"0.0.0.0\"]\n",
                "media.advertised_addresses",
                "unicast",
            ),
            (
                "[media]\nport_min = 1\nport_max = 2\nworkers = 3\n",
                "media.workers",
                "port each",
            ),
            (
                "[tokens]\nlifetime_secs = 0\n",
                "tokens.lifetime_secs",
                "between",
            ),
            (
                "[overload]\nenter_percent = [90, 80, 100, 110]\n",
                "overload.enter_percent",
                "rise",
            ),
            (
                "[overload]\nexit_percent = [70, 96, 97, 98]\n",
                "overload.exit_percent",
                "level 2",
            ),
            (
                "[overload]\ncpu_ceiling_percent = 150.0\n",
                "overload.cpu_ceiling_percent",
                "100",
            ),
            (
                "[overload]\negress_ceiling_bps = 0\n",
                "overload.egress_ceiling_bps",
                "0",
            ),
            (
                "[audit]\nfsync = \"group\"\ngroup_commit_ms = 0\n",
                "audit.group_commit_ms",
                "between",
            ),
            ("[audit]\nrotate_bytes = 10\n", "audit.rotate_bytes", "4096"),
            ("[regions]\nname = \"eu west\"\n", "regions.name", "letters"),
            ("[admin]\ntoken = \"short\"\n", "admin.token", "16"),
            (
                "[admin]\ntoken = \"0123456789abcdefgh\"\ntoken_file = \"/x\"\n",
                "admin.token",
                "not both",
            ),
            ("[log]\nlevel = \"[[[\"\n", "log.level", "filter"),
            (
                "[drain]\ntimeout_secs = 0\n",
                "drain.timeout_secs",
                "at least",
            ),
        ];
        for (text, key, reason) in cases {
            let e = err(text);
            assert_eq!(e.key(), key, "{text}: {e}");
            assert!(e.to_string().contains(reason), "{text}: {e}");
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn restart_only_changes_ignore_live_keys() {
        let a = Config::default();
        let mut b = a.clone();
        b.log.level = "debug".into();
        b.tokens.lifetime_secs = 60;
        b.overload.enter_percent = [80, 90, 100, 110];
        b.overload.exit_hold_secs = 10;
        assert!(a.restart_only_changes(&b).is_empty());
        b.media.workers = 4;
        b.overload.egress_ceiling_bps = 1;
        assert_eq!(
            a.restart_only_changes(&b),
            vec!["media", "overload (ceilings, sampling, retry_after_secs)"]
        );
    }
}
