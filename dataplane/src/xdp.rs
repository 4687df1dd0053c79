//! Loader for the embedded XDP programs (built from `ebpf/programs`).
//!
//! The BPF object is compiled by this crate's build script and embedded in the
//! binary, so a deployed appliance needs no files besides itself. Map key and
//! value types come from `switchboard-common`, the same crate the programs use.
//!
//! [`XdpIngress`] owns the loaded programs, their attachments (XDP on each
//! media interface, TC clsact ingress for fan-out) and the typed map API:
//! local addresses, relay flows, streams and room layer caps. Everything is
//! detached when it is dropped. A local port with exactly one IPv4 flow is
//! also published in a direct port index the program checks before the
//! flow map (see `index`). [`XdpPass`] puts an `XDP_PASS` program on an
//! interface that must accept native `XDP_TX`/`XDP_REDIRECT` frames (a veth
//! peer). [`Reflector`], [`LiveGenerator`] and [`SinkCounter`] load the
//! forwarding benchmark's baseline, traffic generator and sink.

mod index;
mod reflect;
mod spec;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray},
    programs::{
        tc::SchedClassifierLinkId, ProgramError, SchedClassifier, TcAttachType, TestRun,
        TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, Pod,
};
use switchboard_common::{
    map_names, program_names, Addr, Counters, Fanout, Flow, FlowKey, FlowKeyV4, FlowSlot,
    IngressConfig, IngressState, RoomCap, Stream, FLOW_SLOTS, LOCAL_ADDRS_INLINE,
    LOCAL_ADDRS_IN_MAP, MAX_FANOUT,
};

pub use reflect::{LiveGenerator, Reflector, SinkCounter, MAX_LIVE_BATCH, MIN_GENERATED_FRAME};
pub use spec::{
    map_addr, unmap_addr, DependencyDescriptor, FlowAction, FlowMatch, LayerCap, RelayTarget,
    StreamKind, StreamSpec,
};

/// The BPF object as built for this binary.
static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switchboard-ebpf"));

/// XDP actions as returned by the program (kernel UAPI values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    /// A value the kernel does not define; never returned by our programs.
    Unknown(u32),
}

impl From<u32> for XdpAction {
    fn from(value: u32) -> Self {
        match value {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Unknown(other),
        }
    }
}

/// The attach mode actually in use on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP: works everywhere, several times slower.
    Skb,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver (native)",
            Self::Skb => "skb (generic)",
        })
    }
}

