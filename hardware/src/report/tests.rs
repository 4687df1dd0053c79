use super::*;
use crate::ethtool::tests::{IXGBE_ETHTOOL_K, MLX5_ETHTOOL_K, VIRTIO_ETHTOOL_K};
use crate::ethtool::DriverInfo;
use crate::render::render_text;

/// `hw_report --snapshot va` inside a network namespace holding a veth pair
/// va/vb without XDP programs (kernel 6.18, 2 vCPUs).
const VETH_PAIR: &str = include_str!("../../fixtures/veth_pair_snapshot.json");
/// `hw_report --snapshot eth0` on a Firecracker guest: virtio_net with guest
/// offloads and no control queue, one queue pair, 2 vCPUs.
const VIRTIO_FIRECRACKER: &str = include_str!("../../fixtures/virtio_firecracker_snapshot.json");

/// `ip -d link show dev va` with an XDP_PASS program in driver mode.
const VA_WITH_PROGRAM: &str = "3: va@vb: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc noqueue state UP mode DEFAULT group default qlen 1000
    link/ether 66:80:07:65:0c:33 brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 
    veth addrgenmode eui64 numtxqueues 2 numrxqueues 2 gso_max_size 65536 gso_max_segs 65535 tso_max_size 524280 tso_max_segs 65535 gro_max_size 65536 
    prog/xdp id 115 name xdp_pass tag 614b434cd8324ecc jited load_time 1025153240402 created_by_uid 0 
";

fn snapshot(json: &str) -> HostSnapshot {
    serde_json::from_str(json).expect("captured snapshot parses")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn has(report: &HostReport, severity: Severity, interface: Option<&str>, needle: &str) -> bool {
    report.findings.iter().any(|f| {
        f.severity == severity && f.interface.as_deref() == interface && f.problem.contains(needle)
    })
}

fn fix_of<'a>(report: &'a HostReport, interface: &str, needle: &str) -> &'a str {
    report
        .findings
        .iter()
        .find(|f| f.interface.as_deref() == Some(interface) && f.problem.contains(needle))
        .map_or("", |f| f.fix.as_str())
}

/// A dual-socket host: 32 CPUs, 16 per NUMA node, all crypto extensions.
fn dual_socket(interfaces: Vec<InterfaceSnapshot>) -> HostSnapshot {
    HostSnapshot {
        cpu: CpuProfile {
            model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into(),
            logical_cpus: 32,
            cores: 32,
            aes_ni: true,
            pclmulqdq: true,
            vaes: true,
            sha_ni: true,
            avx2: true,
        },
        numa_nodes: vec![
            NumaNode {
                id: 0,
                cpus: (0..16).collect(),
            },
            NumaNode {
                id: 1,
                cpus: (16..32).collect(),
            },
        ],
        kernel: Some("6.12.0".into()),
        page_size: Some(4096),
        interfaces,
        peers: Vec::new(),
    }
}

/// A physical port on NUMA node 1 with 8 queues, reading offloads from the
/// captured `ethtool -k` text.
fn physical_port(name: &str, driver: &str, ethtool_k: &str) -> InterfaceSnapshot {
    InterfaceSnapshot {
        name: name.into(),
        driver_link: Some(format!("../../../../bus/pci/drivers/{driver}")),
        driver_info: Some(DriverInfo {
            driver: driver.into(),
            version: "6.12.0".into(),
            firmware: "16.35.2000".into(),
            bus_info: "0000:98:00.0".into(),
        }),
        ifindex: Some("4".into()),
        iflink: Some("4".into()),
        link_type: Some("1".into()),
        flags: Some("0x1003".into()),
        operstate: Some("up".into()),
        mtu: Some("1500".into()),
        speed: Some("25000".into()),
        gro_flush_timeout: Some("0".into()),
        napi_defer_hard_irqs: Some("0".into()),
        queues: (0..8).flat_map(|q| [format!("rx-{q}"), format!("tx-{q}")]).collect(),
        numa_node: Some("1".into()),
        sriov_numvfs: Some("0".into()),
        ethtool_k: Some(ethtool_k.into()),
        rings: Some(RingParams {
            rx_max: 8192,
            tx_max: 8192,
            rx: 1024,
            tx: 1024,
        }),
        channels: Some(Channels {
            max_combined: 63,
            combined: 8,
            ..Channels::default()
        }),
        ip_link: Some(format!(
            "4: {name}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP mode DEFAULT group default qlen 1000\n"
        )),
        ..InterfaceSnapshot::default()
    }
}

