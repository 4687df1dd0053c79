//! ETHTOOL requests over `SIOCETHTOOL` and the parsing of their answers and
//! of `ethtool -k` text.
//!
//! Layouts follow `include/uapi/linux/ethtool.h` (struct ethtool_drvinfo,
//! ethtool_ringparam, ethtool_channels, ethtool_sset_info,
//! ethtool_gstrings, ethtool_gfeatures). Answers are read from byte buffers
//! by offset, so only the `ioctl` call itself is unsafe.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use serde::{Deserialize, Serialize};

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GRINGPARAM: u32 = 0x10;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// sizeof(struct ethtool_drvinfo).
const DRVINFO_LEN: usize = 196;
/// sizeof(struct ethtool_ringparam) and sizeof(struct ethtool_channels):
/// nine `u32` each.
const NINE_WORDS: usize = 36;
/// The kernel names ~70 features; the bound keeps a confused answer from
/// driving a large allocation.
const MAX_FEATURES: usize = 1024;

/// What `ETHTOOL_GDRVINFO` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// Driver name (for software devices, the link kind: `veth`, `tun`).
    pub driver: String,
    /// Driver version.
    pub version: String,
    /// Firmware version; empty for software devices.
    pub firmware: String,
    /// Bus address, e.g. the PCI function `0000:3b:00.0`.
    pub bus_info: String,
}

/// Descriptor ring sizes (`ethtool -g`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingParams {
    /// Largest receive ring the device allows.
    pub rx_max: u32,
    /// Largest transmit ring the device allows.
    pub tx_max: u32,
    /// Receive ring size in use.
    pub rx: u32,
    /// Transmit ring size in use.
    pub tx: u32,
}

/// Queue (channel) counts (`ethtool -l`); zero means "not reported".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    /// Most receive-only channels.
    pub max_rx: u32,
    /// Most transmit-only channels.
    pub max_tx: u32,
    /// Most other (link, control) channels.
    pub max_other: u32,
    /// Most combined receive/transmit channels (queue pairs).
    pub max_combined: u32,
    /// Receive-only channels in use.
    pub rx: u32,
    /// Transmit-only channels in use.
    pub tx: u32,
    /// Other channels in use.
    pub other: u32,
    /// Combined channels in use.
    pub combined: u32,
}

/// One device feature (`ethtool -k` line) by its kernel or ethtool name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureState {
    /// Kernel name (`rx-lro`) or ethtool name (`large-receive-offload`).
    pub name: String,
    /// On now.
    pub active: bool,
    /// The driver does not let it be changed (`[fixed]`).
    pub fixed: bool,
}

/// State of one offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Offload {
    /// On now.
    pub on: bool,
    /// Cannot be changed with `ethtool -K`.
    pub fixed: bool,
}

/// The offloads that matter for XDP; `None` where the device does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Offloads {
    /// Large receive offload (`rx-lro`): merges TCP segments in the NIC;
    /// ixgbe and mlx5 refuse native XDP while it is on.
    pub lro: Option<Offload>,
    /// Hardware GRO (`rx-gro-hw`): like LRO but resegmentable; mlx5 refuses
    /// native XDP while it is on.
    pub gro_hw: Option<Offload>,
    /// VLAN tag stripping (`rx-vlan-hw-parse`, ethtool's `rxvlan`): XDP then
    /// sees frames without their 802.1Q tag.
    pub rx_vlan: Option<Offload>,
    /// Software GRO (`rx-gro`): on a veth it also enables the NAPI path that
    /// XDP_TX and XDP_REDIRECT delivery need.
    pub gro: Option<Offload>,
    /// Any transmit checksum offload (ethtool's `tx`).
    pub tx_checksum: Option<Offload>,
}

