//! A room cascaded across two appliances: one publisher, subscribers on
//! both boxes.
//!
//! The origin appliance (the lab's centre namespace) terminates the
//! publisher's leg in its SFU worker and, in its XDP/TC programs, sends one
//! copy of each of the publisher's packets, still encrypted as sent, over a
//! trunk to the downstream appliance (its own namespace), with the original
//! passed up to the origin's worker unchanged. The downstream worker takes
//! the trunk as a publisher leg keyed with the publisher's SRTP key and fans
//! it out to its own subscribers. Every subscriber on both boxes decrypts
//! with its own key and checks continuity and payload integrity; the origin
//! sends exactly one trunk copy per published packet.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use dataplane::sfu::peer::{test_key, Peer, PeerConfig, PeerLayer};
use dataplane::sfu::{
    Command, ExtensionIds, LegId, MediaConfig, MediaKind, RoomId, SubscribeSpec, VideoCodec,
};
use dataplane::srtp::SrtpProfile;
use dataplane::worker::{Engine, Worker, WorkerConfig};
use dataplane::xdp::{ifindex, AttachedMode, FlowAction, FlowMatch, RelayTarget, XdpIngress};
use e2e::sfu::{drive, UdpPeer};
use e2e::{privileged_or_skip, Lab};
use switchboard_common::IngressConfig;

const ROOM: RoomId = RoomId(7);
/// The media port of both appliances' workers.
const WORKER_PORT: u16 = 40_000;
/// Subscribers on each box.
const SUBSCRIBERS: usize = 3;
const SECONDS: u64 = 3;

fn media() -> MediaConfig {
    MediaConfig {
        audio_pt: Some(111),
        video: Some((96, VideoCodec::Vp8)),
        rtx_pt: Some(97),
        extensions: ExtensionIds {
            rid: None,
            abs_send_time: Some(2),
            transport_cc: Some(3),
            audio_level: None,
        },
        nack: true,
    }
}

/// Participant `i`: the publisher (0) sends audio and one video layer;
/// subscribers send nothing. Each has its own keys.
fn peer_config(i: u32, publisher: bool) -> PeerConfig {
    let profile = [SrtpProfile::AeadAes128Gcm, SrtpProfile::AesCm128HmacSha1_80][i as usize % 2];
    let base = 0x0100_0000 * (i + 1);
    PeerConfig {
        profile,
        send_key: test_key(profile, 1000 + u64::from(i)),
        recv_key: test_key(profile, 2000 + u64::from(i)),
        media: media(),
        rtcp_ssrc: base + 0xff,
        audio_ssrc: publisher.then_some(base + 1),
        video: if publisher {
            vec![PeerLayer {
                rid: None,
                ssrc: base + 0x10,
                kbps: 800,
            }]
        } else {
            Vec::new()
        },
        fps: 30,
        audio_payload: 80,
        max_video_payload: 1100,
        keyframe_interval: 0,
        seed: 77 + u64::from(i),
    }
}

fn out_ssrcs(sub: u32) -> SubscribeSpec {
    let base = 0x7000_0000 + sub * 0x10;
    SubscribeSpec {
        audio_ssrc: base + 1,
        video_ssrc: base + 2,
        video_rtx_ssrc: base + 3,
    }
}

fn spawn_worker(ns: &e2e::Netns) -> Result<Worker> {
    let config = WorkerConfig::new(
        Engine::IoUring,
        SocketAddr::from(([0, 0, 0, 0], WORKER_PORT)),
    );
    Ok(ns.run(move || Worker::spawn(config))?)
}

