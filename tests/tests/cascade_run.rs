//! A consult cascaded between two `switchboard run` appliances of a pool
//! (real etcd), the way an operator does it for grand rounds: a publisher
//! and a subscriber on the origin, `POST /v1/consults/{id}/cascade` to the
//! other box, and a subscriber joining there over WHEP. The origin's XDP/TC
//! programs copy the publisher's packets, still encrypted, over a routed
//! trunk (through the hub namespace, which stands for the network); the
//! downstream box decrypts them with the publisher's key and re-encrypts
//! for its subscriber. Both subscribers decrypt every packet with their own
//! keys; publishing at the downstream copy is refused with the origin's
//! name; ending the consult at the origin ends the copy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::sfu::peer::Peer;
use dataplane::sfu::MediaKind;
use e2e::appliance::{Appliance, ApplianceConfig, ADMIN_TOKEN};
use e2e::http::Request;
use e2e::{privileged_or_skip, tool_or_skip, Lab, Netns, TempDir};
use serde_json::{json, Value};
use switchboard_control::participant::{drain, Answer, MediaPacer, Participant, PublishSsrcs};

const API_PORT: u16 = 8080;
const MEDIA_PORT: u16 = 40_000;
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
const SIGNING_KEY: &str = "cascade-signing-key-0123456789abcdef012345";

/// etcd in the hub namespace; killed on drop, then its data directory
/// removed.
struct Etcd {
    child: Child,
    _dir: TempDir,
}

