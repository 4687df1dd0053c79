//! Reading the host into snapshots of raw values: `/sys/class/net`, `/proc`,
//! the ETHTOOL ioctls and `ip -d link`. Nothing here interprets what it
//! reads beyond what is needed to decide what else to read; the report
//! module does the rest, so it can be tested on captured snapshots.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cpu::{read_numa_nodes, CpuProfile, NumaNode};
use crate::ethtool::{Channels, DriverInfo, Ethtool, FeatureState, RingParams};
use crate::HardwareError;

/// Raw facts about one network interface, as read. Serialisable, so a
/// reading can be captured on one machine and analysed on another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterfaceSnapshot {
    /// Interface name.
    pub name: String,
    /// Target of `/sys/class/net/IF/device/driver`; physical and virtio
    /// devices have one, software devices (veth, tun, lo) do not.
    pub driver_link: Option<String>,
    /// `ETHTOOL_GDRVINFO`; for software devices the driver is the link kind.
    pub driver_info: Option<DriverInfo>,
    /// `/sys/class/net/IF/…` attributes, trimmed.
    pub ifindex: Option<String>,
    /// `iflink`: the peer's ifindex for a veth, its own otherwise.
    pub iflink: Option<String>,
    /// `type`: ARP hardware type (1 Ethernet, 772 loopback).
    pub link_type: Option<String>,
    /// `flags`: IFF_* bits in hex.
    pub flags: Option<String>,
    /// `operstate`.
    pub operstate: Option<String>,
    /// `mtu`.
    pub mtu: Option<String>,
    /// `speed` in Mb/s; `-1` or unreadable when unknown.
    pub speed: Option<String>,
    /// `gro_flush_timeout` in nanoseconds.
    pub gro_flush_timeout: Option<String>,
    /// `napi_defer_hard_irqs`.
    pub napi_defer_hard_irqs: Option<String>,
    /// Entries of `/sys/class/net/IF/queues` (`rx-0`, `tx-0`, …).
    pub queues: Vec<String>,
    /// `device/numa_node`, or that of the parent device (virtio devices sit
    /// below the PCI function that has it).
    pub numa_node: Option<String>,
    /// `device/sriov_numvfs`.
    pub sriov_numvfs: Option<String>,
    /// `device/features` of a virtio device.
    pub virtio_features: Option<String>,
    /// `ETHTOOL_GFEATURES` with the feature names.
    pub features: Option<Vec<FeatureState>>,
    /// `ethtool -k IF` output, read when the ioctl was not answered.
    pub ethtool_k: Option<String>,
    /// `ETHTOOL_GRINGPARAM`.
    pub rings: Option<RingParams>,
    /// `ETHTOOL_GCHANNELS`.
    pub channels: Option<Channels>,
    /// `ip -d link show dev IF` output.
    pub ip_link: Option<String>,
}

/// Raw facts about the host; serialisable like [`InterfaceSnapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostSnapshot {
    /// From `/proc/cpuinfo`.
    pub cpu: CpuProfile,
    /// From `/sys/devices/system/node`.
    pub numa_nodes: Vec<NumaNode>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// Page size from the auxiliary vector (`AT_PAGESZ`).
    pub page_size: Option<u64>,
    /// The interfaces to report on, in ifindex order.
    pub interfaces: Vec<InterfaceSnapshot>,
    /// veth peers of reported interfaces that are not reported themselves.
    pub peers: Vec<InterfaceSnapshot>,
}

/// Where the readers look; the real paths unless a test points elsewhere.
pub(crate) struct Sources {
    pub class_net: PathBuf,
    pub numa: PathBuf,
    pub cpuinfo: PathBuf,
    pub osrelease: PathBuf,
    pub auxv: PathBuf,
    /// Ask the kernel through ioctls and run `ip`/`ethtool`; off when the
    /// paths point at a fabricated tree.
    pub live: bool,
}

impl Sources {
    pub(crate) fn host() -> Self {
        Self {
            class_net: "/sys/class/net".into(),
            numa: "/sys/devices/system/node".into(),
            cpuinfo: "/proc/cpuinfo".into(),
            osrelease: "/proc/sys/kernel/osrelease".into(),
            auxv: "/proc/self/auxv".into(),
            live: true,
        }
    }
}

/// Interface names the kernel could hold (`dev_valid_name`): this also keeps
/// a requested name from walking out of `/sys/class/net`.
pub(crate) fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(['/', ':', '\0'])
        && !name.contains(char::is_whitespace)
}

fn read_text(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_owned())
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The page size from an auxiliary vector (`/proc/self/auxv`): native-endian
/// (type, value) word pairs, `AT_PAGESZ` = 6, ended by `AT_NULL` = 0.
pub fn parse_auxv_page_size(auxv: &[u8]) -> Option<u64> {
    const AT_NULL: u64 = 0;
    const AT_PAGESZ: u64 = 6;
    let word = std::mem::size_of::<usize>();
    let read = |bytes: &[u8]| -> u64 {
        match word {
            8 => bytes.try_into().map_or(0, u64::from_ne_bytes),
            _ => bytes
                .try_into()
                .map_or(0, |b| u64::from(u32::from_ne_bytes(b))),
        }
    };
    for pair in auxv.chunks_exact(2 * word) {
        let (kind, value) = (read(&pair[..word]), read(&pair[word..]));
        match kind {
            AT_NULL => break,
            AT_PAGESZ if value > 0 => return Some(value),
            _ => {}
        }
    }
    None
}

