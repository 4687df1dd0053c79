//! What each NIC driver offers XDP, and how to tune it for the media paths.
//!
//! Sources, per driver, are the kernel's own checks (Linux 6.x): the
//! `xdp_features` each driver declares (see the netdev netlink family,
//! Documentation/netlink/specs/netdev.yaml), and the MTU test in its
//! XDP setup function. The single-buffer MTU limits assume 4 KiB pages:
//!
//! * generic formula: `PAGE_SIZE - XDP_PACKET_HEADROOM (256) -
//!   SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) (320)` = 3520 bytes of
//!   frame, less the driver's L2 allowance;
//! * ixgbe (`ixgbe_change_mtu`, `ixgbe_max_xdp_frame_size`): 3072-byte
//!   buffer less `IXGBE_PKT_HDR_PAD` (26) = 3046;
//! * i40e (`i40e_xdp_setup`, `i40e_max_vsi_frame_size`): 3072 less
//!   `I40E_PACKET_HDR_PAD` (26) = 3046;
//! * ice (`ice_xdp_setup_prog`, `ice_max_xdp_frame_size`): 3072 less
//!   `ICE_ETH_PKT_HDR_PAD` (26) = 3046;
//! * mlx5_core (`mlx5e_xdp_max_mtu`): 4096 - 320 - 256 - 22 = 3498;
//! * bnxt_en (`BNXT_MAX_PAGE_MODE_MTU`): 4096 - 18 - 256 - 320 = 3502;
//! * virtio_net (`virtnet_xdp_set`): 4096 - SKB_DATA_ALIGN(256 + 320) - 14
//!   = 3506;
//! * veth (`veth_xdp_set`): 4096 - 256 - 14 - 320 = 3506.
//!
//! Every driver here with multi-buffer support accepts larger MTUs only for
//! programs declared `xdp.frags`; switchboard's program is single-buffer.

use serde::Serialize;

/// Whether a driver offers a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// The driver offers it.
    Yes,
    /// The driver does not offer it.
    No,
    /// Depends on the device or its configuration; the interface report
    /// resolves it where it can.
    Conditional,
    /// The driver is not in the table.
    Unknown,
}

impl std::fmt::Display for Support {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Conditional => "depends",
            Self::Unknown => "unknown",
        })
    }
}

/// Whether frames can be `XDP_REDIRECT`ed into an interface of this driver
/// (its `ndo_xdp_xmit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectTarget {
    /// Always accepts redirected frames.
    Always,
    /// Accepts them only while an XDP program is attached to the target
    /// itself (the driver allocates its XDP TX rings then).
    WithOwnProgram,
    /// veth: delivers `XDP_TX` and redirected frames only if the peer has
    /// an XDP program in driver mode or GRO on.
    WithPeerProgram,
    /// Cannot be a redirect target.
    No,
    /// The driver is not in the table.
    Unknown,
}

/// XDP facts and tuning advice for one driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverProfile {
    /// Kernel driver name as ethtool reports it.
    pub driver: &'static str,
    /// The hardware it drives.
    pub description: &'static str,
    /// Native (driver-mode) XDP.
    pub native_xdp: Support,
    /// As an `XDP_REDIRECT` target.
    pub redirect_target: RedirectTarget,
    /// AF_XDP zero-copy.
    pub af_xdp_zero_copy: Support,
    /// Multi-buffer (`xdp.frags`) programs, which may exceed the MTU limit.
    pub multi_buffer: Support,
    /// Largest MTU at which the driver takes a single-buffer program in
    /// native mode, for 4 KiB pages; `None` where it sets none.
    pub max_xdp_mtu: Option<u32>,
    /// The driver refuses native XDP while LRO or hardware GRO is on,
    /// rather than switching them off itself.
    pub offloads_block_native: bool,
    /// A physical NIC: RSS, IRQ affinity, rings and NUMA advice apply.
    pub physical: bool,
    /// Tuning advice; `<if>` stands for the interface name.
    pub tuning: &'static [&'static str],
}

