//! switchboard's XDP ingress program and TC fan-out program.
//!
//! XDP (`switchboard_xdp`) meets every frame: Ethernet with at most one
//! 802.1Q tag, IPv4 or IPv6, UDP. Only UDP to one of the appliance's media
//! addresses and ports is considered; everything else is passed untouched.
//! RFC 7983 first-byte demux sends STUN, DTLS and anything unknown up to the
//! kernel; RTP/RTCP is looked up by (remote address, remote port, local port).
//! Unknown senders are dropped (or passed, by config), video above the room's
//! layer cap is dropped, sfu legs go up to userspace, and relay legs with one
//! destination are rewritten (Ethernet, IP, UDP; checksums updated
//! incrementally, TTL/hop limit decremented) and sent with `XDP_TX` or
//! `XDP_REDIRECT`. Relay legs with several destinations are passed up to the
//! TC program (`switchboard_tc_fanout`), which rewrites and clones one copy
//! per destination with `bpf_clone_redirect`.
//!
//! An 802.1Q tag on an ingress frame is kept as it is on every copy; the
//! fast path does not translate between VLANs or IP versions (the loader
//! refuses flows that would need the latter).
//!
//! Every packet read is bounds-checked against `data_end` (direct access) or
//! done by a helper that checks the length itself (`bpf_xdp_load_bytes`).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_xdp_load_bytes,
    macros::{classifier, map, xdp},
    maps::{Array, DevMapHash, HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use switchboard_common::{
    Addr, Counters, Fanout, Flow, FlowKey, FlowKeyV4, FlowSlot, IngressState, RelayDest, RoomCap,
    Stream, DD_TEMPLATES, DD_TEMPORAL_UNKNOWN, FLOW_RELAY, FLOW_SLOTS as FLOW_SLOT_COUNT,
    FLOW_TO_USERSPACE, KIND_VIDEO, LOCAL_ADDRS_IN_MAP, MAX_FANOUT, PORT_INDEX_ENTRIES,
};

#[map(name = "SB_COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SB_INGRESS_CONFIG")]
static INGRESS_CONFIG: Array<IngressState> = Array::with_max_entries(1, 0);

#[map(name = "SB_LOCAL_ADDRS")]
static LOCAL_ADDRS: HashMap<Addr, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "SB_FLOWS")]
static FLOWS: HashMap<FlowKey, Flow> = HashMap::with_max_entries(16_384, 0);

#[map(name = "SB_FLOWS_V4")]
static FLOWS_V4: HashMap<FlowKeyV4, Flow> = HashMap::with_max_entries(16_384, 0);

/// Local port → 1 + slot of the port's only IPv4 flow (0: none). Array
/// lookups are inlined by the verifier: no hashing, no call.
#[map(name = "SB_PORT_INDEX")]
static PORT_INDEX: Array<u32> = Array::with_max_entries(PORT_INDEX_ENTRIES, 0);

#[map(name = "SB_FLOW_SLOTS")]
static FLOW_SLOTS: Array<FlowSlot> = Array::with_max_entries(FLOW_SLOT_COUNT, 0);

#[map(name = "SB_FANOUT")]
static FANOUT: HashMap<FlowKey, Fanout> = HashMap::with_max_entries(1_024, 0);

#[map(name = "SB_STREAMS")]
static STREAMS: HashMap<u32, Stream> = HashMap::with_max_entries(16_384, 0);

#[map(name = "SB_ROOM_CAPS")]
static ROOM_CAPS: HashMap<u32, RoomCap> = HashMap::with_max_entries(4_096, 0);

#[map(name = "SB_EGRESS_DEVS")]
static EGRESS_DEVS: DevMapHash = DevMapHash::with_max_entries(256, 0);

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const UDP_HDR_LEN: usize = 8;
const RTP_HDR_LEN: usize = 12;
const RTCP_MIN_LEN: usize = 8;
/// Most RTP header extension elements examined when looking for the DD.
const MAX_EXT_ELEMENTS: usize = 16;
/// The TC program makes at most this much of the skb linear: every header it reads.
const TC_PULL_LEN: u32 = 80;
/// `bpf_skb_store_bytes` flag: keep `skb->csum` right for CHECKSUM_COMPLETE skbs.
const BPF_F_RECOMPUTE_CSUM: u64 = 1;

/// Direct packet access for both program types.
trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

/// The address of the frame's first byte, if the frame holds at least `len`
/// bytes. Reads at constant offsets below `len` from it need no further
/// check: the verifier knows the range from this one.
#[inline(always)]
fn bounds<F: Frame>(f: &F, len: usize) -> Option<usize> {
    let start = f.start();
    (start + len <= f.end()).then_some(start)
}

