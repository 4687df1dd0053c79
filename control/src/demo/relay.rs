//! The relay leg of the demo: the embedded XDP program, loaded into the
//! kernel and run on the publisher's SRTP packets with `BPF_PROG_TEST_RUN`.
//! In relay mode the receiver holds the sender's key, so the program rewrites
//! only Ethernet, IP and UDP and the SRTP bytes pass untouched.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use dataplane::srtp::SrtpContext;
use dataplane::wire::{demux, ethernet, ipv4::Ipv4Packet, udp};
use dataplane::xdp::{
    FlowAction, FlowMatch, LayerCap, RelayTarget, StreamKind, StreamSpec, XdpAction, XdpIngress,
};
use serde::Serialize;
use switchboard_common::IngressConfig;

use super::config::DemoConfig;
use super::consult::PublisherMedia;

const ROOM: u32 = 1;
const APPLIANCE_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 1];
const PUBLISHER_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 10];
const RECEIVER_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 20];
const INPUT_TTL: u8 = 64;

#[derive(Debug, Default, Serialize)]
pub struct RelayReport {
    /// Why the relay leg did not run, if it did not.
    pub skipped: Option<String>,
    pub packets: u64,
    pub forwarded: u64,
    pub before_cap: PhaseReport,
    pub after_cap: PhaseReport,
    pub rewritten_ok: u64,
    pub rewrite_errors: u64,
    pub decrypted_by_receiver: u64,
    pub receiver_srtp_failures: u64,
    pub stun_passed_up: bool,
    pub unknown_sender_dropped: bool,
    pub malformed_dropped: bool,
    pub kernel_ns_per_packet: f64,
    pub counters: Option<CountersReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct PhaseReport {
    pub audio_forwarded: u64,
    pub audio_dropped: u64,
    /// Per simulcast layer, lowest first: (forwarded, dropped).
    pub video: Vec<(u64, u64)>,
}

#[derive(Debug, Default, Serialize)]
pub struct CountersReport {
    pub received: u64,
    pub tx: u64,
    pub redirect: u64,
    pub stun: u64,
    pub drop_layer_cap: u64,
    pub drop_unknown_flow: u64,
    pub drop_malformed: u64,
    pub drop_ttl: u64,
}

pub fn run(config: &DemoConfig, media: &PublisherMedia) -> Result<RelayReport> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(RelayReport {
            skipped: Some(
                "loading XDP programs needs root (CAP_BPF and CAP_NET_ADMIN); run `sudo switchboard demo`"
                    .into(),
            ),
            ..RelayReport::default()
        });
    }
    let r = &config.relay;
    let mut xdp = XdpIngress::load(IngressConfig {
        port_min: r.media_port_min,
        port_max: r.media_port_max,
        drop_malformed: 1,
        drop_unknown: 1,
        _pad: [0; 2],
    })
    .context("loading the XDP program")?;
    xdp.add_local_address(r.appliance_addr)?;
    // A test run sees every frame as received on `lo`: forwarding back out of
    // it is XDP_TX, which is what a one-armed appliance does on a real NIC.
    let lo = xdp.add_egress("lo")?;
    xdp.set_flow(
        FlowMatch {
            remote: r.publisher,
            local_port: r.publisher_local_port,
        },
        &FlowAction::Relay(vec![RelayTarget {
            ifindex: lo,
            local: SocketAddr::new(r.appliance_addr, r.receiver_local_port),
            remote: r.receiver,
            src_mac: APPLIANCE_MAC,
            next_hop_mac: RECEIVER_MAC,
        }]),
    )?;
    for (layer, ssrc) in media.video_ssrcs.iter().enumerate() {
        xdp.set_stream(
            *ssrc,
            &StreamSpec {
                room: ROOM,
                kind: StreamKind::Video,
                spatial_layer: layer as u8,
                dependency_descriptor: None,
            },
        )?;
    }
    xdp.set_stream(
        media.audio_ssrc,
        &StreamSpec {
            room: ROOM,
            kind: StreamKind::Audio,
            spatial_layer: 0,
            dependency_descriptor: None,
        },
    )?;

    let layers = media.video_ssrcs.len();
    let mut report = RelayReport {
        before_cap: PhaseReport {
            video: vec![(0, 0); layers],
            ..PhaseReport::default()
        },
        after_cap: PhaseReport {
            video: vec![(0, 0); layers],
            ..PhaseReport::default()
        },
        ..RelayReport::default()
    };
    let mut receiver = SrtpContext::new(media.profile, &media.key)?;
    let cap_at = media.packets.len() * usize::from(r.cap_after_percent) / 100;
    let mut kernel_time = Duration::ZERO;
    for (i, (layer, _ssrc, srtp)) in media.packets.iter().enumerate() {
        if i == cap_at {
            // Overload level 2: cap the room to its lowest layer.
            xdp.set_room_cap(
                ROOM,
                LayerCap {
                    max_spatial: 0,
                    max_temporal: None,
                    video_off: false,
                },
            )?;
        }
        let frame = udp_frame(
            r.publisher,
            SocketAddr::new(r.appliance_addr, r.publisher_local_port),
            srtp,
        )?;
        let out = xdp.test_run(&frame)?;
        kernel_time += out.duration;
        report.packets += 1;
        let forwarded = out.action == XdpAction::Tx;
        let phase = if i < cap_at {
            &mut report.before_cap
        } else {
            &mut report.after_cap
        };
        let slot = match layer {
            None if forwarded => &mut phase.audio_forwarded,
            None => &mut phase.audio_dropped,
            Some(l) if forwarded => &mut phase.video[usize::from(*l)].0,
            Some(l) => &mut phase.video[usize::from(*l)].1,
        };
        *slot += 1;
        if !forwarded {
            continue;
        }
        report.forwarded += 1;
        if rewritten_as_expected(
            &out.frame,
            r.appliance_addr,
            r.receiver_local_port,
            r.receiver,
            srtp,
        ) {
            report.rewritten_ok += 1;
        } else {
            report.rewrite_errors += 1;
        }
        let Ok(parsed) = demux::parse_udp_frame(&out.frame) else {
            continue;
        };
        let mut packet = parsed.payload.to_vec();
        match receiver.unprotect_rtp(&mut packet) {
            Ok(_) => report.decrypted_by_receiver += 1,
            Err(_) => report.receiver_srtp_failures += 1,
        }
    }
    report.kernel_ns_per_packet = kernel_time.as_nanos() as f64 / report.packets.max(1) as f64;

    let appliance = SocketAddr::new(r.appliance_addr, r.publisher_local_port);
    let stun = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    report.stun_passed_up = xdp
        .test_run(&udp_frame(r.publisher, appliance, &stun)?)?
        .action
        == XdpAction::Pass;
    let stranger = SocketAddr::new(r.publisher.ip(), r.publisher.port().wrapping_add(1));
    let some_rtp = media
        .packets
        .first()
        .map(|p| p.2.clone())
        .unwrap_or_default();
    report.unknown_sender_dropped = xdp
        .test_run(&udp_frame(stranger, appliance, &some_rtp)?)?
        .action
        == XdpAction::Drop;
    let mut lying = udp_frame(r.publisher, appliance, &some_rtp)?;
    let udp_len_at = lying.len() - some_rtp.len() - 4;
    lying[udp_len_at..udp_len_at + 2].copy_from_slice(&9000u16.to_be_bytes());
    report.malformed_dropped = xdp.test_run(&lying)?.action == XdpAction::Drop;

    let c = xdp.counters()?;
    report.counters = Some(CountersReport {
        received: c.received,
        tx: c.tx,
        redirect: c.redirect,
        stun: c.stun,
        drop_layer_cap: c.drop_layer_cap,
        drop_unknown_flow: c.drop_unknown_flow,
        drop_malformed: c.drop_malformed,
        drop_ttl: c.drop_ttl,
    });
    Ok(report)
}

