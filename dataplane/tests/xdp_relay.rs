//! The XDP relay fast path, run by the kernel on crafted frames with
//! `BPF_PROG_TEST_RUN`: every action, rewritten frames checked byte by byte
//! (checksums recomputed from scratch), layer caps, and hostile shapes that
//! must never be forwarded. Needs root (CAP_BPF); in CI (`CI=true`) a missing
//! privilege fails the test instead of skipping it.
//!
//! `BPF_PROG_TEST_RUN` presents frames as received on the loopback device of
//! the calling thread's network namespace, so a destination on `lo` is
//! relayed with `XDP_TX`. `XDP_REDIRECT` between interfaces is covered by the
//! network-namespace tests in the `switchboard-tests` crate.
#![cfg(feature = "xdp")]

use std::net::{IpAddr, SocketAddr};

use dataplane::xdp::{
    DependencyDescriptor, FlowAction, FlowMatch, LayerCap, RelayTarget, StreamKind, StreamSpec,
    TestRunOutcome, XdpAction, XdpError, XdpIngress, MAX_RELAY_FANOUT,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use switchboard_common::{Counters, IngressConfig};

const MEDIA_PORT: u16 = 40_000;
const APPLIANCE_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const SENDER_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 1];
const EGRESS_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 2];
const RECEIVER_MAC: [u8; 6] = [0x02, 0x7e, 0, 0, 0, 1];
const LO_IFINDEX: u32 = 1;

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

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

const SENDER4: &str = "198.18.0.1:5004";
const LOCAL4: &str = "198.18.0.2:40000";
const EGRESS4: &str = "198.18.1.2:40010";
const RECEIVER4: &str = "198.18.1.7:6000";
const SENDER6: &str = "[2001:2::1]:5004";
const LOCAL6: &str = "[2001:2::2]:40000";
const EGRESS6: &str = "[2001:2:0:1::2]:40010";
const RECEIVER6: &str = "[2001:2:0:1::7]:6000";

fn relay_ingress(drop_unknown: bool) -> XdpIngress {
    let mut xdp = XdpIngress::load(IngressConfig {
        port_min: MEDIA_PORT,
        port_max: MEDIA_PORT + 99,
        drop_malformed: 1,
        drop_unknown: u8::from(drop_unknown),
        _pad: [0; 2],
    })
    .expect("load XDP program");
    for addr in [LOCAL4, LOCAL6] {
        xdp.add_local_address(sock(addr).ip())
            .expect("local address");
    }
    assert_eq!(xdp.add_egress("lo").expect("lo as egress"), LO_IFINDEX);
    xdp
}

fn target(local: &str, remote: &str) -> RelayTarget {
    RelayTarget {
        ifindex: LO_IFINDEX,
        local: sock(local),
        remote: sock(remote),
        src_mac: EGRESS_MAC,
        next_hop_mac: RECEIVER_MAC,
    }
}

fn relay_flow(xdp: &mut XdpIngress, sender: &str, local: &str, egress: &str, receiver: &str) {
    xdp.set_flow(
        FlowMatch {
            remote: sock(sender),
            local_port: sock(local).port(),
        },
        &FlowAction::Relay(vec![target(egress, receiver)]),
    )
    .expect("set flow");
}

/// A UDP datagram on the wire, built with correct lengths and checksums.
#[derive(Clone)]
struct Datagram {
    vlan: Option<u16>,
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    payload: Vec<u8>,
    /// IPv4 only: send without a UDP checksum (zero).
    no_udp_csum: bool,
}

impl Datagram {
    fn new(src: &str, dst: &str, payload: Vec<u8>) -> Self {
        Self {
            vlan: None,
            src: sock(src),
            dst: sock(dst),
            ttl: 64,
            payload,
            no_udp_csum: false,
        }
    }

    fn l3(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    fn frame(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&APPLIANCE_MAC);
        f.extend_from_slice(&SENDER_MAC);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let udp_len = (8 + self.payload.len()) as u16;
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let l3 = f.len();
                f.extend_from_slice(&[0x45, 0xb8]);
                f.extend_from_slice(&(20 + udp_len).to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, self.ttl, 17, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let c = !fold(ones_sum(&f[l3..l3 + 20]));
                f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd]);
                f.extend_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.extend_from_slice(&[17, self.ttl]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families"),
        }
        let l4 = f.len();
        f.extend_from_slice(&self.src.port().to_be_bytes());
        f.extend_from_slice(&self.dst.port().to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.payload);
        if !self.no_udp_csum {
            let c = udp_checksum(self.src.ip(), self.dst.ip(), &f[l4..]);
            f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        f
    }
}