impl DriverProfile {
    /// The tuning advice with the interface name filled in, the advice
    /// common to physical NICs first.
    pub fn tuning_for(&self, interface: &str) -> Vec<String> {
        let common: &[&str] = if self.physical {
            COMMON_NIC_TUNING
        } else {
            &[]
        };
        common
            .iter()
            .chain(self.tuning)
            .map(|line| line.replace("<if>", interface))
            .collect()
    }

    /// True for the fallback profile of drivers not in the table.
    pub fn is_fallback(&self) -> bool {
        self.driver == FALLBACK_PROFILE.driver
    }
}

/// Advice for every physical NIC.
const COMMON_NIC_TUNING: &[&str] = &[
    "RSS: one queue per core on the NIC's NUMA node: `ethtool -L <if> combined N`, N = cores on that node",
    "IRQs: stop irqbalance (or ban these IRQs) and pin each queue's IRQ to its own core on the NIC's node, off the io_uring worker cores or one queue per worker core: echo CPU > /proc/irq/N/smp_affinity_list",
    "busy polling: echo 2 > /sys/class/net/<if>/napi_defer_hard_irqs; echo 200000 > /sys/class/net/<if>/gro_flush_timeout; SO_BUSY_POLL on the worker sockets",
    "rings: `ethtool -G <if> rx 1024 tx 1024` absorbs keyframe bursts without inflating latency",
    "XDP: turn LRO and hardware GRO off: `ethtool -K <if> lro off rx-gro-hw off`",
];

/// Intel 82599/X520/X540/X550 (10 GbE).
const IXGBE: DriverProfile = DriverProfile {
    driver: "ixgbe",
    description: "Intel 82599/X520/X540/X550 10 GbE",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::WithOwnProgram,
    af_xdp_zero_copy: Support::Yes,
    multi_buffer: Support::No,
    max_xdp_mtu: Some(3046),
    offloads_block_native: true,
    physical: true,
    tuning: &[
        "LRO is the 82599's RSC: the driver refuses native XDP while it is on: `ethtool -K <if> lro off`",
        "native XDP needs SR-IOV and DCB off on the port",
        "XDP uses one TX queue per CPU, at most 64: above 64 CPUs XDP_TX takes a lock, above 128 the driver refuses XDP",
        "no multi-buffer XDP: keep the MTU at or below 3046 (1500 is enough for media)",
    ],
};

/// Intel X710/XL710/XXV710 (10/25/40 GbE).
const I40E: DriverProfile = DriverProfile {
    driver: "i40e",
    description: "Intel X710/XL710/XXV710 10/25/40 GbE",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::WithOwnProgram,
    af_xdp_zero_copy: Support::Yes,
    multi_buffer: Support::Yes,
    max_xdp_mtu: Some(3046),
    offloads_block_native: false,
    physical: true,
    tuning: &[
        "the legacy-rx private flag shrinks receive buffers to 2 KiB and the XDP MTU limit with them: `ethtool --set-priv-flags <if> legacy-rx off`",
        "XDP_REDIRECT into an i40e port needs an XDP program on that port too",
    ],
};

/// Intel E810 (10/25/100 GbE).
const ICE: DriverProfile = DriverProfile {
    driver: "ice",
    description: "Intel E810 10/25/100 GbE",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::WithOwnProgram,
    af_xdp_zero_copy: Support::Yes,
    multi_buffer: Support::Yes,
    max_xdp_mtu: Some(3046),
    offloads_block_native: false,
    physical: true,
    tuning: &[
        "XDP needs free TX queues for at least half the CPUs (one per CPU to avoid locking); reduce `ethtool -L <if> combined` if attaching fails",
        "XDP_REDIRECT into an ice port needs an XDP program on that port too",
    ],
};