#[test]
fn veth_pair_capture_warns_that_the_peer_drops_xdp_tx() {
    let snapshot = snapshot(VETH_PAIR);
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va"])));
    let va = report.interface("va").expect("va reported");
    assert_eq!(va.driver.as_deref(), Some("veth"));
    assert_eq!(va.peer.as_deref(), Some("vb"));
    assert_eq!(va.xdp_mode, XdpMode::Native);
    assert_eq!(va.xdp_mtu_limit, Some(3506));
    assert_eq!(va.af_xdp_zero_copy, Support::No);
    assert_eq!(va.speed_mbps, Some(10_000));
    assert!(report.xdp_can_run());
    assert!(
        report.interface("vb").is_none(),
        "the peer is read, not reported"
    );

    assert!(has(
        &report,
        Severity::Warn,
        Some("va"),
        "peer vb has neither an XDP program"
    ));
    assert!(fix_of(&report, "va", "peer vb has neither").starts_with("ethtool -K vb gro on"));
    assert!(has(
        &report,
        Severity::Info,
        Some("va"),
        "peer vb offloads transmit checksums"
    ));
    assert_eq!(
        fix_of(&report, "va", "transmit checksums"),
        "ethtool -K vb tx off"
    );
    assert!(!report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Fatal));
}

#[test]
fn veth_peer_with_a_driver_mode_program_delivers() {
    let mut snapshot = snapshot(VETH_PAIR);
    let vb = snapshot
        .peers
        .iter_mut()
        .find(|p| p.name == "vb")
        .expect("peer captured");
    vb.ip_link = Some(VA_WITH_PROGRAM.replace("va@vb", "vb@va"));
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va"])));
    assert!(!has(
        &report,
        Severity::Warn,
        Some("va"),
        "neither an XDP program"
    ));
}

#[test]
fn veth_with_its_peer_elsewhere_gets_advice_not_a_warning() {
    let mut snapshot = snapshot(VETH_PAIR);
    snapshot.peers.clear();
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va"])));
    assert_eq!(report.interface("va").and_then(|i| i.peer.clone()), None);
    assert!(has(
        &report,
        Severity::Info,
        Some("va"),
        "in another network namespace"
    ));
    assert!(!report.findings.iter().any(|f| f.severity == Severity::Warn));
}

#[test]
fn a_foreign_xdp_program_is_fatal_and_our_own_is_not() {
    let mut snapshot = snapshot(VETH_PAIR);
    snapshot.interfaces[0].ip_link = Some(VA_WITH_PROGRAM.into());
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va"])));
    assert_eq!(
        report.interface("va").map(|i| i.xdp_mode),
        Some(XdpMode::Unavailable)
    );
    assert!(has(
        &report,
        Severity::Fatal,
        Some("va"),
        "xdp_pass (id 115) is already attached in driver mode"
    ));
    assert!(fix_of(&report, "va", "already attached").ends_with("ip link set dev va xdpdrv off"));
    assert!(!report.xdp_can_run());
    assert!(!report.xdp_can_run);
    assert_eq!(
        report.findings[0].severity,
        Severity::Fatal,
        "most severe first"
    );

    snapshot.interfaces[0].ip_link =
        Some(VA_WITH_PROGRAM.replace("xdp_pass", SWITCHBOARD_XDP_PROGRAM));
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va"])));
    assert_eq!(
        report.interface("va").map(|i| i.xdp_mode),
        Some(XdpMode::Native)
    );
    assert!(report.xdp_can_run());
}