/// Reads a `T` at `addr` (headers sit at any alignment; the object is built
/// with misaligned access allowed, so this is one load, not one per byte).
///
/// # Safety
/// `addr..addr + size_of::<T>()` must be inside the frame (see [`bounds`])
/// or a live map value.
#[inline(always)]
unsafe fn rd<T: Copy>(addr: usize) -> T {
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

/// Writes a `T` at `addr`.
///
/// # Safety
/// As for [`rd`]; XDP and TC frames are writable.
#[inline(always)]
unsafe fn wr<T: Copy>(addr: usize, value: T) {
    unsafe { core::ptr::write_unaligned(addr as *mut T, value) }
}

/// Reads a `T` at `offset`, or `None` if it is not all inside the frame.
#[inline(always)]
fn load<T: Copy, F: Frame>(f: &F, offset: usize) -> Option<T> {
    let start = bounds(f, offset + core::mem::size_of::<T>())?;
    // SAFETY: checked just above.
    Some(unsafe { rd(start + offset) })
}

/// Writes `value` at `offset`; false (and nothing written) if it does not fit in the frame.
#[inline(always)]
fn store<T: Copy, F: Frame>(f: &F, offset: usize, value: T) -> bool {
    let Some(start) = bounds(f, offset + core::mem::size_of::<T>()) else {
        return false;
    };
    // SAFETY: checked just above.
    unsafe { wr(start + offset, value) };
    true
}

/// A big-endian 16-bit field at `offset`, in host order.
#[inline(always)]
fn load_be16<F: Frame>(f: &F, offset: usize) -> Option<u16> {
    load::<u16, F>(f, offset).map(u16::from_be)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// A key on the stack, aligned so it is built, copied and compared in
/// words rather than bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Aligned<T>(T);

// Addresses are handled as two 64-bit words in the target's (little-endian)
// byte order, as loaded from the wire: compared and summed in registers.
const _: () = assert!(cfg!(target_endian = "little"));

/// `::ffff:a.b.c.d` as two words, from the four address bytes as read from
/// the wire: bytes 10 and 11 are 0xff, 12..16 the IPv4 address.
#[inline(always)]
fn v4_mapped(a: u32) -> [u64; 2] {
    [0, ((a as u64) << 32) | 0xffff_0000]
}

/// The IPv4 address of a v4-mapped address's words, as read from the wire.
#[inline(always)]
fn v4_of(words: [u64; 2]) -> u32 {
    (words[1] >> 32) as u32
}

/// The IPv6 address at `addr`, read as two words (an array read would
/// become a call to a byte-wise memcpy).
///
/// # Safety
/// As for [`rd`].
#[inline(always)]
unsafe fn v6_at(addr: usize) -> [u64; 2] {
    unsafe { [rd::<u64>(addr), rd::<u64>(addr + 8)] }
}

/// Folds a ones' complement sum to at most 16 bits (the value 0xffff stays:
/// it and 0 are the same number).
#[inline(always)]
fn fold64(mut sum: u64) -> u32 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u32
}

/// Ones' complement sum of the ones' complements of an address's 32-bit
/// words (as read from the wire), folded to 16 bits: what a checksum loses
/// when the address leaves.
#[inline(always)]
fn not_sum(a: [u64; 2], v6: bool) -> u32 {
    if v6 {
        let [w0, w1] = a;
        fold64(
            (!(w0 as u32)) as u64
                + (!((w0 >> 32) as u32)) as u64
                + (!(w1 as u32)) as u64
                + (!((w1 >> 32) as u32)) as u64,
        )
    } else {
        let x = !v4_of(a);
        let x = (x & 0xffff) + (x >> 16);
        (x & 0xffff) + (x >> 16)
    }
}

#[inline(always)]
fn is_local(state: &IngressState, addr: [u64; 2]) -> bool {
    let count = state.local_count;
    if count == LOCAL_ADDRS_IN_MAP {
        // SAFETY: [u64; 2] and Addr ([u8; 16]) have the same size and every
        // bit pattern is valid; the value is only tested for presence.
        return unsafe { LOCAL_ADDRS.get(&*(&addr as *const [u64; 2] as *const Addr)) }.is_some();
    }
    // The loader keeps the map's few keys here: compared, not hashed.
    let [a0, a1] = addr;
    for (i, local) in state.local_addrs.iter().enumerate() {
        if i >= count as usize {
            break;
        }
        // SAFETY: the addresses are at multiples of 8 in an align(8) struct.
        let [l0, l1] = unsafe { core::ptr::read(local as *const Addr as *const [u64; 2]) };
        if a0 == l0 && a1 == l1 {
            return true;
        }
    }
    false
}

/// The headers of a UDP datagram addressed to one of our media addresses and
/// ports. With the parse inlined for a constant IP version and link header
/// length, every offset here is a constant too.
#[derive(Clone, Copy)]
struct Udp {
    v6: bool,
    l3: usize,
    l4: usize,
    /// UDP length from the UDP header, checked against the IP length.
    udp_len: usize,
    /// The source address as two words (v4-mapped for IPv4; see [`Udp::key`]).
    src: [u64; 2],
    /// Source and destination port, host order.
    sport: u16,
    dport: u16,
    /// Ones' complement sum of the destination address, folded to 16 bits
    /// (what the checksums lose when a rewrite replaces it).
    not_dst: u32,
}

enum Parsed {
    NotOurs,
    SlowPath,
    Malformed,
    Ours(Udp),
}

/// Ethernet (one optional 802.1Q/802.1ad tag), IPv4 or IPv6, UDP.
#[inline(always)]
fn parse<F: Frame>(f: &F, state: &IngressState) -> Parsed {
    let Some(ethertype) = load_be16(f, 12) else {
        return Parsed::NotOurs;
    };
    match ethertype {
        ETH_P_IPV4 => parse_at::<F, false, ETH_HDR_LEN>(f, state),
        ETH_P_IPV6 => parse_at::<F, true, ETH_HDR_LEN>(f, state),
        ETH_P_8021Q | ETH_P_8021AD => match load_be16(f, ETH_HDR_LEN + 2) {
            Some(ETH_P_IPV4) => parse_at::<F, false, { ETH_HDR_LEN + VLAN_HDR_LEN }>(f, state),
            Some(ETH_P_IPV6) => parse_at::<F, true, { ETH_HDR_LEN + VLAN_HDR_LEN }>(f, state),
            _ => Parsed::NotOurs,
        },
        _ => Parsed::NotOurs,
    }
}

/// IPv4 (`V6` false) or IPv6 at `L3`, then UDP.
#[inline(always)]
fn parse_at<F: Frame, const V6: bool, const L3: usize>(f: &F, state: &IngressState) -> Parsed {
    let cfg = &state.config;
    let frame_len = f.end() - f.start();
    let l4 = L3 + if V6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    let Some(p) = bounds(f, l4) else {
        return Parsed::NotOurs;
    };
    // SAFETY (all reads up to the UDP header): [p, p + l4) is inside the frame.
    let dst = if V6 {
        unsafe { v6_at(p + L3 + 24) }
    } else {
        if unsafe { rd::<u8>(p + L3 + 9) } != IPPROTO_UDP {
            return Parsed::NotOurs;
        }
        v4_mapped(unsafe { rd(p + L3 + 16) })
    };
    if !is_local(state, dst) {
        return Parsed::NotOurs;
    }
    // Checked again after the address check rather than kept in registers
    // (or spilled) across a possible map lookup.
    let Some(p) = bounds(f, l4) else {
        return Parsed::NotOurs;
    };
    let (l4_room, src) = if V6 {
        let version = unsafe { rd::<u8>(p + L3) } >> 4;
        if version != 6 {
            return Parsed::Malformed;
        }
        let payload_len = u16::from_be(unsafe { rd(p + L3 + 4) }) as usize;
        if l4 + payload_len > frame_len {
            return Parsed::Malformed;
        }
        match unsafe { rd::<u8>(p + L3 + 6) } {
            IPPROTO_UDP => {}
            // Hop-by-hop, routing, fragment, ESP, AH, destination options,
            // mobility, HIP, shim6, experimental: left to the kernel.
            0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => return Parsed::SlowPath,
            _ => return Parsed::NotOurs,
        }
        (payload_len, unsafe { v6_at(p + L3 + 8) })
    } else {
        let vihl = unsafe { rd::<u8>(p + L3) };
        let total_len = u16::from_be(unsafe { rd(p + L3 + 2) }) as usize;
        // Options never carry media from real endpoints: anything but a
        // bare 20-byte IPv4 header is malformed or the kernel's to parse.
        if vihl != 0x45 {
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < IPV4_HDR_LEN || total_len < ihl || L3 + total_len > frame_len
            {
                return Parsed::Malformed;
            }
            return Parsed::SlowPath;
        }
        if total_len < IPV4_HDR_LEN || L3 + total_len > frame_len {
            return Parsed::Malformed;
        }
        // Fragments (MF or an offset): the kernel reassembles them.
        let frag = u16::from_be(unsafe { rd(p + L3 + 6) });
        if frag & 0x3fff != 0 {
            return Parsed::SlowPath;
        }
        (
            total_len - IPV4_HDR_LEN,
            v4_mapped(unsafe { rd(p + L3 + 12) }),
        )
    };
    let Some(p) = bounds(f, l4 + UDP_HDR_LEN) else {
        return Parsed::Malformed;
    };
    // SAFETY (all four): the UDP header is inside the frame.
    let dport = u16::from_be(unsafe { rd(p + l4 + 2) });
    if dport < cfg.port_min || dport > cfg.port_max {
        return Parsed::NotOurs;
    }
    let udp_len = u16::from_be(unsafe { rd(p + l4 + 4) }) as usize;
    if l4_room < UDP_HDR_LEN || udp_len < UDP_HDR_LEN || udp_len > l4_room {
        return Parsed::Malformed;
    }
    // IPv6 forbids a zero UDP checksum (RFC 8200 §8.1), and an incremental
    // update of one would forge a wrong non-zero checksum.
    if V6 && unsafe { rd::<u16>(p + l4 + 6) } == 0 {
        return Parsed::Malformed;
    }
    let sport = u16::from_be(unsafe { rd(p + l4) });
    Parsed::Ours(Udp {
        v6: V6,
        l3: L3,
        l4,
        udp_len,
        src,
        sport,
        dport,
        not_dst: not_sum(dst, V6),
    })
}

impl Udp {
    /// The flow key: source address and port, destination port. Built where
    /// it is used, so the parsed fields can stay in registers until then.
    #[inline(always)]
    fn key(&self) -> Aligned<FlowKey> {
        // SAFETY: [u64; 2] and [u8; 16] have the same size and every bit pattern is valid.
        let remote_addr = unsafe { core::mem::transmute::<[u64; 2], Addr>(self.src) };
        Aligned(FlowKey {
            remote_addr,
            remote_port: self.sport,
            local_port: self.dport,
        })
    }
}

/// The flow of a parsed datagram: IPv4 senders are in their own map under
/// a shorter key (the kernel hashes and compares the whole key per lookup).
#[inline(always)]
fn flow_of(u: &Udp) -> Option<*const Flow> {
    if u.v6 {
        FLOWS.get_ptr(&u.key().0)
    } else {
        let v4 = v4_of(u.src);
        if let Some(flow) = indexed_flow(v4, u.sport, u.dport) {
            return Some(flow);
        }
        let key4 = Aligned(FlowKeyV4 {
            remote_addr: v4.to_ne_bytes(),
            remote_port: u.sport,
            local_port: u.dport,
        });
        FLOWS_V4.get_ptr(&key4.0)
    }
}

/// The flow of an IPv4 sender through the port index, if its local port has
/// exactly one IPv4 flow and it is this sender's. Anything else (no entry,
/// another sender) is left to the IPv4 flow map, which holds every flow.
#[inline(always)]
fn indexed_flow(remote_addr: u32, remote_port: u16, local_port: u16) -> Option<*const Flow> {
    let index = *PORT_INDEX.get(local_port as u32)?;
    if index == 0 {
        return None;
    }
    // SAFETY: map values stay valid for the whole program run (RCU); a slot
    // the index points at is never rewritten (see `FlowSlot`).
    let slot = unsafe { &*FLOW_SLOTS.get_ptr(index - 1)? };
    (u32::from_ne_bytes(slot.remote_addr) == remote_addr && slot.remote_port == remote_port)
        .then_some(&slot.flow as *const Flow)
}

/// What the XDP program decided, one variant per counter: the discriminant
/// is the index of the [`Counters`] field (in `u64`s) it increments.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    NotOurs = 1,
    Stun = 2,
    Dtls = 3,
    Other = 4,
    SlowPath = 5,
    ToUserspace = 6,
    UnknownPassed = 7,
    MalformedPassed = 8,
    ToFanout = 9,
    Tx = 10,
    Redirect = 11,
    DropUnknownFlow = 12,
    DropLayerCap = 13,
    DropMalformed = 14,
    DropTtl = 15,
    DropNoEgress = 16,
}

