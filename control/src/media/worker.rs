//! The media plane over real SFU workers.
//!
//! [`WorkerMediaPlane`] spawns one [`Worker`] per configured worker (per
//! core when `media.workers = 0`, pinned), each on its own UDP port
//! `port_min + i`. A consult's room lives on worker `room % workers`, whose
//! port goes into the candidates of every leg of the room (see
//! [`MediaPlane::media_port`]), so all of a room's packets reach the one
//! thread holding its state.
//!
//! A signaled leg gets a [`LegSession`] (ICE-lite + DTLS, sans-IO), indexed
//! by our ICE ufrag. One transport thread per worker reads the STUN and
//! DTLS datagrams the worker punts: STUN finds its session by the first part
//! of USERNAME (our ufrag), DTLS by the remote address that passed an
//! authenticated ICE check. Replies leave through [`Worker::transmit`].
//! When a session reports [`SessionEvent::Ready`], the leg is added to the
//! worker's core with its negotiated media and SRTP keys, its publication
//! declared, and every subscription waiting for it applied; subscriptions
//! asked for earlier wait until both of their legs carry media.
//!
//! The transport threads also run the sessions' timers (DTLS
//! retransmission, ICE consent) and, once a second, turn the workers'
//! counters into the rates [`MediaPlane::stats`] reports.
//!
//! With an [`IngressFilter`] (`[xdp]`), every leg that carries media is a
//! flow of the XDP program, its publications are streams with their room
//! and layer, and room caps are written to the program's cap map as well as
//! to the workers (see [`super::ingress`]).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SecureRandom;
use dataplane::layer::OverloadCap;
use dataplane::sfu::{
    Command, ExtensionIds, LayerSpec, LegConfig, MediaConfig as CoreMedia, PublishSpec, Reply,
    RoomId, SfuConfig, SubscribeSpec, VideoCodec,
};
use dataplane::wire::stun::Message;
use dataplane::worker::{Engine, EngineSnapshot, Punted, Worker, WorkerConfig, WorkerError};

use super::ingress::{IngressError, IngressFilter};
use super::{LegId, LegSetup, LegTransport, MediaError, MediaPlane, MediaStats, RoomCap};
use crate::config;
use crate::dtls::DtlsIdentity;
use crate::metrics::{ControlMetrics, Counter};
use crate::sdp::{Codec, ExtensionKind, Feedback, LegDirection, MediaKind, NegotiatedLeg};
use crate::session::{LegSession, SessionError, SessionEvent};

/// Longest a transport thread sleeps, so stop and rate sampling are timely.
const MAX_IDLE: Duration = Duration::from_millis(100);
/// Period of the rate and counter sampling.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// How long a command to a worker may take before the leg is given up.
const COMMAND_WAIT: Duration = Duration::from_secs(2);

/// Why the media plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A worker did not start (port taken, io_uring unavailable, ...).
    #[error("media worker on port {port}: {source}")]
    Worker {
        /// Its port.
        port: u16,
        /// Why.
        source: WorkerError,
    },
    /// A transport thread could not be spawned.
    #[error("spawning a transport thread: {0}")]
    Thread(std::io::Error),
    /// A worker's punted datagrams were already taken.
    #[error("the punted datagrams of the worker on port {0} are already read elsewhere")]
    PuntTaken(u16),
    /// The XDP ingress filter did not start.
    #[error(transparent)]
    Ingress(#[from] IngressError),
}

/// How many workers `media` asks for (the same count the API uses to
/// place rooms).
pub fn worker_count(media: &config::MediaConfig) -> usize {
    let wanted = if media.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        media.workers
    };
    let ports = usize::from(media.port_max.saturating_sub(media.port_min)) + 1;
    wanted.min(ports).max(1)
}

/// Failure counters exported on /metrics.
struct Failures {
    metrics: ControlMetrics,
    unknown_ufrag: Counter,
    /// DTLS from an address no leg's ICE validated.
    unvalidated: Counter,
}

impl Failures {
    fn new(metrics: ControlMetrics) -> Self {
        Self {
            unknown_ufrag: metrics.stun_failure("unknown_ufrag"),
            unvalidated: metrics.dtls_failure("unvalidated"),
            metrics,
        }
    }
}

/// The ICE/DTLS sessions of one worker's legs.
#[derive(Default)]
struct Sessions {
    by_leg: HashMap<LegId, LegSession>,
    by_ufrag: HashMap<String, LegId>,
    /// Addresses that passed an authenticated check, for DTLS.
    by_remote: HashMap<SocketAddr, LegId>,
    /// Earliest deadline of any session (recomputed when reached).
    next_poll: Option<Instant>,
}

impl Sessions {
    fn remove(&mut self, leg: LegId) {
        self.by_leg.remove(&leg);
        self.by_ufrag.retain(|_, l| *l != leg);
        self.by_remote.retain(|_, l| *l != leg);
    }
}

