//! switchboard's XDP ingress classifier.
//!
//! Every frame is parsed (Ethernet with at most one 802.1Q tag, IPv4 or IPv6,
//! UDP); UDP to the appliance's media port range is classified by its first
//! byte as RFC 7983 prescribes (STUN / DTLS / RTP-RTCP / other) and counted
//! per CPU. Frames whose headers lie about their lengths are counted as
//! malformed and, if configured, dropped. Everything else is passed on.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use switchboard_common::{Counters, IngressConfig};

#[map(name = "SB_COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SB_INGRESS_CONFIG")]
static INGRESS_CONFIG: Array<IngressConfig> = Array::with_max_entries(1, 0);

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;
const IPV6_HDR_LEN: usize = 40;
const UDP_HDR_LEN: usize = 8;

/// What one frame turned out to be.
enum Class {
    NotMedia,
    Malformed,
    Stun,
    Dtls,
    RtpRtcp,
    Other,
}

#[xdp]
pub fn switchboard_xdp(ctx: XdpContext) -> u32 {
    let class = classify(&ctx);
    let drop_malformed = match INGRESS_CONFIG.get(0) {
        Some(cfg) => cfg.drop_malformed != 0,
        None => false,
    };
    let action = match class {
        Class::Malformed if drop_malformed => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    };
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        let c = unsafe { &mut *counters };
        c.received += 1;
        match class {
            Class::NotMedia => c.not_media += 1,
            Class::Malformed => c.malformed += 1,
            Class::Stun => c.stun += 1,
            Class::Dtls => c.dtls += 1,
            Class::RtpRtcp => c.rtp_rtcp += 1,
            Class::Other => c.other += 1,
        }
        if action == xdp_action::XDP_DROP {
            c.dropped += 1;
        }
    }
    action
}

/// Reads `N` bytes at `offset`, or `None` if they are not all inside the frame.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return None;
    }
    // SAFETY: the range [start+offset, start+offset+N) was bounds-checked
    // against data_end just above, which is what the verifier requires.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Class {
    let frame_len = ctx.data_end() - ctx.data();
    let Some(ethertype) = bytes_at::<2>(ctx, 12) else {
        return Class::NotMedia;
    };
    let mut ethertype = be16(ethertype);
    let mut l3 = ETH_HDR_LEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = bytes_at::<2>(ctx, ETH_HDR_LEN + 2) else {
            return Class::NotMedia;
        };
        ethertype = be16(inner);
        l3 += VLAN_HDR_LEN;
    }
    let (l4, l4_len_from_ip) = match ethertype {
        ETH_P_IPV4 => {
            let Some(hdr) = bytes_at::<20>(ctx, l3) else {
                return Class::NotMedia;
            };
            if hdr[9] != IPPROTO_UDP {
                return Class::NotMedia;
            }
            let version = hdr[0] >> 4;
            let ihl = ((hdr[0] & 0x0f) as usize) * 4;
            let total_len = be16([hdr[2], hdr[3]]) as usize;
            if version != 4 || ihl < 20 || total_len < ihl || l3 + total_len > frame_len {
                return Class::Malformed;
            }
            // A non-first fragment carries no UDP header; a first fragment's
            // UDP length covers bytes that are not here. Neither is media
            // the fast path can judge, so they go up to the kernel.
            let frag = be16([hdr[6], hdr[7]]);
            if frag & 0x3fff != 0 {
                return Class::NotMedia;
            }
            (l3 + ihl, total_len - ihl)
        }
        ETH_P_IPV6 => {
            let Some(hdr) = bytes_at::<IPV6_HDR_LEN>(ctx, l3) else {
                return Class::NotMedia;
            };
            if hdr[0] >> 4 != 6 {
                return Class::Malformed;
            }
            // Extension headers are not walked here: media from browsers and
            // SIP endpoints carries none, so such packets take the slow path.
            if hdr[6] != IPPROTO_UDP {
                return Class::NotMedia;
            }
            let payload_len = be16([hdr[4], hdr[5]]) as usize;
            if l3 + IPV6_HDR_LEN + payload_len > frame_len {
                return Class::Malformed;
            }
            (l3 + IPV6_HDR_LEN, payload_len)
        }
        _ => return Class::NotMedia,
    };
    let Some(udp) = bytes_at::<UDP_HDR_LEN>(ctx, l4) else {
        return Class::Malformed;
    };
    let dst_port = be16([udp[2], udp[3]]);
    let Some(cfg) = INGRESS_CONFIG.get(0) else {
        return Class::NotMedia;
    };
    if dst_port < cfg.port_min || dst_port > cfg.port_max {
        return Class::NotMedia;
    }
    let udp_len = be16([udp[4], udp[5]]) as usize;
    if udp_len < UDP_HDR_LEN || udp_len > l4_len_from_ip {
        return Class::Malformed;
    }
    if udp_len == UDP_HDR_LEN {
        return Class::Other;
    }
    let Some([first]) = bytes_at::<1>(ctx, l4 + UDP_HDR_LEN) else {
        return Class::Malformed;
    };
    match first {
        0..=3 => Class::Stun,
        20..=63 => Class::Dtls,
        128..=191 => Class::RtpRtcp,
        _ => Class::Other,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
