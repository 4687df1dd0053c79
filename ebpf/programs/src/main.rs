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
    Addr, Counters, Fanout, Flow, FlowKey, IngressState, RelayDest, RoomCap, Stream, DD_TEMPLATES,
    DD_TEMPORAL_UNKNOWN, FLOW_RELAY, FLOW_TO_USERSPACE, KIND_VIDEO, LOCAL_ADDRS_IN_MAP, MAX_FANOUT,
};

#[map(name = "SB_COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SB_INGRESS_CONFIG")]
static INGRESS_CONFIG: Array<IngressState> = Array::with_max_entries(1, 0);

#[map(name = "SB_LOCAL_ADDRS")]
static LOCAL_ADDRS: HashMap<Addr, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "SB_FLOWS")]
static FLOWS: HashMap<FlowKey, Flow> = HashMap::with_max_entries(16_384, 0);

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

/// Reads `N` bytes at `offset`, or `None` if they are not all inside the frame.
#[inline(always)]
fn load<const N: usize, F: Frame>(f: &F, offset: usize) -> Option<[u8; N]> {
    let start = f.start();
    if start + offset + N > f.end() {
        return None;
    }
    // SAFETY: [start+offset, start+offset+N) was checked against data_end just above.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
}

/// Writes `bytes` at `offset`; false (and nothing written) if they do not fit in the frame.
#[inline(always)]
fn store<const N: usize, F: Frame>(f: &F, offset: usize, bytes: [u8; N]) -> bool {
    let start = f.start();
    if start + offset + N > f.end() {
        return false;
    }
    // SAFETY: as in `load`; XDP and TC frames are writable after the check.
    unsafe { core::ptr::write_unaligned((start + offset) as *mut [u8; N], bytes) };
    true
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// A key on the stack, aligned so it is built, copied and compared in
/// words rather than bytes (packet bytes are read one by one).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Aligned<T>(T);

#[inline(always)]
fn v4_mapped(a: [u8; 4]) -> Aligned<Addr> {
    // Built from words: a byte array literal becomes a call to a byte-wise memset.
    let words = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(a),
    ];
    // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is valid.
    Aligned(unsafe { core::mem::transmute::<[u32; 4], Addr>(words) })
}

#[inline(always)]
fn is_v4_mapped(a: &Addr) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

#[inline(always)]
fn v4_of(a: &Addr) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// The headers of a UDP datagram addressed to one of our media addresses and ports.
#[derive(Clone, Copy)]
struct Udp {
    v6: bool,
    l3: usize,
    l4: usize,
    /// UDP length from the UDP header, checked against the IP length.
    udp_len: usize,
    /// The flow key: source address and port, destination port.
    key: Aligned<FlowKey>,
    /// Sum of the 16-bit words of both addresses (what the IPv4 header and
    /// the UDP pseudo-header checksum over them).
    addr_sum: u32,
}

enum Parsed {
    NotOurs,
    SlowPath,
    Malformed,
    Ours(Udp),
}

/// An address as two words.
#[inline(always)]
fn addr_words(a: &Addr) -> [u64; 2] {
    // SAFETY: callers pass 8-byte aligned addresses (`Aligned`, or the
    // `IngressState` fields, which are at multiples of 8 in an align(8) struct).
    unsafe { core::ptr::read(a as *const Addr as *const [u64; 2]) }
}

#[inline(always)]
fn is_local(state: &IngressState, addr: &Aligned<Addr>) -> bool {
    let count = state.local_count;
    if count == LOCAL_ADDRS_IN_MAP {
        // SAFETY: the value is only tested for presence.
        return unsafe { LOCAL_ADDRS.get(&addr.0) }.is_some();
    }
    // The loader keeps the map's few keys here: compared, not hashed.
    let [a0, a1] = addr_words(&addr.0);
    for (i, local) in state.local_addrs.iter().enumerate() {
        if i >= count as usize {
            break;
        }
        let [l0, l1] = addr_words(local);
        if a0 == l0 && a1 == l1 {
            return true;
        }
    }
    false
}

