//! The XDP ingress filter in front of the SFU workers' ports (`[xdp]`).
//!
//! When `xdp.interfaces` names interfaces, `switchboard run` loads the
//! appliance's XDP program onto them, so every packet to a media address and
//! port meets the kernel's fast path first (DESIGN §1–2):
//!
//! * each leg's 5-tuple becomes a flow as soon as ICE and DTLS finish, with
//!   the action "to userspace": its RTP/RTCP goes up to the worker's socket;
//! * RTP/RTCP from any other sender is dropped in the driver (or passed up,
//!   if `xdp.unknown_senders = "pass"`), counted, before it costs a socket
//!   wake-up or a decryption attempt; STUN and DTLS always go up, so new legs
//!   can connect;
//! * each publisher's streams are registered by SSRC with their room and
//!   layer (from the offer, or as the worker learns RID-identified SSRCs),
//!   and the overload policy's room caps are written to the room-cap map:
//!   the packets of capped layers are dropped at ingress. Audio and RTCP are
//!   never dropped by a cap.
//!
//! The worker keeps its own per-subscriber caps as well, so caps hold for
//! streams whose SSRC is not known yet. Detached on drop, which `run` reaches
//! on SIGTERM/SIGINT after draining.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;

use dataplane::sfu::{InStreamStats, MediaKind};
use dataplane::xdp::{
    AttachedMode, FlowAction, FlowMatch, LayerCap, RelayTarget, StreamKind, StreamSpec, XdpError,
    XdpIngress,
};
use switchboard_common::IngressConfig;

use crate::config::{Disposition, MediaConfig, XdpConfig};

/// Starting the filter failed.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// Loading, configuring or attaching the program failed.
    #[error("XDP ingress filter: {0}")]
    Xdp(#[from] XdpError),
    /// `xdp.require_driver_mode` and the driver has no native XDP.
    #[error(
        "XDP ingress filter: {interface} supports only generic (skb) XDP and \
         xdp.require_driver_mode is set"
    )]
    NotNative {
        /// The interface.
        interface: String,
    },
}

/// What the filter holds for one active leg.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LegEntry {
    flow: FlowMatch,
    room: u32,
    streams: BTreeSet<u32>,
}

struct State {
    xdp: XdpIngress,
    legs: BTreeMap<u64, LegEntry>,
    caps: BTreeMap<u32, LayerCap>,
    /// Cascading trunks of publisher legs: one copy of each packet to every
    /// downstream appliance.
    trunks: BTreeMap<u64, Vec<RelayTarget>>,
    detached: bool,
}

/// The loaded, attached filter. See the [module documentation](self).
pub struct IngressFilter {
    state: Mutex<State>,
    attached: Vec<(String, AttachedMode)>,
}

impl std::fmt::Debug for IngressFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressFilter")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn disposition(d: Disposition) -> u8 {
    u8::from(d == Disposition::Drop)
}

impl IngressFilter {
    /// Loads the program for `media`'s addresses and port range and attaches
    /// it to `xdp.interfaces`; `None` when none are configured.
    pub fn start(xdp: &XdpConfig, media: &MediaConfig) -> Result<Option<Self>, IngressError> {
        if xdp.interfaces.is_empty() {
            return Ok(None);
        }
        let mut ingress = XdpIngress::load(IngressConfig {
            port_min: media.port_min,
            port_max: media.port_max,
            drop_malformed: disposition(xdp.malformed),
            drop_unknown: disposition(xdp.unknown_senders),
            _pad: [0; 2],
        })?;
        for addr in &media.advertised_addresses {
            ingress.add_local_address(*addr)?;
        }
        let mut attached = Vec::new();
        for interface in &xdp.interfaces {
            let mode = ingress.attach(interface)?;
            if mode == AttachedMode::Skb {
                if xdp.require_driver_mode {
                    // Dropping `ingress` detaches what is attached so far.
                    return Err(IngressError::NotNative {
                        interface: interface.clone(),
                    });
                }
                tracing::warn!(
                    interface,
                    mode = %mode,
                    "XDP runs in generic (skb) mode here: correct, but several times slower than driver mode"
                );
            }
            attached.push((interface.clone(), mode));
        }
        Ok(Some(Self {
            state: Mutex::new(State {
                xdp: ingress,
                legs: BTreeMap::new(),
                caps: BTreeMap::new(),
                trunks: BTreeMap::new(),
                detached: false,
            }),
            attached,
        }))
    }