impl Offloads {
    /// Picks the XDP-relevant offloads out of a feature list. Accepts both
    /// the kernel names (ioctl) and ethtool's legacy names (`ethtool -k`).
    pub fn from_features(features: &[FeatureState]) -> Self {
        let find = |names: &[&str]| {
            features
                .iter()
                .find(|f| names.contains(&f.name.as_str()))
                .map(|f| Offload {
                    on: f.active,
                    fixed: f.fixed,
                })
        };
        let tx_checksum = find(&["tx-checksumming"]).or_else(|| {
            let parts: Vec<&FeatureState> = features
                .iter()
                .filter(|f| f.name.starts_with("tx-checksum-"))
                .collect();
            (!parts.is_empty()).then(|| Offload {
                on: parts.iter().any(|f| f.active),
                fixed: parts.iter().all(|f| f.fixed),
            })
        });
        Self {
            lro: find(&["rx-lro", "large-receive-offload"]),
            gro_hw: find(&["rx-gro-hw"]),
            rx_vlan: find(&["rx-vlan-hw-parse", "rx-vlan-offload"]),
            gro: find(&["rx-gro", "generic-receive-offload"]),
            tx_checksum,
        }
    }
}

/// Parses `ethtool -k IF` output: `name: on|off [fixed]` lines, sub-features
/// indented. Header and unrecognised lines are skipped.
pub fn parse_ethtool_k(text: &str) -> Vec<FeatureState> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let mut words = rest.split_whitespace();
            let active = match words.next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return None;
            }
            Some(FeatureState {
                name: name.to_owned(),
                active,
                fixed: rest.contains("[fixed]"),
            })
        })
        .collect()
}