// Every outcome names the counter it increments; `received` is index 0.
const _: () = {
    use core::mem::offset_of;
    const fn at(i: Outcome) -> usize {
        i as usize * 8
    }
    assert!(offset_of!(Counters, received) == 0);
    assert!(offset_of!(Counters, not_ours) == at(Outcome::NotOurs));
    assert!(offset_of!(Counters, stun) == at(Outcome::Stun));
    assert!(offset_of!(Counters, dtls) == at(Outcome::Dtls));
    assert!(offset_of!(Counters, other) == at(Outcome::Other));
    assert!(offset_of!(Counters, slow_path) == at(Outcome::SlowPath));
    assert!(offset_of!(Counters, to_userspace) == at(Outcome::ToUserspace));
    assert!(offset_of!(Counters, unknown_passed) == at(Outcome::UnknownPassed));
    assert!(offset_of!(Counters, malformed_passed) == at(Outcome::MalformedPassed));
    assert!(offset_of!(Counters, to_fanout) == at(Outcome::ToFanout));
    assert!(offset_of!(Counters, tx) == at(Outcome::Tx));
    assert!(offset_of!(Counters, redirect) == at(Outcome::Redirect));
    assert!(offset_of!(Counters, drop_unknown_flow) == at(Outcome::DropUnknownFlow));
    assert!(offset_of!(Counters, drop_layer_cap) == at(Outcome::DropLayerCap));
    assert!(offset_of!(Counters, drop_malformed) == at(Outcome::DropMalformed));
    assert!(offset_of!(Counters, drop_ttl) == at(Outcome::DropTtl));
    assert!(offset_of!(Counters, drop_no_egress) == at(Outcome::DropNoEgress));
};

