//! The XDP program attached to an interface, from `ip -d link show dev IF`.
//!
//! iproute2 prints the attach mode as a word after the MTU (`xdp`,
//! `xdpgeneric`, `xdpoffload`, `xdpmulti`) and, with `-d`, one
//! `prog/xdp… id N name NAME …` line per program.

use serde::Serialize;

/// How an XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpAttachMode {
    /// Native (driver) mode.
    Driver,
    /// Generic (skb) mode.
    Generic,
    /// Offloaded to the NIC.
    Offload,
    /// Programs in more than one mode.
    Multi,
    /// A mode this parser does not know.
    Unknown,
}

impl XdpAttachMode {
    /// The `ip link set dev IF <word> off` keyword that detaches it.
    pub fn detach_keyword(self) -> &'static str {
        match self {
            Self::Driver => "xdpdrv",
            Self::Generic => "xdpgeneric",
            Self::Offload => "xdpoffload",
            Self::Multi | Self::Unknown => "xdp",
        }
    }
}

impl std::fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Generic => "generic",
            Self::Offload => "offload",
            Self::Multi => "multi",
            Self::Unknown => "unknown",
        })
    }
}

/// An XDP program attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedXdp {
    /// Attach mode.
    pub mode: XdpAttachMode,
    /// Kernel program id.
    pub id: Option<u32>,
    /// Program name (the kernel keeps 15 characters).
    pub name: Option<String>,
}

fn mode_word(word: &str) -> Option<XdpAttachMode> {
    match word {
        "xdp" | "xdpdrv" => Some(XdpAttachMode::Driver),
        "xdpgeneric" => Some(XdpAttachMode::Generic),
        "xdpoffload" => Some(XdpAttachMode::Offload),
        "xdpmulti" => Some(XdpAttachMode::Multi),
        w if w.starts_with("xdp[") => Some(XdpAttachMode::Unknown),
        _ => None,
    }
}

/// Parses `ip [-d] link show dev IF` output; `None` when no XDP program is
/// attached (or the text is not `ip link` output).
pub fn parse_ip_link(text: &str) -> Option<AttachedXdp> {
    let mut lines = text.lines();
    let header = lines.next()?;
    // The mode word sits between "mtu N" and the qdisc on the first line.
    let mut words = header
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .skip(2);
    let mut mode = words
        .by_ref()
        .take_while(|w| *w != "qdisc" && *w != "state")
        .find_map(mode_word);
    let mut id = None;
    let mut name = None;
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(tag) = words.next().and_then(|w| w.strip_prefix("prog/")) else {
            continue;
        };
        if mode.is_none() {
            mode = mode_word(tag);
        }
        let rest: Vec<&str> = words.collect();
        for pair in rest.windows(2) {
            match pair[0] {
                "id" if id.is_none() => id = pair[1].parse().ok(),
                "name" if name.is_none() => name = Some(pair[1].to_owned()),
                _ => {}
            }
        }
        if mode.is_none() {
            mode = Some(XdpAttachMode::Unknown);
        }
    }
    mode.map(|mode| AttachedXdp { mode, id, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip -d link show dev va` (iproute2 6.1) on a veth with an XDP_PASS
    /// program in driver mode, kernel 6.18.
    const VETH_DRIVER: &str = "3: va@vb: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc noqueue state UP mode DEFAULT group default qlen 1000
    link/ether 66:80:07:65:0c:33 brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 
    veth addrgenmode eui64 numtxqueues 2 numrxqueues 2 gso_max_size 65536 gso_max_segs 65535 tso_max_size 524280 tso_max_segs 65535 gro_max_size 65536 
    prog/xdp id 115 name xdp_pass tag 614b434cd8324ecc jited load_time 1025153240402 created_by_uid 0 
";

    /// Its peer, with the same program in generic mode; `maxmtu 3506` is
    /// veth's single-buffer XDP limit, set because the peer runs XDP.
    const VETH_GENERIC: &str = "2: vb@va: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpgeneric qdisc noqueue state UP mode DEFAULT group default qlen 1000
    link/ether 2a:2a:70:bb:a0:f1 brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 minmtu 68 maxmtu 3506 
    veth addrgenmode eui64 numtxqueues 2 numrxqueues 2 gso_max_size 65536 gso_max_segs 65535 tso_max_size 524280 tso_max_segs 65535 gro_max_size 65536 
    prog/xdp id 120 name xdp_pass tag 614b434cd8324ecc jited load_time 1025171717130 created_by_uid 0 
";

    /// `ip -d link show dev eth0` of a virtio_net NIC without XDP.
    const VIRTIO_NONE: &str = "4: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000
    link/ether 02:fc:00:00:00:01 brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 addrgenmode eui64 numtxqueues 1 numrxqueues 1 gso_max_size 65536 gso_max_segs 65535 tso_max_size 65536 tso_max_segs 65535 gro_max_size 65536 parentbus virtio parentdev virtio2 
";

    #[test]
    fn driver_mode_program() {
        assert_eq!(
            parse_ip_link(VETH_DRIVER),
            Some(AttachedXdp {
                mode: XdpAttachMode::Driver,
                id: Some(115),
                name: Some("xdp_pass".into()),
            })
        );
    }

    #[test]
    fn generic_mode_program() {
        let attached = parse_ip_link(VETH_GENERIC).expect("attached");
        assert_eq!(attached.mode, XdpAttachMode::Generic);
        assert_eq!(attached.id, Some(120));
        assert_eq!(attached.mode.detach_keyword(), "xdpgeneric");
    }

    #[test]
    fn no_program() {
        assert_eq!(parse_ip_link(VIRTIO_NONE), None);
        assert_eq!(parse_ip_link(""), None);
        assert_eq!(parse_ip_link("garbage mtu"), None);
    }

    #[test]
    fn multi_mode_program_lines_name_their_mode() {
        let text = "5: eth1: <UP> mtu 1500 xdpmulti qdisc mq state UP\n    prog/xdpdrv id 7 name a\n    prog/xdpoffload id 8 name b\n";
        let attached = parse_ip_link(text).expect("attached");
        assert_eq!(attached.mode, XdpAttachMode::Multi);
        assert_eq!(
            (attached.id, attached.name.as_deref()),
            (Some(7), Some("a"))
        );
        let without_header_word =
            "5: eth1: <UP> mtu 1500 qdisc mq\n    prog/xdpgeneric id x name\n";
        let attached = parse_ip_link(without_header_word).expect("attached");
        assert_eq!(attached.mode, XdpAttachMode::Generic);
        assert_eq!(attached.id, None, "unparsable id stays unknown");
    }
}
