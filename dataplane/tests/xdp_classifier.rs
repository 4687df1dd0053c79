//! The embedded XDP program's classification (RFC 7983 demux, ownership,
//! lying lengths), run by the kernel on crafted frames with
//! `BPF_PROG_TEST_RUN`. Relaying is tested in `xdp_relay.rs`. Needs root (CAP_BPF); in CI (`CI=true`) a missing
//! privilege fails the test instead of skipping it.
#![cfg(feature = "xdp")]

use dataplane::xdp::{XdpAction, XdpIngress};
use switchboard_common::{Counters, IngressConfig};

const MEDIA_PORT: u16 = 40_000;

/// Returns false (and says why) when the test cannot run here.
fn privileged_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "CI=true but not running as root: BPF_PROG_TEST_RUN needs CAP_BPF"
    );
    eprintln!("skipping: loading XDP programs needs root (CAP_BPF + CAP_NET_ADMIN)");
    false
}

fn ingress(drop_malformed: bool) -> XdpIngress {
    let mut xdp = XdpIngress::load(IngressConfig {
        port_min: MEDIA_PORT,
        port_max: MEDIA_PORT + 99,
        drop_malformed: u8::from(drop_malformed),
        drop_unknown: 0,
        _pad: [0; 2],
    })
    .expect("load XDP program");
    for addr in ["198.18.0.2", "2001:2::2"] {
        xdp.add_local_address(addr.parse().unwrap())
            .expect("add local address");
    }
    xdp
}

/// Ethernet + IPv4 + UDP frame around `payload`, lengths consistent.
fn ipv4_udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(&5004u16.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Ethernet + IPv6 + UDP frame around `payload`.
fn ipv6_udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    let mut src = [0u8; 16];
    src[..6].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0, 0]);
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&5004u16.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    // IPv6 forbids a zero UDP checksum; classification does not verify it.
    f.extend_from_slice(&[0xbe, 0xef]);
    f.extend_from_slice(payload);
    f
}

fn rtp_payload() -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    p.extend_from_slice(&[0u8; 100]);
    p
}

#[test]
fn classifies_by_first_byte_and_passes_everything_untouched() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = ingress(false);
    let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4];
    let dtls = [22, 0xfe, 0xfd, 0, 0];
    let mut not_our_address = ipv4_udp(MEDIA_PORT, &rtp_payload());
    not_our_address[33] = 3;
    let frames = [
        ipv4_udp(MEDIA_PORT, &rtp_payload()),
        not_our_address,
        ipv6_udp(MEDIA_PORT + 5, &rtp_payload()),
        ipv4_udp(MEDIA_PORT, &stun),
        ipv4_udp(MEDIA_PORT + 99, &dtls),
        ipv4_udp(MEDIA_PORT, &[0x40, 1, 2]),
        ipv4_udp(53, &rtp_payload()),
    ];
    for frame in &frames {
        let out = xdp.test_run(frame).expect("test run");
        assert_eq!(out.action, XdpAction::Pass);
        assert_eq!(&out.frame, frame, "a classifier must not modify frames");
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(
        c,
        Counters {
            received: 7,
            not_ours: 2,
            stun: 1,
            dtls: 1,
            unknown_passed: 2,
            other: 1,
            ..Counters::default()
        }
    );
}

#[test]
fn lying_lengths_are_malformed_and_dropped_when_configured() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = ingress(true);
    let good = ipv4_udp(MEDIA_PORT, &rtp_payload());

    let mut udp_len_lie = good.clone();
    udp_len_lie[38..40].copy_from_slice(&2000u16.to_be_bytes());
    let mut ip_len_lie = good.clone();
    ip_len_lie[16..18].copy_from_slice(&3000u16.to_be_bytes());
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut udp_len_short = good.clone();
    udp_len_short[38..40].copy_from_slice(&4u16.to_be_bytes());

    for frame in [&udp_len_lie, &ip_len_lie, &bad_ihl, &udp_len_short] {
        assert_eq!(
            xdp.test_run(frame).expect("test run").action,
            XdpAction::Drop
        );
    }
    // Truncated at every byte: nothing is forwarded, nothing crashes the verifier's promises.
    for cut in 0..good.len() {
        let action = xdp.test_run(&good[..cut]).map(|o| o.action);
        // The kernel refuses frames shorter than an Ethernet header itself.
        if let Ok(action) = action {
            assert!(
                matches!(action, XdpAction::Pass | XdpAction::Drop),
                "cut {cut}: {action:?}"
            );
        }
    }
    let c = xdp.counters().expect("counters");
    assert!(c.drop_malformed >= 4, "{c:?}");
    assert_eq!(c.dropped(), c.drop_malformed, "{c:?}");
    assert_eq!(c.forwarded(), 0, "{c:?}");
}

#[test]
fn ipv4_fragments_go_to_the_kernel() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = ingress(true);
    let mut first_fragment = ipv4_udp(MEDIA_PORT, &rtp_payload());
    first_fragment[20] = 0x20; // MF set
    let mut later_fragment = ipv4_udp(MEDIA_PORT, &rtp_payload());
    later_fragment[21] = 0x10; // offset 16*8
    for frame in [&first_fragment, &later_fragment] {
        let out = xdp.test_run(frame).expect("test run");
        assert_eq!(out.action, XdpAction::Pass);
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.slow_path, 2, "{c:?}");
    assert_eq!(c.received, 2, "{c:?}");
}

#[test]
fn empty_port_range_is_refused() {
    let err = XdpIngress::load(IngressConfig {
        port_min: 10,
        port_max: 9,
        drop_malformed: 0,
        drop_unknown: 0,
        _pad: [0; 2],
    })
    .err()
    .expect("must be refused");
    assert!(err.to_string().contains("empty"), "{err}");
}