impl Outcome {
    #[inline(always)]
    fn action(self) -> u32 {
        match self {
            Outcome::Tx => xdp_action::XDP_TX,
            Outcome::Redirect => xdp_action::XDP_REDIRECT,
            Outcome::DropUnknownFlow
            | Outcome::DropLayerCap
            | Outcome::DropMalformed
            | Outcome::DropTtl
            | Outcome::DropNoEgress => xdp_action::XDP_DROP,
            _ => xdp_action::XDP_PASS,
        }
    }
}

#[inline(always)]
fn bump(update: impl FnOnce(&mut Counters)) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; only this CPU touches it while the program runs.
        update(unsafe { &mut *counters });
    }
}

#[xdp]
pub fn switchboard_xdp(ctx: XdpContext) -> u32 {
    let outcome = match INGRESS_CONFIG.get(0) {
        Some(state) => ingress(&ctx, state),
        None => Outcome::NotOurs,
    };
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        let words = counters as *mut u64;
        // SAFETY: per-CPU slot, only this CPU touches it while the program
        // runs; the outcome indexes a field of it (checked above).
        unsafe {
            *words += 1;
            *words.add(outcome as usize) += 1;
        }
    }
    outcome.action()
}

/// The RTP/RTCP datagram of a known flow, as both programs see it.
enum Media {
    Rtp { first: u8 },
    Rtcp,
}