#[test]
fn firecracker_virtio_capture_runs_generic_and_says_why() {
    let snapshot = snapshot(VIRTIO_FIRECRACKER);
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["eth0"])));
    let eth0 = report.interface("eth0").expect("eth0 reported");
    assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
    assert_eq!(eth0.xdp_mode, XdpMode::Generic);
    assert!(eth0.xdp_reason.contains("guest offloads"));
    assert_eq!(eth0.af_xdp_zero_copy, Support::No);
    assert_eq!(eth0.numa_node, None, "numa_node -1 means unknown");
    assert_eq!(eth0.speed_mbps, None, "speed -1 means unknown");
    assert!(report.xdp_can_run(), "generic mode still runs");

    assert!(has(
        &report,
        Severity::Warn,
        Some("eth0"),
        "without VIRTIO_NET_F_CTRL_GUEST_OFFLOADS"
    ));
    let fix = fix_of(&report, "eth0", "without VIRTIO_NET_F_CTRL_GUEST_OFFLOADS");
    assert!(
        fix.contains("guest_tso4=off") && fix.contains("ctrl_guest_offloads=on"),
        "{fix}"
    );
    assert!(has(
        &report,
        Severity::Warn,
        Some("eth0"),
        "need 3 (1 in use + one per CPU)"
    ));
    assert!(fix_of(&report, "eth0", "need 3").ends_with("ethtool -L eth0 combined 2"));
    assert!(has(
        &report,
        Severity::Info,
        Some("eth0"),
        "interrupt deferral is off"
    ));
}

#[test]
fn virtio_with_offload_control_and_queues_runs_native() {
    let mut snapshot = snapshot(VIRTIO_FIRECRACKER);
    let eth0 = &mut snapshot.interfaces[0];
    let mut bits = eth0.virtio_features.clone().expect("captured").into_bytes();
    for bit in [2, 22, 40] {
        bits[bit] = b'1';
    }
    eth0.virtio_features = Some(String::from_utf8(bits).expect("ascii"));
    eth0.channels = Some(Channels {
        max_combined: 8,
        combined: 2,
        ..Channels::default()
    });
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["eth0"])));
    let eth0 = report.interface("eth0").expect("reported");
    assert_eq!(eth0.xdp_mode, XdpMode::Native);
    assert_eq!(eth0.af_xdp_zero_copy, Support::Yes, "ring reset offered");
    assert!(!report.findings.iter().any(|f| f.severity == Severity::Warn));
}

#[test]
fn virtio_offloads_from_ethtool_text_when_the_ioctl_was_not_answered() {
    let mut snapshot = snapshot(VIRTIO_FIRECRACKER);
    snapshot.interfaces[0].features = None;
    snapshot.interfaces[0].ethtool_k = Some(VIRTIO_ETHTOOL_K.into());
    let report = HostReport::from_snapshot(&snapshot, None);
    let eth0 = report.interface("eth0").expect("reported");
    assert_eq!(eth0.offloads.gro_hw.map(|o| o.on), Some(true));
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.problem.starts_with("hardware GRO")),
        "virtio's hardware GRO is reported as guest offloads, not as an ethtool fix"
    );
}

#[test]
fn mlx5_with_jumbo_mtu_falls_back_to_generic() {
    let mut port = physical_port("ens1f0np0", "mlx5_core", MLX5_ETHTOOL_K);
    port.mtu = Some("9000".into());
    let report = HostReport::from_snapshot(&dual_socket(vec![port]), None);
    let nic = report.interface("ens1f0np0").expect("reported");
    assert_eq!(nic.xdp_mode, XdpMode::Generic);
    assert_eq!(nic.xdp_mtu_limit, Some(3498));
    assert_eq!(nic.af_xdp_zero_copy, Support::No, "not in generic mode");
    assert_eq!(nic.numa_cpus.len(), 16);
    assert!(
        report.xdp_can_run(),
        "an MTU above the limit costs speed, not the fast path"
    );
    assert!(has(
        &report,
        Severity::Warn,
        Some("ens1f0np0"),
        "MTU 9000 is above mlx5_core single-buffer XDP limit of 3498"
    ));
    assert_eq!(
        fix_of(&report, "ens1f0np0", "MTU 9000"),
        "ip link set dev ens1f0np0 mtu 1500"
    );
}

