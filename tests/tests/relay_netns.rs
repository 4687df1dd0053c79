//! The relay fast path on real veth pairs between network namespaces: a
//! sender, the appliance (XDP in driver mode on every veth, TC fan-out on
//! clsact ingress) and receivers, with real UDP sockets at both ends. Needs
//! root; skipped with a message otherwise (fails under `CI=true`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use dataplane::xdp::{
    ifindex, AttachedMode, FlowAction, FlowMatch, LayerCap, RelayTarget, StreamKind, StreamSpec,
    XdpIngress, XdpPass,
};
use e2e::{parse_udp_frame, privileged_or_skip, Capture, Lab, Link};
use switchboard_common::{Counters, IngressConfig};

const MEDIA_PORT: u16 = 40_000;
/// Packets per stream in each phase: small enough for default socket buffers.
const BURST: usize = 100;
/// No test waits longer than this for traffic.
const DEADLINE: Duration = Duration::from_secs(5);

/// The appliance's programs and the peers' pass programs, detached on drop.
struct Appliance {
    xdp: XdpIngress,
    _peers: Vec<XdpPass>,
}

impl Appliance {
    fn start(lab: &Lab) -> Self {
        // Native XDP on veth delivers TX/REDIRECT frames only to a peer with
        // an XDP program of its own.
        let peers = lab
            .links
            .iter()
            .map(|l| {
                let ifname = l.peer.ifname.clone();
                let pass = l
                    .peer
                    .ns
                    .run(move || XdpPass::attach(&ifname))
                    .expect("XDP pass on peer");
                assert_eq!(pass.mode(), AttachedMode::Driver, "peer {}", l.peer.ifname);
                pass
            })
            .collect();
        let links = lab.links.clone();
        let xdp = lab.appliance.run(move || {
            let mut xdp = XdpIngress::load(IngressConfig {
                port_min: MEDIA_PORT,
                port_max: MEDIA_PORT + 99,
                drop_malformed: 1,
                drop_unknown: 1,
                _pad: [0; 2],
            })
            .expect("load");
            for l in &links {
                let mode = xdp.attach(&l.appliance.ifname).expect("attach");
                eprintln!("XDP on {} in {mode} mode", l.appliance.ifname);
                assert_eq!(mode, AttachedMode::Driver, "veth supports native XDP");
                xdp.add_local_address(IpAddr::V4(l.appliance.v4))
                    .expect("local v4");
                xdp.add_local_address(IpAddr::V6(l.appliance.v6))
                    .expect("local v6");
            }
            xdp
        });
        Self { xdp, _peers: peers }
    }

    fn counters(&self) -> Counters {
        self.xdp.counters().expect("counters")
    }
}

/// The appliance's end of `link` as a relay destination towards `peer_port`.
fn target(lab: &Lab, link: &Link, v6: bool, local_port: u16, peer_port: u16) -> RelayTarget {
    let name = link.appliance.ifname.clone();
    let ifindex = lab.appliance.run(move || ifindex(&name)).expect("ifindex");
    let (local, remote): (IpAddr, IpAddr) = if v6 {
        (link.appliance.v6.into(), link.peer.v6.into())
    } else {
        (link.appliance.v4.into(), link.peer.v4.into())
    };
    RelayTarget {
        ifindex,
        local: SocketAddr::new(local, local_port),
        remote: SocketAddr::new(remote, peer_port),
        src_mac: link.appliance.mac,
        next_hop_mac: link.peer.mac,
    }
}

fn peer_addr(link: &Link, v6: bool, port: u16) -> SocketAddr {
    let ip: IpAddr = if v6 {
        link.peer.v6.into()
    } else {
        link.peer.v4.into()
    };
    SocketAddr::new(ip, port)
}

fn appliance_addr(link: &Link, v6: bool, port: u16) -> SocketAddr {
    let ip: IpAddr = if v6 {
        link.appliance.v6.into()
    } else {
        link.appliance.v4.into()
    };
    SocketAddr::new(ip, port)
}