/// RFC 7983 demux plus RFC 5761 RTP/RTCP split; `Err` is the outcome for anything else.
#[inline(always)]
fn demux<F: Frame>(f: &F, u: &Udp) -> Result<Media, Outcome> {
    let payload = u.l4 + UDP_HDR_LEN;
    let payload_len = u.udp_len - UDP_HDR_LEN;
    if payload_len == 0 {
        return Err(Outcome::Other);
    }
    let Some(first) = load::<u8, F>(f, payload) else {
        return Err(Outcome::DropMalformed);
    };
    // RTP and RTCP (128..=191) first: one test on the hot path.
    if first & 0xc0 != 0x80 {
        return Err(match first {
            0..=3 => Outcome::Stun,
            20..=63 => Outcome::Dtls,
            _ => Outcome::Other,
        });
    }
    let Some(second) = load::<u8, F>(f, payload + 1) else {
        return Err(Outcome::DropMalformed);
    };
    // RTCP packet types 192..=223 sit where RTP payload types 64..=95 with
    // the marker bit would; RFC 5761 §4 reserves that range for RTCP.
    if (192..=223).contains(&second) {
        if payload_len < RTCP_MIN_LEN {
            return Err(Outcome::DropMalformed);
        }
        return Ok(Media::Rtcp);
    }
    if payload_len < RTP_HDR_LEN {
        return Err(Outcome::DropMalformed);
    }
    Ok(Media::Rtp { first })
}

#[inline(always)]
fn ingress(ctx: &XdpContext, state: &IngressState) -> Outcome {
    let Some(ethertype) = load_be16(ctx, 12) else {
        return Outcome::NotOurs;
    };
    // One copy of the path per IP version and link header length, so every
    // header offset is a constant.
    match ethertype {
        ETH_P_IPV4 => ingress_at::<false, ETH_HDR_LEN>(ctx, state),
        ETH_P_IPV6 => ingress_at::<true, ETH_HDR_LEN>(ctx, state),
        ETH_P_8021Q | ETH_P_8021AD => match load_be16(ctx, ETH_HDR_LEN + 2) {
            Some(ETH_P_IPV4) => ingress_at::<false, { ETH_HDR_LEN + VLAN_HDR_LEN }>(ctx, state),
            Some(ETH_P_IPV6) => ingress_at::<true, { ETH_HDR_LEN + VLAN_HDR_LEN }>(ctx, state),
            _ => Outcome::NotOurs,
        },
        _ => Outcome::NotOurs,
    }
}

#[inline(always)]
fn ingress_at<const V6: bool, const L3: usize>(ctx: &XdpContext, state: &IngressState) -> Outcome {
    let cfg = &state.config;
    let malformed = if cfg.drop_malformed != 0 {
        Outcome::DropMalformed
    } else {
        Outcome::MalformedPassed
    };
    let u = match parse_at::<XdpContext, V6, L3>(ctx, state) {
        Parsed::NotOurs => return Outcome::NotOurs,
        Parsed::SlowPath => return Outcome::SlowPath,
        Parsed::Malformed => return malformed,
        Parsed::Ours(u) => u,
    };
    let media = match demux(ctx, &u) {
        Ok(media) => media,
        Err(Outcome::DropMalformed) => return malformed,
        Err(outcome) => return outcome,
    };
    let Some(flow) = flow_of(&u) else {
        return if cfg.drop_unknown != 0 {
            Outcome::DropUnknownFlow
        } else {
            Outcome::UnknownPassed
        };
    };
    // SAFETY: map values stay valid for the whole program run (RCU); the
    // program never writes them.
    let flow = unsafe { &*flow };
    // With no cap in any room nothing can be over one: skip both lookups.
    if let (Media::Rtp { first }, true) = (media, state.any_room_cap != 0) {
        match over_cap(ctx, &u, first) {
            Ok(false) => {}
            Ok(true) => return Outcome::DropLayerCap,
            Err(()) => return malformed,
        }
    }
    // The common case, a relay leg with one destination of the packet's
    // family and no trunk, is one comparison of the flow's first word.
    // SAFETY: `Flow` starts with these four one-byte fields (offsets
    // asserted in switchboard-common).
    let head = unsafe { rd::<u32>(flow as *const Flow as usize) };
    let single = u32::from_le_bytes([FLOW_RELAY, 1, V6 as u8, 0]);
    if head != single {
        if let Some(outcome) = flow_slow_path::<V6, L3>(ctx, flow, malformed) {
            return outcome;
        }
    }
    let dest = &flow.dest;
    match rewrite::<V6, L3>(ctx, &u, dest) {
        Rewritten::Yes => {}
        Rewritten::TtlExpired => return Outcome::DropTtl,
        Rewritten::Short => return malformed,
    }
    // SAFETY: reading a field of the context the kernel passed in.
    let ingress_ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if dest.ifindex == ingress_ifindex {
        return Outcome::Tx;
    }
    match EGRESS_DEVS.redirect(dest.ifindex, 0) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => Outcome::Redirect,
        _ => Outcome::DropNoEgress,
    }
}

/// Every flow but a single-destination relay leg of the packet's family:
/// the outcome, or `None` for a flow the single-destination rewrite serves
/// after all (a non-canonical but valid encoding of one).
#[inline(always)]
fn flow_slow_path<const V6: bool, const L3: usize>(
    ctx: &XdpContext,
    flow: &Flow,
    malformed: Outcome,
) -> Option<Outcome> {
    if flow.action == FLOW_TO_USERSPACE {
        return Some(Outcome::ToUserspace);
    }
    if flow.action != FLOW_RELAY {
        return Some(Outcome::DropNoEgress);
    }
    // A trunk: TC copies it to the downstream appliances and passes the
    // original up (whatever its TTL: this box is its destination too).
    if flow.pass_up != 0 {
        return Some(Outcome::ToFanout);
    }
    let Some(ttl) = load::<u8, XdpContext>(ctx, L3 + if V6 { 7 } else { 8 }) else {
        return Some(malformed);
    };
    if ttl <= 1 {
        return Some(Outcome::DropTtl);
    }
    if flow.fanout >= 2 && flow.fanout as usize <= MAX_FANOUT {
        return Some(Outcome::ToFanout);
    }
    // The fast path never translates between IP versions: a sender that
    // matches a flow of the other family (an IPv4-mapped IPv6 source) is
    // not relayed.
    if flow.fanout != 1 || (flow.ipv6 != 0) != V6 {
        return Some(Outcome::DropNoEgress);
    }
    None
}

