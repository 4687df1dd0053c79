//! Programs for the forwarding benchmark, never attached by the appliance
//! itself: a bare reflector (the baseline the relay is measured against), a
//! live-frame traffic generator and a counting sink.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use switchboard_common::{
    GenPace, GenTemplate, SinkConfig, SinkCounters, GEN_HEAD_LEN, GEN_PACE_BURST,
};

use super::{bounds, load, load_be16, rd, store, wr};

#[map(name = "SB_GEN_TEMPLATE")]
static GEN_TEMPLATE: Array<GenTemplate> = Array::with_max_entries(1, 0);

#[map(name = "SB_GEN_SENT")]
static GEN_SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SB_GEN_PACE")]
static GEN_PACE: Array<GenPace> = Array::with_max_entries(1, 0);

#[map(name = "SB_SINK_CONFIG")]
static SINK_CONFIG: Array<SinkConfig> = Array::with_max_entries(1, 0);

#[map(name = "SB_SINK_COUNTERS")]
static SINK_COUNTERS: PerCpuArray<SinkCounters> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_UDP: u8 = 17;
/// Ethernet + IPv4 without options.
const V4_L4: usize = 14 + 20;
/// Ethernet + IPv6 without extension headers.
const V6_L4: usize = 14 + 40;

/// Where an untagged UDP frame's UDP header starts, if it is one.
#[inline(always)]
fn udp_offset(ctx: &XdpContext) -> Option<(bool, usize)> {
    match load_be16(ctx, 12)? {
        ETH_P_IPV4 => {
            let vihl = load::<u8, XdpContext>(ctx, 14)?;
            let proto = load::<u8, XdpContext>(ctx, 14 + 9)?;
            (vihl == 0x45 && proto == IPPROTO_UDP).then_some((false, V4_L4))
        }
        ETH_P_IPV6 => {
            let next = load::<u8, XdpContext>(ctx, 14 + 6)?;
            (next == IPPROTO_UDP).then_some((true, V6_L4))
        }
        _ => None,
    }
}

/// Swaps Ethernet, IP and UDP source and destination and transmits the
/// frame back out of the interface it came in on. Swapping leaves every
/// checksum valid, so nothing else is touched; anything but untagged UDP
/// is passed. Built like the relay (word loads and stores, constant
/// offsets), so the comparison is between the work done, not the code.
#[xdp]
pub fn switchboard_reflect(ctx: XdpContext) -> u32 {
    match udp_offset(&ctx) {
        Some((false, _)) if reflect::<20>(&ctx) => xdp_action::XDP_TX,
        Some((true, _)) if reflect::<40>(&ctx) => xdp_action::XDP_TX,
        _ => xdp_action::XDP_PASS,
    }
}

/// Swaps for an untagged frame with an IP header of `IP_LEN` bytes.
#[inline(always)]
fn reflect<const IP_LEN: usize>(ctx: &XdpContext) -> bool {
    let Some(p) = bounds(ctx, 14 + IP_LEN + 8) else {
        return false;
    };
    let l4 = if IP_LEN == 40 { V6_L4 } else { V4_L4 };
    // SAFETY (all): the frame holds the headers through UDP (checked above).
    unsafe {
        if IP_LEN == 40 {
            let src: [u64; 2] = [rd(p + 14 + 8), rd(p + 14 + 16)];
            let dst: [u64; 2] = [rd(p + 14 + 24), rd(p + 14 + 32)];
            wr(p + 14 + 8, dst[0]);
            wr(p + 14 + 16, dst[1]);
            wr(p + 14 + 24, src[0]);
            wr(p + 14 + 32, src[1]);
        } else {
            let addrs: u64 = rd(p + 14 + 12);
            wr(p + 14 + 12, addrs.rotate_left(32));
        }
        let (d0, d1): (u32, u16) = (rd(p), rd(p + 4));
        let (s0, s1): (u16, u32) = (rd(p + 6), rd(p + 8));
        wr(p, s0);
        wr(p + 2, s1);
        wr(p + 6, d0);
        wr(p + 10, d1);
        let ports: u32 = rd(p + l4);
        wr(p + l4, ports.rotate_left(16));
    }
    true
}

/// The traffic generator, run with `BPF_PROG_TEST_RUN` in live-frame mode on
/// the generator's interface, so `XDP_TX` sends each frame out of it. Live
/// frames are recycled without their data being reset, and the device under
/// test rewrites headers in place, so every frame gets its headers back from
/// the template first; then its RTP sequence number is stamped (with the UDP
/// checksum updated to match) so no two consecutive frames are alike.
/// With a rate limit set ([`GenPace`]), runs before a frame's turn drop
/// their frame unsent.
#[xdp]
pub fn switchboard_bench_gen(ctx: XdpContext) -> u32 {
    let Some(pace) = GEN_PACE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a live map value; only the generator's CPU runs this program.
    unsafe {
        let interval = (*pace).interval_ns;
        if interval != 0 {
            let now = bpf_ktime_get_ns();
            let next = (*pace).next_ns;
            if now < next {
                return xdp_action::XDP_DROP;
            }
            let behind = now - next;
            let base = if behind > interval.saturating_mul(GEN_PACE_BURST) {
                now
            } else {
                next
            };
            (*pace).next_ns = base + interval;
        }
    }
    let Some(template) = GEN_TEMPLATE.get_ptr(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a live map value; copied out at once.
    let (head, v6) = unsafe { ((*template).head, (*template).ipv6 != 0) };
    let seq = match GEN_SENT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU touches it while the program runs.
        Some(sent) => unsafe {
            let n = *sent;
            *sent = n + 1;
            n as u16
        },
        None => return xdp_action::XDP_ABORTED,
    };
    if !store::<[u8; GEN_HEAD_LEN], XdpContext>(&ctx, 0, head) {
        return xdp_action::XDP_ABORTED;
    }
    // RTP sequence number: 2 bytes into the RTP header; the template has 0 there.
    let (l4, seq_at) = if v6 {
        (V6_L4, V6_L4 + 8 + 2)
    } else {
        (V4_L4, V4_L4 + 8 + 2)
    };
    let Some(csum) = load_be16(&ctx, l4 + 6) else {
        return xdp_action::XDP_ABORTED;
    };
    // IPv4 without a UDP checksum stays without one.
    let csum = if csum == 0 && !v6 {
        0
    } else {
        // RFC 1624 eqn. 3 for the sequence number word going from 0 to `seq`.
        let sum = u32::from(!csum) + 0xffff + u32::from(seq);
        let sum = (sum & 0xffff) + (sum >> 16);
        match !(((sum & 0xffff) + (sum >> 16)) as u16) {
            0 => 0xffff,
            c => c,
        }
    };
    if !store(&ctx, seq_at, seq.to_be()) || !store(&ctx, l4 + 6, csum.to_be()) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

/// The benchmark's sink: counts and drops UDP frames to the configured
/// destination port, passes everything else (neighbour discovery, stray
/// traffic) so only the measured stream is counted.
#[xdp]
pub fn switchboard_bench_count(ctx: XdpContext) -> u32 {
    let port = match SINK_CONFIG.get(0) {
        Some(cfg) => cfg.udp_port,
        None => 0,
    };
    let Some((_, l4)) = udp_offset(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match load_be16(&ctx, l4 + 2) {
        Some(dport) if port != 0 && dport == port => {}
        _ => return xdp_action::XDP_PASS,
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(c) = SINK_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU touches it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    xdp_action::XDP_DROP
}