fn read_interface(sources: &Sources, ethtool: Option<&Ethtool>, name: &str) -> InterfaceSnapshot {
    let dir = sources.class_net.join(name);
    let attr = |file: &str| read_text(&dir.join(file));
    let device = dir.join("device");
    let driver_link = std::fs::read_link(device.join("driver"))
        .ok()
        .map(|target| target.to_string_lossy().into_owned());
    let numa_node = read_text(&device.join("numa_node")).or_else(|| {
        let parent = std::fs::canonicalize(&device)
            .ok()?
            .parent()?
            .join("numa_node");
        read_text(&parent)
    });
    let is_virtio = driver_link
        .as_deref()
        .is_some_and(|l| l.ends_with("/virtio_net"));
    let mut queues: Vec<String> = std::fs::read_dir(dir.join("queues"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    queues.sort();

    let mut snapshot = InterfaceSnapshot {
        name: name.to_owned(),
        driver_link,
        ifindex: attr("ifindex"),
        iflink: attr("iflink"),
        link_type: attr("type"),
        flags: attr("flags"),
        operstate: attr("operstate"),
        mtu: attr("mtu"),
        speed: attr("speed"),
        gro_flush_timeout: attr("gro_flush_timeout"),
        napi_defer_hard_irqs: attr("napi_defer_hard_irqs"),
        queues,
        numa_node,
        sriov_numvfs: read_text(&device.join("sriov_numvfs")),
        virtio_features: is_virtio
            .then(|| read_text(&device.join("features")))
            .flatten(),
        ..InterfaceSnapshot::default()
    };
    if let Some(ethtool) = ethtool {
        snapshot.driver_info = ethtool.driver_info(name).ok();
        snapshot.features = ethtool.features(name).ok();
        snapshot.rings = ethtool.ring_params(name).ok();
        snapshot.channels = ethtool.channels(name).ok();
    }
    if sources.live {
        if snapshot.features.is_none() {
            snapshot.ethtool_k = run("ethtool", &["-k", name]);
        }
        snapshot.ip_link = run("ip", &["-d", "link", "show", "dev", name]);
    }
    snapshot
}

fn is_veth(snapshot: &InterfaceSnapshot) -> bool {
    snapshot
        .driver_info
        .as_ref()
        .is_some_and(|info| info.driver == "veth")
}

impl HostSnapshot {
    /// Reads the running host. `interfaces` limits the interfaces read;
    /// names that do not exist (or could not) are left out, for the report
    /// to flag.
    pub fn read(interfaces: Option<&[String]>) -> Result<Self, HardwareError> {
        Self::read_from(&Sources::host(), interfaces)
    }

    pub(crate) fn read_from(
        sources: &Sources,
        interfaces: Option<&[String]>,
    ) -> Result<Self, HardwareError> {
        let cpu = CpuProfile::detect_at(&sources.cpuinfo)?;
        let entries =
            std::fs::read_dir(&sources.class_net).map_err(|source| HardwareError::Read {
                path: sources.class_net.clone(),
                source,
            })?;
        // (ifindex, name) of every interface in this namespace.
        let mut all: Vec<(u32, String)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let ifindex = read_text(&entry.path().join("ifindex"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
                Some((ifindex, name))
            })
            .collect();
        all.sort();

        let wanted = |name: &str| match interfaces {
            Some(requested) => requested.iter().any(|r| r == name),
            None => true,
        };
        let ethtool = if sources.live {
            Ethtool::open().ok()
        } else {
            None
        };
        let targets: Vec<InterfaceSnapshot> = all
            .iter()
            .filter(|(_, name)| valid_interface_name(name) && wanted(name))
            .map(|(_, name)| read_interface(sources, ethtool.as_ref(), name))
            .collect();

        let mut peers: Vec<InterfaceSnapshot> = Vec::new();
        for snapshot in targets.iter().filter(|s| is_veth(s)) {
            let (Some(ifindex), Some(iflink)) =
                (snapshot.ifindex.as_deref(), snapshot.iflink.as_deref())
            else {
                continue;
            };
            let Ok(iflink_index) = iflink.parse::<u32>() else {
                continue;
            };
            if ifindex == iflink {
                continue;
            }
            let Some((_, peer_name)) = all.iter().find(|(index, _)| *index == iflink_index) else {
                continue;
            };
            let already = targets.iter().chain(&peers).any(|s| &s.name == peer_name);
            if already || !valid_interface_name(peer_name) {
                continue;
            }
            let peer = read_interface(sources, ethtool.as_ref(), peer_name);
            // The same ifindex can belong to an unrelated device when the
            // real peer lives in another namespace: require the link back.
            if peer.iflink.as_deref() == Some(ifindex) {
                peers.push(peer);
            }
        }

        Ok(Self {
            cpu,
            numa_nodes: read_numa_nodes(&sources.numa),
            kernel: read_text(&sources.osrelease),
            page_size: std::fs::read(&sources.auxv)
                .ok()
                .and_then(|auxv| parse_auxv_page_size(&auxv)),
            interfaces: targets,
            peers,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fabricated `/sys` + `/proc` tree in a fresh temporary directory,
    /// removed on drop.
    pub(crate) struct FakeHost {
        pub root: PathBuf,
    }

    impl FakeHost {
        pub(crate) fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!(
                "switchboard-hardware-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("class/net")).expect("temp dir");
            std::fs::create_dir_all(root.join("node")).expect("temp dir");
            Self { root }
        }

        pub(crate) fn write(&self, relative: &str, contents: impl AsRef<[u8]>) {
            let path = self.root.join(relative);
            std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
            std::fs::write(path, contents).expect("write");
        }

        pub(crate) fn sources(&self) -> Sources {
            Sources {
                class_net: self.root.join("class/net"),
                numa: self.root.join("node"),
                cpuinfo: self.root.join("cpuinfo"),
                osrelease: self.root.join("osrelease"),
                auxv: self.root.join("auxv"),
                live: false,
            }
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn reads_a_fabricated_tree_including_odd_content() {
        let host = FakeHost::new("read");
        host.write("cpuinfo", "processor : 0\nflags : aes\n");
        host.write("osrelease", "6.18.0\n");
        host.write("node/node0/cpulist", "0\n");
        host.write("node/node1/cpulist", "not a list\n");
        host.write("class/net/eth0/ifindex", "2\n");
        host.write("class/net/eth0/mtu", "9000\n");
        host.write("class/net/eth0/speed", "-1\n");
        host.write("class/net/eth0/operstate", b"\xff\xfeup\n");
        host.write("class/net/eth0/queues/rx-0/rps_cpus", "0");
        host.write("class/net/eth0/queues/tx-0/xps_cpus", "0");
        host.write("class/net/eth0/device/numa_node", "1\n");
        host.write("class/net/eth0/device/sriov_numvfs", "0\n");
        host.write("class/net/lo/ifindex", "1\n");
        // An entry with nothing in it at all.
        std::fs::create_dir_all(host.root.join("class/net/weird0")).expect("mkdir");

        let snapshot = HostSnapshot::read_from(&host.sources(), None).expect("reads");
        assert_eq!(snapshot.cpu.logical_cpus, 1);
        assert_eq!(snapshot.kernel.as_deref(), Some("6.18.0"));
        assert_eq!(snapshot.numa_nodes.len(), 1, "malformed node skipped");
        let names: Vec<&str> = snapshot
            .interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["lo", "eth0", "weird0"],
            "ifindex order, unknown index last"
        );
        let eth0 = &snapshot.interfaces[1];
        assert_eq!(eth0.mtu.as_deref(), Some("9000"));
        assert_eq!(eth0.queues, ["rx-0", "tx-0"]);
        assert_eq!(eth0.numa_node.as_deref(), Some("1"));
        assert!(eth0.operstate.as_deref().is_some_and(|s| s.ends_with("up")));
        assert_eq!(
            snapshot.interfaces[2],
            InterfaceSnapshot {
                name: "weird0".into(),
                ..InterfaceSnapshot::default()
            }
        );

        let only = HostSnapshot::read_from(&host.sources(), Some(&["eth0".into(), "../x".into()]))
            .expect("reads");
        assert_eq!(only.interfaces.len(), 1);
    }

    #[test]
    fn missing_class_net_is_an_error() {
        let host = FakeHost::new("missing");
        host.write("cpuinfo", "processor : 0\n");
        std::fs::remove_dir_all(host.root.join("class")).expect("rm");
        let err = HostSnapshot::read_from(&host.sources(), None).expect_err("no /sys/class/net");
        assert!(err.to_string().contains("class/net"), "{err}");
    }

    #[test]
    fn interface_names_are_validated() {
        for good in ["eth0", "ens1f0np0", "veth-a.10", "a"] {
            assert!(valid_interface_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "name:1",
            "sixteen-chars-xx",
            "a b",
        ] {
            assert!(!valid_interface_name(bad), "{bad}");
        }
    }

    #[test]
    fn page_size_from_auxv() {
        let mut auxv = Vec::new();
        for (kind, value) in [(33usize, 1234usize), (6, 4096), (0, 0)] {
            auxv.extend_from_slice(&kind.to_ne_bytes());
            auxv.extend_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(parse_auxv_page_size(&auxv), Some(4096));
        assert_eq!(parse_auxv_page_size(&auxv[..7]), None);
        assert_eq!(parse_auxv_page_size(&[]), None);
        let live = std::fs::read("/proc/self/auxv").expect("auxv");
        assert!(parse_auxv_page_size(&live).is_some_and(|p| p.is_power_of_two()));
    }
}