/// Errors from loading, configuring or running the XDP programs.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The process lacks the privilege to load BPF programs.
    #[error("loading XDP programs needs CAP_BPF and CAP_NET_ADMIN (run as root): {0}")]
    NotPermitted(#[source] aya::EbpfError),
    /// The embedded object could not be loaded (verifier, kernel too old, ...).
    #[error("loading the embedded BPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program or map is missing from the object: a build mismatch.
    #[error("the BPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    /// A program-level operation failed.
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        what: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// A map update failed.
    #[error("{what}: {source}")]
    DevMap {
        what: &'static str,
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    /// Attaching or detaching the TC program failed.
    #[error("{what}: {source}")]
    Tc {
        what: String,
        #[source]
        source: ProgramError,
    },
    /// The configured media port range is empty.
    #[error("media port range {min}-{max} is empty")]
    BadPortRange { min: u16, max: u16 },
    /// A flow's local port is outside the media port range, so the program would never see it.
    #[error("local port {port} is outside the media port range {min}-{max}")]
    PortOutsideRange { port: u16, min: u16, max: u16 },
    /// A relay flow needs at least one destination.
    #[error("a relay flow needs at least one destination")]
    NoDestinations,
    /// More destinations than the TC clone loop handles.
    #[error("relay fan-out of {requested} destinations exceeds the maximum of {max}")]
    FanoutTooLarge { requested: usize, max: usize },
    /// The programs rewrite headers in place and cannot translate between IPv4 and IPv6.
    #[error("sender {sender} and destination {target} are not the same IP version")]
    FamilyMismatch {
        sender: std::net::SocketAddr,
        target: std::net::SocketAddr,
    },
    /// A destination has interface index 0.
    #[error("a relay destination needs an egress interface index")]
    NoInterface,
    /// A destination has port 0.
    #[error("relay destination ports must not be 0")]
    ZeroPort,
    /// A single-destination relay flow names an interface that is not an egress.
    #[error("interface index {0} is not a registered egress (attach or add_egress it first)")]
    EgressNotRegistered(u32),
    /// No interface of that name in this network namespace.
    #[error("no interface named {0:?}")]
    UnknownInterface(String),
    /// The Dependency Descriptor extension id cannot be used (0 or 15).
    #[error("RTP header extension id {0} cannot carry the Dependency Descriptor")]
    BadExtensionId(u8),
    /// A temporal layer value is reserved.
    #[error("temporal layer {0} is reserved")]
    BadTemporalLayer(u8),
    /// Audio streams are never capped, so a Dependency Descriptor on one is a mistake.
    #[error("an audio stream cannot have a Dependency Descriptor")]
    DependencyDescriptorOnAudio,
    /// A frame given to the benchmark generator has a shape it cannot send.
    #[error("generator frame rejected: {0}")]
    BadFrame(&'static str),
    /// A generator rate that is not a finite number of frames per second in 1..=1e9.
    #[error("generator rate {0} frames/s is not in 1..=1e9")]
    BadRate(f64),
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone)]
pub struct TestRunOutcome {
    /// The program's verdict.
    pub action: XdpAction,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Average time per run as measured by the kernel.
    pub duration: Duration,
}

struct XdpAttachment {
    interface: String,
    link: aya::programs::xdp::XdpLinkId,
    mode: AttachedMode,
}

struct TcAttachment {
    interface: String,
    link: SchedClassifierLinkId,
}

/// The loaded ingress programs, their attachments and maps.
pub struct XdpIngress {
    ebpf: Ebpf,
    config: IngressConfig,
    /// What the program reads besides the config, mirrored into the config map.
    state: IngressState,
    xdp_links: Vec<XdpAttachment>,
    tc_links: Vec<TcAttachment>,
    egress: BTreeSet<u32>,
    /// IPv4 flows per local port and the direct port index over them.
    port_index: index::PortIndex,
}

impl XdpIngress {
    /// Loads the embedded object, runs both programs through the verifier and writes `config`.
    pub fn load(config: IngressConfig) -> Result<Self, XdpError> {
        check_port_range(&config)?;
        let mut ebpf = load_object()?;
        xdp_program(&mut ebpf, program_names::XDP_INGRESS)?
            .load()
            .map_err(|source| XdpError::Program {
                what: "verifying the XDP program".into(),
                source,
            })?;
        tc_program(&mut ebpf)?
            .load()
            .map_err(|source| XdpError::Program {
                what: "verifying the TC fan-out program".into(),
                source,
            })?;
        let mut ingress = Self {
            ebpf,
            config,
            state: IngressState::default(),
            xdp_links: Vec::new(),
            tc_links: Vec::new(),
            egress: BTreeSet::new(),
            port_index: index::PortIndex::new(FLOW_SLOTS),
        };
        ingress.set_config(config)?;
        Ok(ingress)
    }

    /// Replaces the ingress configuration; takes effect for the next packet.
    pub fn set_config(&mut self, config: IngressConfig) -> Result<(), XdpError> {
        check_port_range(&config)?;
        self.write_state(IngressState {
            config,
            ..self.state
        })?;
        self.config = config;
        Ok(())
    }

    /// Writes `state` to the config map and, once it is there, keeps it as `self.state`.
    fn write_state(&mut self, state: IngressState) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(map_names::INGRESS_CONFIG)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::INGRESS_CONFIG,
            })?;
        let mut array: Array<_, IngressState> =
            Array::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the ingress config map",
                source,
            })?;
        array.set(0, state, 0).map_err(|source| XdpError::Map {
            what: "writing the ingress config",
            source,
        })?;
        self.state = state;
        Ok(())
    }

    /// Mirrors the local-address map into the state: inline while it is small.
    fn sync_local_addrs(&mut self) -> Result<(), XdpError> {
        let map = self.hash_map::<Addr, u8>(map_names::LOCAL_ADDRS)?;
        let mut addrs = [[0u8; 16]; LOCAL_ADDRS_INLINE];
        let mut count = 0usize;
        for key in map.keys() {
            let key = key.map_err(|source| XdpError::Map {
                what: "listing the local addresses",
                source,
            })?;
            if count == LOCAL_ADDRS_INLINE {
                count = usize::from(LOCAL_ADDRS_IN_MAP);
                break;
            }
            addrs[count] = key;
            count += 1;
        }
        if count > LOCAL_ADDRS_INLINE {
            addrs = [[0u8; 16]; LOCAL_ADDRS_INLINE];
        }
        self.write_state(IngressState {
            local_count: count as u8,
            local_addrs: addrs,
            ..self.state
        })
    }

    /// Attaches to `interface` (in the calling thread's network namespace):
    /// XDP in driver mode if the driver supports it and in generic (skb) mode
    /// otherwise (with a warning naming the mode), the TC fan-out program on
    /// clsact ingress, and the interface as an `XDP_REDIRECT` egress. Returns
    /// the XDP mode in use.
    pub fn attach(&mut self, interface: &str) -> Result<AttachedMode, XdpError> {
        self.add_egress(interface)?;
        let program = xdp_program(&mut self.ebpf, program_names::XDP_INGRESS)?;
        let (link, mode) = attach_xdp(program, interface)?;
        self.xdp_links.push(XdpAttachment {
            interface: interface.to_owned(),
            link,
            mode,
        });
        let tc = tc_program(&mut self.ebpf)?;
        // TCX (kernel 6.6+) needs no qdisc; the netlink fallback needs clsact,
        // which may already exist.
        if let Err(err) = aya::programs::tc::qdisc_add_clsact(interface) {
            tracing::debug!(interface, %err, "clsact qdisc not added (present already, or TCX in use)");
        }
        let link = tc
            .attach(interface, TcAttachType::Ingress)
            .map_err(|source| XdpError::Tc {
                what: format!("attaching the TC fan-out program to {interface} ingress"),
                source,
            })?;
        self.tc_links.push(TcAttachment {
            interface: interface.to_owned(),
            link,
        });
        tracing::info!(interface, %mode, "switchboard XDP and TC fan-out attached");
        Ok(mode)
    }

    /// Registers `interface` as a target for `XDP_REDIRECT` without attaching
    /// to it ([`attach`](Self::attach) does this too).
    pub fn add_egress(&mut self, interface: &str) -> Result<u32, XdpError> {
        let ifindex = ifindex(interface)?;
        let map = self
            .ebpf
            .map_mut(map_names::EGRESS_DEVS)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::EGRESS_DEVS,
            })?;
        let mut devs = DevMapHash::try_from(map).map_err(|source| XdpError::Map {
            what: "opening the egress device map",
            source,
        })?;
        devs.insert(ifindex, ifindex, None, 0)
            .map_err(|source| XdpError::DevMap {
                what: "adding an egress device",
                source,
            })?;
        self.egress.insert(ifindex);
        Ok(ifindex)
    }

    /// Interfaces the XDP program is attached to, with their modes.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, AttachedMode)> {
        self.xdp_links
            .iter()
            .map(|a| (a.interface.as_str(), a.mode))
    }

    /// Detaches from every interface. Also done on drop.
    pub fn detach_all(&mut self) -> Result<(), XdpError> {
        let mut first_err = None;
        let program = xdp_program(&mut self.ebpf, program_names::XDP_INGRESS)?;
        for a in self.xdp_links.drain(..) {
            if let Err(source) = program.detach(a.link) {
                first_err.get_or_insert(XdpError::Program {
                    what: format!("detaching XDP from {}", a.interface),
                    source,
                });
            }
        }
        let tc = tc_program(&mut self.ebpf)?;
        for a in self.tc_links.drain(..) {
            if let Err(source) = tc.detach(a.link) {
                first_err.get_or_insert(XdpError::Tc {
                    what: format!("detaching the TC fan-out program from {}", a.interface),
                    source,
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Makes `addr` one of the appliance's media addresses.
    pub fn add_local_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        let mut map = self.hash_map::<Addr, u8>(map_names::LOCAL_ADDRS)?;
        map.insert(map_addr(addr), 1, 0)
            .map_err(|source| XdpError::Map {
                what: "adding a local address",
                source,
            })?;
        self.sync_local_addrs()
    }

    /// Stops treating `addr` as a media address. Removing an absent one is not an error.
    pub fn remove_local_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        let mut map = self.hash_map::<Addr, u8>(map_names::LOCAL_ADDRS)?;
        remove_if_present(&mut map, &map_addr(addr), "removing a local address")?;
        self.sync_local_addrs()
    }

    /// Adds or replaces a flow. Validation happens before any map is written;
    /// for several destinations the fan-out entry is written before the flow
    /// so the programs never see a flow without its destinations.
    pub fn set_flow(&mut self, flow: FlowMatch, action: &FlowAction) -> Result<(), XdpError> {
        let (min, max) = (self.config.port_min, self.config.port_max);
        if !(min..=max).contains(&flow.local_port) {
            return Err(XdpError::PortOutsideRange {
                port: flow.local_port,
                min,
                max,
            });
        }
        let values = spec::flow_values(&flow, action)?;
        // XDP redirects a single destination through the egress map; TC
        // (several destinations, trunks) clones to any interface.
        let through_xdp = values.flow.fanout == 1 && values.flow.pass_up == 0;
        if through_xdp && !self.egress.contains(&values.flow.dest.ifindex) {
            return Err(XdpError::EgressNotRegistered(values.flow.dest.ifindex));
        }
        let key = flow.key();
        if let Some(fan) = values.fanout {
            let mut fanout = self.hash_map::<FlowKey, Fanout>(map_names::FANOUT)?;
            fanout.insert(key, fan, 0).map_err(|source| XdpError::Map {
                what: "writing a flow's fan-out",
                source,
            })?;
        }
        let written = match key.v4() {
            Some(key4) => self
                .hash_map::<FlowKeyV4, Flow>(map_names::FLOWS_V4)?
                .insert(key4, values.flow, 0),
            None => self
                .hash_map::<FlowKey, Flow>(map_names::FLOWS)?
                .insert(key, values.flow, 0),
        };
        written.map_err(|source| XdpError::Map {
            what: "writing a flow",
            source,
        })?;
        if let Some(key4) = key.v4() {
            // After the map insert: a sender the index does not (yet) name
            // is always found in the map.
            self.port_index
                .add(key4.local_port, (key4.remote_addr, key4.remote_port));
            self.sync_port_index(key4.local_port)?;
        }
        if values.fanout.is_none() {
            let mut fanout = self.hash_map::<FlowKey, Fanout>(map_names::FANOUT)?;
            remove_if_present(&mut fanout, &key, "removing a stale fan-out")?;
        }
        Ok(())
    }

    /// Points the port's index entry at a fresh slot holding its only IPv4
    /// flow, or clears it when the port has none or several. A published
    /// slot is never rewritten (see [`FlowSlot`]): the new value goes into
    /// another slot and the index switches to it with one 4-byte store. With
    /// every slot in use or in quarantine the port is left to the flow map.
    fn sync_port_index(&mut self, port: u16) -> Result<(), XdpError> {
        let now = Instant::now();
        let Some((remote_addr, remote_port)) = self.port_index.sole_remote(port) else {
            return self.unpublish_port(port, now);
        };
        let key4 = FlowKeyV4 {
            remote_addr,
            remote_port,
            local_port: port,
        };
        let flow = self
            .hash_map::<FlowKeyV4, Flow>(map_names::FLOWS_V4)?
            .get(&key4, 0)
            .map_err(|source| XdpError::Map {
                what: "reading a flow to index",
                source,
            })?;
        let Some(slot) = self.port_index.take_slot(now) else {
            tracing::debug!(
                port,
                "no free flow slot; the port is served by the flow map"
            );
            return self.unpublish_port(port, now);
        };
        let value = FlowSlot {
            flow,
            remote_addr,
            remote_port,
            _pad: [0; 2],
        };
        let written = self
            .array::<FlowSlot>(map_names::FLOW_SLOTS)
            .and_then(|mut slots| {
                slots.set(slot, value, 0).map_err(|source| XdpError::Map {
                    what: "writing a flow slot",
                    source,
                })
            })
            .and_then(|()| self.write_port_index(port, slot + 1));
        if let Err(err) = written {
            // Not published: nothing can be reading it.
            self.port_index.put_back(slot);
            return Err(err);
        }
        self.port_index.set_published(port, Some(slot), now);
        Ok(())
    }

    /// Clears the port's index entry (if set); its slot goes into quarantine.
    fn unpublish_port(&mut self, port: u16, now: Instant) -> Result<(), XdpError> {
        if self.port_index.published(port).is_some() {
            self.write_port_index(port, 0)?;
            self.port_index.set_published(port, None, now);
        }
        Ok(())
    }

    fn write_port_index(&mut self, port: u16, value: u32) -> Result<(), XdpError> {
        let mut index = self.array::<u32>(map_names::PORT_INDEX)?;
        index
            .set(u32::from(port), value, 0)
            .map_err(|source| XdpError::Map {
                what: "writing the port index",
                source,
            })
    }

    fn array<V: Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, XdpError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(XdpError::Missing { kind: "map", name })?;
        Array::try_from(map).map_err(|source| XdpError::Map {
            what: "opening an array map",
            source,
        })
    }

    /// Removes a flow; its packets then count as unknown. Removing an absent one is not an error.
    pub fn remove_flow(&mut self, flow: &FlowMatch) -> Result<(), XdpError> {
        let key = flow.key();
        match key.v4() {
            Some(key4) => {
                let port = key4.local_port;
                let known = self
                    .port_index
                    .remove(port, (key4.remote_addr, key4.remote_port));
                // The index entry goes first, so nothing reaches the flow
                // through it once it is gone from the map.
                if known {
                    self.unpublish_port(port, Instant::now())?;
                }
                let mut flows = self.hash_map::<FlowKeyV4, Flow>(map_names::FLOWS_V4)?;
                remove_if_present(&mut flows, &key4, "removing a flow")?;
                if known {
                    // The port's remaining sender, if only one is left.
                    self.sync_port_index(port)?;
                }
            }
            None => {
                let mut flows = self.hash_map::<FlowKey, Flow>(map_names::FLOWS)?;
                remove_if_present(&mut flows, &key, "removing a flow")?;
            }
        }
        let mut fanout = self.hash_map::<FlowKey, Fanout>(map_names::FANOUT)?;
        remove_if_present(&mut fanout, &key, "removing a flow's fan-out")
    }

    /// True if the program finds the flows of `local_port` through the
    /// direct port index (the port has exactly one IPv4 flow) rather than
    /// the flow map. Read from the kernel's map, not the loader's bookkeeping.
    pub fn port_indexed(&mut self, local_port: u16) -> Result<bool, XdpError> {
        let index = self.array::<u32>(map_names::PORT_INDEX)?;
        let entry = index
            .get(&u32::from(local_port), 0)
            .map_err(|source| XdpError::Map {
                what: "reading the port index",
                source,
            })?;
        Ok(entry != 0)
    }

    /// Adds or replaces what is known about the stream with this SSRC.
    pub fn set_stream(&mut self, ssrc: u32, stream: &StreamSpec) -> Result<(), XdpError> {
        let value = stream.to_value()?;
        let mut map = self.hash_map::<u32, Stream>(map_names::STREAMS)?;
        map.insert(ssrc, value, 0).map_err(|source| XdpError::Map {
            what: "writing a stream",
            source,
        })
    }

    /// Forgets a stream (its packets are then never capped).
    pub fn remove_stream(&mut self, ssrc: u32) -> Result<(), XdpError> {
        let mut map = self.hash_map::<u32, Stream>(map_names::STREAMS)?;
        remove_if_present(&mut map, &ssrc, "removing a stream")
    }

    /// Sets a room's layer cap; takes effect for the next packet.
    pub fn set_room_cap(&mut self, room: u32, cap: LayerCap) -> Result<(), XdpError> {
        let value = cap.to_value()?;
        let mut map = self.hash_map::<u32, RoomCap>(map_names::ROOM_CAPS)?;
        map.insert(room, value, 0).map_err(|source| XdpError::Map {
            what: "writing a room cap",
            source,
        })?;
        // After the insert, so the program never skips the lookup of a cap that exists.
        if self.state.any_room_cap == 0 {
            self.write_state(IngressState {
                any_room_cap: 1,
                ..self.state
            })?;
        }
        Ok(())
    }

    /// Lifts a room's cap.
    pub fn clear_room_cap(&mut self, room: u32) -> Result<(), XdpError> {
        let mut map = self.hash_map::<u32, RoomCap>(map_names::ROOM_CAPS)?;
        remove_if_present(&mut map, &room, "removing a room cap")?;
        let any = u8::from(map.keys().next().is_some());
        if any != self.state.any_room_cap {
            self.write_state(IngressState {
                any_room_cap: any,
                ..self.state
            })?;
        }
        Ok(())
    }

    /// The counters summed over all CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let map = self
            .ebpf
            .map(map_names::COUNTERS)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::COUNTERS,
            })?;
        let array: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the counters map",
                source,
            })?;
        let per_cpu = array.get(&0, 0).map_err(|source| XdpError::Map {
            what: "reading the counters",
            source,
        })?;
        let mut total = Counters::default();
        for counters in per_cpu.iter() {
            total.accumulate(counters);
        }
        Ok(total)
    }

    /// Runs the XDP program once on `frame` with `BPF_PROG_TEST_RUN`, without
    /// any interface: how the program is unit-tested.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<TestRunOutcome, XdpError> {
        let program = xdp_program(&mut self.ebpf, program_names::XDP_INGRESS)?;
        // Room for the frame plus the headroom a rewrite may add.
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .map_err(|source| XdpError::Program {
                what: "BPF_PROG_TEST_RUN".into(),
                source,
            })?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            action: XdpAction::from(result.return_value),
            frame: out,
            duration: result.duration,
        })
    }

    fn hash_map<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, XdpError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(XdpError::Missing { kind: "map", name })?;
        HashMap::try_from(map).map_err(|source| XdpError::Map {
            what: "opening a hash map",
            source,
        })
    }
}