/// A leg as the plane knows it.
struct LegState {
    setup: LegSetup,
    worker: usize,
    /// Set once ICE and DTLS finished (or `activate_leg` was called).
    transport: Option<LegTransport>,
    /// Whether the leg is in the worker's core now.
    in_core: bool,
    /// Consent lapsed or DTLS closed: gone from the core, kept until the
    /// API removes it.
    dead: bool,
    /// The appliance's RTCP sender SSRC on this leg.
    rtcp_ssrc: u32,
    /// Subscribe legs: which publisher each pair of sent streams (one per
    /// audio and video m-section, in order) carries.
    slots: Vec<Option<LegId>>,
}

#[derive(Default)]
struct PlaneState {
    legs: HashMap<LegId, LegState>,
    /// `(subscriber, publisher)` pairs asked for.
    subscriptions: BTreeSet<(LegId, LegId)>,
    /// Pairs the cores apply now.
    applied: BTreeSet<(LegId, LegId)>,
    /// The latest cap per room, re-applied when a leg of the room joins a
    /// core (a core forgets the caps of rooms it does not hold).
    caps: HashMap<u32, Option<OverloadCap>>,
}

/// Rates and totals of one worker, refreshed by its transport thread.
#[derive(Default)]
struct Rates {
    egress_bps: AtomicU64,
    ingress_bps: AtomicU64,
    forwarded: AtomicU64,
}

struct Inner {
    workers: Vec<Worker>,
    identity: DtlsIdentity,
    failures: Failures,
    sessions: Vec<Mutex<Sessions>>,
    state: Mutex<PlaneState>,
    rates: Vec<Rates>,
    stop: AtomicBool,
    ingress: Option<IngressFilter>,
    /// Last XDP counters turned into metrics.
    xdp_seen: Mutex<switchboard_common::Counters>,
}

/// The media plane over real workers. See the [module documentation](self).
pub struct WorkerMediaPlane {
    inner: Arc<Inner>,
    transports: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for WorkerMediaPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMediaPlane")
            .field(
                "workers",
                &self
                    .inner
                    .workers
                    .iter()
                    .map(Worker::local_addr)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the media plane down with it: the
    // tables stay consistent between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_ssrc() -> u32 {
    let mut b = [0u8; 4];
    loop {
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut b)
            .expect("system RNG");
        let v = u32::from_be_bytes(b);
        if v != 0 {
            return v;
        }
    }
}

fn other(e: impl std::fmt::Display) -> MediaError {
    MediaError::Other(e.to_string())
}

impl WorkerMediaPlane {
    /// Spawns the workers of `media` and their transport threads. Sessions
    /// use `identity` (the certificate the SDP answers advertise); STUN and
    /// DTLS failures are counted in `metrics`.
    pub fn start(
        media: &config::MediaConfig,
        identity: DtlsIdentity,
        metrics: ControlMetrics,
    ) -> Result<Self, StartError> {
        Self::start_with_ingress(media, identity, metrics, None)
    }

    /// [`start`](Self::start) behind the XDP ingress filter `ingress`.
    pub fn start_with_ingress(
        media: &config::MediaConfig,
        identity: DtlsIdentity,
        metrics: ControlMetrics,
        ingress: Option<IngressFilter>,
    ) -> Result<Self, StartError> {
        let count = worker_count(media);
        let pin = media.workers == 0;
        let engine = match media.engine {
            config::Engine::IoUring => Engine::IoUring,
            config::Engine::Tokio => Engine::Tokio,
        };
        // An IPv6 socket (dual-stack) only if an IPv6 address is advertised.
        let ip = if media.advertised_addresses.iter().any(IpAddr::is_ipv6) {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let port = media.port_min + i as u16;
            let mut wc = WorkerConfig::new(engine, SocketAddr::new(ip, port));
            wc.core = pin.then_some(i % cores);
            wc.sfu = SfuConfig::default();
            let worker = Worker::spawn(wc).map_err(|source| StartError::Worker { port, source })?;
            tracing::info!(
                local = %worker.local_addr(),
                engine = engine.as_str(),
                "media worker started"
            );
            workers.push(worker);
        }
        let mut punted = Vec::with_capacity(count);
        for w in &workers {
            punted.push(
                w.take_punted()
                    .ok_or(StartError::PuntTaken(w.local_addr().port()))?,
            );
        }
        let inner = Arc::new(Inner {
            sessions: (0..count).map(|_| Mutex::default()).collect(),
            rates: (0..count).map(|_| Rates::default()).collect(),
            workers,
            identity,
            failures: Failures::new(metrics),
            state: Mutex::default(),
            stop: AtomicBool::new(false),
            ingress,
            xdp_seen: Mutex::default(),
        });
        let plane = Self {
            inner: inner.clone(),
            transports: Mutex::new(Vec::new()),
        };
        for (w, rx) in punted.into_iter().enumerate() {
            let inner = inner.clone();
            let port = inner.workers[w].local_addr().port();
            let handle = std::thread::Builder::new()
                .name(format!("transport-{port}"))
                .spawn(move || inner.transport_loop(w, &rx))
                .map_err(StartError::Thread)?;
            lock(&plane.transports).push(handle);
        }
        Ok(plane)
    }