fn ones_sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The UDP checksum computed from scratch (with the checksum field taken as zero).
fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => panic!("mixed address families"),
    }
    let mut zeroed = udp.to_vec();
    zeroed[6..8].fill(0);
    let sum = ones_sum(&pseudo) + ones_sum(&zeroed);
    match !fold(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// RTP packet: `ext` is a complete header extension block (profile, length, data).
fn rtp(ssrc: u32, seq: u16, ext: Option<Vec<u8>>, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80 | if ext.is_some() { 0x10 } else { 0 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&90_000u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(ext) = ext {
        p.extend_from_slice(&ext);
    }
    p.extend_from_slice(body);
    p
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// An RFC 8285 one-byte header extension block holding a Dependency
/// Descriptor (3 mandatory bytes) after an unrelated element and padding.
fn dd_one_byte(ext_id: u8, template: u8) -> Vec<u8> {
    let mut data = vec![
        0x10,
        0xaa,
        0x00,
        (ext_id << 4) | 2,
        0xc0 | template,
        0x12,
        0x34,
    ];
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let mut block = vec![0xbe, 0xde];
    block.extend_from_slice(&((data.len() / 4) as u16).to_be_bytes());
    block.extend_from_slice(&data);
    block
}

/// The same in the two-byte form (profile 0x1000).
fn dd_two_byte(ext_id: u8, template: u8) -> Vec<u8> {
    let mut data = vec![0, ext_id, 3, 0xc0 | template, 0x12, 0x34];
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let mut block = vec![0x10, 0x00];
    block.extend_from_slice(&((data.len() / 4) as u16).to_be_bytes());
    block.extend_from_slice(&data);
    block
}

/// Checks a relayed frame against its input byte by byte.
fn assert_relayed(input: &Datagram, out: &[u8], egress: &str, receiver: &str) {
    let inp = input.frame();
    let (egress, receiver) = (sock(egress), sock(receiver));
    assert_eq!(out.len(), inp.len(), "frame length changed");
    assert_eq!(&out[0..6], &RECEIVER_MAC, "destination MAC");
    assert_eq!(&out[6..12], &EGRESS_MAC, "source MAC");
    let l3 = input.l3();
    assert_eq!(&out[12..l3], &inp[12..l3], "ethertype / VLAN tag");
    let l4 = match (egress.ip(), receiver.ip()) {
        (IpAddr::V4(e), IpAddr::V4(r)) => {
            let h = &out[l3..l3 + 20];
            let i = &inp[l3..l3 + 20];
            assert_eq!(&h[..8], &i[..8], "version, TOS, length, id, fragment field");
            assert_eq!(h[8], i[8] - 1, "TTL decremented");
            assert_eq!(h[9], 17);
            assert_eq!(fold(ones_sum(h)), 0xffff, "IPv4 header checksum invalid");
            assert_eq!(&h[12..16], &e.octets(), "source address");
            assert_eq!(&h[16..20], &r.octets(), "destination address");
            l3 + 20
        }
        (IpAddr::V6(e), IpAddr::V6(r)) => {
            let h = &out[l3..l3 + 40];
            let i = &inp[l3..l3 + 40];
            assert_eq!(
                &h[..7],
                &i[..7],
                "version, class, flow label, length, next header"
            );
            assert_eq!(h[7], i[7] - 1, "hop limit decremented");
            assert_eq!(&h[8..24], &e.octets(), "source address");
            assert_eq!(&h[24..40], &r.octets(), "destination address");
            l3 + 40
        }
        _ => panic!("mixed address families"),
    };
    let udp = &out[l4..];
    assert_eq!(
        u16::from_be_bytes([udp[0], udp[1]]),
        egress.port(),
        "source port"
    );
    assert_eq!(
        u16::from_be_bytes([udp[2], udp[3]]),
        receiver.port(),
        "destination port"
    );
    assert_eq!(&udp[4..6], &inp[l4 + 4..l4 + 6], "UDP length");
    let csum = u16::from_be_bytes([udp[6], udp[7]]);
    if input.no_udp_csum {
        assert_eq!(csum, 0, "a missing IPv4 UDP checksum stays missing");
    } else {
        let udp_len = 8 + input.payload.len();
        assert_eq!(
            csum,
            udp_checksum(egress.ip(), receiver.ip(), &udp[..udp_len]),
            "UDP checksum differs from one computed from scratch"
        );
    }
    assert_eq!(
        &out[l4 + 8..],
        &inp[l4 + 8..],
        "payload (and any trailer) byte-identical"
    );
}

fn run(xdp: &mut XdpIngress, frame: &[u8]) -> TestRunOutcome {
    xdp.test_run(frame).expect("test run")
}

fn assert_passed_untouched(xdp: &mut XdpIngress, frame: &[u8], what: &str) {
    let out = run(xdp, frame);
    assert_eq!(out.action, XdpAction::Pass, "{what}");
    assert_eq!(out.frame, frame, "{what}: a passed frame must be untouched");
}

fn assert_dropped(xdp: &mut XdpIngress, frame: &[u8], what: &str) {
    assert_eq!(run(xdp, frame).action, XdpAction::Drop, "{what}");
}

/// Every frame is counted once, in exactly one disposition.
fn assert_balanced(c: &Counters) {
    assert_eq!(
        c.received,
        c.passed() + c.forwarded() + c.dropped(),
        "{c:?}"
    );
}

#[test]
fn relays_ipv4_and_ipv6_rewriting_every_field() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    relay_flow(&mut xdp, SENDER6, LOCAL6, EGRESS6, RECEIVER6);
    let mut rng = StdRng::seed_from_u64(7983);
    let mut sent = 0;
    for round in 0..40u16 {
        let len = rng.gen_range(0..1200);
        let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let payload = if round % 5 == 0 {
            rtcp_rr(rng.gen())
        } else {
            rtp(rng.gen(), round, None, &body)
        };
        for (src, dst, egress, receiver) in [
            (SENDER4, LOCAL4, EGRESS4, RECEIVER4),
            (SENDER6, LOCAL6, EGRESS6, RECEIVER6),
        ] {
            let mut d = Datagram::new(src, dst, payload.clone());
            d.ttl = rng.gen_range(2..=255);
            d.vlan = (round % 3 == 0).then_some(0x2000 | 42);
            d.no_udp_csum = src == SENDER4 && round % 4 == 1;
            let out = run(&mut xdp, &d.frame());
            assert_eq!(out.action, XdpAction::Tx, "round {round} {src}");
            assert_relayed(&d, &out.frame, egress, receiver);
            sent += 1;
        }
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.tx, sent, "{c:?}");
    assert_eq!(c.received, sent, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn ethernet_padding_after_a_short_datagram_is_kept() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    let d = Datagram::new(SENDER4, LOCAL4, rtcp_rr(1));
    let mut frame = d.frame();
    let datagram_end = frame.len();
    frame.resize(60, 0xee);
    let out = run(&mut xdp, &frame);
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(out.frame.len(), 60);
    assert_eq!(&out.frame[datagram_end..], &frame[datagram_end..]);
    assert_relayed(&d, &out.frame[..datagram_end], EGRESS4, RECEIVER4);
}

#[test]
fn stun_dtls_and_non_media_pass_untouched_even_from_a_relayed_sender() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    let stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4];
    let dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0];
    let cases = [
        (Datagram::new(SENDER4, LOCAL4, stun.clone()), "STUN"),
        (Datagram::new(SENDER6, LOCAL6, stun), "STUN over IPv6"),
        (Datagram::new(SENDER4, LOCAL4, dtls), "DTLS"),
        (
            Datagram::new(SENDER4, LOCAL4, vec![0x40, 0, 1, 2]),
            "TURN channel data",
        ),
        (
            Datagram::new(SENDER4, LOCAL4, Vec::new()),
            "zero-length UDP",
        ),
        (
            Datagram::new(SENDER4, "198.18.0.99:40000", rtp(1, 1, None, b"x")),
            "other address",
        ),
        (
            Datagram::new(SENDER4, "198.18.0.2:53", rtp(1, 1, None, b"x")),
            "non-media port",
        ),
    ];
    for (d, what) in &cases {
        assert_passed_untouched(&mut xdp, &d.frame(), what);
    }
    let c = xdp.counters().expect("counters");
    assert_eq!((c.stun, c.dtls, c.other, c.not_ours), (2, 1, 2, 2), "{c:?}");
    assert_eq!(c.forwarded() + c.dropped(), 0, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn unknown_senders_are_dropped_or_passed_as_configured() {
    if !privileged_or_skip() {
        return;
    }
    for drop_unknown in [true, false] {
        let mut xdp = relay_ingress(drop_unknown);
        relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
        let unknown = [
            Datagram::new("198.18.0.66:5004", LOCAL4, rtp(1, 1, None, b"media")),
            Datagram::new("198.18.0.1:5005", LOCAL4, rtp(1, 1, None, b"media")),
            Datagram::new(SENDER4, "198.18.0.2:40001", rtcp_rr(1)),
            Datagram::new(SENDER6, LOCAL6, rtp(1, 1, None, b"media")),
        ];
        for d in &unknown {
            let frame = d.frame();
            if drop_unknown {
                assert_dropped(&mut xdp, &frame, "unknown sender");
            } else {
                assert_passed_untouched(&mut xdp, &frame, "unknown sender");
            }
        }
        let c = xdp.counters().expect("counters");
        let n = unknown.len() as u64;
        if drop_unknown {
            assert_eq!(c.drop_unknown_flow, n, "{c:?}");
        } else {
            assert_eq!(c.unknown_passed, n, "{c:?}");
        }
        assert_balanced(&c);
    }
}

#[test]
fn removed_flows_become_unknown() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    let frame = Datagram::new(SENDER4, LOCAL4, rtp(9, 1, None, b"m")).frame();
    assert_eq!(run(&mut xdp, &frame).action, XdpAction::Tx);
    let flow = FlowMatch {
        remote: sock(SENDER4),
        local_port: MEDIA_PORT,
    };
    xdp.remove_flow(&flow).expect("remove");
    xdp.remove_flow(&flow).expect("removing twice is fine");
    assert_dropped(&mut xdp, &frame, "after removal");
}

#[test]
fn local_addresses_beyond_the_inline_set_use_the_map_and_removal_shrinks_back() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    // LOCAL4 and LOCAL6 are in already: four more make six, past the inline set.
    let extra = ["198.18.0.10", "198.18.0.11", "198.18.0.12", "198.18.0.13"];
    for addr in extra {
        xdp.add_local_address(addr.parse().expect("address"))
            .expect("local address");
    }
    let to = |addr: &str| {
        Datagram::new(
            SENDER4,
            &format!("{addr}:{MEDIA_PORT}"),
            rtp(9, 1, None, b"media"),
        )
    };
    for addr in ["198.18.0.2", "198.18.0.10", "198.18.0.13"] {
        let input = to(addr);
        let out = run(&mut xdp, &input.frame());
        assert_eq!(
            out.action,
            XdpAction::Tx,
            "to {addr} with six local addresses"
        );
        assert_relayed(&input, &out.frame, EGRESS4, RECEIVER4);
    }
    assert_passed_untouched(&mut xdp, &to("198.18.0.99").frame(), "not a local address");

    for addr in &extra[..3] {
        xdp.remove_local_address(addr.parse().expect("address"))
            .expect("remove");
    }
    let input = to("198.18.0.13");
    let out = run(&mut xdp, &input.frame());
    assert_eq!(
        out.action,
        XdpAction::Tx,
        "kept address after shrinking to three"
    );
    assert_relayed(&input, &out.frame, EGRESS4, RECEIVER4);
    for addr in &extra[..3] {
        assert_passed_untouched(&mut xdp, &to(addr).frame(), "removed local address");
    }
    xdp.remove_local_address(sock(LOCAL4).ip()).expect("remove");
    assert_passed_untouched(&mut xdp, &to("198.18.0.2").frame(), "own address removed");
}