/// NVIDIA/Mellanox ConnectX-4 and later.
const MLX5: DriverProfile = DriverProfile {
    driver: "mlx5_core",
    description: "NVIDIA/Mellanox ConnectX-4/5/6/7 10-400 GbE",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::Always,
    af_xdp_zero_copy: Support::Yes,
    multi_buffer: Support::Yes,
    max_xdp_mtu: Some(3498),
    offloads_block_native: true,
    physical: true,
    tuning: &[
        "the driver refuses native XDP while LRO or hardware GRO is on: `ethtool -K <if> lro off rx-gro-hw off`",
        "keep the striding receive queue on (the default): `ethtool --set-priv-flags <if> rx_striding_rq on`",
        "CQE compression saves PCIe bandwidth at high packet rates: `ethtool --set-priv-flags <if> rx_cqe_compress on`",
    ],
};

/// Broadcom NetXtreme-C/E.
const BNXT: DriverProfile = DriverProfile {
    driver: "bnxt_en",
    description: "Broadcom NetXtreme-C/E (BCM573xx/574xx) 10-200 GbE",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::WithOwnProgram,
    af_xdp_zero_copy: Support::No,
    multi_buffer: Support::Yes,
    max_xdp_mtu: Some(3502),
    offloads_block_native: false,
    physical: true,
    tuning: &[
        "XDP takes one extra TX ring per RX ring; if attaching fails with too few rings, lower `ethtool -L <if> combined`",
        "the driver switches LRO and hardware GRO off while XDP runs (page mode)",
        "no AF_XDP zero-copy: AF_XDP sockets run in copy mode",
    ],
};

/// virtio-net guest NICs (KVM/QEMU, Firecracker, cloud VMs).
const VIRTIO_NET: DriverProfile = DriverProfile {
    driver: "virtio_net",
    description: "virtio-net guest NIC (KVM/QEMU, Firecracker, cloud VMs)",
    native_xdp: Support::Conditional,
    redirect_target: RedirectTarget::WithOwnProgram,
    af_xdp_zero_copy: Support::Conditional,
    multi_buffer: Support::Yes,
    max_xdp_mtu: Some(3506),
    offloads_block_native: false,
    physical: false,
    tuning: &[
        "queues: XDP_TX and XDP_REDIRECT need the current queue pairs plus one per vCPU (2x vCPUs with one pair per vCPU), or they share a locked TX queue: give the VM's NIC enough queues (QEMU: -netdev tap,queues=2N,vhost=on -device virtio-net-pci,mq=on,vectors=4N+2) and run `ethtool -L <if> combined N`",
        "native XDP needs guest offload control (VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, QEMU ctrl_guest_offloads=on with ctrl_vq=on) or the guest offloads off on the host (guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,guest_csum=off)",
        "AF_XDP zero-copy needs a device with per-queue reset (VIRTIO_F_RING_RESET)",
        "busy polling: echo 2 > /sys/class/net/<if>/napi_defer_hard_irqs; echo 200000 > /sys/class/net/<if>/gro_flush_timeout",
    ],
};

/// veth pairs (containers, network namespaces, tests).
const VETH: DriverProfile = DriverProfile {
    driver: "veth",
    description: "virtual Ethernet pair (namespaces, containers, tests)",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::WithPeerProgram,
    af_xdp_zero_copy: Support::No,
    multi_buffer: Support::Yes,
    max_xdp_mtu: Some(3506),
    offloads_block_native: false,
    physical: false,
    tuning: &[
        "XDP_TX and XDP_REDIRECT deliver only if the peer has an XDP program in driver mode (an XDP_PASS one is enough) or GRO on (`ethtool -K PEER gro on`)",
        "veth senders leave UDP checksums partial; a frame rewritten by XDP then fails the receiver's check: turn tx checksum offload off on the sending veth (`ethtool -K <if> tx off`) or send with SO_NO_CHECK",
        "no AF_XDP zero-copy: AF_XDP sockets run in copy mode",
    ],
};

/// TUN/TAP devices.
const TUN: DriverProfile = DriverProfile {
    driver: "tun",
    description: "TUN/TAP device fed by a userspace process",
    native_xdp: Support::Yes,
    redirect_target: RedirectTarget::Always,
    af_xdp_zero_copy: Support::No,
    multi_buffer: Support::No,
    max_xdp_mtu: None,
    offloads_block_native: false,
    physical: false,
    tuning: &[
        "only TAP devices carry Ethernet frames; switchboard's XDP program parses Ethernet, so a TUN (IP-only) device cannot carry the fast path",
        "XDP runs as the writing process injects frames; frames larger than a page take the driver's generic path",
    ],
};