impl Etcd {
    fn start(hub: &Netns, listen: &[Ipv4Addr]) -> Self {
        let dir = TempDir::new("cascade-etcd").unwrap();
        let clients: Vec<String> = listen.iter().map(|a| format!("http://{a}:2379")).collect();
        let clients = clients.join(",");
        let child = Command::new("ip")
            .args(["netns", "exec", hub.name(), "etcd"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "pool"])
            .args(["--listen-client-urls", &clients])
            .args(["--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "pool=http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        Self { child, _dir: dir }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin(app: &Appliance, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let r = app
        .send(
            &Request::new(method, path)
                .bearer(ADMIN_TOKEN)
                .body("application/json", &body)
                .timeout(Duration::from_secs(10)),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.json().unwrap_or(Value::Null))
}

fn signal(app: &Appliance, consult: &str, kind: &str, token: &str, offer: &str) -> (u16, String) {
    let r = app
        .send(
            &Request::new("POST", &format!("/v1/consults/{consult}/{kind}"))
                .bearer(token)
                .body("application/sdp", offer.as_bytes())
                .timeout(Duration::from_secs(5)),
        )
        .unwrap_or_else(|e| panic!("POST {kind}: {e}"));
    (r.status, r.text())
}

fn counts(rx: &Peer) -> (u64, u64) {
    let (mut audio, mut video) = (0, 0);
    for (kind, s) in rx.streams() {
        match kind {
            MediaKind::Audio => audio += s.received,
            MediaKind::Video => video += s.received,
        }
    }
    (audio, video)
}

#[test]
fn a_consult_cascades_to_a_second_appliance_over_an_xdp_trunk() {
    if !privileged_or_skip() || !tool_or_skip("etcd", "etcd-server") {
        return;
    }
    // The hub is the network: etcd, the participants, and a router between
    // the two appliances' links.
    let lab = Lab::star(2).unwrap();
    let hub = &lab.appliance;
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            hub.name(),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "enabling forwarding in the hub");
    for (i, other) in [(0usize, 1usize), (1, 0)] {
        let me = &lab.links[i];
        let net = format!("198.18.{}.0/24", other + 1);
        me.peer
            .ns
            .ip(&["route", "add", &net, "via", &me.appliance.v4.to_string()])
            .unwrap();
    }
    let etcd = Etcd::start(hub, &[lab.links[0].appliance.v4, lab.links[1].appliance.v4]);
    let dir = TempDir::new("cascade").unwrap();
    let key_file = dir.path().join("signing.key");
    std::fs::write(&key_file, SIGNING_KEY).unwrap();
    let boxes: Vec<Appliance> = lab
        .links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let extra = format!(
                "[xdp]\ninterfaces = [\"{ifname}\"]\n\
                 [tokens]\nsigning_key_file = \"{key}\"\n\
                 [overload]\ncpu_ceiling_percent = 100.0\n\
                 [cluster]\netcd = [\"http://{etcd}:2379\"]\nname = \"box-{n}\"\nlease_ttl_secs = 2\n",
                ifname = link.peer.ifname,
                key = key_file.display(),
                etcd = link.appliance.v4,
                n = i + 1,
            );
            let cfg = ApplianceConfig {
                listen: SocketAddr::new(IpAddr::V4(link.peer.v4), API_PORT),
                advertised: vec![IpAddr::V4(link.peer.v4)],
                media_port: MEDIA_PORT,
                log_level: "info".into(),
            };
            Appliance::start_with(&link.peer.ns, &cfg, &extra).unwrap()
        })
        .collect();
    for b in &boxes {
        b.force_overload_level(Some(0)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for b in &boxes {
        while b.send(&Request::new("GET", "/readyz")).unwrap().status != 200 {
            assert!(
                Instant::now() < deadline,
                "not in the pool:\n{}",
                b.log_tail(3000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_secs(1));

    let (status, consult) = admin(
        &boxes[0],
        "POST",
        "/v1/consults",
        &json!({"priority": "routine", "residency": "eu"}),
    );
    assert_eq!(status, 201, "{consult}");
    let id = consult["id"].as_str().unwrap().to_owned();
    let origin_name = consult["pool"]["appliance"].as_str().unwrap().to_owned();
    let o = if origin_name == "box-1" { 0 } else { 1 };
    let d = 1 - o;
    let (origin, downstream) = (&boxes[o], &boxes[d]);
    let downstream_name = format!("box-{}", d + 1);
    let token = |participant: &str, role: &str| {
        let (status, v) = admin(
            origin,
            "POST",
            &format!("/v1/consults/{id}/tokens"),
            &json!({"participant": participant, "role": role}),
        );
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    };
    let presenter = token("presenter", "clinician");
    let local_viewer = token("viewer-1", "observer");
    let remote_viewer = token("viewer-2", "observer");

    let bind = SocketAddr::new(IpAddr::V4(lab.links[o].appliance.v4), 0);
    let remote_bind = SocketAddr::new(IpAddr::V4(lab.links[d].appliance.v4), 0);
    let ssrcs = PublishSsrcs::from_base(0x5c00_0001);
    let (publisher, viewer1, viewer2) = hub.run(|| {
        (
            Participant::new("cascpub", bind).unwrap(),
            Participant::new("cascv1", bind).unwrap(),
            Participant::new("cascv2", remote_bind).unwrap(),
        )
    });
    let (status, text) = signal(
        origin,
        &id,
        "whip",
        &presenter,
        &publisher.offer("sendonly", Some(ssrcs)),
    );
    assert_eq!(status, 201, "{text}");
    let pub_answer = Answer::parse(&text).unwrap();
    let (status, text) = signal(
        origin,
        &id,
        "whep",
        &local_viewer,
        &viewer1.offer("recvonly", None),
    );
    assert_eq!(status, 201, "{text}");
    let v1_answer = Answer::parse(&text).unwrap();
    let to = pub_answer.candidate;

    hub.run(|| {
        let mut tx = publisher
            .connect(&pub_answer, STEP_TIMEOUT)
            .expect("publisher connects")
            .peer(Some(ssrcs), 300)
            .unwrap();
        let mut rx1 = viewer1
            .connect(&v1_answer, STEP_TIMEOUT)
            .expect("local viewer connects")
            .peer(None, 300)
            .unwrap();
        rx1.expect(v1_answer.ssrcs.expect("WHEP answer SSRCs"));
        for p in [&publisher, &viewer1] {
            p.socket.set_nonblocking(true).unwrap();
        }
        // Media before the cascade, so the publisher's keys exist.
        let mut pacer = MediaPacer::new();
        let mut pump =
            |secs: f64, tx: &mut Peer, rx1: &mut Peer, rx2: Option<(&Participant, &mut Peer)>| {
                let stop = pacer.elapsed() + Duration::from_secs_f64(secs);
                let mut rx2 = rx2;
                while pacer.elapsed() < stop {
                    pacer.send_due(tx, &publisher.socket, to).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                    drain(&publisher.socket, tx);
                    drain(&viewer1.socket, rx1);
                    if let Some((p, rx)) = rx2.as_mut() {
                        drain(&p.socket, rx);
                    }
                }
            };
        pump(1.0, &mut tx, &mut rx1, None);

        // The cascade, and the second viewer joining at the downstream box.
        let (status, v) = admin(
            origin,
            "POST",
            &format!("/v1/consults/{id}/cascade"),
            &json!({"appliance": downstream_name}),
        );
        assert_eq!(status, 200, "{v}\n{}", origin.log_tail(3000));
        println!("cascade: {v}");
        assert_eq!(v["publishers"], 1);
        // The key frame asked for when the trunk opened is long gone when
        // the remote viewer joins: its video can only start at one its
        // box asks the origin for.
        pump(1.0, &mut tx, &mut rx1, None);
        let (status, text) = signal(
            downstream,
            &id,
            "whep",
            &remote_viewer,
            &viewer2.offer("recvonly", None),
        );
        assert_eq!(status, 201, "{text}");
        let v2_answer = Answer::parse(&text).unwrap();
        let mut rx2 = viewer2
            .connect(&v2_answer, STEP_TIMEOUT)
            .expect("remote viewer connects")
            .peer(None, 300)
            .unwrap();
        rx2.expect(v2_answer.ssrcs.expect("WHEP answer SSRCs"));
        viewer2.socket.set_nonblocking(true).unwrap();
        let before1 = counts(&rx1);
        // A key frame request reaches the origin's publisher only through
        // the origin's own viewers; the synthetic publisher sends key
        // frames periodically, so the remote viewer's video starts at one.
        pump(3.0, &mut tx, &mut rx1, Some((&viewer2, &mut rx2)));
        std::thread::sleep(Duration::from_millis(100));
        drain(&viewer1.socket, &mut rx1);
        drain(&viewer2.socket, &mut rx2);
        let after1 = counts(&rx1);
        let (a1, v1) = (after1.0 - before1.0, after1.1 - before1.1);
        let (a2, v2) = counts(&rx2);
        println!(
            "origin viewer: {a1} audio, {v1} video; downstream viewer: {a2} audio, {v2} video"
        );
        for (name, rx) in [("origin viewer", &rx1), ("downstream viewer", &rx2)] {
            let r = rx.report();
            assert_eq!(r.srtp_failures, 0, "{name}: {r:?}");
            for (kind, s) in rx.streams() {
                assert_eq!(s.payload_mismatches, 0, "{name} {kind:?}: {s:?}");
            }
        }
        assert!(a1 > 100 && v1 > 100, "origin viewer: {a1}/{v1}");
        assert!(a2 > 100 && v2 > 50, "downstream viewer: {a2}/{v2}");
        let (_, copy) = admin(downstream, "GET", "/v1/consults", &json!({}));
        let copy = copy.as_array().unwrap()[0].clone();
        assert_eq!(copy["origin"], origin_name.as_str(), "{copy}");
        // Trunk leg and the viewer's leg.
        assert_eq!(copy["legs"].as_array().unwrap().len(), 2, "{copy}");

        // A second presenter joins at the origin after the cascade: its
        // stream is trunked as soon as its keys exist.
        let presenter2 = token("presenter-2", "clinician");
        let late = Participant::new("casclate", bind).unwrap();
        let late_ssrcs = PublishSsrcs::from_base(0x5e00_0001);
        let (status, text) = signal(
            origin,
            &id,
            "whip",
            &presenter2,
            &late.offer("sendonly", Some(late_ssrcs)),
        );
        assert_eq!(status, 201, "{text}");
        let late_answer = Answer::parse(&text).unwrap();
        let _late_tx = late
            .connect(&late_answer, STEP_TIMEOUT)
            .expect("second presenter connects")
            .peer(Some(late_ssrcs), 300)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, list) = admin(downstream, "GET", "/v1/consults", &json!({}));
            let legs = list[0]["legs"].as_array().map_or(0, Vec::len);
            if legs == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the late presenter was not trunked: {list}\n{}",
                origin.log_tail(4000)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("late presenter trunked to the downstream box");
    });

    // Publishing belongs to the origin.
    let extra = hub.run(|| Participant::new("cascpub2", remote_bind).unwrap());
    let (status, text) = signal(
        downstream,
        &id,
        "whip",
        &presenter,
        &extra.offer("sendonly", Some(PublishSsrcs::from_base(0x5d00_0001))),
    );
    assert_eq!(status, 409, "{text}");
    assert!(text.contains(&origin_name), "{text}");
    let (status, v) = admin(downstream, "GET", &format!("/v1/consults/{id}"), &json!({}));
    assert_eq!(status, 200, "{v}");

    // Ending at the origin ends the copy within an upkeep pass or two.
    let (status, v) = admin(origin, "DELETE", &format!("/v1/consults/{id}"), &json!({}));
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = admin(downstream, "GET", "/v1/consults", &json!({}));
        if !list.to_string().contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the downstream copy outlived its consult: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(boxes);
    drop(etcd);
}
