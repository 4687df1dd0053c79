//! Typed descriptions of relay flows, streams and layer caps, validated and
//! turned into the map values of `switchboard-common`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use switchboard_common::{
    Addr, Fanout, Flow, FlowKey, RelayDest, RoomCap, Stream, DD_TEMPLATES, DD_TEMPORAL_UNKNOWN,
    FLOW_RELAY, FLOW_TO_USERSPACE, KIND_AUDIO, KIND_VIDEO, MAX_FANOUT,
};

use super::XdpError;

/// An address as the programs see it: 16 bytes, IPv4 v4-mapped.
pub fn map_addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`map_addr`].
pub fn unmap_addr(addr: Addr) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Which packets a flow applies to: those from `remote` to our `local_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowMatch {
    /// The sender's address and port.
    pub remote: SocketAddr,
    /// The appliance's media port the sender sends to.
    pub local_port: u16,
}

impl FlowMatch {
    pub(super) fn key(&self) -> FlowKey {
        FlowKey {
            remote_addr: map_addr(self.remote.ip()),
            remote_port: self.remote.port(),
            local_port: self.local_port,
        }
    }
}

/// One destination of a relay flow: the egress leg's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTarget {
    /// Egress interface index (in the appliance's network namespace).
    pub ifindex: u32,
    /// The appliance's address and port on the egress leg (the new source).
    pub local: SocketAddr,
    /// The peer's address and port (the new destination).
    pub remote: SocketAddr,
    /// The egress interface's MAC address (the new Ethernet source).
    pub src_mac: [u8; 6],
    /// The next hop's MAC address (the new Ethernet destination).
    pub next_hop_mac: [u8; 6],
}

impl RelayTarget {
    /// The map form for packets of the flow `key` (checksum changes precomputed).
    fn to_dest(self, key: &FlowKey) -> RelayDest {
        RelayDest::new(
            key,
            (map_addr(self.local.ip()), self.local.port()),
            (map_addr(self.remote.ip()), self.remote.port()),
            self.ifindex,
            self.src_mac,
            self.next_hop_mac,
        )
    }
}

/// What happens to RTP/RTCP of a known flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowAction {
    /// The leg is terminated in userspace (sfu): pass packets up to the socket.
    ToUserspace,
    /// Relay byte for byte: one destination in XDP, several through the TC fan-out.
    Relay(Vec<RelayTarget>),
    /// Cascading: the leg is terminated here (its packets go up to the
    /// worker, unchanged) and a rewritten copy of each, still encrypted as
    /// the sender sent it, goes to every target (one trunk per downstream
    /// appliance), through the TC fan-out.
    UserspaceAndTrunks(Vec<RelayTarget>),
}

/// The map values for one flow: the flow itself and, for several
/// destinations, its fan-out entry.
pub(super) struct FlowValues {
    pub flow: Flow,
    pub fanout: Option<Fanout>,
}

/// Checks `action` for `flow` and builds the map values.
pub(super) fn flow_values(flow: &FlowMatch, action: &FlowAction) -> Result<FlowValues, XdpError> {
    let targets = match action {
        FlowAction::ToUserspace => {
            return Ok(FlowValues {
                flow: Flow {
                    action: FLOW_TO_USERSPACE,
                    ..Flow::default()
                },
                fanout: None,
            })
        }
        FlowAction::Relay(targets) | FlowAction::UserspaceAndTrunks(targets) => targets,
    };
    let pass_up = matches!(action, FlowAction::UserspaceAndTrunks(_));
    if targets.is_empty() {
        return Err(XdpError::NoDestinations);
    }
    if targets.len() > MAX_FANOUT {
        return Err(XdpError::FanoutTooLarge {
            requested: targets.len(),
            max: MAX_FANOUT,
        });
    }
    let v4 = flow.remote.is_ipv4();
    for target in targets {
        // The programs rewrite headers in place; changing the IP version
        // would need a different header size.
        if target.local.is_ipv4() != v4 || target.remote.is_ipv4() != v4 {
            return Err(XdpError::FamilyMismatch {
                sender: flow.remote,
                target: target.remote,
            });
        }
        if target.ifindex == 0 {
            return Err(XdpError::NoInterface);
        }
        if target.remote.port() == 0 || target.local.port() == 0 {
            return Err(XdpError::ZeroPort);
        }
    }
    let key = flow.key();
    let mut value = Flow {
        action: FLOW_RELAY,
        // Bounded by MAX_FANOUT (16) above.
        fanout: targets.len() as u8,
        ipv6: u8::from(!v4),
        pass_up: u8::from(pass_up),
        _pad: [0; 4],
        dest: targets[0].to_dest(&key),
    };
    // A trunk always takes the TC path (XDP cannot both pass a frame up
    // and send a copy), which reads its destinations from the fan-out map.
    let fanout = (targets.len() > 1 || pass_up).then(|| {
        let mut fan = Fanout::default();
        for (slot, target) in fan.dests.iter_mut().zip(targets) {
            *slot = target.to_dest(&key);
        }
        fan
    });
    if fanout.is_some() {
        // The TC program reads every destination from the fan-out entry.
        value.dest = RelayDest::default();
    }
    Ok(FlowValues {
        flow: value,
        fanout,
    })
}

/// Audio or video: only video is subject to layer caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Never dropped by a cap.
    Audio,
    /// Dropped when above the room's cap.
    Video,
}

/// How to read the temporal layer from an AV1 Dependency Descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyDescriptor {
    /// The negotiated RTP header extension id (1..=14 one-byte, up to 255 two-byte).
    pub ext_id: u8,
    /// Temporal layer per template id (0..64); `None` means never capped.
    pub temporal_by_template: [Option<u8>; DD_TEMPLATES],
}

/// What the appliance knows about one RTP stream (by SSRC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The room whose cap applies.
    pub room: u32,
    /// Audio or video.
    pub kind: StreamKind,
    /// Simulcast or spatial layer of this SSRC (0 = lowest).
    pub spatial_layer: u8,
    /// For SVC: where the temporal layer is read from.
    pub dependency_descriptor: Option<DependencyDescriptor>,
}

impl StreamSpec {
    pub(super) fn to_value(&self) -> Result<Stream, XdpError> {
        let mut value = Stream {
            room: self.room,
            kind: match self.kind {
                StreamKind::Audio => KIND_AUDIO,
                StreamKind::Video => KIND_VIDEO,
            },
            spatial: self.spatial_layer,
            ..Stream::default()
        };
        if let Some(dd) = &self.dependency_descriptor {
            if self.kind == StreamKind::Audio {
                return Err(XdpError::DependencyDescriptorOnAudio);
            }
            // 0 is padding in both RFC 8285 forms; 15 ends one-byte headers
            // and is valid in two-byte ones only, which the program cannot
            // tell apart by id, so it is refused.
            if dd.ext_id == 0 || dd.ext_id == 15 {
                return Err(XdpError::BadExtensionId(dd.ext_id));
            }
            value.dd_ext_id = dd.ext_id;
            for (slot, temporal) in value.dd_temporal.iter_mut().zip(dd.temporal_by_template) {
                *slot = match temporal {
                    Some(DD_TEMPORAL_UNKNOWN) => {
                        return Err(XdpError::BadTemporalLayer(DD_TEMPORAL_UNKNOWN))
                    }
                    Some(t) => t,
                    None => DD_TEMPORAL_UNKNOWN,
                };
            }
        }
        Ok(value)
    }
}

/// A room's layer cap, set by the overload policy. Audio and RTCP are never capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCap {
    /// Highest simulcast/spatial layer forwarded.
    pub max_spatial: u8,
    /// Highest temporal layer forwarded; `None` for no temporal cap.
    pub max_temporal: Option<u8>,
    /// No video at all (audio-only).
    pub video_off: bool,
}

impl LayerCap {
    pub(super) fn to_value(self) -> Result<RoomCap, XdpError> {
        let max_temporal = match self.max_temporal {
            Some(u8::MAX) => return Err(XdpError::BadTemporalLayer(u8::MAX)),
            Some(t) => t,
            None => u8::MAX,
        };
        Ok(RoomCap {
            max_spatial: self.max_spatial,
            max_temporal,
            video_off: u8::from(self.video_off),
            _pad: 0,
        })
    }
}
