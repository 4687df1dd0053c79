//! SRTP from GStreamer's `srtpenc` through the XDP relay to GStreamer's
//! `srtpdec`, across network namespaces: the relay rewrites only Ethernet,
//! IP and UDP, so an independent SRTP implementation must authenticate and
//! decrypt every packet. Needs root and the GStreamer tools (Debian
//! `gstreamer1.0-tools`, `-plugins-base`, `-plugins-good`, `-plugins-bad`).

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use dataplane::xdp::{
    ifindex, AttachedMode, FlowAction, FlowMatch, RelayTarget, XdpIngress, XdpPass,
};
use e2e::{privileged_or_skip, tool_or_skip, Lab, Netns};
use switchboard_common::IngressConfig;

const MEDIA_PORT: u16 = 40_000;
const SSRC: u32 = 0x5eed_0001;
/// 20 ms buffers: one RTP packet each.
const BUFFERS: usize = 50;
const DEADLINE: Duration = Duration::from_secs(20);

fn spawn_in(ns: &Netns, args: &[String]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "gst-launch-1.0", "-q"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gst-launch-1.0")
}

/// Waits for `child` until the deadline; kills it if it overruns.
fn wait_bounded(mut child: Child, deadline: Instant) -> (Output, bool) {
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return (child.wait_with_output().expect("output"), true),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                return (child.wait_with_output().expect("output"), false);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// True once a UDP socket is bound to `port` in `ns`.
fn udp_port_bound(ns: &Netns, port: u16) -> bool {
    let table = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/udp"))
        .expect("read /proc/net/udp");
    let needle = format!(":{port:04X} ");
    table.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| format!("{local} ").ends_with(&needle))
    })
}

struct Profile {
    cipher: &'static str,
    auth: &'static str,
    /// Master key ‖ salt, hex: 30 bytes for AES-CM, 28 for AES-128-GCM.
    key: &'static str,
}

