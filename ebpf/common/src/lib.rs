//! The one definition of every BPF map key and value type.
//!
//! The XDP/TC programs (`switchboard-ebpf`, built for `bpfel-unknown-none`)
//! and the userspace loader (`dataplane::xdp`) both use these `#[repr(C)]`
//! types, so a layout change cannot silently split them.
//!
//! Conventions: addresses are 16 bytes in network byte order, IPv4 as
//! v4-mapped IPv6 (`::ffff:a.b.c.d`); ports and ids are host byte order.
#![no_std]

/// Names of the maps in the BPF object, shared so the loader cannot misspell them.
pub mod map_names {
    /// Per-CPU array of [`crate::Counters`], one slot.
    pub const COUNTERS: &str = "SB_COUNTERS";
    /// Array of one [`crate::IngressState`].
    pub const INGRESS_CONFIG: &str = "SB_INGRESS_CONFIG";
    /// Hash of the appliance's own media addresses: [`crate::Addr`] → `u8` (1).
    pub const LOCAL_ADDRS: &str = "SB_LOCAL_ADDRS";
    /// Hash of [`crate::FlowKey`] → [`crate::Flow`]: flows whose sender is IPv6.
    pub const FLOWS: &str = "SB_FLOWS";
    /// Hash of [`crate::FlowKeyV4`] → [`crate::Flow`]: flows whose sender is
    /// IPv4, under a key less than half the size (hashed and compared per packet).
    pub const FLOWS_V4: &str = "SB_FLOWS_V4";
    /// Array of `u32` indexed by local UDP port: 1 + the [`FLOW_SLOTS`] slot
    /// of the port's only IPv4 flow, or 0. A direct index in front of
    /// [`FLOWS_V4`], which stays complete (see [`crate::FlowSlot`]).
    pub const PORT_INDEX: &str = "SB_PORT_INDEX";
    /// Array of [`crate::FlowSlot`], [`crate::FLOW_SLOTS`] entries.
    pub const FLOW_SLOTS: &str = "SB_FLOW_SLOTS";
    /// Hash of [`crate::FlowKey`] → [`crate::Fanout`], for flows with several destinations.
    pub const FANOUT: &str = "SB_FANOUT";
    /// Hash of SSRC (`u32`) → [`crate::Stream`].
    pub const STREAMS: &str = "SB_STREAMS";
    /// Hash of room id (`u32`) → [`crate::RoomCap`].
    pub const ROOM_CAPS: &str = "SB_ROOM_CAPS";
    /// Device hash map (ifindex → ifindex) that `XDP_REDIRECT` goes through.
    pub const EGRESS_DEVS: &str = "SB_EGRESS_DEVS";
    /// Array of one [`crate::GenTemplate`]: the benchmark generator's frame headers.
    pub const GEN_TEMPLATE: &str = "SB_GEN_TEMPLATE";
    /// Per-CPU array of one `u64`: frames the benchmark generator has sent (its RTP sequence).
    pub const GEN_SENT: &str = "SB_GEN_SENT";
    /// Array of one [`crate::GenPace`]: the benchmark generator's rate limit.
    pub const GEN_PACE: &str = "SB_GEN_PACE";
    /// Array of one [`crate::SinkConfig`]: which frames the benchmark counter takes.
    pub const SINK_CONFIG: &str = "SB_SINK_CONFIG";
    /// Per-CPU array of one [`crate::SinkCounters`].
    pub const SINK_COUNTERS: &str = "SB_SINK_COUNTERS";
}