#[test]
fn ttl_and_hop_limit_expiry_is_dropped_and_counted() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    relay_flow(&mut xdp, SENDER6, LOCAL6, EGRESS6, RECEIVER6);
    for (src, dst) in [(SENDER4, LOCAL4), (SENDER6, LOCAL6)] {
        for ttl in [0, 1] {
            let mut d = Datagram::new(src, dst, rtp(5, 1, None, b"late"));
            d.ttl = ttl;
            assert_dropped(&mut xdp, &d.frame(), "expiring TTL");
        }
        let mut d = Datagram::new(src, dst, rtp(5, 1, None, b"just in time"));
        d.ttl = 2;
        let out = run(&mut xdp, &d.frame());
        assert_eq!(out.action, XdpAction::Tx);
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.drop_ttl, 4, "{c:?}");
    assert_eq!(c.tx, 2, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn trunk_flows_go_to_tc_untouched_whatever_their_ttl() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    // One trunk destination on an interface that is no XDP egress: TC
    // clones to it, so no egress registration is needed.
    let trunk = RelayTarget {
        ifindex: 9999,
        ..target(EGRESS4, RECEIVER4)
    };
    xdp.set_flow(
        FlowMatch {
            remote: sock(SENDER4),
            local_port: MEDIA_PORT,
        },
        &FlowAction::UserspaceAndTrunks(vec![trunk]),
    )
    .expect("trunk flow");
    let media = Datagram::new(SENDER4, LOCAL4, rtp(5, 1, None, b"published"));
    assert_passed_untouched(&mut xdp, &media.frame(), "trunk flow");
    // The leg ends here too: an expiring TTL still reaches the worker.
    let mut last_hop = media.clone();
    last_hop.ttl = 1;
    assert_passed_untouched(&mut xdp, &last_hop.frame(), "trunk flow at TTL 1");
    let c = xdp.counters().expect("counters");
    assert_eq!((c.to_fanout, c.drop_ttl, c.forwarded()), (2, 0, 0), "{c:?}");
    assert_balanced(&c);
    let err = xdp
        .set_flow(
            FlowMatch {
                remote: sock(SENDER4),
                local_port: MEDIA_PORT,
            },
            &FlowAction::UserspaceAndTrunks(vec![]),
        )
        .unwrap_err();
    assert!(matches!(err, XdpError::NoDestinations), "{err}");
}