fn word(buf: &[u8], index: usize) -> u32 {
    let start = index * 4;
    buf.get(start..start + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// Parses a `struct ethtool_drvinfo` answer.
pub fn parse_drvinfo(buf: &[u8]) -> DriverInfo {
    let field = |offset: usize| {
        buf.get(offset..offset + 32)
            .map(c_string)
            .unwrap_or_default()
    };
    DriverInfo {
        driver: field(4),
        version: field(36),
        firmware: field(68),
        bus_info: field(100),
    }
}

/// Parses a `struct ethtool_ringparam` answer.
pub fn parse_ringparam(buf: &[u8]) -> RingParams {
    RingParams {
        rx_max: word(buf, 1),
        tx_max: word(buf, 4),
        rx: word(buf, 5),
        tx: word(buf, 8),
    }
}

/// Parses a `struct ethtool_channels` answer.
pub fn parse_channels(buf: &[u8]) -> Channels {
    Channels {
        max_rx: word(buf, 1),
        max_tx: word(buf, 2),
        max_other: word(buf, 3),
        max_combined: word(buf, 4),
        rx: word(buf, 5),
        tx: word(buf, 6),
        other: word(buf, 7),
        combined: word(buf, 8),
    }
}

/// Joins the `ETH_SS_FEATURES` strings (32 bytes each) with the
/// `ethtool_gfeatures` blocks (available, requested, active, never_changed;
/// one block per 32 features). A feature is fixed when it is not available
/// for change or never changes, as ethtool prints `[fixed]`.
pub fn parse_features(strings: &[u8], blocks: &[u8]) -> Vec<FeatureState> {
    strings
        .chunks_exact(ETH_GSTRING_LEN)
        .take(MAX_FEATURES)
        .enumerate()
        .filter_map(|(index, raw)| {
            let name = c_string(raw);
            if name.is_empty() {
                return None;
            }
            let block = index / 32;
            let bit = 1u32 << (index % 32);
            let available = word(blocks, block * 4);
            let active = word(blocks, block * 4 + 2);
            let never_changed = word(blocks, block * 4 + 3);
            Some(FeatureState {
                name,
                active: active & bit != 0,
                fixed: available & bit == 0 || never_changed & bit != 0,
            })
        })
        .collect()
}

/// A socket to carry `SIOCETHTOOL` requests. An unbound `AF_UNIX` datagram
/// socket serves: the kernel hands device ioctls of any socket family to the
/// device layer, and this one binds no address or port.
pub(crate) struct Ethtool {
    socket: UnixDatagram,
}

impl Ethtool {
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Self {
            socket: UnixDatagram::unbound()?,
        })
    }

    /// Sends one request whose command word is already in `buf[0..4]`; the
    /// kernel writes its answer into `buf`.
    fn request(&self, interface: &str, buf: &mut [u8]) -> io::Result<()> {
        let name = interface.as_bytes();
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (dst, &src) in ifr_name.iter_mut().zip(name) {
            *dst = src as libc::c_char;
        }
        let mut ifr = libc::ifreq {
            ifr_name,
            ifr_ifru: libc::__c_anonymous_ifr_ifru {
                ifru_data: buf.as_mut_ptr().cast(),
            },
        };
        // SAFETY: `ifr` is a fully initialised `struct ifreq` holding a
        // NUL-terminated name shorter than IFNAMSIZ and a data pointer to
        // `buf`, which stays borrowed for the duration of the call. Every
        // caller sizes `buf` to the structure its command reads and writes
        // (see the callers), so the kernel's copy_from_user/copy_to_user
        // stay within `buf`. The socket is open for the whole call.
        let rc = unsafe { libc::ioctl(self.socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn command(cmd: u32, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        buf[..4].copy_from_slice(&cmd.to_ne_bytes());
        buf
    }

    pub(crate) fn driver_info(&self, interface: &str) -> io::Result<DriverInfo> {
        let mut buf = Self::command(ETHTOOL_GDRVINFO, DRVINFO_LEN);
        self.request(interface, &mut buf)?;
        Ok(parse_drvinfo(&buf))
    }

    pub(crate) fn ring_params(&self, interface: &str) -> io::Result<RingParams> {
        let mut buf = Self::command(ETHTOOL_GRINGPARAM, NINE_WORDS);
        self.request(interface, &mut buf)?;
        Ok(parse_ringparam(&buf))
    }

    pub(crate) fn channels(&self, interface: &str) -> io::Result<Channels> {
        let mut buf = Self::command(ETHTOOL_GCHANNELS, NINE_WORDS);
        self.request(interface, &mut buf)?;
        Ok(parse_channels(&buf))
    }

    /// Reads the feature names and their state (`ethtool -k`).
    pub(crate) fn features(&self, interface: &str) -> io::Result<Vec<FeatureState>> {
        // struct ethtool_sset_info: cmd, reserved, u64 sset_mask, u32 data[1].
        let mut info = Self::command(ETHTOOL_GSSET_INFO, 24);
        info[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
        self.request(interface, &mut info)?;
        let mask = info
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes);
        let count = word(&info, 4) as usize;
        if mask & (1 << ETH_SS_FEATURES) == 0 || count == 0 || count > MAX_FEATURES {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }

        // struct ethtool_gstrings: cmd, string_set, len, then the strings.
        // The feature set is a fixed kernel table, so the kernel writes the
        // `count` strings it announced above.
        let mut strings = Self::command(ETHTOOL_GSTRINGS, 12 + count * ETH_GSTRING_LEN);
        strings[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
        strings[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
        self.request(interface, &mut strings)?;

        // struct ethtool_gfeatures: cmd, size (in blocks), then the blocks;
        // the kernel copies at most `size` blocks.
        let blocks = count.div_ceil(32);
        let mut features = Self::command(ETHTOOL_GFEATURES, 8 + blocks * 16);
        features[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
        self.request(interface, &mut features)?;

        Ok(parse_features(&strings[12..], &features[8..]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `ethtool -k eth2` of an mlx5_core (ConnectX) port, as posted to
    /// linux-kernel by an NVIDIA engineer (June 2023); sub-features indented
    /// with spaces as in the post.
    pub(crate) const MLX5_ETHTOOL_K: &str = "Features for eth2:
rx-checksumming: on
tx-checksumming: on
        tx-checksum-ipv4: off [fixed]
        tx-checksum-ip-generic: on
        tx-checksum-ipv6: off [fixed]
        tx-checksum-fcoe-crc: off [fixed]
        tx-checksum-sctp: off [fixed]
scatter-gather: on
        tx-scatter-gather: on
        tx-scatter-gather-fraglist: off [fixed]
tcp-segmentation-offload: on
        tx-tcp-segmentation: on
        tx-tcp-ecn-segmentation: off [fixed]
        tx-tcp-mangleid-segmentation: off
        tx-tcp6-segmentation: on
generic-segmentation-offload: on
generic-receive-offload: on
large-receive-offload: off
rx-vlan-offload: on
tx-vlan-offload: on
ntuple-filters: off
receive-hashing: on
highdma: on [fixed]
rx-vlan-filter: on
vlan-challenged: off [fixed]
tx-lockless: off [fixed]
netns-local: off [fixed]
tx-gso-robust: off [fixed]
tx-fcoe-segmentation: off [fixed]
tx-gre-segmentation: on
tx-gre-csum-segmentation: on
tx-ipxip4-segmentation: on
tx-ipxip6-segmentation: on
tx-udp_tnl-segmentation: on
tx-udp_tnl-csum-segmentation: on
tx-gso-partial: on
tx-tunnel-remcsum-segmentation: off [fixed]
tx-sctp-segmentation: off [fixed]
tx-esp-segmentation: on
tx-udp-segmentation: on
tx-gso-list: off [fixed]
fcoe-mtu: off [fixed]
tx-nocache-copy: off
loopback: off [fixed]
rx-fcs: off
rx-all: on
tx-vlan-stag-hw-insert: on
rx-vlan-stag-hw-parse: off [fixed]
rx-vlan-stag-filter: on [fixed]
l2-fwd-offload: off [fixed]
hw-tc-offload: on
esp-hw-offload: on [fixed]
esp-tx-csum-hw-offload: on [fixed]
rx-udp_tunnel-port-offload: on
tls-hw-tx-offload: on
tls-hw-rx-offload: off
rx-gro-hw: off [fixed]
tls-hw-record: off [fixed]
rx-gro-list: off
macsec-hw-offload: on
rx-udp-gro-forwarding: off
hsr-tag-ins-offload: off [fixed]
hsr-tag-rm-offload: off [fixed]
hsr-fwd-offload: off [fixed]
hsr-dup-offload: off [fixed]
";

    /// `ethtool -k enp1s0f0` of an ixgbe (82599) port, from a published
    /// tuning note; the FCoE features mark the driver.
    pub(crate) const IXGBE_ETHTOOL_K: &str = "Features for enp1s0f0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
\ttx-checksum-ip-generic: on
\ttx-checksum-ipv6: off [fixed]
\ttx-checksum-fcoe-crc: on [fixed]
\ttx-checksum-sctp: on
scatter-gather: on
\ttx-scatter-gather: on
\ttx-scatter-gather-fraglist: off [fixed]
tcp-segmentation-offload: on
\ttx-tcp-segmentation: on
\ttx-tcp-ecn-segmentation: off [fixed]
\ttx-tcp6-segmentation: on
\ttx-tcp-mangleid-segmentation: off
udp-fragmentation-offload: off [fixed]
generic-segmentation-offload: on
generic-receive-offload: on
large-receive-offload: off
rx-vlan-offload: on
tx-vlan-offload: on
ntuple-filters: off
receive-hashing: on
highdma: on [fixed]
rx-vlan-filter: on
vlan-challenged: off [fixed]
tx-lockless: off [fixed]
netns-local: off [fixed]
tx-gso-robust: off [fixed]
tx-fcoe-segmentation: on [fixed]
tx-gre-segmentation: on
tx-ipip-segmentation: on
tx-sit-segmentation: on
tx-udp_tnl-segmentation: on
fcoe-mtu: off [fixed]
tx-nocache-copy: off
loopback: off [fixed]
rx-fcs: off [fixed]
rx-all: off
tx-vlan-stag-hw-insert: off [fixed]
rx-vlan-stag-hw-parse: off [fixed]
rx-vlan-stag-filter: off [fixed]
busy-poll: off [fixed]
tx-gre-csum-segmentation: on
tx-udp_tnl-csum-segmentation: on
tx-gso-partial: on
tx-sctp-segmentation: off [fixed]
rx-gro-hw: off [fixed]
l2-fwd-offload: off
hw-tc-offload: off
rx-udp_tunnel-port-offload: on
";

    /// `ethtool -k eth0` of a virtio_net guest NIC (KVM, kernel 6.1), as
    /// posted to netdev (January 2023); the post lost the indentation.
    pub(crate) const VIRTIO_ETHTOOL_K: &str = "Features for eth0:
rx-checksumming: on [fixed]
tx-checksumming: on
tx-checksum-ipv4: off [fixed]
tx-checksum-ip-generic: on
tx-checksum-ipv6: off [fixed]
tx-checksum-fcoe-crc: off [fixed]
tx-checksum-sctp: off [fixed]
scatter-gather: on
tx-scatter-gather: on
tx-scatter-gather-fraglist: off [fixed]
tcp-segmentation-offload: on
tx-tcp-segmentation: on
tx-tcp-ecn-segmentation: on
tx-tcp-mangleid-segmentation: off
tx-tcp6-segmentation: on
generic-segmentation-offload: on
generic-receive-offload: on
large-receive-offload: off [fixed]
rx-vlan-offload: off [fixed]
tx-vlan-offload: off [fixed]
ntuple-filters: off [fixed]
receive-hashing: off [fixed]
highdma: on [fixed]
rx-vlan-filter: on [fixed]
vlan-challenged: off [fixed]
tx-lockless: off [fixed]
netns-local: off [fixed]
tx-gso-robust: on [fixed]
tx-fcoe-segmentation: off [fixed]
tx-gre-segmentation: off [fixed]
tx-gre-csum-segmentation: off [fixed]
tx-ipxip4-segmentation: off [fixed]
tx-ipxip6-segmentation: off [fixed]
tx-udp_tnl-segmentation: off [fixed]
tx-udp_tnl-csum-segmentation: off [fixed]
tx-gso-partial: off [fixed]
tx-tunnel-remcsum-segmentation: off [fixed]
tx-sctp-segmentation: off [fixed]
tx-esp-segmentation: off [fixed]
tx-udp-segmentation: off [fixed]
tx-gso-list: off [fixed]
fcoe-mtu: off [fixed]
tx-nocache-copy: off
loopback: off [fixed]
rx-fcs: off [fixed]
rx-all: off [fixed]
tx-vlan-stag-hw-insert: off [fixed]
rx-vlan-stag-hw-parse: off [fixed]
rx-vlan-stag-filter: off [fixed]
l2-fwd-offload: off [fixed]
hw-tc-offload: off [fixed]
esp-hw-offload: off [fixed]
esp-tx-csum-hw-offload: off [fixed]
rx-udp_tunnel-port-offload: off [fixed]
tls-hw-tx-offload: off [fixed]
tls-hw-rx-offload: off [fixed]
rx-gro-hw: on
tls-hw-record: off [fixed]
rx-gro-list: off
macsec-hw-offload: off [fixed]
rx-udp-gro-forwarding: off
hsr-tag-ins-offload: off [fixed]
hsr-tag-rm-offload: off [fixed]
hsr-fwd-offload: off [fixed]
hsr-dup-offload: off [fixed]
";

    fn on(fixed: bool) -> Option<Offload> {
        Some(Offload { on: true, fixed })
    }

    fn off(fixed: bool) -> Option<Offload> {
        Some(Offload { on: false, fixed })
    }

    #[test]
    fn mlx5_offloads_from_ethtool_text() {
        let features = parse_ethtool_k(MLX5_ETHTOOL_K);
        assert_eq!(features.len(), 65, "every feature line, not the header");
        let o = Offloads::from_features(&features);
        assert_eq!(o.lro, off(false));
        assert_eq!(o.gro_hw, off(true));
        assert_eq!(o.rx_vlan, on(false));
        assert_eq!(o.gro, on(false));
        assert_eq!(o.tx_checksum, on(false));
    }

    #[test]
    fn ixgbe_offloads_from_ethtool_text() {
        let o = Offloads::from_features(&parse_ethtool_k(IXGBE_ETHTOOL_K));
        assert_eq!(o.lro, off(false), "RSC can be turned on: not fixed");
        assert_eq!(o.gro_hw, off(true));
        assert_eq!(o.rx_vlan, on(false));
        let with_lro =
            IXGBE_ETHTOOL_K.replace("large-receive-offload: off", "large-receive-offload: on");
        assert_eq!(
            Offloads::from_features(&parse_ethtool_k(&with_lro)).lro,
            on(false)
        );
    }

    #[test]
    fn virtio_offloads_from_ethtool_text() {
        let o = Offloads::from_features(&parse_ethtool_k(VIRTIO_ETHTOOL_K));
        assert_eq!(o.lro, off(true));
        assert_eq!(o.gro_hw, on(false));
        assert_eq!(o.rx_vlan, off(true));
    }

    #[test]
    fn kernel_feature_names_aggregate_tx_checksum() {
        let feature = |name: &str, active, fixed| FeatureState {
            name: name.into(),
            active,
            fixed,
        };
        let features = [
            feature("tx-checksum-ipv4", false, true),
            feature("tx-checksum-ip-generic", true, false),
            feature("rx-lro", false, true),
            feature("rx-vlan-hw-parse", false, true),
        ];
        let o = Offloads::from_features(&features);
        assert_eq!(o.tx_checksum, on(false));
        assert_eq!(o.lro, off(true));
        assert_eq!(o.rx_vlan, off(true));
        assert_eq!(o.gro_hw, None, "absent feature stays unknown");
    }

    #[test]
    fn ethtool_text_garbage_is_skipped() {
        assert!(parse_ethtool_k(
            "Features for x:\n: on\nweird line\nname with space: on\nrx-lro: maybe\n"
        )
        .is_empty());
        let parsed = parse_ethtool_k("rx-gro-hw: off [requested on]\n");
        assert_eq!(parsed.len(), 1);
        assert!(!parsed[0].active && !parsed[0].fixed);
    }

    #[test]
    fn binary_answers_parse_and_short_buffers_do_not_panic() {
        let mut drvinfo = vec![0u8; DRVINFO_LEN];
        drvinfo[4..8].copy_from_slice(b"veth");
        drvinfo[36..39].copy_from_slice(b"1.0");
        drvinfo[100..112].copy_from_slice(b"0000:3b:00.0");
        let info = parse_drvinfo(&drvinfo);
        assert_eq!(info.driver, "veth");
        assert_eq!(info.version, "1.0");
        assert_eq!(info.bus_info, "0000:3b:00.0");
        assert_eq!(
            parse_drvinfo(&drvinfo[..10]).driver,
            "",
            "short answer: empty fields"
        );

        let words: Vec<u8> = (0u32..9).flat_map(|w| (w * 100).to_ne_bytes()).collect();
        let rings = parse_ringparam(&words);
        assert_eq!(
            (rings.rx_max, rings.tx_max, rings.rx, rings.tx),
            (100, 400, 500, 800)
        );
        let channels = parse_channels(&words);
        assert_eq!((channels.max_combined, channels.combined), (400, 800));
        assert_eq!(parse_channels(&words[..7]), Channels::default());

        let mut strings = vec![0u8; 3 * ETH_GSTRING_LEN];
        strings[..6].copy_from_slice(b"rx-lro");
        strings[32..41].copy_from_slice(b"rx-gro-hw");
        // Third string empty: skipped.
        let blocks: Vec<u8> = [0b01u32, 0, 0b11, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let parsed = parse_features(&strings, &blocks);
        assert_eq!(parsed.len(), 2);
        assert!(parsed[0].active && !parsed[0].fixed);
        assert!(parsed[1].active && parsed[1].fixed, "not available: fixed");
        assert!(parse_features(&strings, &[])
            .iter()
            .all(|f| !f.active && f.fixed));
    }

    #[test]
    fn loopback_answers_feature_requests() {
        let ethtool = Ethtool::open().expect("an AF_UNIX socket");
        let features = ethtool
            .features("lo")
            .expect("feature requests are answered by the core for every device");
        assert!(features.iter().any(|f| f.name == "rx-gro"));
        assert!(ethtool.features("no-such-if0").is_err());
        assert!(ethtool.features("name-longer-than-fifteen").is_err());
    }
}
