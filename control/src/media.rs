//! The seam between the control plane and the media plane.
//!
//! The HTTP API calls a [`MediaPlane`] to add and remove legs, connect
//! subscribers to publishers, set a consult's overload caps and read
//! counters. The real implementation drives the SFU core and its workers;
//! [`InMemoryMediaPlane`] records the calls, for tests and for running the
//! control plane alone.
//!
//! A leg arrives in two steps: [`MediaPlane::add_leg`] at signaling time,
//! with the negotiated description (payload types, extension ids, rids,
//! ICE credentials, the participant's DTLS fingerprint), and
//! [`MediaPlane::activate_leg`] once ICE has nominated a 5-tuple and DTLS
//! has produced the SRTP keys (see [`crate::session`], which the worker
//! owning the leg's UDP port drives). [`worker::WorkerMediaPlane`] is the
//! implementation over the SFU workers.

pub mod ingress;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;

use dataplane::layer::OverloadCap;
use dataplane::xdp::LayerCap;
use serde::Serialize;

use crate::dtls::SrtpKeys;
use crate::overload::VideoCap;
use crate::sdp::NegotiatedLeg;

/// A leg's id, unique for the appliance's lifetime.
pub type LegId = u64;

/// A leg as signaled.
#[derive(Debug, Clone)]
pub struct LegSetup {
    /// The leg.
    pub leg: LegId,
    /// The consult's room number (the key of XDP room caps).
    pub room: u32,
    /// The UDP address the leg's media arrives at.
    pub local: SocketAddr,
    /// What was negotiated.
    pub negotiated: NegotiatedLeg,
}

/// What ICE and DTLS established for a leg.
#[derive(Debug, Clone)]
pub struct LegTransport {
    /// The participant's nominated address.
    pub remote: SocketAddr,
    /// SRTP keys of both directions.
    pub keys: SrtpKeys,
}

/// The overload caps of one consult (room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoomCap {
    /// The policy's decision.
    pub video: VideoCap,
    /// For the layer selectors of the room's subscribers.
    #[serde(skip)]
    pub selector: Option<OverloadCap>,
    /// For the XDP ingress filter.
    #[serde(skip)]
    pub xdp: Option<LayerCap>,
}

impl RoomCap {
    /// The caps for `video` in a room whose sources have `layers` layers.
    pub fn new(video: VideoCap, layers: u8) -> Self {
        Self {
            video,
            selector: video.overload_cap(layers),
            xdp: video.xdp_cap(layers),
        }
    }
}

/// Counters the media plane reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaStats {
    /// Legs known.
    pub legs: u64,
    /// Legs with keys and a 5-tuple.
    pub active_legs: u64,
    /// Egress over the last second, bit/s.
    pub egress_bps: u64,
    /// Ingress over the last second, bit/s.
    pub ingress_bps: u64,
    /// RTP packets forwarded since start.
    pub packets_forwarded: u64,
}

/// A media plane refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The leg is not known.
    #[error("unknown leg {0}")]
    UnknownLeg(LegId),
    /// The leg already exists.
    #[error("leg {0} exists")]
    DuplicateLeg(LegId),
    /// Anything the implementation reports.
    #[error("media plane: {0}")]
    Other(String),
}

/// What the control plane asks of the media plane.
pub trait MediaPlane: Send + Sync + 'static {
    /// Registers a signaled leg.
    fn add_leg(&self, setup: LegSetup) -> Result<(), MediaError>;
    /// Gives a leg its 5-tuple and keys; media may flow from now on.
    fn activate_leg(&self, leg: LegId, transport: LegTransport) -> Result<(), MediaError>;
    /// Removes a leg and every subscription it is part of.
    fn remove_leg(&self, leg: LegId) -> Result<(), MediaError>;
    /// Forwards `publisher`'s media to `subscriber`.
    fn subscribe(&self, subscriber: LegId, publisher: LegId) -> Result<(), MediaError>;
    /// Applies a room's overload caps.
    fn set_room_cap(&self, room: u32, cap: RoomCap) -> Result<(), MediaError>;
    /// Current counters.
    fn stats(&self) -> MediaStats;
    /// The UDP port a room's legs use, when the media plane decides it
    /// (`None`: the API derives it from the configured port range).
    fn media_port(&self, _room: u32) -> Option<u16> {
        None
    }
    /// Registers a leg whose address and keys are known already (a trunk
    /// from another appliance: no ICE, no DTLS); media may flow at once.
    fn add_keyed_leg(&self, setup: LegSetup, transport: LegTransport) -> Result<(), MediaError> {
        let leg = setup.leg;
        self.add_leg(setup)?;
        self.activate_leg(leg, transport)
    }
    /// The address and keys of a leg carrying media (`None` before ICE and
    /// DTLS finished): a cascade hands a publisher's keys to the downstream
    /// appliances.
    fn leg_transport(&self, _leg: LegId) -> Option<LegTransport> {
        None
    }
    /// Sends a copy of every packet publisher leg `leg` sends over each of
    /// `trunks` (cascading; empty stops). Needs the XDP ingress filter.
    fn set_trunks(
        &self,
        _leg: LegId,
        _trunks: Vec<dataplane::xdp::RelayTarget>,
    ) -> Result<(), MediaError> {
        Err(MediaError::Other(
            "cascading needs the XDP ingress filter (xdp.interfaces)".into(),
        ))
    }
    /// Key-frame requests the worker has sent to publisher leg `leg` so far
    /// (`None` if it is not carrying media).
    fn keyframe_requests_sent(&self, _leg: LegId) -> Option<u64> {
        None
    }
    /// Asks publisher leg `leg` for a key frame (for subscribers on other
    /// appliances, which the worker does not see).
    fn request_keyframe(&self, _leg: LegId) -> Result<(), MediaError> {
        Ok(())
    }
    /// Stops forwarding and releases the media resources (at exit).
    fn shutdown(&self) {}
}

