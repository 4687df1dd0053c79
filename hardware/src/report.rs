//! The host report: interfaces and CPU interpreted against the driver
//! profiles, with findings that say what is wrong and the command that
//! fixes it.

use serde::Serialize;

use crate::cpu::{format_cpulist, CpuProfile, NumaNode};
use crate::ethtool::{parse_ethtool_k, Channels, Offload, Offloads, RingParams};
use crate::iplink::{parse_ip_link, AttachedXdp, XdpAttachMode};
use crate::profile::{profile_for, DriverProfile, Support};
use crate::snapshot::{valid_interface_name, HostSnapshot, InterfaceSnapshot};
use crate::virtio::VirtioNetFeatures;
use crate::HardwareError;

/// Name of switchboard's XDP program as the kernel keeps it (15 characters),
/// to tell its own attachment from a foreign one.
pub const SWITCHBOARD_XDP_PROGRAM: &str = "switchboard_xdp";

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
/// Receive ring size that absorbs keyframe bursts at 10/25 GbE.
const RECOMMENDED_RING: u32 = 1024;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Tuning that would help.
    Info,
    /// The fast path runs, slower or less reliably than it could.
    Warn,
    /// The fast path cannot run on the interface (or at all).
    Fatal,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Fatal => "FATAL",
        })
    }
}

/// One thing wrong with the host, and its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The interface it concerns; `None` for the host as a whole.
    pub interface: Option<String>,
    /// What is wrong.
    pub problem: String,
    /// How to fix it, as a command where one exists.
    pub fix: String,
}

/// How switchboard's XDP program can attach to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Driver mode is expected to attach.
    Native,
    /// The driver is not in the profile table: the loader tries driver
    /// mode and falls back to generic.
    TryNative,
    /// Only generic (skb) mode: works, several times slower.
    Generic,
    /// XDP cannot run here.
    Unavailable,
}

impl XdpMode {
    /// The program can attach in some mode.
    pub fn can_run(self) -> bool {
        self != Self::Unavailable
    }
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::TryNative => "native?",
            Self::Generic => "generic",
            Self::Unavailable => "unavailable",
        })
    }
}

/// Everything known about one interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterfaceReport {
    /// Interface name.
    pub name: String,
    /// Kernel driver.
    pub driver: Option<String>,
    /// Driver version.
    pub driver_version: Option<String>,
    /// Firmware version.
    pub firmware: Option<String>,
    /// Bus address (PCI function).
    pub bus_info: Option<String>,
    /// `operstate`: `up`, `down`, `unknown` (loopback, tun), …
    pub operstate: Option<String>,
    /// Administratively up (`IFF_UP`).
    pub admin_up: Option<bool>,
    /// The loopback device.
    pub loopback: bool,
    /// ARP hardware type (`/sys/class/net/IF/type`); 1 is Ethernet.
    pub link_type: Option<u32>,
    /// Link speed; `None` when the device does not report one.
    pub speed_mbps: Option<u32>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Receive queues in use.
    pub rx_queues: usize,
    /// Transmit queues in use.
    pub tx_queues: usize,
    /// Channel counts and limits (`ethtool -l`).
    pub channels: Option<Channels>,
    /// Ring sizes and limits (`ethtool -g`).
    pub rings: Option<RingParams>,
    /// NUMA node of the NIC; `None` when the platform does not say.
    pub numa_node: Option<u32>,
    /// CPUs on that node.
    pub numa_cpus: Vec<u32>,
    /// The offloads that matter for XDP.
    pub offloads: Offloads,
    /// `napi_defer_hard_irqs`.
    pub napi_defer_hard_irqs: Option<u32>,
    /// `gro_flush_timeout`.
    pub gro_flush_timeout_ns: Option<u64>,
    /// The veth peer, when it is in this network namespace.
    pub peer: Option<String>,
    /// Negotiated virtio-net features, for virtio_net.
    pub virtio: Option<VirtioNetFeatures>,
    /// An XDP program attached now.
    pub attached_xdp: Option<AttachedXdp>,
    /// The driver's profile (the fallback one when unknown).
    pub profile: &'static DriverProfile,
    /// How switchboard's program can attach.
    pub xdp_mode: XdpMode,
    /// Why that mode.
    pub xdp_reason: String,
    /// Largest MTU for native single-buffer XDP on this interface.
    pub xdp_mtu_limit: Option<u32>,
    /// AF_XDP zero-copy, resolved for this device and mode.
    pub af_xdp_zero_copy: Support,
    /// Tuning advice for the driver, with this interface's name.
    pub tuning: Vec<String>,
}