/// True if this RTP packet is video above its room's cap. `Err` if the RTP
/// header lies about its length.
#[inline(always)]
fn over_cap(ctx: &XdpContext, u: &Udp, first: u8) -> Result<bool, ()> {
    let ssrc = load::<u32, XdpContext>(ctx, u.l4 + UDP_HDR_LEN + 8).ok_or(())?;
    let ssrc = u32::from_be(ssrc);
    // SAFETY: map values stay valid for the whole program run (RCU); the
    // program never writes them.
    let Some(stream) = (unsafe { STREAMS.get(&ssrc) }) else {
        return Ok(false);
    };
    if stream.kind != KIND_VIDEO {
        return Ok(false);
    }
    let (room, spatial, dd_ext_id) = (stream.room, stream.spatial, stream.dd_ext_id);
    // SAFETY: as above.
    let Some(cap) = (unsafe { ROOM_CAPS.get(&room) }).copied() else {
        return Ok(false);
    };
    if cap.video_off != 0 || spatial > cap.max_spatial {
        return Ok(true);
    }
    if dd_ext_id == 0 || cap.max_temporal == u8::MAX {
        return Ok(false);
    }
    let Some(template) = dd_template(ctx, u, first, dd_ext_id)? else {
        return Ok(false);
    };
    let Some(temporal) = stream
        .dd_temporal
        .get(template as usize & (DD_TEMPLATES - 1))
    else {
        return Ok(false);
    };
    Ok(*temporal != DD_TEMPORAL_UNKNOWN && *temporal > cap.max_temporal)
}

/// Reads `N` bytes at any offset through `bpf_xdp_load_bytes`, which checks
/// the range itself; used where offsets come from the packet.
#[inline(always)]
fn load_var<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper writes at most N bytes into `buf` and fails if the
    // range is outside the frame.
    let ret =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr().cast(), N as u32) };
    (ret == 0).then_some(buf)
}