#[test]
fn userspace_legs_and_fanout_flows_are_passed_up_untouched() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    xdp.set_flow(
        FlowMatch {
            remote: sock(SENDER4),
            local_port: MEDIA_PORT,
        },
        &FlowAction::ToUserspace,
    )
    .expect("sfu flow");
    let targets = (0..3)
        .map(|i| target(EGRESS6, &format!("[2001:2:0:1::{}]:6000", 10 + i)))
        .collect();
    xdp.set_flow(
        FlowMatch {
            remote: sock(SENDER6),
            local_port: MEDIA_PORT,
        },
        &FlowAction::Relay(targets),
    )
    .expect("fan-out flow");
    let sfu = Datagram::new(SENDER4, LOCAL4, rtp(3, 1, None, b"to the worker"));
    assert_passed_untouched(&mut xdp, &sfu.frame(), "sfu leg");
    let fan = Datagram::new(SENDER6, LOCAL6, rtp(3, 1, None, b"to TC"));
    assert_passed_untouched(&mut xdp, &fan.frame(), "fan-out flow");
    let mut expiring = fan.clone();
    expiring.ttl = 1;
    assert_dropped(
        &mut xdp,
        &expiring.frame(),
        "fan-out flow with expiring hop limit",
    );
    let c = xdp.counters().expect("counters");
    assert_eq!(
        (c.to_userspace, c.to_fanout, c.drop_ttl),
        (1, 1, 1),
        "{c:?}"
    );
    assert_balanced(&c);
}

fn video(room: u32, spatial_layer: u8, dd: Option<DependencyDescriptor>) -> StreamSpec {
    StreamSpec {
        room,
        kind: StreamKind::Video,
        spatial_layer,
        dependency_descriptor: dd,
    }
}