#[test]
fn one_publisher_fans_out_on_two_appliances_over_an_xdp_trunk() -> Result<()> {
    if !privileged_or_skip() {
        return Ok(());
    }
    // Link 1: the publisher. Link 2: the downstream appliance. Link 3: the
    // origin's own subscribers.
    let lab = Lab::star(3)?;
    let (pub_link, trunk_link, sub_link) = (&lab.links[0], &lab.links[1], &lab.links[2]);

    // The origin: XDP and TC on every interface, the worker behind them.
    let links = lab.links.clone();
    let trunk_if = trunk_link.appliance.ifname.clone();
    let mut xdp = lab.appliance.run(move || -> Result<(XdpIngress, u32)> {
        let mut xdp = XdpIngress::load(IngressConfig {
            port_min: WORKER_PORT,
            port_max: WORKER_PORT,
            drop_malformed: 1,
            // The downstream box's feedback on the trunk has no flow here;
            // the worker drops it, counted.
            drop_unknown: 0,
            _pad: [0; 2],
        })?;
        for l in &links {
            let mode = xdp.attach(&l.appliance.ifname)?;
            assert_eq!(mode, AttachedMode::Driver, "veth supports native XDP");
            xdp.add_local_address(IpAddr::V4(l.appliance.v4))?;
        }
        let trunk_ifindex = ifindex(&trunk_if)?;
        Ok((xdp, trunk_ifindex))
    })?;
    let (ref mut ingress, trunk_ifindex) = xdp;
    let origin = spawn_worker(&lab.appliance)?;
    let downstream = spawn_worker(&trunk_link.peer.ns)?;

    // The publisher's leg at the origin, terminated in its worker.
    let publisher_pc = peer_config(0, true);
    let publisher_remote = SocketAddr::from((pub_link.peer.v4, 6000));
    let leg = publisher_pc.leg_config(LegId(0), ROOM, origin.local_addr(), publisher_remote, 0xa0);
    origin.command(Command::AddLeg(Box::new(leg)))?;
    origin.command(Command::Publish(LegId(0), publisher_pc.publish_spec()))?;
    // The trunk: the origin's address on the trunk link as the source, the
    // downstream worker as the destination.
    let trunk_source = SocketAddr::from((trunk_link.appliance.v4, WORKER_PORT));
    let trunk = RelayTarget {
        ifindex: trunk_ifindex,
        local: trunk_source,
        remote: SocketAddr::from((trunk_link.peer.v4, WORKER_PORT)),
        src_mac: trunk_link.appliance.mac,
        next_hop_mac: trunk_link.peer.mac,
    };
    ingress.set_flow(
        FlowMatch {
            remote: publisher_remote,
            local_port: WORKER_PORT,
        },
        &FlowAction::UserspaceAndTrunks(vec![trunk]),
    )?;
    // At the downstream box the trunk is a publisher leg with the
    // publisher's keys.
    let trunk_leg =
        publisher_pc.leg_config(LegId(0), ROOM, downstream.local_addr(), trunk_source, 0xb0);
    downstream.command(Command::AddLeg(Box::new(trunk_leg)))?;
    downstream.command(Command::Publish(LegId(0), publisher_pc.publish_spec()))?;

    let mut peers = vec![UdpPeer::bind(
        &pub_link.peer.ns,
        publisher_remote,
        SocketAddr::from((pub_link.appliance.v4, WORKER_PORT)),
        Peer::new(publisher_pc.clone())?,
    )?];
    // Subscribers 1..=3 on the origin, 4..=6 on the downstream box (in its
    // own namespace, sending to its address).
    for i in 1..=2 * SUBSCRIBERS as u32 {
        let on_origin = i as usize <= SUBSCRIBERS;
        let pc = peer_config(i, false);
        let (ns, remote, server, worker) = if on_origin {
            (
                &sub_link.peer.ns,
                SocketAddr::from((sub_link.peer.v4, 6000 + i as u16)),
                SocketAddr::from((sub_link.appliance.v4, WORKER_PORT)),
                &origin,
            )
        } else {
            (
                &trunk_link.peer.ns,
                SocketAddr::from((trunk_link.peer.v4, 7000 + i as u16)),
                SocketAddr::from((trunk_link.peer.v4, WORKER_PORT)),
                &downstream,
            )
        };
        let leg = pc.leg_config(
            LegId(u64::from(i)),
            ROOM,
            worker.local_addr(),
            remote,
            0xa0 + i,
        );
        worker.command(Command::AddLeg(Box::new(leg)))?;
        worker.command(Command::Subscribe {
            subscriber: LegId(u64::from(i)),
            publisher: LegId(0),
            ssrcs: out_ssrcs(i),
        })?;
        let mut peer = Peer::new(pc)?;
        peer.expect(out_ssrcs(i));
        peers.push(UdpPeer::bind(ns, remote, server, peer)?);
    }

    let before = ingress.counters()?;
    drive(
        &mut peers,
        Duration::from_secs(SECONDS),
        Duration::from_millis(400),
        |_, _| {},
    )?;
    let after = ingress.counters()?;

    let sent = peers[0].peer.report().sent;
    let cloned = after.cloned - before.cloned;
    let clone_failed = after.clone_failed - before.clone_failed;
    let to_fanout = after.to_fanout - before.to_fanout;
    println!(
        "publisher sent {sent} media packets; origin XDP passed {to_fanout} to TC, which sent \
         {cloned} trunk copies ({clone_failed} failed)"
    );
    // One copy per packet the publisher sent (media and its RTCP).
    assert_eq!(clone_failed, 0);
    assert_eq!(cloned, to_fanout, "one trunk copy per packet of the flow");
    assert!(
        cloned >= sent,
        "{cloned} trunk copies for {sent} media packets"
    );

    for (i, p) in peers.iter().enumerate().skip(1) {
        let box_name = if i <= SUBSCRIBERS {
            "origin"
        } else {
            "downstream"
        };
        let r = p.peer.report();
        assert_eq!(r.srtp_failures, 0, "subscriber {i} ({box_name}): {r:?}");
        assert_eq!(r.unexpected, 0, "subscriber {i} ({box_name}): {r:?}");
        let mut streams = 0;
        for (kind, s) in p.peer.streams() {
            streams += 1;
            assert!(
                s.received > 20,
                "subscriber {i} ({box_name}) {kind:?}: {s:?}"
            );
            assert_eq!(s.missing, 0, "subscriber {i} ({box_name}) {kind:?}: {s:?}");
            assert_eq!(
                s.payload_mismatches, 0,
                "subscriber {i} ({box_name}) {kind:?}: {s:?}"
            );
            assert_eq!(
                s.duplicates, 0,
                "subscriber {i} ({box_name}) {kind:?}: {s:?}"
            );
        }
        assert_eq!(streams, 2, "subscriber {i} ({box_name}): audio and video");
        let audio = p.peer.total(MediaKind::Audio, |s| s.received);
        let video = p.peer.total(MediaKind::Video, |s| s.received);
        println!("subscriber {i} on the {box_name} box: {audio} audio, {video} video packets, all decrypted and intact");
        assert!(
            audio + 2 >= SECONDS * 50,
            "subscriber {i}: {audio} audio packets"
        );
    }
    // The downstream box received the publisher's stream only over the
    // trunk: what its subscribers got matches the origin's.
    let origin_video = peers[1].peer.total(MediaKind::Video, |s| s.received);
    let downstream_video = peers[SUBSCRIBERS + 1]
        .peer
        .total(MediaKind::Video, |s| s.received);
    assert_eq!(origin_video, downstream_video);
    drop(peers);
    drop(origin);
    drop(downstream);
    ingress.detach_all()?;
    Ok(())
}