fn srtp_through_the_relay(profile: &Profile) {
    let lab = Lab::star(2).expect("lab");
    let (sender_link, receiver_link) = (&lab.links[0], &lab.links[1]);
    let _passes: Vec<XdpPass> = lab
        .links
        .iter()
        .map(|l| {
            let ifname = l.peer.ifname.clone();
            l.peer
                .ns
                .run(move || XdpPass::attach(&ifname))
                .expect("pass program")
        })
        .collect();
    let sender = SocketAddr::new(IpAddr::V4(sender_link.peer.v4), 5004);
    let to = SocketAddr::new(IpAddr::V4(sender_link.appliance.v4), MEDIA_PORT);
    let target_link = receiver_link.clone();
    let receiver = SocketAddr::new(IpAddr::V4(receiver_link.peer.v4), 6000);
    let links = lab.links.clone();
    let mut xdp = lab.appliance.run(move || {
        let mut xdp = XdpIngress::load(IngressConfig {
            port_min: MEDIA_PORT,
            port_max: MEDIA_PORT + 99,
            drop_malformed: 1,
            drop_unknown: 1,
            _pad: [0; 2],
        })
        .expect("load");
        for l in &links {
            assert_eq!(
                xdp.attach(&l.appliance.ifname).expect("attach"),
                AttachedMode::Driver
            );
        }
        xdp.add_local_address(to.ip()).expect("local address");
        let target = RelayTarget {
            ifindex: ifindex(&target_link.appliance.ifname).expect("ifindex"),
            local: SocketAddr::new(IpAddr::V4(target_link.appliance.v4), MEDIA_PORT + 2),
            remote: receiver,
            src_mac: target_link.appliance.mac,
            next_hop_mac: target_link.peer.mac,
        };
        xdp.set_flow(
            FlowMatch {
                remote: sender,
                local_port: MEDIA_PORT,
            },
            &FlowAction::Relay(vec![target]),
        )
        .expect("flow");
        xdp
    });

    let srtp_caps = format!(
        "application/x-srtp,media=(string)audio,clock-rate=(int)16000,encoding-name=(string)L16,\
         channels=(int)1,payload=(int)96,ssrc=(uint){SSRC},srtp-key=(buffer){key},\
         srtp-cipher=(string){c},srtp-auth=(string){a},srtcp-cipher=(string){c},srtcp-auth=(string){a}",
        key = profile.key,
        c = profile.cipher,
        a = profile.auth,
    );
    let receive: Vec<String> = [
        "udpsrc".into(),
        format!("address={}", receiver.ip()),
        format!("port={}", receiver.port()),
        format!("caps={srtp_caps}"),
        "!".into(),
        "srtpdec".into(),
        "!".into(),
        "rtpL16depay".into(),
        "!".into(),
        "fakesink".into(),
        format!("num-buffers={BUFFERS}"),
    ]
    .into();
    let send: Vec<String> = [
        "audiotestsrc".into(),
        "is-live=true".into(),
        format!("num-buffers={BUFFERS}"),
        "samplesperbuffer=320".into(),
        "!".into(),
        "audioconvert".into(),
        "!".into(),
        "audio/x-raw,format=S16BE,rate=16000,channels=1".into(),
        "!".into(),
        "rtpL16pay".into(),
        format!("ssrc={SSRC}"),
        "pt=96".into(),
        "!".into(),
        "srtpenc".into(),
        format!("key={}", profile.key),
        format!("rtp-cipher={}", profile.cipher),
        format!("rtp-auth={}", profile.auth),
        format!("rtcp-cipher={}", profile.cipher),
        format!("rtcp-auth={}", profile.auth),
        "!".into(),
        "udpsink".into(),
        format!("host={}", to.ip()),
        format!("port={}", to.port()),
        format!("bind-address={}", sender.ip()),
        format!("bind-port={}", sender.port()),
    ]
    .into();

    let deadline = Instant::now() + DEADLINE;
    let rx = spawn_in(&receiver_link.peer.ns, &receive);
    while !udp_port_bound(&receiver_link.peer.ns, receiver.port()) {
        assert!(Instant::now() < deadline, "receiver never bound its port");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (sent, sender_done) = wait_bounded(spawn_in(&sender_link.peer.ns, &send), deadline);
    assert!(sender_done && sent.status.success(), "sender: {sent:?}");
    // The receiver ends by itself after decoding every buffer; a lost or
    // corrupted packet leaves it waiting until the deadline.
    let grace = (Instant::now() + Duration::from_secs(3)).min(deadline);
    let (received, receiver_done) = wait_bounded(rx, grace);
    let c = xdp.counters().expect("counters");
    assert!(
        receiver_done && received.status.success(),
        "srtpdec did not decode all {BUFFERS} packets ({}): {}; counters {c:?}",
        profile.cipher,
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(
        c.redirect, BUFFERS as u64,
        "every packet took the XDP relay: {c:?}"
    );
    assert_eq!(c.dropped(), 0, "{c:?}");
    xdp.detach_all().expect("detach");
}

#[test]
fn gstreamer_srtp_aes_cm_survives_the_relay() {
    if !privileged_or_skip() || !tool_or_skip("gst-launch-1.0", "gstreamer1.0-tools") {
        return;
    }
    srtp_through_the_relay(&Profile {
        cipher: "aes-128-icm",
        auth: "hmac-sha1-80",
        key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d",
    });
}

#[test]
fn gstreamer_srtp_aes_gcm_survives_the_relay() {
    if !privileged_or_skip() || !tool_or_skip("gst-launch-1.0", "gstreamer1.0-tools") {
        return;
    }
    srtp_through_the_relay(&Profile {
        cipher: "aes-128-gcm",
        auth: "null",
        key: "f0e0d0c0b0a09080706050403020100f0e0d0c0b0a09080706050403",
    });
}