/// Names of the programs in the BPF object.
pub mod program_names {
    /// The XDP ingress program: classify, filter, cap, relay to one destination.
    pub const XDP_INGRESS: &str = "switchboard_xdp";
    /// The TC (clsact ingress) program that fans a relay flow out to several destinations.
    pub const TC_FANOUT: &str = "switchboard_tc_fanout";
    /// An XDP program that passes every frame. Native XDP on veth only delivers
    /// `XDP_TX`/`XDP_REDIRECT` frames to a peer that runs an XDP program itself.
    pub const XDP_PASS: &str = "switchboard_xdp_pass";
    /// Benchmark baseline: swaps Ethernet, IP and UDP source and destination
    /// and sends the frame back with `XDP_TX`; the least work an XDP
    /// forwarder can do per frame.
    pub const XDP_REFLECT: &str = "switchboard_reflect";
    /// Benchmark traffic generator, run with `BPF_PROG_TEST_RUN` live frames:
    /// restores the frame's headers from [`crate::GenTemplate`], stamps an
    /// RTP sequence number and transmits with `XDP_TX`.
    pub const XDP_BENCH_GEN: &str = "switchboard_bench_gen";
    /// Benchmark sink: counts and drops the UDP frames [`crate::SinkConfig`]
    /// selects, passes everything else.
    pub const XDP_BENCH_COUNT: &str = "switchboard_bench_count";
}

/// Most destinations one relay flow can have (the TC clone loop's bound).
pub const MAX_FANOUT: usize = 16;

/// Number of AV1 Dependency Descriptor template ids (6 bits).
pub const DD_TEMPLATES: usize = 64;

/// Value in [`Stream::dd_temporal`] for a template id with no known temporal layer.
/// Packets with such a template are never dropped by a temporal cap.
pub const DD_TEMPORAL_UNKNOWN: u8 = 0xff;

/// A 16-byte address (IPv6, or IPv4 as v4-mapped IPv6), network byte order.
pub type Addr = [u8; 16];

/// What the XDP and TC programs saw, per CPU. Every field is a packet count.
///
/// Every frame the XDP program sees is counted in `received` and in exactly
/// one of the other XDP fields, so the disposition fields sum to `received`.
/// `cloned` and `clone_failed` are per copy, counted by the TC program.
/// Userspace sums the per-CPU copies; the programs only ever increment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every frame the XDP program was called for.
    pub received: u64,
    /// Not UDP to one of the appliance's media addresses and ports: passed untouched.
    pub not_ours: u64,
    /// STUN (RFC 7983 first byte 0..=3): passed up.
    pub stun: u64,
    /// DTLS (RFC 7983 first byte 20..=63): passed up.
    pub dtls: u64,
    /// Any other first byte, or an empty datagram: passed up.
    pub other: u64,
    /// Ours, but in a shape the fast path leaves to the kernel (IPv4 options,
    /// fragments, IPv6 extension headers): passed up.
    pub slow_path: u64,
    /// RTP/RTCP of a known flow terminated in userspace (sfu leg): passed up.
    pub to_userspace: u64,
    /// RTP/RTCP of an unknown sender, passed up because the config says so.
    pub unknown_passed: u64,
    /// Malformed frames passed up because the config says so.
    pub malformed_passed: u64,
    /// Relay flows with several destinations, passed to the TC fan-out program.
    pub to_fanout: u64,
    /// Relayed with `XDP_TX` (egress leg on the ingress interface).
    pub tx: u64,
    /// Relayed with `XDP_REDIRECT` to another interface.
    pub redirect: u64,
    /// Dropped: RTP/RTCP from a sender with no flow.
    pub drop_unknown_flow: u64,
    /// Dropped: video above the room's layer cap.
    pub drop_layer_cap: u64,
    /// Dropped: headers that lie or are cut short.
    pub drop_malformed: u64,
    /// Dropped: TTL or hop limit would reach zero.
    pub drop_ttl: u64,
    /// Dropped: the egress interface is not in the redirect map.
    pub drop_no_egress: u64,
    /// Copies sent by the TC fan-out program (`bpf_clone_redirect`).
    pub cloned: u64,
    /// Copies the TC fan-out program failed to send.
    pub clone_failed: u64,
}

