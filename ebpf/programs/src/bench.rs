//! Programs for the forwarding benchmark, never attached by the appliance
//! itself: a bare reflector (the baseline the relay is measured against), a
//! live-frame traffic generator and a counting sink.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use switchboard_common::{GenTemplate, SinkConfig, SinkCounters, GEN_HEAD_LEN};

use super::{be16, csum_update, load, store};

#[map(name = "SB_GEN_TEMPLATE")]
static GEN_TEMPLATE: Array<GenTemplate> = Array::with_max_entries(1, 0);

#[map(name = "SB_GEN_SENT")]
static GEN_SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

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
    match be16(load::<2, XdpContext>(ctx, 12)?) {
        ETH_P_IPV4 => {
            let [vihl] = load::<1, XdpContext>(ctx, 14)?;
            let [proto] = load::<1, XdpContext>(ctx, 14 + 9)?;
            (vihl == 0x45 && proto == IPPROTO_UDP).then_some((false, V4_L4))
        }
        ETH_P_IPV6 => {
            let [next] = load::<1, XdpContext>(ctx, 14 + 6)?;
            (next == IPPROTO_UDP).then_some((true, V6_L4))
        }
        _ => None,
    }
}

/// Swaps Ethernet, IP and UDP source and destination and transmits the
/// frame back out of the interface it came in on. Swapping leaves every
/// checksum valid, so nothing else is touched; anything but untagged UDP
/// is passed.
#[xdp]
pub fn switchboard_reflect(ctx: XdpContext) -> u32 {
    match reflect(&ctx) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn reflect(ctx: &XdpContext) -> Option<()> {
    let (v6, l4) = udp_offset(ctx)?;
    let macs = load::<12, XdpContext>(ctx, 0)?;
    let ports = load::<4, XdpContext>(ctx, l4)?;
    if v6 {
        let addrs = load::<32, XdpContext>(ctx, 14 + 8)?;
        let mut swapped = [0u8; 32];
        swapped[..16].copy_from_slice(&addrs[16..]);
        swapped[16..].copy_from_slice(&addrs[..16]);
        store(ctx, 14 + 8, swapped).then_some(())?;
    } else {
        let a = load::<8, XdpContext>(ctx, 14 + 12)?;
        store(
            ctx,
            14 + 12,
            [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]],
        )
        .then_some(())?;
    }
    let m = macs;
    let swapped_macs = [
        m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5],
    ];
    (store(ctx, 0, swapped_macs) && store(ctx, l4, [ports[2], ports[3], ports[0], ports[1]]))
        .then_some(())
}

/// The traffic generator, run with `BPF_PROG_TEST_RUN` in live-frame mode on
/// the generator's interface, so `XDP_TX` sends each frame out of it. Live
/// frames are recycled without their data being reset, and the device under
/// test rewrites headers in place, so every frame gets its headers back from
/// the template first; then its RTP sequence number is stamped (with the UDP
/// checksum updated to match) so no two consecutive frames are alike.
#[xdp]
pub fn switchboard_bench_gen(ctx: XdpContext) -> u32 {
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
    if !store::<GEN_HEAD_LEN, XdpContext>(&ctx, 0, head) {
        return xdp_action::XDP_ABORTED;
    }
    // RTP sequence number: 2 bytes into the RTP header; the template has 0 there.
    let (l4, seq_at) = if v6 {
        (V6_L4, V6_L4 + 8 + 2)
    } else {
        (V4_L4, V4_L4 + 8 + 2)
    };
    let Some(csum) = load::<2, XdpContext>(&ctx, l4 + 6) else {
        return xdp_action::XDP_ABORTED;
    };
    let csum = be16(csum);
    // IPv4 without a UDP checksum stays without one.
    let csum = if csum == 0 && !v6 {
        0
    } else {
        match csum_update(csum, 0, 1, u32::from(seq)) {
            0 => 0xffff,
            c => c,
        }
    };
    if !store(&ctx, seq_at, seq.to_be_bytes()) || !store(&ctx, l4 + 6, csum.to_be_bytes()) {
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
    match load::<2, XdpContext>(&ctx, l4 + 2) {
        Some(dport) if port != 0 && be16(dport) == port => {}
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