impl Drop for XdpIngress {
    fn drop(&mut self) {
        if let Err(err) = self.detach_all() {
            tracing::error!(%err, "detaching XDP/TC on shutdown failed");
        }
    }
}

/// An `XDP_PASS` program attached in driver mode. Native XDP on veth
/// delivers `XDP_TX`/`XDP_REDIRECT` frames only to a peer that has an XDP
/// program of its own; this is that program. Detached on drop.
pub struct XdpPass {
    ebpf: Ebpf,
    interface: String,
    link: Option<aya::programs::xdp::XdpLinkId>,
    mode: AttachedMode,
}

impl XdpPass {
    /// Loads the pass program and attaches it to `interface` (in the calling
    /// thread's network namespace), driver mode first.
    pub fn attach(interface: &str) -> Result<Self, XdpError> {
        let mut ebpf = load_object()?;
        let program = xdp_program(&mut ebpf, program_names::XDP_PASS)?;
        program.load().map_err(|source| XdpError::Program {
            what: "verifying the XDP pass program".into(),
            source,
        })?;
        let (link, mode) = attach_xdp(program, interface)?;
        Ok(Self {
            ebpf,
            interface: interface.to_owned(),
            link: Some(link),
            mode,
        })
    }

    /// The mode the program is attached in.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }
}

