//! `switchboard run` with `[xdp] interfaces`: the XDP program in front of
//! the SFU worker's port, attached by the appliance itself in driver mode on
//! its veth. A patient publishes and a clinician subscribes from the peer
//! namespace (ICE, DTLS-SRTP, SRTP media), and the test shows that:
//!
//! * the legs' media goes through the filter to the worker and arrives;
//! * RTP from a sender that is no leg's is dropped in XDP and counted,
//!   while the consult's media continues untouched;
//! * overload level 3 makes the routine consult audio-only *at ingress*:
//!   the XDP program drops the publisher's video (counted as layer-cap
//!   drops) while its audio keeps flowing; level 0 brings the video back;
//! * the program is detached when the appliance stops.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use dataplane::sfu::peer::Peer;
use dataplane::sfu::MediaKind;
use e2e::appliance::{Appliance, ApplianceConfig};
use e2e::http::Request;
use e2e::{privileged_or_skip, Lab};
use switchboard_control::participant::{drain, Answer, MediaPacer, Participant, PublishSsrcs};

const MEDIA_PORT: u16 = 40000;
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// One `name{labels} value` sample of the appliance's metrics.
fn metric(appliance: &Appliance, series: &str) -> u64 {
    let text = appliance
        .send(&Request::new("GET", "/metrics"))
        .expect("GET /metrics")
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits (bounded) until `series` reaches `at_least`: the appliance turns
/// the program's counters into metrics once a second.
fn wait_metric(appliance: &Appliance, series: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(appliance, series);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(appliance: &Appliance, consult: &str, kind: &str, token: &str, offer: &str) -> Answer {
    let r = appliance
        .send(
            &Request::new("POST", &format!("/v1/consults/{consult}/{kind}"))
                .bearer(token)
                .body("application/sdp", offer.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("POST {kind}: {e}"));
    assert_eq!(r.status, 201, "{kind}: {}", r.text());
    Answer::parse(&r.text()).unwrap()
}

struct Call {
    publisher: Participant,
    subscriber: Participant,
    tx: Peer,
    rx: Peer,
    to: SocketAddr,
}

impl Call {
    /// `secs` of audio (50 pps) and 30 fps video; returns `(audio, video)`
    /// packets the subscriber decrypted in that time.
    fn pump(&mut self, secs: f64) -> (u64, u64) {
        let count = |rx: &Peer| {
            let mut audio = 0;
            let mut video = 0;
            for (kind, s) in rx.streams() {
                match kind {
                    MediaKind::Audio => audio += s.received,
                    MediaKind::Video => video += s.received,
                }
            }
            (audio, video)
        };
        let before = count(&self.rx);
        let mut pacer = MediaPacer::new();
        while pacer.elapsed() < Duration::from_secs_f64(secs) {
            pacer
                .send_due(&mut self.tx, &self.publisher.socket, self.to)
                .unwrap();
            std::thread::sleep(Duration::from_millis(1));
            drain(&self.publisher.socket, &mut self.tx);
            drain(&self.subscriber.socket, &mut self.rx);
        }
        std::thread::sleep(Duration::from_millis(50));
        drain(&self.subscriber.socket, &mut self.rx);
        let after = count(&self.rx);
        (after.0 - before.0, after.1 - before.1)
    }
}

fn xdp_attached(ns: &str, ifname: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", ifname])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn run_attaches_xdp_that_guards_the_worker_port_and_applies_room_caps() {
    if !privileged_or_skip() {
        return;
    }
    let lab = Lab::star(1).expect("lab");
    let link = &lab.links[0];
    let api = SocketAddr::new(IpAddr::V4(link.appliance.v4), 8080);
    let appliance = Appliance::start_with(
        &lab.appliance,
        &ApplianceConfig {
            listen: api,
            advertised: vec![IpAddr::V4(link.appliance.v4)],
            media_port: MEDIA_PORT,
            log_level: "info".into(),
        },
        &format!(
            "[xdp]\ninterfaces = [\"{}\"]\nunknown_senders = \"drop\"\n",
            link.appliance.ifname
        ),
    )
    .expect("appliance");
    assert!(
        xdp_attached(lab.appliance.name(), &link.appliance.ifname),
        "no XDP program on {} after start:\n{}",
        link.appliance.ifname,
        appliance.log_tail(3000)
    );
    let log = appliance.log_tail(20_000);
    assert!(
        log.contains("XDP ingress filter in front of the media ports"),
        "{log}"
    );
    // The ladder follows host CPU; this test drives it by hand.
    appliance.force_overload_level(Some(0)).unwrap();

    let consult = appliance.create_consult("routine").unwrap();
    let patient = appliance.token(&consult, "patient", "patient").unwrap();
    let clinician = appliance.token(&consult, "clinician", "clinician").unwrap();
    let ssrcs = PublishSsrcs::from_base(0x7a00_0001);
    let bind = SocketAddr::new(IpAddr::V4(link.peer.v4), 0);
    let (publisher, subscriber) = link.peer.ns.run(|| {
        (
            Participant::new("xdppub", bind).unwrap(),
            Participant::new("xdpsub", bind).unwrap(),
        )
    });
    let pub_answer = signal(
        &appliance,
        &consult,
        "whip",
        &patient,
        &publisher.offer("sendonly", Some(ssrcs)),
    );
    let sub_answer = signal(
        &appliance,
        &consult,
        "whep",
        &clinician,
        &subscriber.offer("recvonly", None),
    );
    let to = pub_answer.candidate;
    assert_eq!(to.port(), MEDIA_PORT);

    link.peer.ns.run(|| {
        let tx = publisher
            .connect(&pub_answer, STEP_TIMEOUT)
            .expect("publish leg connects through XDP")
            .peer(Some(ssrcs), 300)
            .unwrap();
        let mut rx = subscriber
            .connect(&sub_answer, STEP_TIMEOUT)
            .expect("subscribe leg connects through XDP")
            .peer(None, 300)
            .unwrap();
        rx.expect(sub_answer.ssrcs.expect("WHEP answer SSRCs"));
        for p in [&publisher, &subscriber] {
            p.socket.set_nonblocking(true).unwrap();
        }
        let mut call = Call {
            publisher,
            subscriber,
            tx,
            rx,
            to,
        };

        let (audio, video) = call.pump(1.5);
        println!("through XDP to the worker: audio {audio}, video {video}");
        assert!(audio > 30 && video > 30, "audio {audio}, video {video}");
        let to_worker = wait_metric(
            &appliance,
            "switchboard_xdp_packets_total{outcome=\"to_worker\"}",
            audio + video,
        );
        assert!(to_worker >= audio + video, "to_worker {to_worker}");

        // A stranger's RTP, with the publisher's SSRC, at the worker's port.
        let unknown_before = metric(
            &appliance,
            "switchboard_xdp_dropped_total{reason=\"unknown_flow\"}",
        );
        let stranger = UdpSocket::bind(SocketAddr::new(IpAddr::V4(link.peer.v4), 0)).unwrap();
        let mut forged = vec![0x80u8, 111, 0, 1, 0, 0, 0, 1];
        forged.extend_from_slice(&ssrcs.audio.to_be_bytes());
        forged.extend_from_slice(&[0xa5; 100]);
        for _ in 0..300 {
            stranger.send_to(&forged, to).unwrap();
        }
        let unknown = wait_metric(
            &appliance,
            "switchboard_xdp_dropped_total{reason=\"unknown_flow\"}",
            unknown_before + 300,
        );
        println!(
            "stranger's packets dropped in XDP: {}",
            unknown - unknown_before
        );
        assert!(unknown >= unknown_before + 300, "unknown_flow {unknown}");
        let (audio, video) = call.pump(1.0);
        assert!(
            audio > 20 && video > 20,
            "after hostile input: {audio}/{video}"
        );
        let report = call.rx.report();
        assert_eq!(report.srtp_failures, 0, "{report:?}");
        for (kind, s) in call.rx.streams() {
            assert_eq!(s.payload_mismatches, 0, "{kind:?}: {s:?}");
        }

        // Level 3: the routine consult becomes audio-only at ingress.
        let capped_before = metric(
            &appliance,
            "switchboard_xdp_dropped_total{reason=\"layer_cap\"}",
        );
        appliance.force_overload_level(Some(3)).unwrap();
        call.pump(0.3);
        let (audio, video) = call.pump(1.5);
        println!("level 3: audio {audio}, video {video}");
        assert!(audio > 30, "audio stopped under the cap: {audio}");
        assert_eq!(video, 0, "video not capped: {video}");
        let capped = wait_metric(
            &appliance,
            "switchboard_xdp_dropped_total{reason=\"layer_cap\"}",
            capped_before + 30,
        );
        println!(
            "video dropped at ingress by the room cap: {}",
            capped - capped_before
        );
        assert!(capped >= capped_before + 30, "layer_cap drops {capped}");

        appliance.force_overload_level(Some(0)).unwrap();
        call.pump(0.5);
        let (audio, video) = call.pump(1.5);
        println!("level 0 again: audio {audio}, video {video}");
        assert!(audio > 30 && video > 30, "not restored: {audio}/{video}");
    });

    let (ns, ifname) = (
        lab.appliance.name().to_owned(),
        link.appliance.ifname.clone(),
    );
    drop(appliance);
    assert!(
        !xdp_attached(&ns, &ifname),
        "the XDP program stayed on {ifname} after the appliance stopped"
    );
}