/// The loopback device.
const LOOPBACK: DriverProfile = DriverProfile {
    driver: "loopback",
    description: "loopback device",
    native_xdp: Support::No,
    redirect_target: RedirectTarget::No,
    af_xdp_zero_copy: Support::No,
    multi_buffer: Support::No,
    max_xdp_mtu: None,
    offloads_block_native: false,
    physical: false,
    tuning: &["carries no external media; XDP runs here in generic mode only"],
};

/// Drivers not in the table: typical limits assumed.
const GENERIC: DriverProfile = DriverProfile {
    driver: "unknown",
    description: "driver not in the profile table; typical single-buffer limit assumed",
    native_xdp: Support::Unknown,
    redirect_target: RedirectTarget::Unknown,
    af_xdp_zero_copy: Support::Unknown,
    multi_buffer: Support::Unknown,
    max_xdp_mtu: Some(3498),
    offloads_block_native: false,
    physical: false,
    tuning: &[
        "the XDP loader tries driver mode first and falls back to generic mode; `ip -d link show dev <if>` shows which one attached (`xdp` native, `xdpgeneric` generic)",
        "turn LRO and hardware GRO off before attaching XDP: `ethtool -K <if> lro off rx-gro-hw off`",
    ],
};

/// The known drivers, in the order reports list them.
pub static KNOWN_PROFILES: &[DriverProfile] = &[
    IXGBE, I40E, ICE, MLX5, BNXT, VIRTIO_NET, VETH, TUN, LOOPBACK,
];

/// The fallback profile for drivers not in [`KNOWN_PROFILES`].
pub static FALLBACK_PROFILE: &DriverProfile = &GENERIC;

/// The profile of `driver`, or the fallback profile.
pub fn profile_for(driver: &str) -> &'static DriverProfile {
    KNOWN_PROFILES
        .iter()
        .find(|p| p.driver == driver)
        .unwrap_or(FALLBACK_PROFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_drivers_resolve_and_others_fall_back() {
        for driver in [
            "ixgbe",
            "i40e",
            "ice",
            "mlx5_core",
            "bnxt_en",
            "virtio_net",
            "veth",
            "tun",
        ] {
            let profile = profile_for(driver);
            assert_eq!(profile.driver, driver);
            assert!(!profile.is_fallback());
            assert_ne!(profile.native_xdp, Support::No, "{driver} has native XDP");
        }
        assert!(profile_for("e1000e").is_fallback());
        assert_eq!(profile_for("").native_xdp, Support::Unknown);
    }

    #[test]
    fn single_buffer_limits_follow_the_page_arithmetic() {
        // 4096 - 256 headroom - 320 skb_shared_info = 3520 bytes of frame;
        // no driver may allow more than that less an Ethernet header.
        for profile in KNOWN_PROFILES {
            if let Some(mtu) = profile.max_xdp_mtu {
                assert!(mtu <= 3520 - 14, "{}: {mtu}", profile.driver);
                assert!(mtu >= 3000, "{}: {mtu}", profile.driver);
            }
        }
        assert_eq!(profile_for("ixgbe").max_xdp_mtu, Some(3046));
        assert_eq!(profile_for("mlx5_core").max_xdp_mtu, Some(3498));
    }

    #[test]
    fn tuning_names_the_interface() {
        let lines = profile_for("ixgbe").tuning_for("ens1f0");
        assert!(lines
            .iter()
            .any(|l| l.contains("ethtool -K ens1f0 lro off")));
        assert!(lines.iter().all(|l| !l.contains("<if>")));
        assert!(
            lines.len() > profile_for("ixgbe").tuning.len(),
            "common NIC advice included"
        );
        assert_eq!(
            profile_for("veth").tuning_for("va").len(),
            profile_for("veth").tuning.len()
        );
    }
}