/// Ethernet + IPv4/IPv6 + UDP around `payload`, with valid checksums.
fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
    let ip_len = match src.ip() {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    };
    let mut frame = vec![0u8; ethernet::HEADER_LEN + ip_len + udp::HEADER_LEN + payload.len()];
    let ethertype = if src.is_ipv4() { 0x0800 } else { 0x86dd };
    let l3 = ethernet::write_header(
        &mut frame,
        ethernet::MacAddr(APPLIANCE_MAC),
        ethernet::MacAddr(PUBLISHER_MAC),
        None,
        ethertype,
    )?;
    let l4 = l3 + ip_len;
    let udp_len = udp::HEADER_LEN + payload.len();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut frame[l3..l4];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = INPUT_TTL;
            h[9] = 17;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            Ipv4Packet::new_checked(&mut frame[l3..])?.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = &mut frame[l3..l4];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            h[6] = 17;
            h[7] = INPUT_TTL;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
        _ => anyhow::bail!("mixed IP families {src} → {dst}"),
    }
    udp::write_header(&mut frame[l4..], src.port(), dst.port(), payload.len())?;
    frame[l4 + udp::HEADER_LEN..].copy_from_slice(payload);
    let mut datagram = udp::UdpPacket::new_checked(&mut frame[l4..])?;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => datagram.fill_checksum_v4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => datagram.fill_checksum_v6(s, d),
        _ => unreachable!("families checked above"),
    }
    Ok(frame)
}