/// Ethernet (one optional 802.1Q/802.1ad tag), IPv4 or IPv6, UDP.
#[inline(always)]
fn parse<F: Frame>(f: &F, state: &IngressState) -> Parsed {
    let cfg = &state.config;
    let frame_len = f.end() - f.start();
    let Some(ethertype) = load::<2, F>(f, 12) else {
        return Parsed::NotOurs;
    };
    let mut ethertype = be16(ethertype);
    let mut l3 = ETH_HDR_LEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = load::<2, F>(f, ETH_HDR_LEN + 2) else {
            return Parsed::NotOurs;
        };
        ethertype = be16(inner);
        l3 += VLAN_HDR_LEN;
    }
    let (v6, l4, l4_room, src, addr_sum) = match ethertype {
        ETH_P_IPV4 => {
            let Some(h) = load::<IPV4_HDR_LEN, F>(f, l3) else {
                return Parsed::NotOurs;
            };
            if h[9] != IPPROTO_UDP {
                return Parsed::NotOurs;
            }
            if !is_local(state, &v4_mapped([h[16], h[17], h[18], h[19]])) {
                return Parsed::NotOurs;
            }
            // Read again after the address check rather than kept in registers
            // (or spilled) across a possible map lookup.
            let Some(h) = load::<IPV4_HDR_LEN, F>(f, l3) else {
                return Parsed::NotOurs;
            };
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            let total_len = be16([h[2], h[3]]) as usize;
            if h[0] >> 4 != 4 || ihl < IPV4_HDR_LEN || total_len < ihl || l3 + total_len > frame_len
            {
                return Parsed::Malformed;
            }
            // Fragments (MF or an offset) and options never carry media from
            // real endpoints; the kernel reassembles and parses them.
            if be16([h[6], h[7]]) & 0x3fff != 0 || ihl != IPV4_HDR_LEN {
                return Parsed::SlowPath;
            }
            let src = v4_mapped([h[12], h[13], h[14], h[15]]);
            let sum = words_sum(&h, 12, 20);
            (false, l3 + IPV4_HDR_LEN, total_len - IPV4_HDR_LEN, src, sum)
        }
        ETH_P_IPV6 => {
            let Some(h) = load::<IPV6_HDR_LEN, F>(f, l3) else {
                return Parsed::NotOurs;
            };
            let mut dst = Aligned([0u8; 16]);
            dst.0.copy_from_slice(&h[24..40]);
            if !is_local(state, &dst) {
                return Parsed::NotOurs;
            }
            // Read again after the address check rather than kept in registers
            // (or spilled) across a possible map lookup.
            let Some(h) = load::<IPV6_HDR_LEN, F>(f, l3) else {
                return Parsed::NotOurs;
            };
            if h[0] >> 4 != 6 {
                return Parsed::Malformed;
            }
            let payload_len = be16([h[4], h[5]]) as usize;
            if l3 + IPV6_HDR_LEN + payload_len > frame_len {
                return Parsed::Malformed;
            }
            match h[6] {
                IPPROTO_UDP => {}
                // Hop-by-hop, routing, fragment, ESP, AH, destination options,
                // mobility, HIP, shim6, experimental: left to the kernel.
                0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => {
                    return Parsed::SlowPath
                }
                _ => return Parsed::NotOurs,
            }
            let mut src = Aligned([0u8; 16]);
            src.0.copy_from_slice(&h[8..24]);
            let sum = words_sum(&h, 8, 40);
            (true, l3 + IPV6_HDR_LEN, payload_len, src, sum)
        }
        _ => return Parsed::NotOurs,
    };
    let Some(udp) = load::<UDP_HDR_LEN, F>(f, l4) else {
        return Parsed::Malformed;
    };
    let dport = be16([udp[2], udp[3]]);
    if dport < cfg.port_min || dport > cfg.port_max {
        return Parsed::NotOurs;
    }
    let udp_len = be16([udp[4], udp[5]]) as usize;
    if l4_room < UDP_HDR_LEN || udp_len < UDP_HDR_LEN || udp_len > l4_room {
        return Parsed::Malformed;
    }
    // IPv6 forbids a zero UDP checksum (RFC 8200 §8.1), and an incremental
    // update of one would forge a wrong non-zero checksum.
    if v6 && udp[6] == 0 && udp[7] == 0 {
        return Parsed::Malformed;
    }
    Parsed::Ours(Udp {
        v6,
        l3,
        l4,
        udp_len,
        key: Aligned(FlowKey {
            remote_addr: src.0,
            remote_port: be16([udp[0], udp[1]]),
            local_port: dport,
        }),
        addr_sum,
    })
}