    /// The workers' socket addresses, in room order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().map(Worker::local_addr).collect()
    }

    /// The workers' engine counters.
    pub fn engine_counters(&self) -> Vec<EngineSnapshot> {
        self.inner.workers.iter().map(Worker::counters).collect()
    }

    fn worker_of(&self, room: u32) -> usize {
        room as usize % self.inner.workers.len()
    }
}

impl Drop for WorkerMediaPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl MediaPlane for WorkerMediaPlane {
    fn add_leg(&self, setup: LegSetup) -> Result<(), MediaError> {
        let leg = setup.leg;
        let worker = self.worker_of(setup.room);
        let session = LegSession::new(&self.inner.identity, &setup.negotiated, Instant::now())
            .map_err(other)?;
        let ufrag = setup.negotiated.local_ice.ufrag.clone();
        let slots = match setup.negotiated.direction {
            LegDirection::Subscribe => vec![None; stream_slots(&setup.negotiated)],
            LegDirection::Publish => Vec::new(),
        };
        {
            let mut st = lock(&self.inner.state);
            if st.legs.contains_key(&leg) {
                return Err(MediaError::DuplicateLeg(leg));
            }
            st.legs.insert(
                leg,
                LegState {
                    setup,
                    worker,
                    transport: None,
                    in_core: false,
                    dead: false,
                    rtcp_ssrc: random_ssrc(),
                    slots,
                },
            );
        }
        let mut s = lock(&self.inner.sessions[worker]);
        if s.by_ufrag.contains_key(&ufrag) {
            drop(s);
            lock(&self.inner.state).legs.remove(&leg);
            return Err(MediaError::Other(format!("ICE ufrag {ufrag} is in use")));
        }
        let deadline = session.poll_timeout();
        s.by_ufrag.insert(ufrag, leg);
        s.by_leg.insert(leg, session);
        s.next_poll = match (s.next_poll, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    fn activate_leg(&self, leg: LegId, transport: LegTransport) -> Result<(), MediaError> {
        self.inner.activate(leg, transport)
    }

    fn add_keyed_leg(&self, setup: LegSetup, transport: LegTransport) -> Result<(), MediaError> {
        // No ICE session: nothing checks consent on a trunk, so nothing
        // expires it either; it lives until the API removes it.
        let leg = setup.leg;
        let worker = self.worker_of(setup.room);
        let slots = match setup.negotiated.direction {
            LegDirection::Subscribe => vec![None; stream_slots(&setup.negotiated)],
            LegDirection::Publish => Vec::new(),
        };
        {
            let mut st = lock(&self.inner.state);
            if st.legs.contains_key(&leg) {
                return Err(MediaError::DuplicateLeg(leg));
            }
            st.legs.insert(
                leg,
                LegState {
                    setup,
                    worker,
                    transport: None,
                    in_core: false,
                    dead: false,
                    rtcp_ssrc: random_ssrc(),
                    slots,
                },
            );
        }
        self.inner.activate(leg, transport)
    }

    fn remove_leg(&self, leg: LegId) -> Result<(), MediaError> {
        let worker = {
            let mut st = lock(&self.inner.state);
            let l = st.legs.remove(&leg).ok_or(MediaError::UnknownLeg(leg))?;
            st.subscriptions.retain(|(s, p)| *s != leg && *p != leg);
            st.applied.retain(|(s, p)| *s != leg && *p != leg);
            for other in st.legs.values_mut() {
                for slot in &mut other.slots {
                    if *slot == Some(leg) {
                        *slot = None;
                    }
                }
            }
            if l.in_core {
                // The core drops the leg's subscriptions with it.
                self.inner
                    .command(l.worker, Command::RemoveLeg(core_id(leg)))?;
            }
            if let Some(ingress) = &self.inner.ingress {
                ingress.leg_down(leg);
                // Only forgets the trunks: the flow is gone already.
                let _ = ingress.set_trunks(leg, Vec::new());
            }
            l.worker
        };
        lock(&self.inner.sessions[worker]).remove(leg);
        Ok(())
    }

    fn subscribe(&self, subscriber: LegId, publisher: LegId) -> Result<(), MediaError> {
        let mut st = lock(&self.inner.state);
        for l in [subscriber, publisher] {
            if !st.legs.contains_key(&l) {
                return Err(MediaError::UnknownLeg(l));
            }
        }
        if st.subscriptions.contains(&(subscriber, publisher)) {
            return Ok(());
        }
        let (sw, pw) = (st.legs[&subscriber].worker, st.legs[&publisher].worker);
        if sw != pw {
            return Err(MediaError::Other(format!(
                "legs {subscriber} and {publisher} are on different workers"
            )));
        }
        let sub = st.legs.get_mut(&subscriber).expect("checked above");
        let Some(slot) = sub.slots.iter_mut().find(|s| s.is_none()) else {
            return Err(MediaError::Other(format!(
                "leg {subscriber} has no m-section left for publisher {publisher}"
            )));
        };
        *slot = Some(publisher);
        st.subscriptions.insert((subscriber, publisher));
        self.inner.apply_subscriptions(&mut st);
        Ok(())
    }

    fn set_room_cap(&self, room: u32, cap: RoomCap) -> Result<(), MediaError> {
        let worker = self.worker_of(room);
        let mut st = lock(&self.inner.state);
        let changed = st.caps.insert(room, cap.selector) != Some(cap.selector);
        if let Some(ingress) = &self.inner.ingress {
            ingress.set_room_cap(room, cap.xdp).map_err(other)?;
        }
        let held = st.legs.values().any(|l| l.in_core && l.setup.room == room);
        if changed && held {
            self.inner.command(
                worker,
                Command::SetRoomCap(RoomId(u64::from(room)), cap.selector),
            )?;
        }
        Ok(())
    }

    fn stats(&self) -> MediaStats {
        let (legs, active) = {
            let st = lock(&self.inner.state);
            let active = st.legs.values().filter(|l| l.in_core).count();
            (st.legs.len(), active)
        };
        let sum = |f: fn(&Rates) -> &AtomicU64| {
            self.inner
                .rates
                .iter()
                .map(|r| f(r).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        MediaStats {
            legs: legs as u64,
            active_legs: active as u64,
            egress_bps: sum(|r| &r.egress_bps),
            ingress_bps: sum(|r| &r.ingress_bps),
            packets_forwarded: sum(|r| &r.forwarded),
        }
    }

    fn media_port(&self, room: u32) -> Option<u16> {
        Some(self.inner.workers[self.worker_of(room)].local_addr().port())
    }

    fn request_keyframe(&self, leg: LegId) -> Result<(), MediaError> {
        let worker = {
            let st = lock(&self.inner.state);
            let l = st.legs.get(&leg).ok_or(MediaError::UnknownLeg(leg))?;
            if !l.in_core {
                return Ok(());
            }
            l.worker
        };
        self.inner
            .command(worker, Command::RequestKeyFrame(core_id(leg)))
            .map(|_| ())
    }

    fn keyframe_requests_sent(&self, leg: LegId) -> Option<u64> {
        let worker = {
            let st = lock(&self.inner.state);
            let l = st.legs.get(&leg)?;
            if !l.in_core {
                return None;
            }
            l.worker
        };
        match self.inner.workers[worker]
            .submit(Command::LegStats(core_id(leg)))
            .and_then(|p| p.wait(COMMAND_WAIT))
        {
            Ok(Reply::Leg(stats)) => Some(stats.counters.keyframe_requests_sent),
            _ => None,
        }
    }

    fn leg_transport(&self, leg: LegId) -> Option<LegTransport> {
        lock(&self.inner.state)
            .legs
            .get(&leg)
            .and_then(|l| l.transport.clone())
    }

    fn set_trunks(
        &self,
        leg: LegId,
        trunks: Vec<dataplane::xdp::RelayTarget>,
    ) -> Result<(), MediaError> {
        let Some(ingress) = &self.inner.ingress else {
            return Err(MediaError::Other(
                "cascading needs the XDP ingress filter (xdp.interfaces)".into(),
            ));
        };
        if !lock(&self.inner.state).legs.contains_key(&leg) {
            return Err(MediaError::UnknownLeg(leg));
        }
        ingress.set_trunks(leg, trunks).map_err(other)
    }

    fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        for t in lock(&self.transports).drain(..) {
            if t.join().is_err() {
                tracing::error!("a media transport thread panicked");
            }
        }
        for w in &self.inner.workers {
            w.request_stop();
        }
        if let Some(ingress) = &self.inner.ingress {
            ingress.detach();
        }
    }
}

/// The core's id of a leg.
fn core_id(leg: LegId) -> dataplane::sfu::LegId {
    dataplane::sfu::LegId(leg)
}

/// How many publishers a subscribe leg can receive: one per pair of audio
/// and video m-sections it offered to receive.
fn stream_slots(n: &NegotiatedLeg) -> usize {
    let count = |kind| {
        n.media
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.local_streams.len())
            .sum::<usize>()
    };
    count(MediaKind::Audio).max(count(MediaKind::Video))
}

/// The SSRCs a subscribe leg announced for its `slot`-th publisher; a
/// stream it did not negotiate gets an SSRC nobody sends on.
fn subscribe_spec(n: &NegotiatedLeg, slot: usize) -> SubscribeSpec {
    let streams = |kind| {
        n.media
            .iter()
            .filter(move |m| m.kind == kind)
            .flat_map(|m| m.local_streams.iter())
            .nth(slot)
    };
    let audio = streams(MediaKind::Audio);
    let video = streams(MediaKind::Video);
    SubscribeSpec {
        audio_ssrc: audio.map_or_else(random_ssrc, |s| s.ssrc),
        video_ssrc: video.map_or_else(random_ssrc, |s| s.ssrc),
        video_rtx_ssrc: video.and_then(|s| s.rtx_ssrc).unwrap_or_else(random_ssrc),
    }
}

/// What the core needs to know of a leg's negotiated media: the first
/// Opus payload type, the first VP8/H.264 payload type with its RTX, and
/// the extension ids (BUNDLE gives a URI one id across m-sections).
pub fn core_media(n: &NegotiatedLeg) -> CoreMedia {
    let audio_pt = n
        .media
        .iter()
        .filter(|m| m.kind == MediaKind::Audio)
        .flat_map(|m| m.codecs.iter())
        .find(|c| c.codec == Codec::Opus)
        .map(|c| c.payload_type);
    let video = n
        .media
        .iter()
        .filter(|m| m.kind == MediaKind::Video)
        .flat_map(|m| m.codecs.iter())
        .find_map(|c| match c.codec {
            Codec::Vp8 => Some((c, VideoCodec::Vp8)),
            Codec::H264 => Some((c, VideoCodec::H264)),
            _ => None,
        });
    let ext = |kind: ExtensionKind| {
        n.media
            .iter()
            .flat_map(|m| m.extensions.iter())
            .find(|e| e.kind == kind)
            .map(|e| e.id)
    };
    CoreMedia {
        audio_pt,
        video: video.map(|(c, codec)| (c.payload_type, codec)),
        rtx_pt: video.and_then(|(c, _)| c.rtx_payload_type),
        extensions: ExtensionIds {
            rid: ext(ExtensionKind::Rid),
            abs_send_time: ext(ExtensionKind::AbsSendTime),
            transport_cc: ext(ExtensionKind::TransportWideCc),
            audio_level: ext(ExtensionKind::AudioLevel),
        },
        nack: video.is_some_and(|(c, _)| c.feedback.contains(&Feedback::Nack)),
    }
}

/// What a publish leg sends, from its offer: the audio SSRC, and the video
/// layers by RID (simulcast, lowest first as the offer lists them) or by
/// the signalled SSRC that is not an RTX SSRC.
pub fn publish_spec(n: &NegotiatedLeg) -> PublishSpec {
    let audio_ssrc = n
        .media
        .iter()
        .filter(|m| m.kind == MediaKind::Audio)
        .find_map(|m| m.remote_ssrcs.first().copied());
    let mut video_layers = Vec::new();
    if let Some(m) = n.media.iter().find(|m| m.kind == MediaKind::Video) {
        if m.rids.is_empty() {
            let rtx: Vec<u32> = m.remote_rtx_pairs.iter().map(|(_, r)| *r).collect();
            if let Some(ssrc) = m.remote_ssrcs.iter().find(|s| !rtx.contains(s)) {
                video_layers.push(LayerSpec {
                    rid: None,
                    ssrc: Some(*ssrc),
                    nominal_bps: nominal_bps(0, 1),
                });
            }
        } else {
            let count = m.rids.len();
            video_layers.extend(m.rids.iter().enumerate().map(|(i, rid)| LayerSpec {
                rid: Some(rid.clone()),
                ssrc: None,
                nominal_bps: nominal_bps(i, count),
            }));
        }
    }
    PublishSpec {
        audio_ssrc,
        video_layers,
    }
}

/// Expected bitrate of layer `i` of `count` until one is measured: 1.5
/// Mbit/s at the top, a quarter per step down (the usual simulcast ladder).
fn nominal_bps(i: usize, count: usize) -> u64 {
    let steps = count.saturating_sub(1 + i).min(8) as u32;
    1_500_000 >> (2 * steps)
}

impl Inner {
    fn command(&self, worker: usize, command: Command) -> Result<Reply, MediaError> {
        self.workers[worker]
            .submit(command)
            .and_then(|p| p.wait(COMMAND_WAIT))
            .map_err(other)
    }

    /// Records `transport` for `leg` and puts the leg into its core.
    fn activate(&self, leg: LegId, transport: LegTransport) -> Result<(), MediaError> {
        let mut st = lock(&self.state);
        let l = st.legs.get_mut(&leg).ok_or(MediaError::UnknownLeg(leg))?;
        if l.in_core {
            // A new address for a leg in the core (ICE moved): re-add it.
            // The core keys legs by address pair and has no move command.
            let w = l.worker;
            l.in_core = false;
            l.transport = Some(transport);
            st.applied.retain(|(s, p)| *s != leg && *p != leg);
            self.command(w, Command::RemoveLeg(core_id(leg)))?;
        } else {
            l.transport = Some(transport);
        }
        self.insert_into_core(&mut st, leg)?;
        self.apply_subscriptions(&mut st);
        Ok(())
    }

    fn insert_into_core(&self, st: &mut PlaneState, leg: LegId) -> Result<(), MediaError> {
        let l = st.legs.get_mut(&leg).ok_or(MediaError::UnknownLeg(leg))?;
        let Some(t) = l.transport.clone() else {
            return Ok(());
        };
        let w = l.worker;
        let config = LegConfig {
            id: core_id(leg),
            room: RoomId(u64::from(l.setup.room)),
            local: self.workers[w].local_addr(),
            remote: t.remote,
            profile: t.keys.profile,
            remote_key: t.keys.remote.clone(),
            local_key: t.keys.local.clone(),
            media: core_media(&l.setup.negotiated),
            rtcp_ssrc: l.rtcp_ssrc,
        };
        let publish = (l.setup.negotiated.direction == LegDirection::Publish)
            .then(|| publish_spec(&l.setup.negotiated));
        let room = l.setup.room;
        self.command(w, Command::AddLeg(Box::new(config)))?;
        l.in_core = true;
        l.dead = false;
        if let Some(spec) = publish {
            if let Err(e) = self.command(w, Command::Publish(core_id(leg), spec)) {
                // Without a publication nothing it sends can be forwarded.
                tracing::warn!(leg, error = %e, "publication refused");
            }
        }
        if let Some(cap) = st.caps.get(&room).copied() {
            self.command(w, Command::SetRoomCap(RoomId(u64::from(room)), cap))?;
        }
        if let Some(ingress) = &self.ingress {
            let published = self.published(w, leg);
            let port = self.workers[w].local_addr().port();
            if let Err(e) = ingress.leg_up(leg, room, t.remote, port, &published) {
                // The worker still takes the leg's packets if the filter
                // passes them; with unknown senders dropped it does not.
                tracing::error!(leg, error = %e, "registering the leg with the XDP filter failed");
            }
        }
        tracing::info!(leg, remote = %t.remote, "leg carries media");
        Ok(())
    }

    /// Applies every asked-for subscription whose legs are both in a core.
    fn apply_subscriptions(&self, st: &mut PlaneState) {
        let ready: Vec<(LegId, LegId)> = st
            .subscriptions
            .iter()
            .filter(|pair| !st.applied.contains(pair))
            .filter(|(s, p)| {
                st.legs.get(s).is_some_and(|l| l.in_core)
                    && st.legs.get(p).is_some_and(|l| l.in_core)
            })
            .copied()
            .collect();
        for (s, p) in ready {
            let sub = &st.legs[&s];
            let Some(slot) = sub.slots.iter().position(|x| *x == Some(p)) else {
                continue;
            };
            let ssrcs = subscribe_spec(&sub.setup.negotiated, slot);
            let command = Command::Subscribe {
                subscriber: core_id(s),
                publisher: core_id(p),
                ssrcs,
            };
            match self.command(sub.worker, command) {
                Ok(_) => {
                    st.applied.insert((s, p));
                    tracing::info!(subscriber = s, publisher = p, "subscription applied");
                }
                Err(e) => {
                    tracing::warn!(subscriber = s, publisher = p, error = %e, "subscribe refused");
                }
            }
        }
    }

    /// Takes a leg whose consent lapsed (or whose DTLS closed) out of its
    /// core; the API still owns it and removes it later.
    fn kill(&self, leg: LegId) {
        let mut st = lock(&self.state);
        let Some(l) = st.legs.get_mut(&leg) else {
            return;
        };
        l.dead = true;
        if let Some(ingress) = &self.ingress {
            ingress.leg_down(leg);
        }
        let (w, in_core) = (l.worker, l.in_core);
        l.in_core = false;
        l.transport = None;
        st.applied.retain(|(s, p)| *s != leg && *p != leg);
        if in_core {
            if let Err(e) = self.command(w, Command::RemoveLeg(core_id(leg))) {
                tracing::warn!(leg, error = %e, "removing a dead leg failed");
            }
        }
        drop(st);
        lock(&self.sessions[w]).remove(leg);
        tracing::info!(leg, "leg lost its transport (consent or DTLS closed)");
    }

    fn on_event(&self, leg: LegId, event: SessionEvent) {
        match event {
            SessionEvent::Ready(t) => {
                if let Err(e) = self.activate(leg, t) {
                    tracing::warn!(leg, error = %e, "activating a leg failed");
                }
            }
            SessionEvent::Moved(remote) => {
                let t = lock(&self.state)
                    .legs
                    .get(&leg)
                    .and_then(|l| l.transport.clone());
                if let Some(mut t) = t {
                    t.remote = remote;
                    if let Err(e) = self.activate(leg, t) {
                        tracing::warn!(leg, error = %e, "moving a leg failed");
                    }
                }
            }
            SessionEvent::Dead => self.kill(leg),
        }
    }

    /// Handles one punted datagram of worker `w`.
    fn on_datagram(&self, w: usize, p: &Punted) {
        let mut events = Vec::new();
        {
            let mut s = lock(&self.sessions[w]);
            let stun = matches!(p.data.first(), Some(0..=3));
            let leg = if stun {
                let found = stun_ufrag(&p.data).and_then(|u| s.by_ufrag.get(&u).copied());
                if found.is_none() {
                    self.failures.unknown_ufrag.inc();
                }
                found
            } else {
                let found = s.by_remote.get(&p.remote).copied();
                if found.is_none() {
                    self.failures.unvalidated.inc();
                }
                found
            };
            let Some(leg) = leg else {
                return;
            };
            let Some(session) = s.by_leg.get_mut(&leg) else {
                return;
            };
            let result = session.handle(p.at, p.remote, &p.data);
            for (to, d) in session.drain_transmit() {
                if let Err(e) = self.workers[w].transmit(to, &d) {
                    tracing::debug!(leg, %to, error = %e, "transport reply not sent");
                }
            }
            let validated = stun && session.ice().is_validated(p.remote);
            let deadline = session.poll_timeout();
            if validated {
                s.by_remote.insert(p.remote, leg);
            }
            s.next_poll = match (s.next_poll, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match result {
                Ok(Some(e)) => events.push((leg, e)),
                Ok(None) => {}
                Err(e) => self.count_failure(leg, &e),
            }
        }
        for (leg, e) in events {
            self.on_event(leg, e);
        }
    }

    fn count_failure(&self, leg: LegId, e: &SessionError) {
        match e {
            SessionError::Stun(why) => self.failures.metrics.stun_failure(why.as_str()).inc(),
            SessionError::Unvalidated => self.failures.unvalidated.inc(),
            SessionError::Dtls(d) => {
                tracing::warn!(leg, error = %d, "DTLS handshake failed");
                self.failures.metrics.dtls_failure(d.as_str()).inc();
            }
            SessionError::Unknown => self.failures.metrics.stun_failure("not_stun").inc(),
        }
    }

    /// Runs due session timers of worker `w`.
    fn poll_sessions(&self, w: usize, now: Instant) {
        let mut events = Vec::new();
        {
            let mut s = lock(&self.sessions[w]);
            if s.next_poll.is_none_or(|t| t > now) {
                return;
            }
            let mut next: Option<Instant> = None;
            let mut failures = Vec::new();
            for (leg, session) in &mut s.by_leg {
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    match session.poll(now) {
                        Ok(Some(e)) => events.push((*leg, e)),
                        Ok(None) => {}
                        Err(e) => failures.push((*leg, e)),
                    }
                    for (to, d) in session.drain_transmit() {
                        if let Err(e) = self.workers[w].transmit(to, &d) {
                            tracing::debug!(leg, %to, error = %e, "retransmission not sent");
                        }
                    }
                }
                if let Some(t) = session.poll_timeout() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            s.next_poll = next;
            drop(s);
            for (leg, e) in failures {
                self.count_failure(leg, &e);
            }
        }
        for (leg, e) in events {
            self.on_event(leg, e);
        }
    }

    /// Refreshes worker `w`'s rates from its counters.
    fn sample(&self, w: usize, last: &mut (Instant, EngineSnapshot), now: Instant) {
        let c = self.workers[w].counters();
        let secs = now.saturating_duration_since(last.0).as_secs_f64();
        if secs > 0.0 {
            let rate = |b: u64, a: u64| (b.saturating_sub(a) as f64 * 8.0 / secs) as u64;
            let r = &self.rates[w];
            r.egress_bps
                .store(rate(c.tx_bytes, last.1.tx_bytes), Ordering::Relaxed);
            r.ingress_bps
                .store(rate(c.rx_bytes, last.1.rx_bytes), Ordering::Relaxed);
        }
        let m = &self.failures.metrics;
        let port = self.workers[w].local_addr().port().to_string();
        let labels = [("port", port.as_str())];
        for (name, help, now_v, was) in [
            (
                "switchboard_media_punted_total",
                "STUN/DTLS datagrams a media worker handed to the control plane",
                c.punted,
                last.1.punted,
            ),
            (
                "switchboard_media_punt_dropped_total",
                "STUN/DTLS datagrams dropped because the control plane lagged",
                c.punt_dropped,
                last.1.punt_dropped,
            ),
            (
                "switchboard_media_rx_no_buffers_total",
                "Times a media worker's receive ran out of provided buffers",
                c.rx_no_buffers,
                last.1.rx_no_buffers,
            ),
        ] {
            m.registry
                .counter(name, help, &labels)
                .add(now_v.saturating_sub(was));
        }
        if let Ok(Reply::Stats(s)) = self.workers[w]
            .submit(Command::Stats)
            .and_then(|p| p.wait(COMMAND_WAIT))
        {
            self.rates[w]
                .forwarded
                .store(s.counters.rtp_sent, Ordering::Relaxed);
        }
        if let Some(ingress) = &self.ingress {
            self.sync_ingress(w, ingress);
        }
        *last = (now, c);
    }

    /// The streams publish leg `leg` sends whose SSRC worker `w` knows.
    fn published(&self, w: usize, leg: LegId) -> Vec<dataplane::sfu::InStreamStats> {
        match self.workers[w]
            .submit(Command::LegStats(core_id(leg)))
            .and_then(|p| p.wait(COMMAND_WAIT))
        {
            Ok(Reply::Leg(stats)) => stats.published,
            _ => Vec::new(),
        }
    }

    /// Registers the SSRCs worker `w`'s publishers revealed since the last
    /// sample (RID simulcast) and turns the program's counters into metrics.
    fn sync_ingress(&self, w: usize, ingress: &IngressFilter) {
        let publishers: Vec<LegId> = lock(&self.state)
            .legs
            .iter()
            .filter(|(_, l)| {
                l.worker == w && l.in_core && l.setup.negotiated.direction == LegDirection::Publish
            })
            .map(|(id, _)| *id)
            .collect();
        for leg in publishers {
            let published = self.published(w, leg);
            if let Err(e) = ingress.learn_streams(leg, &published) {
                tracing::warn!(leg, error = %e, "registering streams with the XDP filter failed");
            }
        }
        // Worker 0's thread speaks for the program, which all workers share.
        if w == 0 {
            match ingress.counters() {
                Ok(now) => {
                    let mut seen = lock(&self.xdp_seen);
                    xdp_metrics(&self.failures.metrics, &now, &seen);
                    *seen = now;
                }
                Err(e) => tracing::warn!(error = %e, "reading the XDP counters failed"),
            }
        }
    }

    fn transport_loop(&self, w: usize, rx: &mpsc::Receiver<Punted>) {
        let mut last = (Instant::now(), self.workers[w].counters());
        let mut next_sample = last.0 + SAMPLE_PERIOD;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let next_poll = lock(&self.sessions[w]).next_poll;
            let deadline = next_poll
                .unwrap_or(now + MAX_IDLE)
                .min(now + MAX_IDLE)
                .min(next_sample);
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(p) => {
                    self.on_datagram(w, &p);
                    // Whatever else is queued, without sleeping in between.
                    for p in rx.try_iter().take(256) {
                        self.on_datagram(w, &p);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            self.poll_sessions(w, now);
            if now >= next_sample {
                self.sample(w, &mut last, now);
                next_sample = now + SAMPLE_PERIOD;
            }
        }
    }
}

/// Our ufrag from a STUN request's USERNAME (`ours:theirs`).
fn stun_ufrag(datagram: &[u8]) -> Option<String> {
    let msg = Message::new_checked(datagram).ok()?;
    let ours = msg.username()?.split(|b| *b == b':').next()?;
    std::str::from_utf8(ours).ok().map(str::to_owned)
}

/// Adds the XDP program's counters since `was` to the metrics.
fn xdp_metrics(
    metrics: &ControlMetrics,
    now: &switchboard_common::Counters,
    was: &switchboard_common::Counters,
) {
    let packets = [
        ("received", now.received, was.received),
        ("to_worker", now.to_userspace, was.to_userspace),
        ("stun", now.stun, was.stun),
        ("dtls", now.dtls, was.dtls),
        ("not_ours", now.not_ours, was.not_ours),
        ("unknown_passed", now.unknown_passed, was.unknown_passed),
        (
            "malformed_passed",
            now.malformed_passed,
            was.malformed_passed,
        ),
    ];
    let dropped = [
        ("unknown_flow", now.drop_unknown_flow, was.drop_unknown_flow),
        ("layer_cap", now.drop_layer_cap, was.drop_layer_cap),
        ("malformed", now.drop_malformed, was.drop_malformed),
        ("ttl", now.drop_ttl, was.drop_ttl),
    ];
    for (name, help, label, series) in [
        (
            "switchboard_xdp_packets_total",
            "Packets the XDP ingress filter handled, by outcome",
            "outcome",
            &packets[..],
        ),
        (
            "switchboard_xdp_dropped_total",
            "Packets the XDP ingress filter dropped, by reason",
            "reason",
            &dropped[..],
        ),
    ] {
        for (value, n, w) in series {
            metrics
                .registry
                .counter(name, help, &[(label, value)])
                .add(n.saturating_sub(*w));
        }
    }
}