#[test]
fn mlx5_at_standard_mtu_is_native_with_tuning_advice() {
    let report = HostReport::from_snapshot(
        &dual_socket(vec![physical_port(
            "ens1f0np0",
            "mlx5_core",
            MLX5_ETHTOOL_K,
        )]),
        Some(&names(&["ens1f0np0"])),
    );
    let nic = report.interface("ens1f0np0").expect("reported");
    assert_eq!(nic.xdp_mode, XdpMode::Native);
    assert_eq!(nic.af_xdp_zero_copy, Support::Yes);
    assert_eq!(nic.offloads.rx_vlan.map(|o| o.on), Some(true));
    assert!(
        !report.findings.iter().any(|f| f.severity >= Severity::Warn),
        "{:?}",
        report.findings
    );
    assert!(has(
        &report,
        Severity::Info,
        Some("ens1f0np0"),
        "8 receive queue(s) for 16 CPUs on NUMA node 1"
    ));
    assert_eq!(
        fix_of(&report, "ens1f0np0", "receive queue"),
        "ethtool -L ens1f0np0 combined 16"
    );
    assert!(has(
        &report,
        Severity::Info,
        Some("ens1f0np0"),
        "NUMA node 1 (CPUs 16-31)"
    ));
    assert!(has(
        &report,
        Severity::Info,
        Some("ens1f0np0"),
        "strips 802.1Q tags"
    ));
    assert!(nic.tuning.iter().any(|t| t.contains("rx_striding_rq")));
}

#[test]
fn mlx5_refuses_native_xdp_with_hardware_gro() {
    let text = MLX5_ETHTOOL_K.replace("rx-gro-hw: off [fixed]", "rx-gro-hw: on");
    let report = HostReport::from_snapshot(
        &dual_socket(vec![physical_port("ens1f0np0", "mlx5_core", &text)]),
        None,
    );
    assert_eq!(
        report.interface("ens1f0np0").map(|i| i.xdp_mode),
        Some(XdpMode::Generic)
    );
    assert!(has(
        &report,
        Severity::Warn,
        Some("ens1f0np0"),
        "hardware GRO is on: mlx5_core refuses native XDP"
    ));
    assert_eq!(
        fix_of(&report, "ens1f0np0", "hardware GRO"),
        "ethtool -K ens1f0np0 rx-gro-hw off"
    );
}

#[test]
fn ixgbe_lro_sriov_and_mtu_limit() {
    let text = IXGBE_ETHTOOL_K.replace("large-receive-offload: off", "large-receive-offload: on");
    let mut port = physical_port("enp1s0f0", "ixgbe", &text);
    port.sriov_numvfs = Some("4".into());
    port.speed = Some("10000".into());
    let report = HostReport::from_snapshot(&dual_socket(vec![port.clone()]), None);
    let nic = report.interface("enp1s0f0").expect("reported");
    assert_eq!(nic.xdp_mode, XdpMode::Generic);
    assert!(nic.xdp_reason.contains("LRO is on") && nic.xdp_reason.contains("SR-IOV"));
    assert_eq!(
        fix_of(&report, "enp1s0f0", "LRO is on"),
        "ethtool -K enp1s0f0 lro off"
    );
    assert_eq!(
        fix_of(&report, "enp1s0f0", "SR-IOV"),
        "echo 0 > /sys/class/net/enp1s0f0/device/sriov_numvfs"
    );

    // 3046 is the largest MTU ixgbe takes a single-buffer program at.
    let mut clean = physical_port("enp1s0f0", "ixgbe", IXGBE_ETHTOOL_K);
    clean.mtu = Some("3046".into());
    let report = HostReport::from_snapshot(&dual_socket(vec![clean.clone()]), None);
    assert_eq!(
        report.interface("enp1s0f0").map(|i| i.xdp_mode),
        Some(XdpMode::Native)
    );
    clean.mtu = Some("3047".into());
    let report = HostReport::from_snapshot(&dual_socket(vec![clean]), None);
    assert_eq!(
        report.interface("enp1s0f0").map(|i| i.xdp_mode),
        Some(XdpMode::Generic)
    );
}