impl InterfaceReport {
    /// Link rate in bits per second, for the capacity model.
    pub fn link_bps(&self) -> Option<u64> {
        self.speed_mbps.map(|mbps| u64::from(mbps) * 1_000_000)
    }
}

/// What the running host offers the media paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    /// Kernel release.
    pub kernel: Option<String>,
    /// Page size in bytes.
    pub page_size: Option<u64>,
    /// CPU features.
    pub cpu: CpuProfile,
    /// NUMA nodes and their CPUs.
    pub numa_nodes: Vec<NumaNode>,
    /// The interfaces asked for; `None` means all of them.
    pub requested: Option<Vec<String>>,
    /// The interfaces reported on.
    pub interfaces: Vec<InterfaceReport>,
    /// Requested interfaces that do not exist.
    pub missing: Vec<String>,
    /// Most severe first.
    pub findings: Vec<Finding>,
    /// Same as [`HostReport::xdp_can_run`], for JSON readers.
    pub xdp_can_run: bool,
}

impl HostReport {
    /// Detects the running host. `interfaces` limits the report to those
    /// names (each must exist); `None` reports every interface.
    pub fn detect(interfaces: Option<&[String]>) -> Result<HostReport, HardwareError> {
        let snapshot = HostSnapshot::read(interfaces)?;
        Ok(Self::from_snapshot(&snapshot, interfaces))
    }