impl Counters {
    /// Adds another CPU's copy into this one.
    pub fn accumulate(&mut self, o: &Counters) {
        self.received += o.received;
        self.not_ours += o.not_ours;
        self.stun += o.stun;
        self.dtls += o.dtls;
        self.other += o.other;
        self.slow_path += o.slow_path;
        self.to_userspace += o.to_userspace;
        self.unknown_passed += o.unknown_passed;
        self.malformed_passed += o.malformed_passed;
        self.to_fanout += o.to_fanout;
        self.tx += o.tx;
        self.redirect += o.redirect;
        self.drop_unknown_flow += o.drop_unknown_flow;
        self.drop_layer_cap += o.drop_layer_cap;
        self.drop_malformed += o.drop_malformed;
        self.drop_ttl += o.drop_ttl;
        self.drop_no_egress += o.drop_no_egress;
        self.cloned += o.cloned;
        self.clone_failed += o.clone_failed;
    }

    /// Frames the XDP program passed up to the kernel (including those for TC fan-out).
    pub fn passed(&self) -> u64 {
        self.not_ours
            + self.stun
            + self.dtls
            + self.other
            + self.slow_path
            + self.to_userspace
            + self.unknown_passed
            + self.malformed_passed
            + self.to_fanout
    }

    /// Frames the XDP program forwarded itself.
    pub fn forwarded(&self) -> u64 {
        self.tx + self.redirect
    }

    /// Frames the XDP program dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.drop_unknown_flow
            + self.drop_layer_cap
            + self.drop_malformed
            + self.drop_ttl
            + self.drop_no_egress
    }
}

/// Which UDP ports are media ports, and the policy for frames that fail checks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressConfig {
    /// First media port, inclusive.
    pub port_min: u16,
    /// Last media port, inclusive.
    pub port_max: u16,
    /// Non-zero: drop malformed frames addressed to a media address; zero: pass them up.
    pub drop_malformed: u8,
    /// Non-zero: drop RTP/RTCP from senders with no flow; zero: pass them up.
    pub drop_unknown: u8,
    pub _pad: [u8; 2],
}

/// Local addresses [`IngressState`] carries inline, so the program compares
/// them instead of hashing into the local-address map.
pub const LOCAL_ADDRS_INLINE: usize = 4;
/// [`IngressState::local_count`]: more local addresses than fit inline; the
/// program looks them up in the local-address map.
pub const LOCAL_ADDRS_IN_MAP: u8 = 0xff;

/// Value of the ingress config map: the configuration plus what the loader
/// derives from the other maps, so the program reads both with one lookup.
/// Aligned so the program compares the inline addresses in words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressState {
    pub config: IngressConfig,
    /// Non-zero while the room-cap map holds at least one cap; zero lets the
    /// program skip the stream and cap lookups, which could not drop anything.
    pub any_room_cap: u8,
    /// How many entries of `local_addrs` are the whole local-address map, or
    /// [`LOCAL_ADDRS_IN_MAP`].
    pub local_count: u8,
    pub _pad: [u8; 6],
    /// The local-address map's keys while there are at most [`LOCAL_ADDRS_INLINE`].
    pub local_addrs: [Addr; LOCAL_ADDRS_INLINE],
}

/// Flow lookup key: who sent it (remote address and port) and to which of our ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The sender's address (v4-mapped for IPv4).
    pub remote_addr: Addr,
    /// The sender's UDP port.
    pub remote_port: u16,
    /// The appliance's UDP port the packet was sent to.
    pub local_port: u16,
}

impl FlowKey {
    /// The key in the IPv4 flow map, if the sender is IPv4 (v4-mapped).
    pub fn v4(&self) -> Option<FlowKeyV4> {
        let a = &self.remote_addr;
        is_v4_mapped(a).then(|| FlowKeyV4 {
            remote_addr: [a[12], a[13], a[14], a[15]],
            remote_port: self.remote_port,
            local_port: self.local_port,
        })
    }
}

/// [`FlowKey`] for an IPv4 sender, the key of the IPv4 flow map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV4 {
    /// The sender's address.
    pub remote_addr: [u8; 4],
    /// The sender's UDP port.
    pub remote_port: u16,
    /// The appliance's UDP port the packet was sent to.
    pub local_port: u16,
}