#[derive(Debug, Default)]
struct Recorded {
    legs: BTreeMap<LegId, (LegSetup, Option<LegTransport>)>,
    subscriptions: BTreeSet<(LegId, LegId)>,
    caps: BTreeMap<u32, RoomCap>,
    egress_bps: u64,
}

/// A media plane that records what it is told.
#[derive(Debug, Default)]
pub struct InMemoryMediaPlane {
    inner: Mutex<Recorded>,
}

impl InMemoryMediaPlane {
    /// An empty one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Legs present.
    pub fn legs(&self) -> Vec<LegId> {
        self.inner
            .lock()
            .expect("lock")
            .legs
            .keys()
            .copied()
            .collect()
    }

    /// The setup of a leg.
    pub fn leg(&self, leg: LegId) -> Option<LegSetup> {
        self.inner
            .lock()
            .expect("lock")
            .legs
            .get(&leg)
            .map(|(s, _)| s.clone())
    }

    /// `(subscriber, publisher)` pairs.
    pub fn subscriptions(&self) -> Vec<(LegId, LegId)> {
        self.inner
            .lock()
            .expect("lock")
            .subscriptions
            .iter()
            .copied()
            .collect()
    }

    /// The cap last set for a room.
    pub fn room_cap(&self, room: u32) -> Option<RoomCap> {
        self.inner.lock().expect("lock").caps.get(&room).copied()
    }

    /// Sets the egress the stats report (to drive the overload ladder).
    pub fn set_egress_bps(&self, bps: u64) {
        self.inner.lock().expect("lock").egress_bps = bps;
    }
}

impl MediaPlane for InMemoryMediaPlane {
    fn add_leg(&self, setup: LegSetup) -> Result<(), MediaError> {
        let mut g = self.inner.lock().expect("lock");
        if g.legs.contains_key(&setup.leg) {
            return Err(MediaError::DuplicateLeg(setup.leg));
        }
        g.legs.insert(setup.leg, (setup, None));
        Ok(())
    }

    fn activate_leg(&self, leg: LegId, transport: LegTransport) -> Result<(), MediaError> {
        let mut g = self.inner.lock().expect("lock");
        let entry = g.legs.get_mut(&leg).ok_or(MediaError::UnknownLeg(leg))?;
        entry.1 = Some(transport);
        Ok(())
    }

    fn remove_leg(&self, leg: LegId) -> Result<(), MediaError> {
        let mut g = self.inner.lock().expect("lock");
        g.legs.remove(&leg).ok_or(MediaError::UnknownLeg(leg))?;
        g.subscriptions.retain(|(s, p)| *s != leg && *p != leg);
        Ok(())
    }

    fn subscribe(&self, subscriber: LegId, publisher: LegId) -> Result<(), MediaError> {
        let mut g = self.inner.lock().expect("lock");
        for l in [subscriber, publisher] {
            if !g.legs.contains_key(&l) {
                return Err(MediaError::UnknownLeg(l));
            }
        }
        g.subscriptions.insert((subscriber, publisher));
        Ok(())
    }

    fn set_room_cap(&self, room: u32, cap: RoomCap) -> Result<(), MediaError> {
        self.inner.lock().expect("lock").caps.insert(room, cap);
        Ok(())
    }

    fn stats(&self) -> MediaStats {
        let g = self.inner.lock().expect("lock");
        MediaStats {
            legs: g.legs.len() as u64,
            active_legs: g.legs.values().filter(|(_, t)| t.is_some()).count() as u64,
            egress_bps: g.egress_bps,
            ingress_bps: 0,
            packets_forwarded: 0,
        }
    }
}