#[test]
fn missing_and_invalid_interfaces_are_fatal() {
    let snapshot = snapshot(VETH_PAIR);
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va", "eth9", "../etc"])));
    assert_eq!(report.missing, ["eth9", "../etc"]);
    assert!(has(
        &report,
        Severity::Fatal,
        Some("eth9"),
        "does not exist"
    ));
    assert!(has(
        &report,
        Severity::Fatal,
        Some("../etc"),
        "not a valid interface name"
    ));
    assert!(
        !report.xdp_can_run(),
        "every requested interface must run it"
    );
    assert!(!HostReport::from_snapshot(&snapshot, Some(&[])).xdp_can_run());
}

#[test]
fn a_down_interface_is_a_warning_only() {
    let mut snapshot = snapshot(VETH_PAIR);
    snapshot.interfaces[0].flags = Some("0x1002".into());
    let report = HostReport::from_snapshot(&snapshot, Some(&names(&["va"])));
    assert!(has(
        &report,
        Severity::Warn,
        Some("va"),
        "administratively down"
    ));
    assert_eq!(
        fix_of(&report, "va", "administratively down"),
        "ip link set dev va up"
    );
    assert!(report.xdp_can_run());
    let unrequested = HostReport::from_snapshot(&snapshot, None);
    assert!(has(
        &unrequested,
        Severity::Info,
        Some("va"),
        "administratively down"
    ));
}

#[test]
fn a_tun_device_cannot_carry_the_ethernet_program() {
    let tun = InterfaceSnapshot {
        name: "tun0".into(),
        driver_info: Some(DriverInfo {
            driver: "tun".into(),
            ..DriverInfo::default()
        }),
        link_type: Some("65534".into()),
        flags: Some("0x1091".into()),
        operstate: Some("unknown".into()),
        mtu: Some("1500".into()),
        ..InterfaceSnapshot::default()
    };
    let report = HostReport::from_snapshot(&dual_socket(vec![tun]), None);
    assert_eq!(
        report.interface("tun0").map(|i| i.xdp_mode),
        Some(XdpMode::Unavailable)
    );
    assert!(has(
        &report,
        Severity::Fatal,
        Some("tun0"),
        "link type 65534"
    ));
    assert!(!report.xdp_can_run());
}

#[test]
fn only_loopback_is_fatal_for_the_whole_host() {
    let lo = InterfaceSnapshot {
        name: "lo".into(),
        link_type: Some("772".into()),
        flags: Some("0x9".into()),
        mtu: Some("65536".into()),
        ..InterfaceSnapshot::default()
    };
    let report = HostReport::from_snapshot(&dual_socket(vec![lo.clone()]), None);
    assert!(report
        .interface("lo")
        .is_some_and(|i| i.loopback && i.xdp_mode == XdpMode::Generic));
    assert!(has(
        &report,
        Severity::Fatal,
        None,
        "no network interface besides loopback"
    ));
    assert!(!report.xdp_can_run());
    // Asked for by name, loopback takes the program (generic mode).
    let report = HostReport::from_snapshot(&dual_socket(vec![lo]), Some(&names(&["lo"])));
    assert!(report.xdp_can_run());
}