    /// Interfaces and the XDP mode in use on each.
    pub fn attached(&self) -> &[(String, AttachedMode)] {
        &self.attached
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leg `leg` of `room` carries media from `remote` to `local_port`;
    /// `published` are the streams it sends (empty for a subscriber).
    pub fn leg_up(
        &self,
        leg: u64,
        room: u32,
        remote: SocketAddr,
        local_port: u16,
        published: &[InStreamStats],
    ) -> Result<(), XdpError> {
        let mut st = self.lock();
        if let Some(old) = st.legs.remove(&leg) {
            remove_entry(&mut st.xdp, &old);
        }
        let flow = FlowMatch { remote, local_port };
        let action = match st.trunks.get(&leg) {
            Some(trunks) if !trunks.is_empty() => FlowAction::UserspaceAndTrunks(trunks.clone()),
            _ => FlowAction::ToUserspace,
        };
        st.xdp.set_flow(flow, &action)?;
        let mut entry = LegEntry {
            flow,
            room,
            streams: BTreeSet::new(),
        };
        let result = add_streams(&mut st.xdp, &mut entry, published);
        st.legs.insert(leg, entry);
        result
    }

    /// Streams of `leg` the worker has identified since it came up (RID
    /// simulcast layers announce their SSRC only in their packets).
    pub fn learn_streams(&self, leg: u64, published: &[InStreamStats]) -> Result<(), XdpError> {
        let mut st = self.lock();
        let State { xdp, legs, .. } = &mut *st;
        match legs.get_mut(&leg) {
            Some(entry) => add_streams(xdp, entry, published),
            None => Ok(()),
        }
    }

    /// Leg `leg` is gone (removed, consent lapsed, or moved to a new
    /// address, which comes back through [`leg_up`](Self::leg_up)).
    pub fn leg_down(&self, leg: u64) {
        let mut st = self.lock();
        if let Some(old) = st.legs.remove(&leg) {
            remove_entry(&mut st.xdp, &old);
        }
    }

    /// Sends a copy of every packet publisher leg `leg` sends to each of
    /// `trunks` (the downstream appliances of a cascade) while the worker
    /// keeps receiving the original; empty stops. Applied now if the leg
    /// carries media, else when it comes up.
    pub fn set_trunks(&self, leg: u64, trunks: Vec<RelayTarget>) -> Result<(), XdpError> {
        let mut st = self.lock();
        let State {
            xdp,
            legs,
            trunks: all,
            ..
        } = &mut *st;
        if let Some(entry) = legs.get(&leg) {
            let action = if trunks.is_empty() {
                FlowAction::ToUserspace
            } else {
                FlowAction::UserspaceAndTrunks(trunks.clone())
            };
            xdp.set_flow(entry.flow, &action)?;
        }
        if trunks.is_empty() {
            all.remove(&leg);
        } else {
            all.insert(leg, trunks);
        }
        Ok(())
    }

    /// The overload policy's cap for `room`'s ingress; `None` lifts it.
    pub fn set_room_cap(&self, room: u32, cap: Option<LayerCap>) -> Result<(), XdpError> {
        let mut st = self.lock();
        match cap {
            Some(cap) => {
                if st.caps.get(&room) != Some(&cap) {
                    st.xdp.set_room_cap(room, cap)?;
                    st.caps.insert(room, cap);
                }
            }
            None => {
                if st.caps.remove(&room).is_some() {
                    st.xdp.clear_room_cap(room)?;
                }
            }
        }
        Ok(())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<switchboard_common::Counters, XdpError> {
        self.lock().xdp.counters()
    }

    /// Flows registered now.
    pub fn flows(&self) -> usize {
        self.lock().legs.len()
    }
}

fn add_streams(
    xdp: &mut XdpIngress,
    entry: &mut LegEntry,
    published: &[InStreamStats],
) -> Result<(), XdpError> {
    for s in published {
        if entry.streams.contains(&s.ssrc) {
            continue;
        }
        xdp.set_stream(
            s.ssrc,
            &StreamSpec {
                room: entry.room,
                kind: match s.kind {
                    MediaKind::Audio => StreamKind::Audio,
                    MediaKind::Video => StreamKind::Video,
                },
                spatial_layer: s.layer,
                dependency_descriptor: None,
            },
        )?;
        entry.streams.insert(s.ssrc);
    }
    Ok(())
}

fn remove_entry(xdp: &mut XdpIngress, entry: &LegEntry) {
    if let Err(e) = xdp.remove_flow(&entry.flow) {
        tracing::warn!(remote = %entry.flow.remote, error = %e, "removing an XDP flow failed");
    }
    for ssrc in &entry.streams {
        if let Err(e) = xdp.remove_stream(*ssrc) {
            tracing::warn!(ssrc, error = %e, "removing an XDP stream failed");
        }
    }
}

impl IngressFilter {
    /// Detaches the program from every interface (idempotent). The media
    /// plane does this on shutdown, so a drained appliance leaves no program
    /// behind even where the attachment would outlive the process (netlink
    /// attachments on kernels without BPF links).
    pub fn detach(&self) {
        let mut st = self.lock();
        if st.detached {
            return;
        }
        st.detached = true;
        match st.xdp.detach_all() {
            Ok(()) => tracing::info!("XDP ingress filter detached"),
            Err(e) => tracing::error!(error = %e, "detaching the XDP ingress filter failed"),
        }
    }
}

impl Drop for IngressFilter {
    fn drop(&mut self) {
        self.detach();
    }
}