impl Drop for XdpPass {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else { return };
        let result = xdp_program(&mut self.ebpf, program_names::XDP_PASS).and_then(|p| {
            p.detach(link).map_err(|source| XdpError::Program {
                what: format!("detaching the XDP pass program from {}", self.interface),
                source,
            })
        });
        if let Err(err) = result {
            tracing::error!(%err, "detaching the XDP pass program failed");
        }
    }
}

/// The index of `interface` in the calling thread's network namespace.
pub fn ifindex(interface: &str) -> Result<u32, XdpError> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| XdpError::UnknownInterface(interface.to_owned()))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(XdpError::UnknownInterface(interface.to_owned())),
        index => Ok(index),
    }
}

fn check_port_range(config: &IngressConfig) -> Result<(), XdpError> {
    if config.port_min > config.port_max {
        return Err(XdpError::BadPortRange {
            min: config.port_min,
            max: config.port_max,
        });
    }
    Ok(())
}

fn load_object() -> Result<Ebpf, XdpError> {
    Ebpf::load(BPF_OBJECT).map_err(|err| {
        if is_permission_error(&err) {
            XdpError::NotPermitted(err)
        } else {
            XdpError::Load(err)
        }
    })
}

fn attach_xdp(
    program: &mut Xdp,
    interface: &str,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachedMode), XdpError> {
    match program.attach(interface, XdpMode::Driver) {
        Ok(link) => Ok((link, AttachedMode::Driver)),
        Err(driver_err) => {
            let link = program.attach(interface, XdpMode::Skb).map_err(|source| {
                XdpError::Program {
                    what: format!(
                        "attaching XDP to {interface} (driver mode failed with: {driver_err}; skb mode)"
                    ),
                    source,
                }
            })?;
            tracing::warn!(
                interface,
                mode = %AttachedMode::Skb,
                error = %driver_err,
                "native XDP unavailable; attached in skb (generic) mode, expect far lower packet rates"
            );
            Ok((link, AttachedMode::Skb))
        }
    }
}

fn remove_if_present<K: Pod, V: Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    key: &K,
    what: &'static str,
) -> Result<(), XdpError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(source) => Err(XdpError::Map { what, source }),
    }
}

fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    let program = ebpf.program_mut(name).ok_or(XdpError::Missing {
        kind: "program",
        name,
    })?;
    program.try_into().map_err(|source| XdpError::Program {
        what: format!("{name} is not an XDP program"),
        source,
    })
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, XdpError> {
    let name = program_names::TC_FANOUT;
    let program = ebpf.program_mut(name).ok_or(XdpError::Missing {
        kind: "program",
        name,
    })?;
    program.try_into().map_err(|source| XdpError::Program {
        what: format!("{name} is not a TC classifier"),
        source,
    })
}

/// True if any error in the chain is EPERM/EACCES from the kernel.
fn is_permission_error(err: &aya::EbpfError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// The most destinations [`FlowAction::Relay`] accepts.
pub const MAX_RELAY_FANOUT: usize = MAX_FANOUT;