#[test]
fn odd_snapshot_content_does_not_panic() {
    let odd = |value: &str| Some(value.to_owned());
    let weird = InterfaceSnapshot {
        name: "x0".into(),
        driver_link: odd("/"),
        driver_info: Some(DriverInfo::default()),
        ifindex: odd("-5"),
        iflink: odd("99999999999999999999"),
        link_type: odd("ether"),
        flags: odd("0xZZ"),
        operstate: odd(""),
        mtu: odd("-1"),
        speed: odd("4294967296"),
        gro_flush_timeout: odd("1e9"),
        napi_defer_hard_irqs: odd("\u{fffd}"),
        queues: names(&["rx-", "rx-a", "tx-0", "weird"]),
        numa_node: odd("-1"),
        sriov_numvfs: odd("many"),
        virtio_features: odd("2"),
        features: Some(Vec::new()),
        ethtool_k: odd(": on\n"),
        rings: Some(RingParams::default()),
        channels: Some(Channels::default()),
        ip_link: odd("mtu mtu mtu\n    prog/\n"),
    };
    let report = HostReport::from_snapshot(&dual_socket(vec![weird]), None);
    let x0 = report.interface("x0").expect("reported");
    assert_eq!(
        (x0.mtu, x0.speed_mbps, x0.numa_node, x0.link_type),
        (None, None, None, None)
    );
    assert_eq!((x0.rx_queues, x0.tx_queues), (0, 1));
    assert_eq!(x0.driver, None);
    assert!(!render_text(&report).is_empty());
    assert!(report.to_json().is_ok());
}

#[test]
fn cpu_without_aes_ni_is_a_host_warning() {
    let mut host = dual_socket(vec![physical_port(
        "ens1f0np0",
        "mlx5_core",
        MLX5_ETHTOOL_K,
    )]);
    host.cpu.aes_ni = false;
    host.cpu.sha_ni = false;
    let report = HostReport::from_snapshot(&host, None);
    assert!(has(&report, Severity::Warn, None, "no AES-NI"));
    assert!(has(&report, Severity::Info, None, "no SHA-NI"));
}

#[test]
fn text_and_json_carry_the_verdict() {
    let report = HostReport::from_snapshot(
        &snapshot(VIRTIO_FIRECRACKER),
        Some(&names(&["eth0", "eth9"])),
    );
    let text = render_text(&report);
    assert!(text.contains("INTERFACE"));
    assert!(text.contains("eth0") && text.contains("virtio_net") && text.contains("generic"));
    assert!(text.contains("FATAL  eth9: interface eth9 does not exist"));
    assert!(text.contains("fix: ip link") || text.contains("fix: list the interfaces"));
    assert!(text
        .trim_end()
        .ends_with("XDP fast path: cannot run (eth0 generic, eth9 missing)"));

    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("encodes")).expect("valid JSON");
    assert_eq!(json["xdp_can_run"], false);
    assert_eq!(json["interfaces"][0]["xdp_mode"], "generic");
    assert_eq!(json["interfaces"][0]["profile"]["driver"], "virtio_net");
    assert_eq!(json["findings"][0]["severity"], "fatal");
}

#[test]
fn detects_this_host() {
    let report = HostReport::detect(None).expect("/proc and /sys are readable");
    assert!(report.cpu.logical_cpus >= 1);
    assert!(
        report.interface("lo").is_some_and(|lo| lo.loopback),
        "every namespace has lo"
    );
    let text = render_text(&report);
    assert!(text.contains("XDP fast path:"));
    assert!(report.to_json().is_ok());

    let lo_only = HostReport::detect(Some(&names(&["lo"]))).expect("detects");
    assert_eq!(lo_only.interfaces.len(), 1);
    assert!(lo_only.xdp_can_run(), "generic XDP attaches to lo");

    let missing = HostReport::detect(Some(&names(&["nosuchif0"]))).expect("detects");
    assert!(!missing.xdp_can_run());
    assert_eq!(missing.missing, ["nosuchif0"]);
}