/// What the XDP program decided, one variant per counter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    NotOurs,
    Stun,
    Dtls,
    Other,
    SlowPath,
    ToUserspace,
    UnknownPassed,
    MalformedPassed,
    ToFanout,
    Tx,
    Redirect,
    DropUnknownFlow,
    DropLayerCap,
    DropMalformed,
    DropTtl,
    DropNoEgress,
}

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
    bump(|c| {
        c.received += 1;
        match outcome {
            Outcome::NotOurs => c.not_ours += 1,
            Outcome::Stun => c.stun += 1,
            Outcome::Dtls => c.dtls += 1,
            Outcome::Other => c.other += 1,
            Outcome::SlowPath => c.slow_path += 1,
            Outcome::ToUserspace => c.to_userspace += 1,
            Outcome::UnknownPassed => c.unknown_passed += 1,
            Outcome::MalformedPassed => c.malformed_passed += 1,
            Outcome::ToFanout => c.to_fanout += 1,
            Outcome::Tx => c.tx += 1,
            Outcome::Redirect => c.redirect += 1,
            Outcome::DropUnknownFlow => c.drop_unknown_flow += 1,
            Outcome::DropLayerCap => c.drop_layer_cap += 1,
            Outcome::DropMalformed => c.drop_malformed += 1,
            Outcome::DropTtl => c.drop_ttl += 1,
            Outcome::DropNoEgress => c.drop_no_egress += 1,
        }
    });
    outcome.action()
}