#[test]
fn simulcast_cap_drops_only_video_above_it() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    let (audio, low, mid, high, other_room) = (100, 200, 201, 202, 300);
    xdp.set_stream(
        audio,
        &StreamSpec {
            room: 7,
            kind: StreamKind::Audio,
            spatial_layer: 0,
            dependency_descriptor: None,
        },
    )
    .expect("audio stream");
    for (ssrc, layer) in [(low, 0), (mid, 1), (high, 2)] {
        xdp.set_stream(ssrc, &video(7, layer, None))
            .expect("video stream");
    }
    xdp.set_stream(other_room, &video(8, 2, None))
        .expect("other room");
    let send = |xdp: &mut XdpIngress, payload: Vec<u8>| {
        run(xdp, &Datagram::new(SENDER4, LOCAL4, payload).frame()).action
    };
    let all = [audio, low, mid, high, other_room];
    for ssrc in all {
        assert_eq!(
            send(&mut xdp, rtp(ssrc, 1, None, b"m")),
            XdpAction::Tx,
            "uncapped {ssrc}"
        );
    }
    let cap = |max_spatial, video_off| LayerCap {
        max_spatial,
        max_temporal: None,
        video_off,
    };
    xdp.set_room_cap(7, cap(0, false)).expect("cap");
    for ssrc in all {
        let expected = if ssrc == mid || ssrc == high {
            XdpAction::Drop
        } else {
            XdpAction::Tx
        };
        assert_eq!(
            send(&mut xdp, rtp(ssrc, 2, None, b"m")),
            expected,
            "capped {ssrc}"
        );
        // RTCP about (or from) any stream is never capped.
        assert_eq!(send(&mut xdp, rtcp_rr(ssrc)), XdpAction::Tx, "RTCP {ssrc}");
    }
    xdp.set_room_cap(7, cap(2, true)).expect("audio only");
    for ssrc in all {
        let expected = if ssrc == audio || ssrc == other_room {
            XdpAction::Tx
        } else {
            XdpAction::Drop
        };
        assert_eq!(
            send(&mut xdp, rtp(ssrc, 3, None, b"m")),
            expected,
            "audio-only {ssrc}"
        );
    }
    xdp.clear_room_cap(7).expect("lift cap");
    xdp.remove_stream(high).expect("forget stream");
    for ssrc in all {
        assert_eq!(
            send(&mut xdp, rtp(ssrc, 4, None, b"m")),
            XdpAction::Tx,
            "lifted {ssrc}"
        );
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.drop_layer_cap, 2 + 3, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn dependency_descriptor_template_sets_the_temporal_layer() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    let mut temporal_by_template = [None; 64];
    // Templates 0..=2 are T0, T1, T2; template 9 is unknown and never capped.
    for (t, slot) in temporal_by_template.iter_mut().take(3).enumerate() {
        *slot = Some(t as u8);
    }
    let (one_byte_id, two_byte_id) = (3, 17);
    let ssrc_one = 500;
    let ssrc_two = 501;
    for (ssrc, ext_id) in [(ssrc_one, one_byte_id), (ssrc_two, two_byte_id)] {
        let dd = DependencyDescriptor {
            ext_id,
            temporal_by_template,
        };
        xdp.set_stream(ssrc, &video(9, 0, Some(dd)))
            .expect("svc stream");
    }
    xdp.set_room_cap(
        9,
        LayerCap {
            max_spatial: 0,
            max_temporal: Some(0),
            video_off: false,
        },
    )
    .expect("temporal cap");
    for (ssrc, one_byte) in [(ssrc_one, true), (ssrc_two, false)] {
        let ext = |template| {
            if one_byte {
                dd_one_byte(one_byte_id, template)
            } else {
                dd_two_byte(two_byte_id, template)
            }
        };
        for (template, expected) in [
            (0, XdpAction::Tx),
            (1, XdpAction::Drop),
            (2, XdpAction::Drop),
            (9, XdpAction::Tx),
        ] {
            let d = Datagram::new(SENDER4, LOCAL4, rtp(ssrc, 1, Some(ext(template)), b"svc"));
            let out = run(&mut xdp, &d.frame());
            assert_eq!(out.action, expected, "ssrc {ssrc} template {template}");
            if expected == XdpAction::Tx {
                assert_relayed(&d, &out.frame, EGRESS4, RECEIVER4);
            }
        }
    }
    // An extension block claiming more words than the packet has is malformed.
    let mut lying = dd_one_byte(one_byte_id, 0);
    lying[3] = 200;
    let d = Datagram::new(SENDER4, LOCAL4, rtp(ssrc_one, 1, Some(lying), b""));
    assert_dropped(&mut xdp, &d.frame(), "lying extension length");
    // No extension at all: the temporal layer is unknown, so it passes the cap.
    let d = Datagram::new(SENDER4, LOCAL4, rtp(ssrc_one, 1, None, b"plain"));
    assert_eq!(run(&mut xdp, &d.frame()).action, XdpAction::Tx);
    let c = xdp.counters().expect("counters");
    assert_eq!(c.drop_layer_cap, 4, "{c:?}");
    assert_eq!(c.drop_malformed, 1, "{c:?}");
    assert_balanced(&c);
}

/// Frames of every family/VLAN combination that the flow table would relay.
fn relayable() -> Vec<Datagram> {
    let mut out = Vec::new();
    for (src, dst) in [(SENDER4, LOCAL4), (SENDER6, LOCAL6)] {
        for vlan in [None, Some(42)] {
            let mut d = Datagram::new(src, dst, rtp(77, 1, None, &[0x5a; 40]));
            d.vlan = vlan;
            out.push(d);
        }
    }
    out
}