/// [`Flow::action`]: the leg is terminated in userspace (sfu); pass the packet up.
pub const FLOW_TO_USERSPACE: u8 = 0;
/// [`Flow::action`]: relay the packet byte for byte to the flow's destinations.
pub const FLOW_RELAY: u8 = 1;

/// One destination of a relay flow: the egress leg's headers, laid out so
/// the programs copy them into the frame in words, and the checksum updates
/// precomputed so the per-packet rewrite is copies plus two folded adds.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayDest {
    /// Destination MAC: the next hop's address (filled from the neighbour
    /// table). With `src_mac`, the frame's first 12 bytes as they leave.
    pub dst_mac: [u8; 6],
    /// Source MAC: the egress interface's own address.
    pub src_mac: [u8; 6],
    /// Egress interface index.
    pub ifindex: u32,
    /// Source address on the egress leg (the appliance's, v4-mapped for IPv4).
    pub local_addr: Addr,
    /// The peer's address (same family as the flow's sender).
    pub remote_addr: Addr,
    /// Source then destination UDP port in network byte order: the first
    /// four bytes of the UDP header as it leaves.
    pub ports: [u8; 4],
    /// IPv4 header checksum change for a packet of the flow sent to address
    /// zero: new addresses in, the flow's sender out, TTL one less (see
    /// [`RelayDest::new`]). The program adds the ones' complement of the
    /// address the packet was actually sent to.
    pub ip_csum_delta: u16,
    /// UDP checksum change, likewise: new addresses and ports in, the
    /// flow's sender address and both ports out.
    pub udp_csum_delta: u16,
}

impl RelayDest {
    /// The destination for packets of the flow `key`, with its checksum
    /// changes precomputed. `local` is the egress leg's source address and
    /// port, `remote` the peer's; ports in host order.
    ///
    /// The checksum fields hold ones' complement sums of 16-bit words read
    /// in host byte order straight from the wire bytes: ones' complement
    /// addition commutes with byte swapping (RFC 1071 §2), so the program
    /// reads and writes checksums without converting, and this runs on the
    /// same host as the program.
    pub fn new(
        key: &FlowKey,
        (local_addr, local_port): (Addr, u16),
        (remote_addr, remote_port): (Addr, u16),
        ifindex: u32,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
    ) -> Self {
        let sp = local_port.to_be_bytes();
        let dp = remote_port.to_be_bytes();
        let ports = [sp[0], sp[1], dp[0], dp[1]];
        // IPv4 sums cover the four address bytes only (v4-mapped tail).
        let from = if is_v4_mapped(&key.remote_addr) {
            12
        } else {
            0
        };
        let old_src = ones_sum(&key.remote_addr[from..], true);
        let new_addrs =
            ones_sum(&local_addr[from..], false) + ones_sum(&remote_addr[from..], false);
        // TTL one less: the TTL/protocol word drops by 0x0100 (network
        // order), i.e. ones' complement adds !0x0100.
        let ttl = u16::from_ne_bytes([0xfe, 0xff]) as u32;
        let old_ports = ones_sum(&key.remote_port.to_be_bytes(), true)
            + ones_sum(&key.local_port.to_be_bytes(), true);
        Self {
            dst_mac,
            src_mac,
            ifindex,
            local_addr,
            remote_addr,
            ports,
            ip_csum_delta: fold(old_src + new_addrs + ttl),
            udp_csum_delta: fold(old_src + old_ports + new_addrs + ones_sum(&ports, false)),
        }
    }
}

/// True for `::ffff:a.b.c.d`.
pub fn is_v4_mapped(a: &Addr) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

/// Sum of the host-order 16-bit words of `bytes` (even length), or of
/// their ones' complements.
fn ones_sum(bytes: &[u8], complement: bool) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < bytes.len() {
        let w = u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
        sum += if complement { !w } else { w } as u32;
        i += 2;
    }
    sum
}