/// The frame the program sent: addressed appliance → receiver, TTL one less,
/// valid checksums, the SRTP packet byte for byte.
fn rewritten_as_expected(
    frame: &[u8],
    appliance: IpAddr,
    appliance_port: u16,
    receiver: SocketAddr,
    srtp: &[u8],
) -> bool {
    let Ok(parsed) = demux::parse_udp_frame(frame) else {
        return false;
    };
    let Ok(eth) = ethernet::EthernetFrame::new_checked(frame) else {
        return false;
    };
    let l3 = &frame[parsed.ip_offset..];
    let ttl_and_ip_ok = match appliance {
        IpAddr::V4(_) => Ipv4Packet::new_checked(l3)
            .is_ok_and(|ip| ip.ttl() == INPUT_TTL - 1 && ip.verify_checksum()),
        IpAddr::V6(_) => l3.get(7) == Some(&(INPUT_TTL - 1)),
    };
    let udp_ok = udp::UdpPacket::new_checked(&frame[parsed.udp_offset..])
        .is_ok_and(|u| u.verify_checksum(parsed.src_addr, parsed.dst_addr));
    eth.dst_addr().0 == RECEIVER_MAC
        && eth.src_addr().0 == APPLIANCE_MAC
        && parsed.src_addr == appliance
        && parsed.src_port == appliance_port
        && parsed.dst_addr == receiver.ip()
        && parsed.dst_port == receiver.port()
        && ttl_and_ip_ok
        && udp_ok
        && parsed.payload == srtp
}

pub fn print(r: &RelayReport) {
    println!("2. relay leg: the XDP program in the kernel (BPF_PROG_TEST_RUN on the publisher's SRTP packets)");
    if let Some(why) = &r.skipped {
        println!("   skipped: {why}");
        return;
    }
    let phase = |name: &str, p: &PhaseReport| {
        let video: Vec<String> = p
            .video
            .iter()
            .enumerate()
            .map(|(i, (fwd, drop))| format!("layer {i} {fwd} fwd/{drop} drop"))
            .collect();
        println!(
            "   {name:<22} audio {} fwd/{} drop; {}",
            p.audio_forwarded,
            p.audio_dropped,
            video.join("; ")
        );
    };
    phase("before the room cap:", &r.before_cap);
    phase("after cap to layer 0:", &r.after_cap);
    println!(
        "   {} of {} packets forwarded with XDP_TX; {} rewritten exactly (addresses, ports, TTL-1, IP and UDP checksums, SRTP bytes untouched), {} not",
        r.forwarded, r.packets, r.rewritten_ok, r.rewrite_errors
    );
    println!(
        "   the receiver decrypted {} with the sender's key ({} failures)",
        r.decrypted_by_receiver, r.receiver_srtp_failures
    );
    println!(
        "   STUN passed up to the control plane: {}; unknown sender dropped: {}; lying UDP length dropped: {}",
        r.stun_passed_up, r.unknown_sender_dropped, r.malformed_dropped
    );
    if let Some(c) = &r.counters {
        println!(
            "   program counters: received {}, tx {}, stun {}, dropped: layer cap {}, unknown flow {}, malformed {}, ttl {}",
            c.received, c.tx, c.stun, c.drop_layer_cap, c.drop_unknown_flow, c.drop_malformed, c.drop_ttl
        );
    }
    println!(
        "   kernel time in the program: {:.0} ns per packet (test run, includes the run's own overhead)",
        r.kernel_ns_per_packet
    );
}