fn relay_both(xdp: &mut XdpIngress) {
    relay_flow(xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    relay_flow(xdp, SENDER6, LOCAL6, EGRESS6, RECEIVER6);
}

#[test]
fn truncated_frames_are_never_forwarded() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_both(&mut xdp);
    for d in relayable() {
        let frame = d.frame();
        assert_eq!(
            run(&mut xdp, &frame).action,
            XdpAction::Tx,
            "the whole frame relays"
        );
        for cut in 0..frame.len() {
            // The kernel refuses frames shorter than an Ethernet header.
            let Ok(out) = xdp.test_run(&frame[..cut]) else {
                assert!(cut < 14, "cut {cut} refused");
                continue;
            };
            assert!(
                matches!(out.action, XdpAction::Pass | XdpAction::Drop),
                "{} cut at {cut}: {:?}",
                d.src,
                out.action
            );
            if out.action == XdpAction::Pass {
                assert_eq!(out.frame, &frame[..cut], "passed frames are untouched");
            }
        }
    }
    assert_balanced(&xdp.counters().expect("counters"));
}

#[test]
fn hostile_ipv4_shapes_are_never_forwarded() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_both(&mut xdp);
    let d = Datagram::new(SENDER4, LOCAL4, rtp(77, 1, None, &[0x5a; 40]));
    let good = d.frame();
    let l3 = 14;
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        f(&mut frame);
        frame
    };
    let set16 = |frame: &mut Vec<u8>, at: usize, v: u16| {
        frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
    };
    // IPv4 options: a 24-byte header with an end-of-options word.
    let with_options = {
        let mut frame = good[..l3].to_vec();
        let mut ip = good[l3..l3 + 20].to_vec();
        ip[0] = 0x46;
        ip[2..4].copy_from_slice(&((good.len() - l3 + 4) as u16).to_be_bytes());
        ip.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&good[l3 + 20..]);
        frame
    };
    let passed = [
        (with_options, "IPv4 options"),
        (edit(&|f| f[l3 + 6] |= 0x20), "first fragment (MF)"),
        (edit(&|f| set16(f, l3 + 6, 0x0010)), "later fragment"),
    ];
    for (frame, what) in &passed {
        assert_passed_untouched(&mut xdp, frame, what);
    }
    let dropped = [
        (edit(&|f| f[l3] = 0x65), "version 6 in an IPv4 ethertype"),
        (edit(&|f| f[l3] = 0x44), "IHL below 5"),
        (
            edit(&|f| set16(f, l3 + 2, 3000)),
            "IP total length past the frame",
        ),
        (
            edit(&|f| set16(f, l3 + 2, 24)),
            "IP total length shorter than a UDP header",
        ),
        (
            edit(&|f| set16(f, l3 + 24, 2000)),
            "UDP length past the IP payload",
        ),
        (
            edit(&|f| set16(f, l3 + 24, 7)),
            "UDP length below the header",
        ),
        (
            edit(&|f| set16(f, l3 + 24, 8 + 11)),
            "RTP shorter than its fixed header",
        ),
    ];
    for (frame, what) in &dropped {
        assert_dropped(&mut xdp, frame, what);
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.slow_path, 3, "{c:?}");
    assert_eq!(c.drop_malformed, dropped.len() as u64, "{c:?}");
    assert_eq!(c.forwarded(), 0, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn hostile_ipv6_and_vlan_shapes_are_never_forwarded() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_both(&mut xdp);
    let d = Datagram::new(SENDER6, LOCAL6, rtp(77, 1, None, &[0x5a; 40]));
    let good = d.frame();
    let l3 = 14;
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        f(&mut frame);
        frame
    };
    // A destination-options header (8 bytes, PadN) in front of UDP.
    let with_ext = {
        let mut frame = good[..l3 + 40].to_vec();
        frame[l3 + 6] = 60;
        let plen = (good.len() - l3 - 40 + 8) as u16;
        frame[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        frame.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        frame.extend_from_slice(&good[l3 + 40..]);
        frame
    };
    let mut qinq = Datagram::new(SENDER4, LOCAL4, rtp(77, 1, None, b"x"));
    qinq.vlan = Some(5);
    let mut qinq = qinq.frame();
    qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x07]);
    let passed = [
        (with_ext, "IPv6 extension header"),
        (edit(&|f| f[l3 + 6] = 6), "TCP"),
        (qinq, "two VLAN tags"),
    ];
    for (frame, what) in &passed {
        assert_passed_untouched(&mut xdp, frame, what);
    }
    let dropped = [
        (edit(&|f| f[l3] = 0x40), "version 4 in an IPv6 ethertype"),
        (
            edit(&|f| f[l3 + 4..l3 + 6].copy_from_slice(&3000u16.to_be_bytes())),
            "payload length past the frame",
        ),
        (
            edit(&|f| f[l3 + 44..l3 + 46].copy_from_slice(&2000u16.to_be_bytes())),
            "UDP length past the payload",
        ),
        (
            edit(&|f| f[l3 + 46..l3 + 48].fill(0)),
            "zero UDP checksum over IPv6",
        ),
    ];
    for (frame, what) in &dropped {
        assert_dropped(&mut xdp, frame, what);
    }
    // An IPv6 packet whose source is the IPv4 sender's address, v4-mapped:
    // it is no packet of the IPv4 flow (IPv4 flows are looked up apart).
    let mapped = Datagram::new(
        "[::ffff:198.18.0.1]:5004",
        LOCAL6,
        rtp(77, 1, None, &[0x5a; 40]),
    );
    assert_dropped(&mut xdp, &mapped.frame(), "v4-mapped IPv6 sender");
    let c = xdp.counters().expect("counters");
    assert_eq!(c.forwarded(), 0, "{c:?}");
    assert_eq!(c.drop_malformed, dropped.len() as u64, "{c:?}");
    assert_eq!(c.drop_unknown_flow, 1, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn malformed_frames_can_be_passed_up_instead_but_never_forwarded() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    xdp.set_config(IngressConfig {
        port_min: MEDIA_PORT,
        port_max: MEDIA_PORT + 99,
        drop_malformed: 0,
        drop_unknown: 1,
        _pad: [0; 2],
    })
    .expect("config");
    relay_both(&mut xdp);
    let mut frame = Datagram::new(SENDER4, LOCAL4, rtp(1, 1, None, b"x")).frame();
    frame[14 + 24..14 + 26].copy_from_slice(&900u16.to_be_bytes());
    assert_passed_untouched(&mut xdp, &frame, "lying UDP length");
    assert_eq!(xdp.counters().expect("counters").malformed_passed, 1);
}