/// The AV1 Dependency Descriptor's frame_dependency_template_id (RFC 8285
/// one-byte or two-byte header extensions), if the packet carries one.
#[inline(always)]
fn dd_template(ctx: &XdpContext, u: &Udp, first: u8, ext_id: u8) -> Result<Option<u8>, ()> {
    if first & 0x10 == 0 {
        return Ok(None);
    }
    let payload = u.l4 + UDP_HDR_LEN;
    let end = u.l4 + u.udp_len;
    let ext = payload + RTP_HDR_LEN + 4 * (first & 0x0f) as usize;
    let hdr = load_var::<4>(ctx, ext).ok_or(())?;
    let profile = be16([hdr[0], hdr[1]]);
    let data = ext + 4;
    let data_end = data + 4 * be16([hdr[2], hdr[3]]) as usize;
    if data_end > end {
        return Err(());
    }
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != 0xBEDE && !two_byte {
        return Ok(None);
    }
    let mut pos = data;
    for _ in 0..MAX_EXT_ELEMENTS {
        if pos + 1 > data_end {
            return Ok(None);
        }
        let [b0, b1] = if pos + 2 <= data_end {
            load_var::<2>(ctx, pos).ok_or(())?
        } else {
            [load_var::<1>(ctx, pos).ok_or(())?[0], 0]
        };
        let (id, value, len) = if two_byte {
            (b0, pos + 2, b1 as usize)
        } else {
            (b0 >> 4, pos + 1, (b0 & 0x0f) as usize + 1)
        };
        if id == 0 {
            // Padding between elements.
            pos += 1;
            continue;
        }
        if !two_byte && id == 15 {
            return Ok(None);
        }
        if value + len > data_end {
            return Err(());
        }
        if id == ext_id {
            if len < 3 {
                return Err(());
            }
            let [dd0] = load_var::<1>(ctx, value).ok_or(())?;
            return Ok(Some(dd0 & 0x3f));
        }
        pos = value + len;
    }
    Ok(None)
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with the changes precomputed:
/// `delta` from the flow's destination, `not_dst` the ones' complement sum
/// of the destination address the packet arrived with. Checksums are as
/// read from the wire in host order (byte order does not matter to ones'
/// complement sums, RFC 1071 §2).
#[inline(always)]
fn csum_apply(csum: u16, delta: u16, not_dst: u32) -> u16 {
    // Three 16-bit terms: two folds take the sum back to 16 bits.
    let sum = (!csum) as u32 + delta as u32 + not_dst;
    let sum = (sum & 0xffff) + (sum >> 16);
    !(((sum & 0xffff) + (sum >> 16)) as u16)
}

/// The new IPv4 header and UDP checksums (wire order) for `dest`;
/// `not_dst` is the ones' complement sum of the original destination address.
#[inline(always)]
fn new_csums(v6: bool, ip_csum: u16, udp_csum: u16, not_dst: u32, dest: &RelayDest) -> (u16, u16) {
    let ip = if v6 {
        0
    } else {
        csum_apply(ip_csum, dest.ip_csum_delta, not_dst)
    };
    let udp = if !v6 && udp_csum == 0 {
        // IPv4 without a UDP checksum stays without one.
        0
    } else {
        match csum_apply(udp_csum, dest.udp_csum_delta, not_dst) {
            0 => 0xffff,
            c => c,
        }
    };
    (ip, udp)
}

enum Rewritten {
    Yes,
    /// TTL or hop limit 1 or 0: nothing written.
    TtlExpired,
    /// The headers are not all in the frame: nothing written.
    Short,
}

/// Rewrites Ethernet, IP and UDP in place for `dest` (XDP, direct access):
/// word copies from the precomputed destination and two checksum updates,
/// TTL or hop limit one less.
#[inline(always)]
fn rewrite<const V6: bool, const L3: usize>(
    ctx: &XdpContext,
    u: &Udp,
    dest: &RelayDest,
) -> Rewritten {
    let l4 = L3 + if V6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    let Some(p) = bounds(ctx, l4 + UDP_HDR_LEN) else {
        return Rewritten::Short;
    };
    // SAFETY: inside the headers checked just above.
    let ttl = unsafe { rd::<u8>(p + L3 + if V6 { 7 } else { 8 }) };
    if ttl <= 1 {
        return Rewritten::TtlExpired;
    }
    let d = dest as *const RelayDest as usize;
    let not_dst = u.not_dst;
    // SAFETY (all): the frame holds the headers up to the end of UDP
    // (checked above); `d` is a live map value, its fields at the offsets
    // asserted in switchboard-common.
    unsafe {
        let ip_csum = if V6 { 0 } else { rd::<u16>(p + L3 + 10) };
        let (ip, udp) = new_csums(V6, ip_csum, rd::<u16>(p + l4 + 6), not_dst, dest);
        // Destination and source MAC: 12 bytes.
        wr::<u64>(p, rd::<u64>(d));
        wr::<u32>(p + 8, rd::<u32>(d + 8));
        if V6 {
            wr::<u8>(p + L3 + 7, ttl - 1);
            wr::<u64>(p + L3 + 8, rd::<u64>(d + 16));
            wr::<u64>(p + L3 + 16, rd::<u64>(d + 24));
            wr::<u64>(p + L3 + 24, rd::<u64>(d + 32));
            wr::<u64>(p + L3 + 32, rd::<u64>(d + 40));
        } else {
            wr::<u8>(p + L3 + 8, ttl - 1);
            wr::<u16>(p + L3 + 10, ip);
            wr::<u32>(p + L3 + 12, rd::<u32>(d + 16 + 12));
            wr::<u32>(p + L3 + 16, rd::<u32>(d + 32 + 12));
        }
        wr::<u32>(p + l4, rd::<u32>(d + 48));
        wr::<u16>(p + l4 + 6, udp);
    }
    Rewritten::Yes
}

/// Fans a multi-destination relay flow out: one rewritten copy per
/// destination with `bpf_clone_redirect`, then the original is consumed, or,
/// for a cascading trunk ([`Flow::pass_up`]), restored and passed up to the
/// worker's socket. Anything else continues up the stack untouched.
#[classifier]
pub fn switchboard_tc_fanout(ctx: TcContext) -> i32 {
    let pull = if ctx.len() < TC_PULL_LEN {
        ctx.len()
    } else {
        TC_PULL_LEN
    };
    // A failed pull leaves the headers unreadable below, which passes the skb on.
    let _ = ctx.pull_data(pull);
    let Some(state) = INGRESS_CONFIG.get(0) else {
        return TC_ACT_OK as i32;
    };
    let Parsed::Ours(u) = parse(&ctx, state) else {
        return TC_ACT_OK as i32;
    };
    if demux(&ctx, &u).is_err() {
        return TC_ACT_OK as i32;
    }
    let key = u.key();
    let key = &key.0;
    // SAFETY: a live map value, copied out at once.
    let Some(flow) = flow_of(&u).map(|f| unsafe { *f }) else {
        return TC_ACT_OK as i32;
    };
    let pass_up = flow.pass_up != 0;
    if flow.action != FLOW_RELAY || (flow.fanout < 2 && !pass_up) {
        return TC_ACT_OK as i32;
    }
    let done = if pass_up { TC_ACT_OK } else { TC_ACT_SHOT } as i32;
    // The header fields a rewrite replaces, as they arrived: every copy is
    // computed from these, since each rewrite overwrites the previous one.
    let Some(p) = bounds(&ctx, u.l4 + UDP_HDR_LEN) else {
        return TC_ACT_OK as i32;
    };
    // SAFETY (all): the frame holds the headers through UDP.
    let ttl = unsafe { rd::<u8>(p + u.l3 + if u.v6 { 7 } else { 8 }) };
    let ip_csum = unsafe { rd::<u16>(p + u.l3 + 10) };
    let udp_csum = unsafe { rd::<u16>(p + u.l4 + 6) };
    // What a trunk's copies overwrite, to put back before the original goes up.
    let saved = unsafe {
        Saved {
            mac: rd(p),
            addrs: if u.v6 {
                rd(p + u.l3 + 8)
            } else {
                [rd::<u64>(p + u.l3 + 12), 0, 0, 0]
            },
            ports: rd(p + u.l4),
        }
    };
    // The XDP program already dropped these; a frame that reaches TC some
    // other way must not be forwarded either.
    if ttl <= 1 {
        if pass_up {
            bump(|c| c.clone_failed += flow.fanout as u64);
        }
        return done;
    }
    let Some(fan) = FANOUT.get_ptr(key) else {
        bump(|c| c.clone_failed += flow.fanout as u64);
        return done;
    };
    // No translation between IP versions (see the XDP program).
    let same_family = (flow.ipv6 != 0) == u.v6;
    let orig = Original {
        ttl,
        ip_csum,
        udp_csum,
        not_dst: u.not_dst,
    };
    let count = flow.fanout as usize;
    for i in 0..MAX_FANOUT {
        if i >= count {
            break;
        }
        // SAFETY: `fan` points at a live map value; one destination is copied out.
        let dest = unsafe { (*fan).dests[i] };
        let sent = same_family
            && tc_rewrite(&ctx, &u, &orig, &dest)
            && ctx.clone_redirect(dest.ifindex, 0).is_ok();
        bump(|c| {
            if sent {
                c.cloned += 1
            } else {
                c.clone_failed += 1
            }
        });
    }
    if pass_up && !tc_restore(&ctx, &u, &orig, &saved) {
        // Half-restored headers must not reach the worker as if intact.
        bump(|c| c.clone_failed += 1);
        return TC_ACT_SHOT as i32;
    }
    done
}

/// The header bytes a rewrite replaces besides TTL and checksums.
struct Saved {
    /// Destination and source MAC.
    mac: [u8; 12],
    /// Source and destination address: 32 bytes for IPv6, the first 8 for
    /// IPv4.
    addrs: [u64; 4],
    /// Source and destination port.
    ports: [u8; 4],
}

/// Puts the headers of a trunk's original back as they arrived, after the
/// copies were rewritten in the same skb.
#[inline(always)]
fn tc_restore(ctx: &TcContext, u: &Udp, orig: &Original, saved: &Saved) -> bool {
    let f = BPF_F_RECOMPUTE_CSUM;
    let ok_ip = if u.v6 {
        ctx.store(u.l3 + 7, &[orig.ttl], f).is_ok() && ctx.store(u.l3 + 8, &saved.addrs, f).is_ok()
    } else {
        let c = orig.ip_csum.to_ne_bytes();
        ctx.store(u.l3 + 8, &[orig.ttl, IPPROTO_UDP, c[0], c[1]], f)
            .is_ok()
            && ctx.store(u.l3 + 12, &saved.addrs[0], f).is_ok()
    };
    ctx.store(0, &saved.mac, f).is_ok()
        && ok_ip
        && ctx.store(u.l4, &saved.ports, f).is_ok()
        && ctx.store(u.l4 + 6, &orig.udp_csum.to_ne_bytes(), f).is_ok()
}

/// The header fields a TC rewrite replaces, as they arrived.
struct Original {
    /// TTL or hop limit.
    ttl: u8,
    /// IPv4 header checksum (wire order; not used for IPv6).
    ip_csum: u16,
    /// UDP checksum (wire order).
    udp_csum: u16,
    /// Ones' complement sum of the destination address, folded (see [`Udp`]).
    not_dst: u32,
}

/// Rewrites the skb for `dest` with `bpf_skb_store_bytes`, which stays valid
/// across `bpf_clone_redirect` (direct packet pointers do not).
#[inline(always)]
fn tc_rewrite(ctx: &TcContext, u: &Udp, orig: &Original, dest: &RelayDest) -> bool {
    let (ip, udp) = new_csums(u.v6, orig.ip_csum, orig.udp_csum, orig.not_dst, dest);
    let d = dest.dst_mac;
    let s = dest.src_mac;
    let mac = [
        d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
    ];
    let f = BPF_F_RECOMPUTE_CSUM;
    let ttl = orig.ttl - 1;
    let ok_ip = if u.v6 {
        ctx.store(u.l3 + 7, &[ttl], f).is_ok()
            && ctx.store(u.l3 + 8, &dest.local_addr, f).is_ok()
            && ctx.store(u.l3 + 24, &dest.remote_addr, f).is_ok()
    } else {
        let c = ip.to_ne_bytes();
        let l = &dest.local_addr;
        let r = &dest.remote_addr;
        ctx.store(u.l3 + 8, &[ttl, IPPROTO_UDP, c[0], c[1]], f)
            .is_ok()
            && ctx
                .store(u.l3 + 12, &[l[12], l[13], l[14], l[15]], f)
                .is_ok()
            && ctx
                .store(u.l3 + 16, &[r[12], r[13], r[14], r[15]], f)
                .is_ok()
    };
    ctx.store(0, &mac, f).is_ok()
        && ok_ip
        && ctx.store(u.l4, &dest.ports, f).is_ok()
        && ctx.store(u.l4 + 6, &udp.to_ne_bytes(), f).is_ok()
}

/// Passes every frame. Native XDP on veth delivers `XDP_TX`/`XDP_REDIRECT`
/// frames only to a peer that runs an XDP program of its own.
#[xdp]
pub fn switchboard_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The benchmark's reflector, traffic generator and sink.
mod bench;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