/// The RTP/RTCP datagram of a known flow, as both programs see it.
enum Media {
    Rtp { ssrc: u32, first: u8 },
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
    let Some([first]) = load::<1, F>(f, payload) else {
        return Err(Outcome::DropMalformed);
    };
    match first {
        0..=3 => return Err(Outcome::Stun),
        20..=63 => return Err(Outcome::Dtls),
        128..=191 => {}
        _ => return Err(Outcome::Other),
    }
    let Some([_, second]) = load::<2, F>(f, payload) else {
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
    let Some(ssrc) = load::<4, F>(f, payload + 8) else {
        return Err(Outcome::DropMalformed);
    };
    Ok(Media::Rtp {
        ssrc: u32::from_be_bytes(ssrc),
        first,
    })
}

#[inline(always)]
fn ingress(ctx: &XdpContext, state: &IngressState) -> Outcome {
    let cfg = &state.config;
    let malformed = if cfg.drop_malformed != 0 {
        Outcome::DropMalformed
    } else {
        Outcome::MalformedPassed
    };
    let u = match parse(ctx, state) {
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
    // SAFETY: the value is copied out before any other map call.
    let Some(flow) = (unsafe { FLOWS.get(&u.key.0) }).copied() else {
        return if cfg.drop_unknown != 0 {
            Outcome::DropUnknownFlow
        } else {
            Outcome::UnknownPassed
        };
    };
    // With no cap in any room nothing can be over one: skip both lookups.
    if let (Media::Rtp { ssrc, first }, true) = (media, state.any_room_cap != 0) {
        match over_cap(ctx, &u, ssrc, first) {
            Ok(false) => {}
            Ok(true) => return Outcome::DropLayerCap,
            Err(()) => return malformed,
        }
    }
    if flow.action == FLOW_TO_USERSPACE {
        return Outcome::ToUserspace;
    }
    if flow.action != FLOW_RELAY {
        return Outcome::DropNoEgress;
    }
    let Some(ttl) = load::<1, XdpContext>(ctx, u.l3 + if u.v6 { 7 } else { 8 }) else {
        return malformed;
    };
    if ttl[0] <= 1 {
        return Outcome::DropTtl;
    }
    if flow.fanout >= 2 && flow.fanout as usize <= MAX_FANOUT {
        return Outcome::ToFanout;
    }
    if flow.fanout != 1 {
        return Outcome::DropNoEgress;
    }
    let dest = &flow.dest;
    let Some(orig) = Original::read(ctx, &u) else {
        return malformed;
    };
    if !rewrite(ctx, &u, &orig, dest) {
        return Outcome::DropNoEgress;
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

/// True if this RTP packet is video above its room's cap. `Err` if the RTP
/// header extension block lies about its length.
#[inline(always)]
fn over_cap(ctx: &XdpContext, u: &Udp, ssrc: u32, first: u8) -> Result<bool, ()> {
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

/// The header fields a rewrite replaces, as they arrived.
#[derive(Clone, Copy)]
struct Original {
    /// IPv4: the TTL/protocol word; IPv6: the hop limit in the low byte.
    ttl_word: u16,
    ip_csum: u16,
    udp_csum: u16,
}

impl Original {
    #[inline(always)]
    fn read<F: Frame>(f: &F, u: &Udp) -> Option<Self> {
        let udp_csum = be16(load::<2, F>(f, u.l4 + 6)?);
        if u.v6 {
            let [hop] = load::<1, F>(f, u.l3 + 7)?;
            Some(Self {
                ttl_word: hop as u16,
                ip_csum: 0,
                udp_csum,
            })
        } else {
            let w = load::<4, F>(f, u.l3 + 8)?;
            Some(Self {
                ttl_word: be16([w[0], w[1]]),
                ip_csum: be16([w[2], w[3]]),
                udp_csum,
            })
        }
    }
}

/// Sum of the big-endian 16-bit words of `b[from..to]`.
#[inline(always)]
fn words_sum<const N: usize>(b: &[u8; N], from: usize, to: usize) -> u32 {
    let mut sum = 0u32;
    let mut i = from;
    while i < to {
        sum += be16([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Ones' complement sum of the 16-bit words of an address.
#[inline(always)]
fn addr_sum(a: &Addr, v6: bool) -> u32 {
    let mut sum = 0u32;
    let mut i = if v6 { 0 } else { 12 };
    while i < 16 {
        sum += be16([a[i], a[i + 1]]) as u32;
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with `old`/`new` the sums of the
/// changed words (so ~m is accumulated as 0xffff - word, word by word).
#[inline(always)]
fn csum_update(csum: u16, old_sum: u32, old_words: u32, new_sum: u32) -> u16 {
    // ~m summed over `old_words` words is old_words*0xffff - Σm; fold keeps it
    // in ones' complement arithmetic.
    let neg_old = old_words * 0xffff - fold(old_sum) as u32;
    !fold(!csum as u32 + neg_old + new_sum)
}

/// The new header values for one destination, all computed from the original ones.
struct NewHeaders {
    ttl_word: u16,
    ip_csum: u16,
    udp_csum: u16,
}

#[inline(always)]
fn new_headers(u: &Udp, orig: &Original, dest: &RelayDest) -> NewHeaders {
    let old_l4 = u.addr_sum + u.key.0.remote_port as u32 + u.key.0.local_port as u32;
    let new_l4 = addr_sum(&dest.local_addr, u.v6)
        + addr_sum(&dest.remote_addr, u.v6)
        + dest.local_port as u32
        + dest.remote_port as u32;
    let words = if u.v6 { 18 } else { 6 };
    let udp_csum = if !u.v6 && orig.udp_csum == 0 {
        // IPv4 without a UDP checksum stays without one.
        0
    } else {
        match csum_update(orig.udp_csum, old_l4, words, new_l4) {
            0 => 0xffff,
            c => c,
        }
    };
    let ttl_word = orig.ttl_word - 0x0100 * (!u.v6) as u16 - u.v6 as u16;
    let ip_csum = if u.v6 {
        0
    } else {
        let old_ip = u.addr_sum + orig.ttl_word as u32;
        let new_ip = addr_sum(&dest.local_addr, false)
            + addr_sum(&dest.remote_addr, false)
            + ttl_word as u32;
        csum_update(orig.ip_csum, old_ip, 5, new_ip)
    };
    NewHeaders {
        ttl_word,
        ip_csum,
        udp_csum,
    }
}

/// Rewrites Ethernet, IP and UDP in place for `dest` (XDP, direct access).
#[inline(always)]
fn rewrite<F: Frame>(f: &F, u: &Udp, orig: &Original, dest: &RelayDest) -> bool {
    if is_v4_mapped(&dest.remote_addr) == u.v6 || is_v4_mapped(&dest.local_addr) == u.v6 {
        return false;
    }
    let n = new_headers(u, orig, dest);
    let d = dest.dst_mac;
    let s = dest.src_mac;
    let mac = [
        d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
    ];
    if !store(f, 0, mac) {
        return false;
    }
    let ok_ip = if u.v6 {
        store(f, u.l3 + 7, [n.ttl_word as u8])
            && store(f, u.l3 + 8, dest.local_addr)
            && store(f, u.l3 + 24, dest.remote_addr)
    } else {
        let t = n.ttl_word.to_be_bytes();
        let c = n.ip_csum.to_be_bytes();
        store(f, u.l3 + 8, [t[0], t[1], c[0], c[1]])
            && store(f, u.l3 + 12, v4_of(&dest.local_addr))
            && store(f, u.l3 + 16, v4_of(&dest.remote_addr))
    };
    let sp = dest.local_port.to_be_bytes();
    let dp = dest.remote_port.to_be_bytes();
    ok_ip
        && store(f, u.l4, [sp[0], sp[1], dp[0], dp[1]])
        && store(f, u.l4 + 6, n.udp_csum.to_be_bytes())
}

/// Fans a multi-destination relay flow out: one rewritten copy per
/// destination with `bpf_clone_redirect`, then the original is consumed.
/// Anything else continues up the stack untouched.
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
    let key = &u.key.0;
    // SAFETY: copied out at once.
    let Some(flow) = (unsafe { FLOWS.get(key) }).copied() else {
        return TC_ACT_OK as i32;
    };
    if flow.action != FLOW_RELAY || flow.fanout < 2 {
        return TC_ACT_OK as i32;
    }
    let Some(orig) = Original::read(&ctx, &u) else {
        return TC_ACT_OK as i32;
    };
    // The XDP program already dropped these; a frame that reaches TC some
    // other way must not be forwarded either.
    let ttl = if u.v6 {
        orig.ttl_word
    } else {
        orig.ttl_word >> 8
    };
    if ttl & 0xff <= 1 {
        return TC_ACT_SHOT as i32;
    }
    let Some(fan) = FANOUT.get_ptr(key) else {
        bump(|c| c.clone_failed += flow.fanout as u64);
        return TC_ACT_SHOT as i32;
    };
    let count = flow.fanout as usize;
    for i in 0..MAX_FANOUT {
        if i >= count {
            break;
        }
        // SAFETY: `fan` points at a live map value; one destination is copied out.
        let dest = unsafe { (*fan).dests[i] };
        let sent =
            tc_rewrite(&ctx, &u, &orig, &dest) && ctx.clone_redirect(dest.ifindex, 0).is_ok();
        bump(|c| {
            if sent {
                c.cloned += 1
            } else {
                c.clone_failed += 1
            }
        });
    }
    TC_ACT_SHOT as i32
}

/// Rewrites the skb for `dest` with `bpf_skb_store_bytes`, which stays valid
/// across `bpf_clone_redirect` (direct packet pointers do not).
#[inline(always)]
fn tc_rewrite(ctx: &TcContext, u: &Udp, orig: &Original, dest: &RelayDest) -> bool {
    if is_v4_mapped(&dest.remote_addr) == u.v6 || is_v4_mapped(&dest.local_addr) == u.v6 {
        return false;
    }
    let n = new_headers(u, orig, dest);
    let d = dest.dst_mac;
    let s = dest.src_mac;
    let mac = [
        d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
    ];
    let f = BPF_F_RECOMPUTE_CSUM;
    let sp = dest.local_port.to_be_bytes();
    let dp = dest.remote_port.to_be_bytes();
    let ok_ip = if u.v6 {
        ctx.store(u.l3 + 7, &[n.ttl_word as u8], f).is_ok()
            && ctx.store(u.l3 + 8, &dest.local_addr, f).is_ok()
            && ctx.store(u.l3 + 24, &dest.remote_addr, f).is_ok()
    } else {
        let t = n.ttl_word.to_be_bytes();
        let c = n.ip_csum.to_be_bytes();
        ctx.store(u.l3 + 8, &[t[0], t[1], c[0], c[1]], f).is_ok()
            && ctx.store(u.l3 + 12, &v4_of(&dest.local_addr), f).is_ok()
            && ctx.store(u.l3 + 16, &v4_of(&dest.remote_addr), f).is_ok()
    };
    ctx.store(0, &mac, f).is_ok()
        && ok_ip
        && ctx.store(u.l4, &[sp[0], sp[1], dp[0], dp[1]], f).is_ok()
        && ctx.store(u.l4 + 6, &n.udp_csum.to_be_bytes(), f).is_ok()
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