#[test]
fn invalid_flows_streams_and_caps_are_refused() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    let flow = FlowMatch {
        remote: sock(SENDER4),
        local_port: MEDIA_PORT,
    };
    let too_many = vec![target(EGRESS4, RECEIVER4); MAX_RELAY_FANOUT + 1];
    let max = vec![target(EGRESS4, RECEIVER4); MAX_RELAY_FANOUT];
    xdp.set_flow(flow, &FlowAction::Relay(max))
        .expect("the maximum fan-out is fine");
    let err = xdp
        .set_flow(flow, &FlowAction::Relay(too_many))
        .unwrap_err();
    assert!(
        matches!(
            err,
            XdpError::FanoutTooLarge {
                requested: 17,
                max: 16
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("exceeds the maximum of 16"),
        "{err}"
    );
    type Case = (FlowMatch, FlowAction, fn(&XdpError) -> bool);
    let cases: [Case; 5] = [
        (flow, FlowAction::Relay(vec![]), |e| {
            matches!(e, XdpError::NoDestinations)
        }),
        (
            flow,
            FlowAction::Relay(vec![target(EGRESS6, RECEIVER6)]),
            |e| matches!(e, XdpError::FamilyMismatch { .. }),
        ),
        (
            FlowMatch {
                local_port: MEDIA_PORT + 100,
                ..flow
            },
            FlowAction::ToUserspace,
            |e| matches!(e, XdpError::PortOutsideRange { port: 40100, .. }),
        ),
        (
            flow,
            FlowAction::Relay(vec![RelayTarget {
                ifindex: 9999,
                ..target(EGRESS4, RECEIVER4)
            }]),
            |e| matches!(e, XdpError::EgressNotRegistered(9999)),
        ),
        (
            flow,
            FlowAction::Relay(vec![RelayTarget {
                ifindex: 0,
                ..target(EGRESS4, RECEIVER4)
            }]),
            |e| matches!(e, XdpError::NoInterface),
        ),
    ];
    for (flow, action, is_expected) in cases {
        let err = xdp.set_flow(flow, &action).unwrap_err();
        assert!(is_expected(&err), "{action:?}: {err}");
    }
    let bad_dd = video(
        1,
        0,
        Some(DependencyDescriptor {
            ext_id: 15,
            temporal_by_template: [None; 64],
        }),
    );
    assert!(matches!(
        xdp.set_stream(1, &bad_dd),
        Err(XdpError::BadExtensionId(15))
    ));
    let audio_dd = StreamSpec {
        kind: StreamKind::Audio,
        ..video(
            1,
            0,
            Some(DependencyDescriptor {
                ext_id: 3,
                temporal_by_template: [None; 64],
            }),
        )
    };
    assert!(matches!(
        xdp.set_stream(1, &audio_dd),
        Err(XdpError::DependencyDescriptorOnAudio)
    ));
    let reserved = LayerCap {
        max_spatial: 0,
        max_temporal: Some(255),
        video_off: false,
    };
    assert!(matches!(
        xdp.set_room_cap(1, reserved),
        Err(XdpError::BadTemporalLayer(255))
    ));
    assert!(matches!(
        xdp.add_egress("no-such-if0"),
        Err(XdpError::UnknownInterface(_))
    ));
}

fn flow_match(sender: &str, local: &str) -> FlowMatch {
    FlowMatch {
        remote: sock(sender),
        local_port: sock(local).port(),
    }
}

#[test]
fn a_port_with_one_ipv4_sender_is_relayed_through_the_port_index() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    assert!(!xdp.port_indexed(MEDIA_PORT).expect("index"));
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    assert!(xdp.port_indexed(MEDIA_PORT).expect("index"));
    let d = Datagram::new(SENDER4, LOCAL4, rtp(9, 1, None, b"indexed"));
    let out = run(&mut xdp, &d.frame());
    assert_eq!(out.action, XdpAction::Tx);
    assert_relayed(&d, &out.frame, EGRESS4, RECEIVER4);
    // Another sender, or the sender from another port, on the indexed port
    // misses the index and the flow map: unknown, as before.
    for unknown in ["198.18.0.66:5004", "198.18.0.1:5005"] {
        let frame = Datagram::new(unknown, LOCAL4, rtp(9, 1, None, b"m")).frame();
        assert_dropped(&mut xdp, &frame, "unknown sender on an indexed port");
    }
    // IPv6 flows never use the index.
    relay_flow(&mut xdp, SENDER6, "[2001:2::2]:40001", EGRESS6, RECEIVER6);
    assert!(!xdp.port_indexed(MEDIA_PORT + 1).expect("index"));
    let c = xdp.counters().expect("counters");
    assert_eq!((c.tx, c.drop_unknown_flow), (1, 2), "{c:?}");
    assert_balanced(&c);
}