/// Folds a ones' complement sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Value of the flow map.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// [`FLOW_TO_USERSPACE`] or [`FLOW_RELAY`].
    pub action: u8,
    /// Number of relay destinations: 1 uses `dest`; 2..=[`MAX_FANOUT`] use the fan-out map.
    pub fanout: u8,
    /// Non-zero if the flow's sender is IPv6 (its destinations are too).
    /// Packets of the other family never match the flow's rewrite.
    pub ipv6: u8,
    /// Non-zero for a cascading trunk: the leg is also terminated here, so
    /// the TC program sends the rewritten copies to the destinations (the
    /// downstream appliances, from the fan-out map whatever their number)
    /// and then passes the original, unchanged, up to the worker's socket.
    pub pass_up: u8,
    pub _pad: [u8; 4],
    /// The destination when `fanout` is 1.
    pub dest: RelayDest,
}

/// Entries of the port index: one per UDP port.
pub const PORT_INDEX_ENTRIES: u32 = 1 << 16;
/// Entries of the flow-slot array. More than the IPv4 flow map holds would
/// never be used at once; slots in quarantine need some spare.
pub const FLOW_SLOTS: u32 = 16_384;

/// A slot of the flow-slot array: the only IPv4 flow of one local port, with
/// the sender it belongs to. The program takes the port's slot from the port
/// index and uses `flow` only if the packet's sender is `remote_addr` and
/// `remote_port`; any other sender goes on to the IPv4 flow map, which holds
/// every IPv4 flow (indexed or not) and is the one source of truth.
///
/// A live slot is never rewritten: the loader writes a new value into a free
/// slot, then switches the port's index entry (one aligned 4-byte store, so
/// the program sees the old slot or the new one, whole), and reuses the old
/// slot only after a quarantine far longer than any program run (XDP runs
/// inside an RCU read section lasting microseconds).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub flow: Flow,
    /// The sender's IPv4 address, as on the wire.
    pub remote_addr: [u8; 4],
    /// The sender's UDP port, host order.
    pub remote_port: u16,
    pub _pad: [u8; 2],
}

/// Value of the fan-out map: the destinations of a multi-destination relay flow.
/// Only the first [`Flow::fanout`] entries are used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fanout {
    pub dests: [RelayDest; MAX_FANOUT],
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            dests: [RelayDest::default(); MAX_FANOUT],
        }
    }
}

/// [`Stream::kind`]: audio, never dropped by a cap.
pub const KIND_AUDIO: u8 = 0;
/// [`Stream::kind`]: video, subject to the room's cap.
pub const KIND_VIDEO: u8 = 1;

/// What the appliance knows about one RTP stream (by SSRC).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The room whose cap applies.
    pub room: u32,
    /// [`KIND_AUDIO`] or [`KIND_VIDEO`].
    pub kind: u8,
    /// Simulcast or spatial layer carried by this SSRC (0 = lowest).
    pub spatial: u8,
    /// RTP header extension id of the AV1 Dependency Descriptor; 0 = none.
    pub dd_ext_id: u8,
    pub _pad: u8,
    /// Temporal layer per DD template id, or [`DD_TEMPORAL_UNKNOWN`].
    pub dd_temporal: [u8; DD_TEMPLATES],
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            room: 0,
            kind: KIND_AUDIO,
            spatial: 0,
            dd_ext_id: 0,
            _pad: 0,
            dd_temporal: [DD_TEMPORAL_UNKNOWN; DD_TEMPLATES],
        }
    }
}

/// A room's layer cap: video above it is dropped at ingress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomCap {
    /// Highest simulcast/spatial layer forwarded.
    pub max_spatial: u8,
    /// Highest temporal layer forwarded (read from the DD template id).
    pub max_temporal: u8,
    /// Non-zero: no video at all (the audio-only step of the overload ladder).
    pub video_off: u8,
    pub _pad: u8,
}

/// Bytes at the start of every generated frame that the generator rewrites
/// before each transmission (Ethernet, IPv6 and UDP headers fit).
pub const GEN_HEAD_LEN: usize = 64;