    /// Interprets a snapshot; `requested` as for [`HostReport::detect`].
    pub fn from_snapshot(snapshot: &HostSnapshot, requested: Option<&[String]>) -> HostReport {
        let mut findings = Vec::new();
        let known: Vec<&InterfaceSnapshot> =
            snapshot.interfaces.iter().chain(&snapshot.peers).collect();
        let interfaces: Vec<InterfaceReport> = snapshot
            .interfaces
            .iter()
            .filter(|s| requested.is_none_or(|r| r.contains(&s.name)))
            .map(|s| analyse_interface(s, snapshot, &known, requested.is_some(), &mut findings))
            .collect();

        let mut missing: Vec<String> = Vec::new();
        for name in requested.unwrap_or_default() {
            if interfaces.iter().any(|i| &i.name == name) || missing.contains(name) {
                continue;
            }
            missing.push(name.clone());
            let problem = if valid_interface_name(name) {
                format!("interface {name} does not exist in this network namespace")
            } else {
                format!("{name:?} is not a valid interface name")
            };
            findings.push(Finding {
                severity: Severity::Fatal,
                interface: Some(name.clone()),
                problem,
                fix: "list the interfaces with `ip -br link` and pass one of them with --interface"
                    .into(),
            });
        }
        if requested.is_none() && !interfaces.iter().any(|i| !i.loopback) {
            findings.push(Finding {
                severity: Severity::Fatal,
                interface: None,
                problem: "no network interface besides loopback: nothing to forward media on".into(),
                fix: "bring up the media NIC (`ip -br link`), or run in the network namespace that holds it".into(),
            });
        }
        cpu_findings(&snapshot.cpu, &mut findings);
        // Stable: within a severity, the order the checks ran in.
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));

        let mut report = HostReport {
            kernel: snapshot.kernel.clone(),
            page_size: snapshot.page_size,
            cpu: snapshot.cpu.clone(),
            numa_nodes: snapshot.numa_nodes.clone(),
            requested: requested.map(<[String]>::to_vec),
            interfaces,
            missing,
            findings,
            xdp_can_run: false,
        };
        report.xdp_can_run = report.xdp_can_run();
        report
    }

    /// Whether switchboard's XDP program can attach at all (native or
    /// generic mode). With requested interfaces: every one of them must
    /// exist and take it. Without: some interface other than loopback must.
    /// A link that is down is only a warning.
    pub fn xdp_can_run(&self) -> bool {
        match &self.requested {
            Some(names) => {
                !names.is_empty()
                    && self.missing.is_empty()
                    && names
                        .iter()
                        .all(|n| self.interface(n).is_some_and(|i| i.xdp_mode.can_run()))
            }
            None => self
                .interfaces
                .iter()
                .any(|i| !i.loopback && i.xdp_mode.can_run()),
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, HardwareError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The report of one interface.
    pub fn interface(&self, name: &str) -> Option<&InterfaceReport> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The findings at `severity`.
    pub fn findings_at(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}

fn parse<T: std::str::FromStr>(value: &Option<String>) -> Option<T> {
    value.as_deref()?.trim().parse().ok()
}

fn parse_hex(value: &Option<String>) -> Option<u32> {
    let text = value.as_deref()?.trim();
    u32::from_str_radix(text.strip_prefix("0x").unwrap_or(text), 16).ok()
}

fn count_queues(queues: &[String], prefix: &str) -> usize {
    queues
        .iter()
        .filter(|q| {
            q.strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

fn driver_of(snapshot: &InterfaceSnapshot) -> Option<String> {
    let from_link = snapshot
        .driver_link
        .as_deref()
        .and_then(|link| link.rsplit('/').next())
        .filter(|d| !d.is_empty());
    let from_ioctl = snapshot
        .driver_info
        .as_ref()
        .map(|info| info.driver.as_str())
        .filter(|d| !d.is_empty());
    from_link.or(from_ioctl).map(str::to_owned)
}

fn offloads_of(snapshot: &InterfaceSnapshot) -> Offloads {
    match (&snapshot.features, &snapshot.ethtool_k) {
        (Some(features), _) => Offloads::from_features(features),
        (None, Some(text)) => Offloads::from_features(&parse_ethtool_k(text)),
        (None, None) => Offloads::default(),
    }
}

fn is_on(offload: Option<Offload>) -> bool {
    offload.is_some_and(|o| o.on)
}

/// The veth peer of `snapshot` among the read interfaces: the one whose
/// ifindex is our iflink and whose iflink is our ifindex.
fn find_peer<'a>(
    snapshot: &InterfaceSnapshot,
    known: &[&'a InterfaceSnapshot],
) -> Option<&'a InterfaceSnapshot> {
    let ifindex = snapshot.ifindex.as_deref()?;
    let iflink = snapshot.iflink.as_deref()?;
    if ifindex == iflink {
        return None;
    }
    known
        .iter()
        .find(|s| s.ifindex.as_deref() == Some(iflink) && s.iflink.as_deref() == Some(ifindex))
        .copied()
}

struct Emit<'a> {
    interface: &'a str,
    findings: &'a mut Vec<Finding>,
}

impl Emit<'_> {
    fn push(&mut self, severity: Severity, problem: String, fix: String) {
        self.findings.push(Finding {
            severity,
            interface: Some(self.interface.to_owned()),
            problem,
            fix,
        });
    }
}

fn analyse_interface(
    snapshot: &InterfaceSnapshot,
    host: &HostSnapshot,
    known: &[&InterfaceSnapshot],
    requested: bool,
    findings: &mut Vec<Finding>,
) -> InterfaceReport {
    let name = snapshot.name.as_str();
    let mut emit = Emit {
        interface: name,
        findings,
    };
    let driver = driver_of(snapshot);
    let flags = parse_hex(&snapshot.flags);
    let link_type: Option<u32> = parse(&snapshot.link_type);
    let loopback =
        link_type == Some(ARPHRD_LOOPBACK) || flags.is_some_and(|f| f & IFF_LOOPBACK != 0);
    let non_ethernet = link_type.filter(|&t| t != ARPHRD_ETHER && t != ARPHRD_LOOPBACK);
    let profile = if loopback {
        profile_for("loopback")
    } else {
        profile_for(driver.as_deref().unwrap_or(""))
    };
    let driver_name = driver.as_deref().unwrap_or("unknown driver");
    let mtu: Option<u32> = parse(&snapshot.mtu);
    let speed_mbps = parse::<i64>(&snapshot.speed)
        .filter(|&s| s > 0)
        .and_then(|s| u32::try_from(s).ok());
    let numa_node = parse::<i64>(&snapshot.numa_node).and_then(|n| u32::try_from(n).ok());
    let numa_cpus = numa_node
        .and_then(|n| host.numa_nodes.iter().find(|node| node.id == n))
        .map(|node| node.cpus.clone())
        .unwrap_or_default();
    let offloads = offloads_of(snapshot);
    let virtio = (driver.as_deref() == Some("virtio_net"))
        .then(|| {
            snapshot
                .virtio_features
                .as_deref()
                .and_then(VirtioNetFeatures::parse)
        })
        .flatten();
    let attached = snapshot.ip_link.as_deref().and_then(parse_ip_link);
    let foreign = attached
        .as_ref()
        .filter(|a| a.name.as_deref() != Some(SWITCHBOARD_XDP_PROGRAM));
    let peer = (driver.as_deref() == Some("veth"))
        .then(|| find_peer(snapshot, known))
        .flatten();
    let sriov_vfs: Option<u32> = parse(&snapshot.sriov_numvfs);
    let cpus = host.cpu.logical_cpus;
    // The table's limits hold for 4 KiB pages; x86 always has them.
    let xdp_mtu_limit = profile
        .max_xdp_mtu
        .filter(|_| host.page_size.is_none_or(|p| p == 4096));

    // Why native XDP will be refused, if it will.
    let mut blockers: Vec<String> = Vec::new();
    if let (Some(mtu), Some(limit)) = (mtu, xdp_mtu_limit) {
        if mtu > limit {
            blockers.push(format!(
                "MTU {mtu} is above the single-buffer XDP limit of {limit}"
            ));
        }
    }
    if profile.offloads_block_native {
        if is_on(offloads.lro) {
            blockers.push("LRO is on".into());
        }
        if is_on(offloads.gro_hw) {
            blockers.push("hardware GRO is on".into());
        }
    }
    if virtio
        .as_ref()
        .is_some_and(VirtioNetFeatures::blocks_native_xdp)
    {
        blockers.push("the host implements guest offloads the driver cannot switch off".into());
    }
    if driver.as_deref() == Some("ixgbe") {
        if sriov_vfs.is_some_and(|n| n > 0) {
            blockers.push("SR-IOV is enabled".into());
        }
        if cpus > 128 {
            blockers.push(format!("{cpus} CPUs exceed ixgbe's 128"));
        }
    }

    let (xdp_mode, xdp_reason) = if let Some(t) = non_ethernet {
        (
            XdpMode::Unavailable,
            format!("link type {t} carries no Ethernet header, and switchboard's XDP program parses Ethernet frames"),
        )
    } else if let Some(a) = foreign {
        (
            XdpMode::Unavailable,
            format!(
                "another XDP program ({}) is attached in {} mode",
                a.name.as_deref().unwrap_or("unnamed"),
                a.mode
            ),
        )
    } else if loopback {
        (XdpMode::Generic, "loopback has no native XDP".into())
    } else {
        match profile.native_xdp {
            Support::No => (XdpMode::Generic, format!("{driver_name} has no native XDP")),
            _ if !blockers.is_empty() => (
                XdpMode::Generic,
                format!("native XDP refused: {}", blockers.join("; ")),
            ),
            Support::Unknown => (
                XdpMode::TryNative,
                format!("{driver_name} is not in the profile table; the loader tries driver mode, then generic"),
            ),
            Support::Yes | Support::Conditional => {
                (XdpMode::Native, format!("{driver_name} runs XDP in driver mode"))
            }
        }
    };
    let af_xdp_zero_copy = match (xdp_mode, profile.af_xdp_zero_copy) {
        (XdpMode::Generic | XdpMode::Unavailable, _) => Support::No,
        (_, Support::Conditional) => match &virtio {
            Some(v) if v.ring_reset => Support::Yes,
            Some(_) => Support::No,
            None => Support::Conditional,
        },
        (_, support) => support,
    };

    // Findings: what stops the program.
    if let Some(t) = non_ethernet {
        emit.push(
            Severity::Fatal,
            format!("{name} has link type {t}, without Ethernet headers; switchboard's XDP program parses Ethernet frames"),
            "run the fast path on an Ethernet interface: the physical NIC, or a TAP rather than a TUN device".into(),
        );
    } else if let Some(a) = foreign {
        let id = a.id.map_or_else(String::new, |id| format!(" (id {id})"));
        emit.push(
            Severity::Fatal,
            format!(
                "XDP program {}{id} is already attached in {} mode; switchboard cannot attach beside it",
                a.name.as_deref().unwrap_or("unnamed"),
                a.mode
            ),
            detach_command(name, a),
        );
    }

    let admin_up = flags.map(|f| f & IFF_UP != 0);
    if !loopback {
        // An interface nobody asked about may well be down on purpose.
        let severity = if requested {
            Severity::Warn
        } else {
            Severity::Info
        };
        link_state_findings(&mut emit, severity, snapshot, admin_up, peer);
    }

    if xdp_mode.can_run() && !loopback {
        if let (Some(mtu), Some(limit)) = (mtu, xdp_mtu_limit) {
            if mtu > limit {
                let frags = if profile.multi_buffer == Support::Yes {
                    " (the driver supports multi-buffer XDP, but switchboard's program is single-buffer)"
                } else {
                    ""
                };
                let typical = if profile.is_fallback() {
                    "the usual"
                } else {
                    driver_name
                };
                emit.push(
                    Severity::Warn,
                    format!(
                        "MTU {mtu} is above {typical} single-buffer XDP limit of {limit}: native attach is refused and the fast path falls back to generic XDP{frags}"
                    ),
                    format!("ip link set dev {name} mtu 1500"),
                );
            }
        }
        offload_findings(&mut emit, profile, driver_name, &offloads, virtio.is_some());
        if let Some(v) = &virtio {
            virtio_findings(&mut emit, v, snapshot, cpus);
        }
        if driver.as_deref() == Some("ixgbe") {
            ixgbe_findings(&mut emit, sriov_vfs, cpus);
        }
        if driver.as_deref() == Some("veth") {
            veth_findings(&mut emit, peer);
        }
        if profile.is_fallback() {
            emit.push(
                Severity::Info,
                format!("{driver_name} is not in the profile table: its native XDP support is unknown"),
                format!("after starting switchboard, `ip -d link show dev {name}` shows the mode that attached (`xdp` native, `xdpgeneric` generic)"),
            );
        }
    }
    if loopback && requested {
        emit.push(
            Severity::Info,
            format!("{name} is the loopback device: it carries no external media and runs XDP in generic mode only"),
            "pass the media NIC with --interface".into(),
        );
    }

    let rx_queues = count_queues(&snapshot.queues, "rx-");
    let napi_defer_hard_irqs: Option<u32> = parse(&snapshot.napi_defer_hard_irqs);
    let gro_flush_timeout_ns: Option<u64> = parse(&snapshot.gro_flush_timeout);
    let deferral_off = napi_defer_hard_irqs == Some(0) && gro_flush_timeout_ns == Some(0);
    if deferral_off && (profile.physical || virtio.is_some()) {
        emit.push(
            Severity::Info,
            "interrupt deferral is off: at high packet rates every receive batch costs an interrupt, and busy polling has nothing to defer to".into(),
            format!("echo 2 > /sys/class/net/{name}/napi_defer_hard_irqs; echo 200000 > /sys/class/net/{name}/gro_flush_timeout (and SO_BUSY_POLL on the worker sockets)"),
        );
    }
    if profile.physical {
        physical_findings(
            &mut emit,
            host,
            rx_queues,
            snapshot.channels,
            snapshot.rings,
            numa_node,
            &numa_cpus,
            speed_mbps,
        );
    }

    let info = snapshot.driver_info.as_ref();
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    InterfaceReport {
        name: name.to_owned(),
        driver,
        driver_version: info.and_then(|i| non_empty(&i.version)),
        firmware: info.and_then(|i| non_empty(&i.firmware)),
        bus_info: info.and_then(|i| non_empty(&i.bus_info)),
        operstate: snapshot.operstate.clone(),
        admin_up,
        loopback,
        link_type,
        speed_mbps,
        mtu,
        rx_queues,
        tx_queues: count_queues(&snapshot.queues, "tx-"),
        channels: snapshot.channels,
        rings: snapshot.rings,
        numa_node,
        numa_cpus,
        offloads,
        napi_defer_hard_irqs,
        gro_flush_timeout_ns,
        peer: peer.map(|p| p.name.clone()),
        virtio,
        attached_xdp: attached,
        profile,
        xdp_mode,
        xdp_reason,
        xdp_mtu_limit,
        af_xdp_zero_copy,
        tuning: profile.tuning_for(name),
    }
}

fn detach_command(name: &str, attached: &AttachedXdp) -> String {
    let check = format!("check what loaded it (`ip -d link show dev {name}`, `bpftool net`), then");
    match attached.mode {
        XdpAttachMode::Multi | XdpAttachMode::Unknown => {
            format!("{check} ip link set dev {name} xdpgeneric off; ip link set dev {name} xdpdrv off; ip link set dev {name} xdpoffload off")
        }
        mode => format!(
            "{check} ip link set dev {name} {} off",
            mode.detach_keyword()
        ),
    }
}

fn link_state_findings(
    emit: &mut Emit<'_>,
    severity: Severity,
    snapshot: &InterfaceSnapshot,
    admin_up: Option<bool>,
    peer: Option<&InterfaceSnapshot>,
) {
    let name = emit.interface;
    if admin_up == Some(false) {
        emit.push(
            severity,
            format!("{name} is administratively down"),
            format!("ip link set dev {name} up"),
        );
        return;
    }
    let state = snapshot.operstate.as_deref().unwrap_or("");
    if matches!(state, "down" | "lowerlayerdown" | "notpresent") {
        let fix = match peer {
            Some(p) => format!("ip link set dev {} up", p.name),
            None => format!("check the cable, transceiver and switch port; `ip link show dev {name}` must show LOWER_UP"),
        };
        emit.push(
            severity,
            format!("{name} is up but has no carrier (operstate {state})"),
            fix,
        );
    }
}

fn offload_findings(
    emit: &mut Emit<'_>,
    profile: &DriverProfile,
    driver: &str,
    offloads: &Offloads,
    virtio: bool,
) {
    let name = emit.interface;
    let checks = [
        ("LRO", offloads.lro, "lro"),
        // virtio's hardware GRO is the host's guest offloads: see virtio_findings.
        (
            "hardware GRO",
            if virtio { None } else { offloads.gro_hw },
            "rx-gro-hw",
        ),
    ];
    for (what, offload, keyword) in checks {
        let Some(offload) = offload.filter(|o| o.on) else {
            continue;
        };
        if offload.fixed {
            emit.push(
                Severity::Warn,
                format!("{what} is on and {driver} does not let it be switched off; packets are merged before XDP sees them"),
                "update the NIC driver and firmware, or run the fast path on another port".into(),
            );
        } else if profile.offloads_block_native {
            emit.push(
                Severity::Warn,
                format!("{what} is on: {driver} refuses native XDP while it is, so the fast path falls back to generic XDP"),
                format!("ethtool -K {name} {keyword} off"),
            );
        } else {
            emit.push(
                Severity::Info,
                format!("{what} is on: it is switched off while XDP runs and back on after; switching it off keeps the packet path the same either way"),
                format!("ethtool -K {name} {keyword} off"),
            );
        }
    }
    if offloads.rx_vlan.is_some_and(|o| o.on && !o.fixed) {
        emit.push(
            Severity::Info,
            "rx VLAN offload is on: the device strips 802.1Q tags before XDP, so the program sees untagged frames and XDP_TX sends them untagged".into(),
            format!("if media arrives VLAN-tagged on this port: ethtool -K {name} rxvlan off"),
        );
    }
}

fn virtio_findings(
    emit: &mut Emit<'_>,
    virtio: &VirtioNetFeatures,
    snapshot: &InterfaceSnapshot,
    cpus: usize,
) {
    let name = emit.interface;
    if virtio.blocks_native_xdp() {
        let offs = virtio.guest_offloads.join(", ");
        let off_props: Vec<String> = virtio
            .guest_offloads
            .iter()
            .map(|o| format!("{o}=off"))
            .collect();
        emit.push(
            Severity::Warn,
            format!("the virtio device implements guest offloads ({offs}) without VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, so virtio_net cannot switch them off and refuses native XDP; the fast path runs in generic mode"),
            format!(
                "on the hypervisor: offer guest offload control (QEMU: -device virtio-net-pci,ctrl_vq=on,ctrl_guest_offloads=on) or switch the offloads off (QEMU: -device virtio-net-pci,{})",
                off_props.join(",")
            ),
        );
    }
    let current = snapshot
        .channels
        .map(|c| c.combined)
        .filter(|&c| c > 0)
        .map_or_else(|| count_queues(&snapshot.queues, "rx-"), |c| c as usize);
    let max = match snapshot.channels.map(|c| c.max_combined).filter(|&m| m > 0) {
        Some(m) => Some(m as usize),
        None if !virtio.multiqueue => Some(1),
        None => None,
    };
    let needed = current.max(1) + cpus;
    if let Some(max) = max.filter(|&m| m < needed) {
        let pairs = 2 * cpus;
        emit.push(
            Severity::Warn,
            format!("virtio_net has {max} queue pair(s); XDP_TX and XDP_REDIRECT need {needed} ({} in use + one per CPU) to run lockless, and share a slower locked TX path otherwise", current.max(1)),
            format!(
                "give the VM's NIC {pairs} queue pairs on the hypervisor (QEMU: -netdev tap,queues={pairs},vhost=on -device virtio-net-pci,mq=on,vectors={}), then: ethtool -L {name} combined {cpus}",
                2 * pairs + 2
            ),
        );
    }
}

fn ixgbe_findings(emit: &mut Emit<'_>, sriov_vfs: Option<u32>, cpus: usize) {
    let name = emit.interface;
    if let Some(vfs) = sriov_vfs.filter(|&n| n > 0) {
        emit.push(
            Severity::Warn,
            format!("SR-IOV is enabled ({vfs} VFs): ixgbe refuses native XDP on the port"),
            format!("echo 0 > /sys/class/net/{name}/device/sriov_numvfs"),
        );
    }
    if cpus > 128 {
        emit.push(
            Severity::Warn,
            format!("{cpus} CPUs: ixgbe has at most 64 XDP TX queues and refuses native XDP above 128 CPUs"),
            "limit the CPUs the kernel brings up (boot with nr_cpus=128) or run the fast path on an i40e, ice or mlx5 port".into(),
        );
    } else if cpus > 64 {
        emit.push(
            Severity::Info,
            format!("{cpus} CPUs: ixgbe has 64 XDP TX queues, so XDP_TX takes a lock shared by several CPUs"),
            "run the io_uring workers and IRQs on at most 64 CPUs, or use an i40e, ice or mlx5 port".into(),
        );
    }
}

fn veth_findings(emit: &mut Emit<'_>, peer: Option<&InterfaceSnapshot>) {
    let name = emit.interface;
    let Some(peer) = peer else {
        emit.push(
            Severity::Info,
            format!("the peer of {name} is in another network namespace: XDP_TX and XDP_REDIRECT out of {name} deliver only if that peer has an XDP program in driver mode or GRO on, and it must not leave UDP checksums partial"),
            "in the peer's namespace: ethtool -K PEER gro on tx off".into(),
        );
        return;
    };
    let peer_offloads = offloads_of(peer);
    let peer_native = peer
        .ip_link
        .as_deref()
        .and_then(parse_ip_link)
        .is_some_and(|a| a.mode == XdpAttachMode::Driver);
    if !peer_native && !is_on(peer_offloads.gro) {
        emit.push(
            Severity::Warn,
            format!("frames XDP sends out of {name} (XDP_TX, XDP_REDIRECT) are dropped: its peer {} has neither an XDP program in driver mode nor GRO on", peer.name),
            format!("ethtool -K {} gro on   (or attach an XDP program to {} in driver mode; an XDP_PASS one is enough)", peer.name, peer.name),
        );
    }
    if is_on(peer_offloads.tx_checksum) {
        emit.push(
            Severity::Info,
            format!("peer {} offloads transmit checksums: UDP it sends reaches {name} with partial checksums, and a frame XDP rewrites then fails the receiver's check", peer.name),
            format!("ethtool -K {} tx off", peer.name),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn physical_findings(
    emit: &mut Emit<'_>,
    host: &HostSnapshot,
    rx_queues: usize,
    channels: Option<Channels>,
    rings: Option<RingParams>,
    numa_node: Option<u32>,
    numa_cpus: &[u32],
    speed_mbps: Option<u32>,
) {
    let name = emit.interface;
    let node_cores = if numa_cpus.is_empty() {
        host.cpu.logical_cpus
    } else {
        numa_cpus.len()
    };
    let queues = channels
        .map(|c| (c.combined + c.rx) as usize)
        .filter(|&q| q > 0)
        .unwrap_or(rx_queues);
    let max = channels
        .map(|c| c.max_combined as usize)
        .filter(|&m| m > 0)
        .unwrap_or(usize::MAX);
    let target = node_cores.min(max);
    if queues > 0 && queues < target {
        let node = numa_node.map_or_else(|| "this host".to_owned(), |n| format!("NUMA node {n}"));
        emit.push(
            Severity::Info,
            format!("{queues} receive queue(s) for {node_cores} CPUs on {node}: RSS spreads receive work over fewer cores than there are workers"),
            format!("ethtool -L {name} combined {target}"),
        );
    }
    if let (Some(node), true) = (numa_node, host.numa_nodes.len() > 1) {
        if !numa_cpus.is_empty() {
            let list = format_cpulist(numa_cpus);
            emit.push(
                Severity::Info,
                format!("{name} is attached to NUMA node {node} (CPUs {list}); work on the other node crosses the interconnect for every packet"),
                format!("run the io_uring workers on CPUs {list} and pin {name}'s IRQs there: for each of its IRQs in /proc/interrupts, echo {list} > /proc/irq/N/smp_affinity_list (with irqbalance stopped)"),
            );
        }
    }
    if let Some(r) = rings.filter(|r| r.rx_max > 0) {
        let rx_target = RECOMMENDED_RING.min(r.rx_max);
        let tx_target = if r.tx_max > 0 {
            RECOMMENDED_RING.min(r.tx_max)
        } else {
            r.tx
        };
        if r.rx < rx_target {
            emit.push(
                Severity::Info,
                format!("receive ring of {} descriptors (maximum {}): keyframe bursts overflow it before the workers drain it", r.rx, r.rx_max),
                format!("ethtool -G {name} rx {rx_target} tx {tx_target}"),
            );
        }
    }
    if let Some(speed) = speed_mbps.filter(|&s| s < 10_000) {
        emit.push(
            Severity::Info,
            format!("link at {speed} Mb/s: the appliance is sized for 10/25 GbE and the capacity model scales with the link rate"),
            format!("use a 10 or 25 GbE port (check `ethtool {name}` for the negotiated rate)"),
        );
    }
}

fn cpu_findings(cpu: &CpuProfile, findings: &mut Vec<Finding>) {
    let mut push = |severity, problem: &str, fix: &str| {
        findings.push(Finding {
            severity,
            interface: None,
            problem: problem.to_owned(),
            fix: fix.to_owned(),
        });
    };
    if cpu.logical_cpus == 0 {
        push(
            Severity::Warn,
            "/proc/cpuinfo lists no processors; CPU features are unknown",
            "check that /proc is mounted and readable",
        );
        return;
    }
    if !cpu.aes_ni {
        push(
            Severity::Warn,
            "no AES-NI: SRTP runs in software, expect several times fewer consults per core",
            "run on a CPU with AES-NI; in a VM, expose the host CPU model or the `aes` flag (QEMU: -cpu host)",
        );
    } else if !cpu.pclmulqdq {
        push(
            Severity::Info,
            "no PCLMULQDQ: AES-GCM authentication runs in software",
            "prefer AES_CM_128_HMAC_SHA1_80 for relay legs; in a VM, expose the `pclmulqdq` flag (QEMU: -cpu host)",
        );
    }
    if !cpu.sha_ni {
        push(
            Severity::Info,
            "no SHA-NI: HMAC-SHA1 (the AES-CM SRTP profiles) costs more than AES-GCM here",
            "prefer AEAD_AES_128_GCM for relay legs",
        );
    }
}

#[cfg(test)]
mod tests;