/// A UDP socket bound in `link`'s peer namespace.
fn peer_socket(link: &Link, addr: SocketAddr) -> UdpSocket {
    let sock = link
        .peer
        .ns
        .run(move || UdpSocket::bind(addr))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    sock
}

fn rtp(ssrc: u32, seq: u16, marker_pt: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, marker_pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    // An opaque body standing in for SRTP ciphertext and tag.
    p.extend((0..len).map(|i| (i as u8) ^ (seq as u8) ^ (ssrc as u8)));
    p
}

fn rtcp_rr(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&u32::from(seq).to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

/// Sends every datagram, pausing briefly every few so no queue overflows.
fn send_all(sock: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    for (i, d) in datagrams.iter().enumerate() {
        sock.send_to(d, to).expect("send");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Receives until `expected` datagrams have arrived and then nothing more
/// for a read timeout, or until the deadline.
fn receive(sock: &UdpSocket, expected: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < DEADLINE {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if got.len() >= expected {
                    break;
                }
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

/// Runs `send` while every socket in `receivers` collects what it expects
/// (so no receive buffer has to hold a whole burst); returns what each got.
fn exchange(
    receivers: &[(&UdpSocket, usize)],
    send: impl FnOnce(),
) -> Vec<Vec<(Vec<u8>, SocketAddr)>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .iter()
            .map(|&(sock, expected)| scope.spawn(move || receive(sock, expected)))
            .collect();
        send();
        handles
            .into_iter()
            .map(|h| h.join().expect("receiver thread"))
            .collect()
    })
}

fn assert_same_datagrams(
    got: &[(Vec<u8>, SocketAddr)],
    sent: &[Vec<u8>],
    from: SocketAddr,
    what: &str,
) {
    assert_eq!(got.len(), sent.len(), "{what}: datagram count");
    for (i, ((payload, src), expected)) in got.iter().zip(sent).enumerate() {
        assert_eq!(*src, from, "{what}: source of datagram {i}");
        assert_eq!(
            payload, expected,
            "{what}: datagram {i} must be byte-identical"
        );
    }
}

/// Checks the frames a capture saw on a receiver's interface: exactly the
/// datagrams sent, from the appliance's egress address, TTL/hop limit one
/// lower than the sender's 64, every checksum valid when recomputed.
fn assert_on_the_wire(capture: &Capture, sent: &[Vec<u8>], target: &RelayTarget, what: &str) {
    let frames = capture.drain(sent.len() + 50);
    let udp: Vec<_> = frames
        .iter()
        .filter_map(|f| parse_udp_frame(f).unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect();
    assert_eq!(udp.len(), sent.len(), "{what}: UDP frames on the wire");
    for (i, (u, payload)) in udp.iter().zip(sent).enumerate() {
        assert_eq!(u.src, target.local, "{what} {i}: source");
        assert_eq!(u.dst, target.remote, "{what} {i}: destination");
        assert_eq!(u.src_mac, target.src_mac, "{what} {i}: source MAC");
        assert_eq!(
            u.dst_mac, target.next_hop_mac,
            "{what} {i}: destination MAC"
        );
        assert_eq!(u.ttl, 63, "{what} {i}: TTL / hop limit");
        assert_eq!(&u.payload, payload, "{what} {i}: payload");
    }
}

fn capture(link: &Link) -> Capture {
    let ifname = link.peer.ifname.clone();
    link.peer
        .ns
        .run(move || Capture::open(&ifname))
        .expect("capture")
}

fn single_destination(v6: bool) {
    let lab = Lab::star(2).expect("lab");
    let mut app = Appliance::start(&lab);
    let (sender_link, receiver_link) = (&lab.links[0], &lab.links[1]);

    // Redirect: sender → a1 → XDP_REDIRECT → a2 → receiver.
    let redirected_from = peer_addr(sender_link, v6, 5004);
    let relay_out = target(&lab, receiver_link, v6, MEDIA_PORT + 2, 6000);
    app.xdp
        .set_flow(
            FlowMatch {
                remote: redirected_from,
                local_port: MEDIA_PORT,
            },
            &FlowAction::Relay(vec![relay_out]),
        )
        .expect("redirect flow");
    // TX: the same sender from another port is relayed back out of a1 to itself.
    let reflected_from = peer_addr(sender_link, v6, 5006);
    let relay_back = target(&lab, sender_link, v6, MEDIA_PORT + 4, 7000);
    app.xdp
        .set_flow(
            FlowMatch {
                remote: reflected_from,
                local_port: MEDIA_PORT,
            },
            &FlowAction::Relay(vec![relay_back]),
        )
        .expect("tx flow");

    let sender = peer_socket(sender_link, redirected_from);
    let sender2 = peer_socket(sender_link, reflected_from);
    let stranger = peer_socket(sender_link, peer_addr(sender_link, v6, 5999));
    let receiver = peer_socket(receiver_link, relay_out.remote);
    let wire = capture(receiver_link);
    let reflected = peer_socket(sender_link, relay_back.remote);
    // The appliance's own socket on the media port: STUN goes up to it.
    let media = appliance_addr(sender_link, v6, MEDIA_PORT);
    let appliance_sock = lab
        .appliance
        .run(move || UdpSocket::bind(media))
        .expect("bind media");
    appliance_sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");

    let mut sent: Vec<Vec<u8>> = (0..BURST as u16)
        .map(|s| rtp(0x1111, s, 96, 160 + s as usize))
        .collect();
    sent.extend((0..10).map(|s| rtcp_rr(0x1111, s)));
    let back: Vec<Vec<u8>> = (0..BURST as u16).map(|s| rtp(0x2222, s, 111, 60)).collect();
    let unknown: Vec<Vec<u8>> = (0..10).map(|s| rtp(0x3333, s, 96, 60)).collect();
    let stun = vec![
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    ];
    let got = exchange(
        &[
            (&receiver, sent.len()),
            (&reflected, back.len()),
            (&appliance_sock, 1),
        ],
        || {
            send_all(&sender, media, &sent);
            send_all(&sender2, media, &back);
            send_all(&stranger, media, &unknown);
            send_all(&sender, media, std::slice::from_ref(&stun));
        },
    );
    assert_same_datagrams(&got[0], &sent, relay_out.local, "redirected");
    assert_on_the_wire(&wire, &sent, &relay_out, "redirected");
    assert_same_datagrams(&got[1], &back, relay_back.local, "XDP_TX");
    assert_eq!(
        got[2],
        vec![(stun, redirected_from)],
        "only STUN reaches the appliance's socket"
    );

    let c = app.counters();
    assert_eq!(c.redirect, sent.len() as u64, "{c:?}");
    assert_eq!(c.tx, back.len() as u64, "{c:?}");
    assert_eq!(c.drop_unknown_flow, unknown.len() as u64, "{c:?}");
    assert_eq!(c.stun, 1, "{c:?}");
    assert_eq!(c.drop_malformed + c.drop_ttl + c.drop_no_egress, 0, "{c:?}");
    app.xdp.detach_all().expect("detach");
}

#[test]
fn relays_ipv4_with_redirect_and_tx() {
    if !privileged_or_skip() {
        return;
    }
    single_destination(false);
}

#[test]
fn relays_ipv6_with_redirect_and_tx() {
    if !privileged_or_skip() {
        return;
    }
    single_destination(true);
}

fn fan_out(v6: bool) {
    let lab = Lab::star(4).expect("lab");
    let mut app = Appliance::start(&lab);
    let sender_link = &lab.links[0];
    let from = peer_addr(sender_link, v6, 5004);
    let targets: Vec<RelayTarget> = lab.links[1..]
        .iter()
        .enumerate()
        .map(|(i, l)| target(&lab, l, v6, MEDIA_PORT + 10 + i as u16, 6000 + i as u16))
        .collect();
    app.xdp
        .set_flow(
            FlowMatch {
                remote: from,
                local_port: MEDIA_PORT,
            },
            &FlowAction::Relay(targets.clone()),
        )
        .expect("fan-out flow");
    let receivers: Vec<UdpSocket> = lab.links[1..]
        .iter()
        .zip(&targets)
        .map(|(l, t)| peer_socket(l, t.remote))
        .collect();
    let captures: Vec<Capture> = lab.links[1..].iter().map(capture).collect();
    let sender = peer_socket(sender_link, from);
    let mut sent: Vec<Vec<u8>> = (0..BURST as u16).map(|s| rtp(0xfa, s, 96, 200)).collect();
    sent.extend((0..10).map(|s| rtcp_rr(0xfa, s)));
    let expect: Vec<(&UdpSocket, usize)> = receivers.iter().map(|r| (r, sent.len())).collect();
    let got = exchange(&expect, || {
        send_all(&sender, appliance_addr(sender_link, v6, MEDIA_PORT), &sent)
    });
    for (i, ((got, t), wire)) in got.iter().zip(&targets).zip(&captures).enumerate() {
        let what = format!("receiver {i}");
        assert_same_datagrams(got, &sent, t.local, &what);
        assert_on_the_wire(wire, &sent, t, &what);
    }
    let c = app.counters();
    assert_eq!(c.to_fanout, sent.len() as u64, "{c:?}");
    assert_eq!(c.cloned, 3 * sent.len() as u64, "{c:?}");
    assert_eq!(c.clone_failed, 0, "{c:?}");
}

#[test]
fn fans_out_ipv4_to_three_receivers_through_tc() {
    if !privileged_or_skip() {
        return;
    }
    fan_out(false);
}

#[test]
fn fans_out_ipv6_to_three_receivers_through_tc() {
    if !privileged_or_skip() {
        return;
    }
    fan_out(true);
}

#[test]
fn dropping_the_loader_detaches_xdp_and_tc() {
    if !privileged_or_skip() {
        return;
    }
    let lab = Lab::star(1).expect("lab");
    let app = Appliance::start(&lab);
    let ifname = lab.links[0].appliance.ifname.clone();
    let attached = |ifname: String| {
        lab.appliance.run(move || {
            let (_, tcx) = aya::programs::SchedClassifier::query_tcx(
                &ifname,
                aya::programs::TcAttachType::Ingress,
            )
            .expect("query tcx");
            let out = std::process::Command::new("ip")
                .args(["-d", "link", "show", "dev", &ifname])
                .output()
                .expect("ip link");
            let xdp = String::from_utf8_lossy(&out.stdout).contains("prog/xdp");
            (xdp, tcx.len())
        })
    };
    assert_eq!(attached(ifname.clone()), (true, 1), "attached while loaded");
    drop(app);
    assert_eq!(attached(ifname), (false, 0), "nothing left after drop");
}

#[test]
fn lowering_a_room_cap_drops_exactly_the_capped_ssrcs() {
    if !privileged_or_skip() {
        return;
    }
    let lab = Lab::star(2).expect("lab");
    let mut app = Appliance::start(&lab);
    let (sender_link, receiver_link) = (&lab.links[0], &lab.links[1]);
    let from = peer_addr(sender_link, false, 5004);
    let out = target(&lab, receiver_link, false, MEDIA_PORT + 2, 6000);
    app.xdp
        .set_flow(
            FlowMatch {
                remote: from,
                local_port: MEDIA_PORT,
            },
            &FlowAction::Relay(vec![out]),
        )
        .expect("flow");
    let room = 42;
    let audio = 0xa0;
    let layers = [0xb0, 0xb1, 0xb2];
    app.xdp
        .set_stream(
            audio,
            &StreamSpec {
                room,
                kind: StreamKind::Audio,
                spatial_layer: 0,
                dependency_descriptor: None,
            },
        )
        .expect("audio");
    for (layer, ssrc) in layers.iter().enumerate() {
        let spec = StreamSpec {
            room,
            kind: StreamKind::Video,
            spatial_layer: layer as u8,
            dependency_descriptor: None,
        };
        app.xdp.set_stream(*ssrc, &spec).expect("video");
    }
    let sender = peer_socket(sender_link, from);
    let receiver = peer_socket(receiver_link, out.remote);
    let to = appliance_addr(sender_link, false, MEDIA_PORT);
    // Interleaved like a real publisher: audio, three layers, and RTCP.
    let phase = |first_seq: u16| -> Vec<Vec<u8>> {
        (first_seq..first_seq + BURST as u16 / 2)
            .flat_map(|s| {
                let mut burst = vec![rtp(audio, s, 111, 80)];
                burst.extend(layers.iter().map(|&l| rtp(l, s, 96, 300)));
                burst.push(rtcp_rr(layers[2], s));
                burst
            })
            .collect()
    };
    let count_by_ssrc = |got: &[(Vec<u8>, SocketAddr)]| {
        let mut by = BTreeMap::new();
        for (p, _) in got {
            let key = if (192..=223).contains(&p[1]) {
                0xc0
            } else {
                u32::from_be_bytes([p[8], p[9], p[10], p[11]])
            };
            *by.entry(key).or_insert(0usize) += 1;
        }
        by
    };
    let n = BURST / 2;

    let uncapped = phase(0);
    let got = exchange(&[(&receiver, uncapped.len())], || {
        send_all(&sender, to, &uncapped)
    })
    .remove(0);
    assert_same_datagrams(&got, &uncapped, out.local, "uncapped");

    app.xdp
        .set_room_cap(
            room,
            LayerCap {
                max_spatial: 0,
                max_temporal: None,
                video_off: false,
            },
        )
        .expect("cap");
    let before = app.counters();
    let capped = phase(1000);
    let got = exchange(&[(&receiver, capped.len() - 2 * n)], || {
        send_all(&sender, to, &capped)
    })
    .remove(0);
    let expected: BTreeMap<u32, usize> = [(audio, n), (layers[0], n), (0xc0, n)].into();
    assert_eq!(
        count_by_ssrc(&got),
        expected,
        "audio, the base layer and RTCP pass; layers 1 and 2 do not"
    );
    let kept: Vec<Vec<u8>> = capped
        .iter()
        .filter(|p| {
            (192..=223).contains(&p[1])
                || ![layers[1], layers[2]].contains(&u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        })
        .cloned()
        .collect();
    assert_same_datagrams(&got, &kept, out.local, "capped");
    let after = app.counters();
    assert_eq!(
        after.drop_layer_cap - before.drop_layer_cap,
        2 * n as u64,
        "{after:?}"
    );

    app.xdp.clear_room_cap(room).expect("lift");
    let lifted = phase(2000);
    let got = exchange(&[(&receiver, lifted.len())], || {
        send_all(&sender, to, &lifted)
    })
    .remove(0);
    assert_same_datagrams(&got, &lifted, out.local, "lifted");
}

#[test]
fn labs_remove_their_namespaces_even_when_a_test_panics() {
    if !privileged_or_skip() {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::star(2).expect("lab");
        let _app = Appliance::start(&lab);
        let mut n = names.lock().unwrap();
        n.push(lab.appliance.name().to_owned());
        n.extend(lab.links.iter().map(|l| l.peer.ns.name().to_owned()));
        drop(n);
        panic!("deliberate");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    for name in names {
        assert!(
            !std::path::Path::new("/var/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
}