/// The benchmark generator's frame headers. Live-frame test runs recycle
/// their pages without restoring the data, so a frame the device under test
/// rewrote would come back rewritten; the generator writes `head` over the
/// first [`GEN_HEAD_LEN`] bytes of every frame it sends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenTemplate {
    /// The first bytes of the frame as it must leave (RTP sequence number 0).
    pub head: [u8; GEN_HEAD_LEN],
    /// Non-zero: Ethernet + IPv6 + UDP; zero: Ethernet + IPv4 (no options) + UDP.
    pub ipv6: u8,
    pub _pad: [u8; 7],
}

impl Default for GenTemplate {
    fn default() -> Self {
        Self {
            head: [0; GEN_HEAD_LEN],
            ipv6: 0,
            _pad: [0; 7],
        }
    }
}

/// Most frames the paced benchmark generator sends back to back to catch
/// up with its schedule after falling behind (a preempted run); further
/// behind, the schedule restarts from the present instead.
pub const GEN_PACE_BURST: u64 = 16;

/// The benchmark generator's rate limit. A run whose turn has not come
/// (`now < next_ns`) drops its frame unsent, so a live-frame test run spins
/// through repetitions and sends one frame every `interval_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenPace {
    /// Nanoseconds between frames; 0 sends every frame (saturation).
    pub interval_ns: u64,
    /// `bpf_ktime_get_ns` time of the next frame; the program keeps it.
    pub next_ns: u64,
}

/// Which frames the benchmark counter counts and drops: UDP (IPv4 or IPv6)
/// to this destination port. Everything else is passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkConfig {
    /// UDP destination port, host byte order; 0 counts nothing.
    pub udp_port: u16,
    pub _pad: [u8; 6],
}

/// What the benchmark counter took, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Frames counted and dropped.
    pub packets: u64,
    /// Their bytes, Ethernet header included.
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain `#[repr(C)]` integers and byte arrays whose padding
    // is explicit; every bit pattern is valid.
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::IngressConfig {}
    unsafe impl aya::Pod for super::IngressState {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKeyV4 {}
    unsafe impl aya::Pod for super::RelayDest {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::Fanout {}
    unsafe impl aya::Pod for super::FlowSlot {}
    unsafe impl aya::Pod for super::Stream {}
    unsafe impl aya::Pod for super::RoomCap {}
    unsafe impl aya::Pod for super::GenTemplate {}
    unsafe impl aya::Pod for super::GenPace {}
    unsafe impl aya::Pod for super::SinkConfig {}
    unsafe impl aya::Pod for super::SinkCounters {}
}

// Layouts the programs and userspace both rely on; a change here is a map ABI change.
const _: () = {
    assert!(core::mem::size_of::<FlowKey>() == 20);
    assert!(core::mem::size_of::<FlowKeyV4>() == 8);
    assert!(core::mem::size_of::<RelayDest>() == 56);
    assert!(core::mem::size_of::<Flow>() == 64);
    assert!(core::mem::offset_of!(RelayDest, local_addr) == 16);
    assert!(core::mem::offset_of!(RelayDest, remote_addr) == 32);
    assert!(core::mem::offset_of!(RelayDest, ports) == 48);
    assert!(core::mem::offset_of!(Flow, action) == 0);
    assert!(core::mem::offset_of!(Flow, fanout) == 1);
    assert!(core::mem::offset_of!(Flow, ipv6) == 2);
    assert!(core::mem::offset_of!(Flow, pass_up) == 3);
    assert!(core::mem::offset_of!(Flow, dest) == 8);
    assert!(core::mem::size_of::<FlowSlot>() == 72);
    assert!(core::mem::offset_of!(FlowSlot, remote_addr) == 64);
    assert!(core::mem::size_of::<Stream>() == 72);
    assert!(core::mem::size_of::<RoomCap>() == 4);
    assert!(core::mem::size_of::<IngressConfig>() == 8);
    assert!(core::mem::size_of::<IngressState>() == 80);
    assert!(core::mem::size_of::<GenTemplate>() == GEN_HEAD_LEN + 8);
    assert!(core::mem::size_of::<GenPace>() == 16);
    assert!(core::mem::size_of::<SinkConfig>() == 8);
    assert!(core::mem::size_of::<SinkCounters>() == 16);
};