#[test]
fn a_port_shared_by_two_ipv4_senders_falls_back_to_the_flow_map() {
    if !privileged_or_skip() {
        return;
    }
    const SECOND: &str = "198.18.0.9:7000";
    const RECEIVER2: &str = "198.18.1.8:6002";
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    relay_flow(&mut xdp, SECOND, LOCAL4, EGRESS4, RECEIVER2);
    assert!(!xdp.port_indexed(MEDIA_PORT).expect("index"));
    let first = Datagram::new(SENDER4, LOCAL4, rtp(1, 1, None, b"first"));
    let second = Datagram::new(SECOND, LOCAL4, rtp(2, 1, None, b"second"));
    for (d, receiver) in [(&first, RECEIVER4), (&second, RECEIVER2)] {
        let out = run(&mut xdp, &d.frame());
        assert_eq!(out.action, XdpAction::Tx);
        assert_relayed(d, &out.frame, EGRESS4, receiver);
    }
    // Back to one sender: the port is indexed again, for the one left.
    xdp.remove_flow(&flow_match(SENDER4, LOCAL4))
        .expect("remove");
    assert!(xdp.port_indexed(MEDIA_PORT).expect("index"));
    assert_dropped(&mut xdp, &first.frame(), "removed sender");
    let out = run(&mut xdp, &second.frame());
    assert_eq!(out.action, XdpAction::Tx);
    assert_relayed(&second, &out.frame, EGRESS4, RECEIVER2);
    let c = xdp.counters().expect("counters");
    assert_eq!((c.tx, c.drop_unknown_flow), (3, 1), "{c:?}");
    assert_balanced(&c);
}

#[test]
fn replacing_an_indexed_flow_switches_every_following_frame_whole() {
    if !privileged_or_skip() {
        return;
    }
    let receivers = ["198.18.1.7:6000", "198.18.1.9:6100"];
    let egresses = ["198.18.1.2:40010", "198.18.1.3:40020"];
    let mut xdp = relay_ingress(true);
    let d = Datagram::new(SENDER4, LOCAL4, rtp(5, 1, None, b"flip"));
    let frame = d.frame();
    // Each replacement publishes a fresh slot (the old one waits in
    // quarantine); every frame is checked against the flow it was sent under.
    for i in 0..300 {
        let (egress, receiver) = (egresses[i % 2], receivers[i % 2]);
        relay_flow(&mut xdp, SENDER4, LOCAL4, egress, receiver);
        assert!(xdp.port_indexed(MEDIA_PORT).expect("index"));
        for _ in 0..3 {
            let out = run(&mut xdp, &frame);
            assert_eq!(out.action, XdpAction::Tx, "replacement {i}");
            assert_relayed(&d, &out.frame, egress, receiver);
        }
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.tx, 900, "{c:?}");
    assert_balanced(&c);
}

#[test]
fn removing_an_indexed_flow_clears_the_index_and_the_flow() {
    if !privileged_or_skip() {
        return;
    }
    let mut xdp = relay_ingress(true);
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    relay_flow(
        &mut xdp,
        "198.18.0.1:5004",
        "198.18.0.2:40001",
        EGRESS4,
        RECEIVER4,
    );
    let kept = Datagram::new(SENDER4, "198.18.0.2:40001", rtp(3, 1, None, b"kept")).frame();
    let frame = Datagram::new(SENDER4, LOCAL4, rtp(3, 1, None, b"m")).frame();
    assert_eq!(run(&mut xdp, &frame).action, XdpAction::Tx);
    xdp.remove_flow(&flow_match(SENDER4, LOCAL4))
        .expect("remove");
    assert!(!xdp.port_indexed(MEDIA_PORT).expect("index"));
    assert!(xdp.port_indexed(MEDIA_PORT + 1).expect("index"));
    assert_dropped(&mut xdp, &frame, "after removal");
    assert_eq!(
        run(&mut xdp, &kept).action,
        XdpAction::Tx,
        "other port kept"
    );
    // Removing a sender the port never had leaves its index alone.
    xdp.remove_flow(&flow_match("198.18.0.77:5004", "198.18.0.2:40001"))
        .expect("remove absent");
    assert!(xdp.port_indexed(MEDIA_PORT + 1).expect("index"));
    relay_flow(&mut xdp, SENDER4, LOCAL4, EGRESS4, RECEIVER4);
    assert_eq!(run(&mut xdp, &frame).action, XdpAction::Tx, "added again");
    let c = xdp.counters().expect("counters");
    assert_eq!((c.tx, c.drop_unknown_flow), (3, 1), "{c:?}");
    assert_balanced(&c);
}
