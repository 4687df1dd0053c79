//! virtio-net feature bits, from `/sys/class/net/IF/device/features`.
//!
//! That file holds one `0`/`1` character per feature bit, bit 0 first. Bit
//! numbers are those of the virtio specification (section "Network Device",
//! Feature bits) and `include/uapi/linux/virtio_net.h`.

use serde::Serialize;

const GUEST_CSUM: usize = 1;
const CTRL_GUEST_OFFLOADS: usize = 2;
const GUEST_TSO4: usize = 7;
const GUEST_TSO6: usize = 8;
const GUEST_ECN: usize = 9;
const GUEST_UFO: usize = 10;
const MRG_RXBUF: usize = 15;
const MQ: usize = 22;
const RING_RESET: usize = 40;
const GUEST_USO4: usize = 54;
const GUEST_USO6: usize = 55;

/// The guest offloads virtio_net must turn off before it runs XDP, with the
/// QEMU device property that controls each.
const GUEST_OFFLOADS: [(usize, &str); 7] = [
    (GUEST_CSUM, "guest_csum"),
    (GUEST_TSO4, "guest_tso4"),
    (GUEST_TSO6, "guest_tso6"),
    (GUEST_ECN, "guest_ecn"),
    (GUEST_UFO, "guest_ufo"),
    (GUEST_USO4, "guest_uso4"),
    (GUEST_USO6, "guest_uso6"),
];

/// The negotiated virtio-net features that decide XDP on a guest NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VirtioNetFeatures {
    /// VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: the driver can switch guest offloads
    /// off itself when a program attaches.
    pub ctrl_guest_offloads: bool,
    /// Guest offloads on, by QEMU property name (`guest_tso4`, …). Without
    /// `ctrl_guest_offloads` any of them makes virtio_net refuse native XDP.
    pub guest_offloads: Vec<&'static str>,
    /// VIRTIO_NET_F_MRG_RXBUF: mergeable receive buffers.
    pub mergeable_rx_buffers: bool,
    /// VIRTIO_NET_F_MQ: more than one queue pair.
    pub multiqueue: bool,
    /// VIRTIO_F_RING_RESET: per-queue reset, which AF_XDP zero-copy needs.
    pub ring_reset: bool,
}

impl VirtioNetFeatures {
    /// Parses the feature bit string; `None` if it holds anything but `0`
    /// and `1`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b == b'0' || b == b'1') {
            return None;
        }
        let bit = |n: usize| text.as_bytes().get(n) == Some(&b'1');
        Some(Self {
            ctrl_guest_offloads: bit(CTRL_GUEST_OFFLOADS),
            guest_offloads: GUEST_OFFLOADS
                .iter()
                .filter(|(n, _)| bit(*n))
                .map(|(_, name)| *name)
                .collect(),
            mergeable_rx_buffers: bit(MRG_RXBUF),
            multiqueue: bit(MQ),
            ring_reset: bit(RING_RESET),
        })
    }

    /// virtio_net refuses a single-buffer program in native mode when the
    /// host implements guest offloads the driver cannot switch off
    /// (`virtnet_xdp_set`).
    pub fn blocks_native_xdp(&self) -> bool {
        !self.ctrl_guest_offloads && !self.guest_offloads.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `device/features` of a Firecracker guest NIC (kernel 6.18): checksum,
    /// TSO/UFO both ways, mergeable buffers, no control queue, one queue.
    pub(crate) const FIRECRACKER: &str =
        "11000101101110110000000000000100100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\n";

    #[test]
    fn firecracker_guest_cannot_run_native_xdp() {
        let f = VirtioNetFeatures::parse(FIRECRACKER).expect("bit string");
        assert!(!f.ctrl_guest_offloads);
        assert_eq!(
            f.guest_offloads,
            ["guest_csum", "guest_tso4", "guest_tso6", "guest_ufo"]
        );
        assert!(f.mergeable_rx_buffers && !f.multiqueue && !f.ring_reset);
        assert!(f.blocks_native_xdp());
    }

    #[test]
    fn control_queue_lets_the_driver_switch_offloads_off() {
        let mut bits = FIRECRACKER.trim().as_bytes().to_vec();
        bits[CTRL_GUEST_OFFLOADS] = b'1';
        bits[MQ] = b'1';
        bits[RING_RESET] = b'1';
        let f = VirtioNetFeatures::parse(std::str::from_utf8(&bits).expect("ascii")).expect("bits");
        assert!(!f.blocks_native_xdp());
        assert!(f.multiqueue && f.ring_reset);
    }

    #[test]
    fn odd_content_is_rejected_or_short() {
        assert_eq!(VirtioNetFeatures::parse(""), None);
        assert_eq!(VirtioNetFeatures::parse("10x1"), None);
        let short = VirtioNetFeatures::parse("0010").expect("short but valid");
        assert!(short.ctrl_guest_offloads && !short.ring_reset);
    }
}
