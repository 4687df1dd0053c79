//! The real media plane end to end on loopback: the server runs its SFU
//! workers, a publisher and a subscriber sign in over WHIP/WHEP, and this
//! test is their WebRTC stack: ICE checks (STUN with MESSAGE-INTEGRITY and
//! FINGERPRINT), an OpenSSL DTLS client handshake with `use_srtp`, keys
//! exported with "EXTRACTOR-dtls_srtp", then SRTP media on the publish leg,
//! decrypted and verified (payload trailer hashes, sequence continuity) on
//! the subscribe leg.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::sfu::peer::Peer;
use dataplane::sfu::MediaKind;
use dataplane::wire::stun::{Class, MessageBuilder, BINDING_REQUEST};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard_control::config::Config;
use switchboard_control::participant::{
    drain, Answer, MediaPacer, Participant, PublishSsrcs, PT_OPUS,
};
use switchboard_control::server::{build_state_over_workers, Server};

const ADMIN: &str = "admin-token-0123456789";
/// Every wait on the network is bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A UDP port free on all addresses now (a worker binds it right after);
/// tests of this process never get the same one.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 3000) as u16 * 10;
    loop {
        let p = 20_000 + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % 30_000;
        if UdpSocket::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
}

struct Harness {
    base: String,
    http: reqwest::Client,
    server: Option<Server>,
    dir: PathBuf,
}

impl Harness {
    async fn start(name: &str, engine: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-media-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\ntoken = \"{ADMIN}\"\n\
             [media]\nadvertised_addresses = [\"127.0.0.1\"]\nworkers = 1\n\
             port_min = {port}\nport_max = {port}\nengine = \"{engine}\"\n\
             [audit]\npath = \"{}\"\nfsync = \"group\"\ngroup_commit_ms = 5\n\
             [regions]\nname = \"eu-west\"\n",
            dir.join("audit.jsonl").display()
        );
        let config = Config::parse(&text).unwrap();
        let state = build_state_over_workers(config).unwrap();
        let server = Server::start(state).await.unwrap();
        Self {
            base: format!("http://{}", server.addr),
            http: reqwest::Client::new(),
            server: Some(server),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn token(&self, consult: &str, participant: &str, role: &str) -> String {
        self.admin_post(
            &format!("/v1/consults/{consult}/tokens"),
            json!({"participant": participant, "role": role}),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn signal(&self, consult: &str, kind: &str, token: &str, sdp: &str) -> String {
        let r = self
            .http
            .post(self.url(&format!("/v1/consults/{consult}/{kind}")))
            .header("content-type", "application/sdp")
            .bearer_auth(token)
            .body(sdp.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{kind}");
        r.text().await.unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        let server = self.server.take().unwrap();
        let state = server.state.clone();
        server.shutdown().await.unwrap();
        state.media().shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A participant leg's client on loopback.
fn client(ufrag: &str) -> Participant {
    Participant::new(ufrag, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn loopback(engine: &str) {
    let h = Harness::start(engine, engine).await;
    let consult = h
        .admin_post(
            "/v1/consults",
            json!({"priority": "routine", "residency": "eu"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patient = h.token(&consult, "patient-1", "patient").await;
    let clinician = h.token(&consult, "clinician-1", "clinician").await;

    let (audio_ssrc, video_ssrc, rtx_ssrc) = (0x1111_0001u32, 0x1111_0002u32, 0x1111_0003u32);
    let publisher = client("pubA");
    let subscriber = client("subB");
    let whip = h
        .signal(
            &consult,
            "whip",
            &patient,
            &publisher.offer(
                "sendonly",
                Some(PublishSsrcs {
                    audio: audio_ssrc,
                    video: video_ssrc,
                    video_rtx: rtx_ssrc,
                }),
            ),
        )
        .await;
    let answered = Instant::now();
    let whep = h
        .signal(
            &consult,
            "whep",
            &clinician,
            &subscriber.offer("recvonly", None),
        )
        .await;
    let pub_answer = Answer::parse(&whip).unwrap();
    let sub_answer = Answer::parse(&whep).unwrap();
    let expected = sub_answer.ssrcs.expect("the WHEP answer announces SSRCs");

    let before = h.metrics().await;
    let bad_before = metric(
        &before,
        "switchboard_stun_failures_total{reason=\"bad_integrity\"}",
    );
    let unvalidated_before = metric(
        &before,
        "switchboard_dtls_failures_total{reason=\"unvalidated\"}",
    );
    let (first_packet, report, forwarded) = tokio::task::spawn_blocking(move || {
        // A check signed with the wrong password: no success, and counted.
        let bad = publisher.binding_request(&pub_answer, "not-the-password-000000", [9; 12]);
        let reply = publisher
            .stun_exchange(pub_answer.candidate, &bad, Duration::from_millis(500))
            .unwrap();
        assert_ne!(reply, Some(Class::SuccessResponse));

        // DTLS before any ICE check: dropped unanswered, and counted.
        let hello = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        subscriber
            .socket
            .send_to(&hello, sub_answer.candidate)
            .unwrap();

        let mut tx = publisher
            .connect(&pub_answer, STEP_TIMEOUT)
            .unwrap()
            .peer(
                Some(PublishSsrcs {
                    audio: audio_ssrc,
                    video: video_ssrc,
                    video_rtx: rtx_ssrc,
                }),
                300,
            )
            .unwrap();
        let mut rx = subscriber
            .connect(&sub_answer, STEP_TIMEOUT)
            .unwrap()
            .peer(None, 300)
            .unwrap();
        rx.expect(expected);
        for c in [&publisher, &subscriber] {
            c.socket.set_nonblocking(true).unwrap();
        }
        // Media for at most three seconds, and two after the first packet
        // arrived: 20 ms audio, 30 fps video.
        let mut pacer = MediaPacer::new();
        let mut first_packet = None;
        let mut first_at = None;
        let mut received = 0usize;
        while pacer.elapsed() < Duration::from_secs(3)
            && first_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2))
        {
            pacer
                .send_due(&mut tx, &publisher.socket, pub_answer.candidate)
                .unwrap();
            std::thread::sleep(Duration::from_millis(1));
            // The publisher hears PLIs and reports; the subscriber media.
            drain(&publisher.socket, &mut tx);
            received += drain(&subscriber.socket, &mut rx);
            if received > 0 && first_packet.is_none() {
                first_packet = Some(answered.elapsed());
                first_at = Some(Instant::now());
            }
        }
        // What is still in flight.
        std::thread::sleep(Duration::from_millis(50));
        drain(&subscriber.socket, &mut rx);
        let streams: Vec<(MediaKind, dataplane::sfu::peer::StreamReport)> =
            rx.streams().map(|(k, r)| (k, r.clone())).collect();
        (
            first_packet,
            (streams, rx.report().clone()),
            tx.report().sent,
        )
    })
    .await
    .unwrap();

    let first_packet = first_packet.expect("no media reached the subscriber");
    println!("{engine}: WHIP answer to first decrypted packet: {first_packet:?}");
    let (streams, peer_report) = report;
    assert_eq!(peer_report.srtp_failures, 0, "{peer_report:?}");
    assert_eq!(peer_report.unexpected, 0, "{peer_report:?}");
    assert!(forwarded > 100, "publisher sent {forwarded}");
    for (kind, s) in &streams {
        assert!(s.received > 20, "{kind:?}: {s:?}");
        assert_eq!(s.payload_mismatches, 0, "{kind:?}: {s:?}");
        assert_eq!(s.missing, 0, "{kind:?}: sequence gap {s:?}");
        assert_eq!(s.duplicates, 0, "{kind:?}: {s:?}");
        assert_eq!(s.timestamp_regressions, 0, "{kind:?}: {s:?}");
    }
    assert_eq!(streams.len(), 2);

    let text = h.metrics().await;
    let bad_after = metric(
        &text,
        "switchboard_stun_failures_total{reason=\"bad_integrity\"}",
    );
    assert_eq!(
        bad_after,
        bad_before + 1,
        "bad MESSAGE-INTEGRITY not counted"
    );
    let unvalidated_after = metric(
        &text,
        "switchboard_dtls_failures_total{reason=\"unvalidated\"}",
    );
    assert_eq!(
        unvalidated_after,
        unvalidated_before + 1,
        "DTLS from an unvalidated address not counted"
    );
    let stats: Value = h
        .http
        .get(h.url("/v1/admin/stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("{engine}: admin stats {stats}");
    assert_eq!(stats["media"]["active_legs"], 2, "{stats}");
    assert!(
        stats["media"]["packets_forwarded"].as_u64().unwrap() > 0,
        "{stats}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_whep_media_flows_through_the_io_uring_workers() {
    loopback("io_uring").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_whep_media_flows_through_the_tokio_workers() {
    loopback("tokio").await;
}

/// One consult's two legs, connected: the publisher's and the subscriber's
/// client, their SRTP endpoints and where to send.
struct ConnectedPair {
    publisher: Participant,
    subscriber: Participant,
    tx: Peer,
    rx: Peer,
    to: SocketAddr,
    video_ssrc: u32,
    audio_ssrc: u32,
}

/// Creates a consult with `priority`, publishes and subscribes in it, and
/// connects both legs (ICE + DTLS).
async fn connected_pair(h: &Harness, priority: &str, base_ssrc: u32) -> ConnectedPair {
    let consult = h
        .admin_post(
            "/v1/consults",
            json!({"priority": priority, "residency": "eu"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patient = h.token(&consult, "patient", "patient").await;
    let clinician = h.token(&consult, "clinician", "clinician").await;
    let ssrcs = PublishSsrcs::from_base(base_ssrc);
    let publisher = client(&format!("p{base_ssrc:x}"));
    let subscriber = client(&format!("s{base_ssrc:x}"));
    let whip = h
        .signal(
            &consult,
            "whip",
            &patient,
            &publisher.offer("sendonly", Some(ssrcs)),
        )
        .await;
    let whep = h
        .signal(
            &consult,
            "whep",
            &clinician,
            &subscriber.offer("recvonly", None),
        )
        .await;
    tokio::task::spawn_blocking(move || {
        let pub_answer = Answer::parse(&whip).unwrap();
        let sub_answer = Answer::parse(&whep).unwrap();
        let tx = publisher
            .connect(&pub_answer, STEP_TIMEOUT)
            .unwrap()
            .peer(Some(ssrcs), 300)
            .unwrap();
        let mut rx = subscriber
            .connect(&sub_answer, STEP_TIMEOUT)
            .unwrap()
            .peer(None, 300)
            .unwrap();
        rx.expect(sub_answer.ssrcs.expect("the WHEP answer announces SSRCs"));
        for c in [&publisher, &subscriber] {
            c.socket.set_nonblocking(true).unwrap();
        }
        let expected = sub_answer.ssrcs.unwrap();
        ConnectedPair {
            publisher,
            subscriber,
            tx,
            rx,
            to: pub_answer.candidate,
            video_ssrc: expected.video_ssrc,
            audio_ssrc: expected.audio_ssrc,
        }
    })
    .await
    .unwrap()
}

/// Sends `secs` of audio (50 pps) and video (30 fps) on every pair's
/// publisher and receives on its subscriber; returns the pairs and, per
/// pair, `(audio, video)` packets received in this period.
async fn pump(pairs: Vec<ConnectedPair>, secs: f64) -> (Vec<ConnectedPair>, Vec<(u64, u64)>) {
    tokio::task::spawn_blocking(move || {
        let mut pairs = pairs;
        let count = |p: &ConnectedPair| {
            let get = |ssrc| p.rx.stream(ssrc).map_or(0, |s| s.received);
            (get(p.audio_ssrc), get(p.video_ssrc))
        };
        let before: Vec<(u64, u64)> = pairs.iter().map(count).collect();
        let period = Duration::from_secs_f64(secs);
        let mut pacers: Vec<MediaPacer> = pairs.iter().map(|_| MediaPacer::new()).collect();
        while pacers[0].elapsed() < period {
            for (p, pacer) in pairs.iter_mut().zip(&mut pacers) {
                pacer
                    .send_due(&mut p.tx, &p.publisher.socket, p.to)
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
            for p in &mut pairs {
                drain(&p.publisher.socket, &mut p.tx);
                drain(&p.subscriber.socket, &mut p.rx);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        for p in &mut pairs {
            drain(&p.subscriber.socket, &mut p.rx);
        }
        let after: Vec<(u64, u64)> = pairs.iter().map(count).collect();
        let delta = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
            .collect();
        (pairs, delta)
    })
    .await
    .unwrap()
}

async fn force_level(h: &Harness, level: Option<u8>) -> Value {
    let r = h
        .http
        .put(h.url("/v1/admin/overload"))
        .bearer_auth(ADMIN)
        .json(&json!({ "level": level }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Overload level 3 through the real workers: the routine consult loses
/// its video while its audio keeps flowing, the critical consult keeps
/// video; lifting the level brings the routine consult's video back.
/// Hostile datagrams at the shared worker port first leave both consults'
/// media intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_level_3_makes_routine_consults_audio_only() {
    let h = Harness::start("overload", "io_uring").await;
    let routine = connected_pair(&h, "routine", 0x2222_0001).await;
    let critical = connected_pair(&h, "critical", 0x3333_0001).await;

    // Hostile input at the worker's port from a stranger: garbage, forged
    // SRTP with a known SSRC, a binding request for an unknown user, and a
    // DTLS record. None of it may disturb the consults' media below.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged = vec![0x80u8, PT_OPUS, 0, 1, 0, 0, 0, 1];
    forged.extend_from_slice(&0x2222_0001u32.to_be_bytes());
    forged.extend_from_slice(&[0xa5; 100]);
    let unknown_user = {
        let mut out = vec![0u8; 256];
        let mut b = MessageBuilder::new(&mut out, BINDING_REQUEST, [3; 12]).unwrap();
        b.add_username(b"nobody:here").unwrap();
        b.add_message_integrity(b"whatever-password-000000")
            .unwrap();
        b.add_fingerprint().unwrap();
        let n = b.finish();
        out.truncate(n);
        out
    };
    for i in 0..200u32 {
        let garbage: Vec<u8> = (0..(i % 90 + 1)).map(|j| (i * 31 + j * 7) as u8).collect();
        for d in [
            &garbage[..],
            &forged[..],
            &unknown_user[..],
            &[22u8, 0xfe, 0xfd, 0, 0][..],
        ] {
            stranger.send_to(d, routine.to).unwrap();
        }
    }

    let (pairs, normal) = pump(vec![routine, critical], 1.5).await;
    println!("level 0 (audio, video) received: {normal:?}");
    for (audio, video) in &normal {
        assert!(*audio > 30 && *video > 30, "before overload: {normal:?}");
    }
    for p in &pairs {
        let report = p.rx.report();
        assert_eq!(report.srtp_failures, 0, "{report:?}");
        assert_eq!(report.unexpected, 0, "{report:?}");
        for (kind, s) in p.rx.streams() {
            assert_eq!(s.missing, 0, "{kind:?} disturbed by hostile input: {s:?}");
            assert_eq!(s.payload_mismatches, 0, "{kind:?}: {s:?}");
        }
    }

    let view = force_level(&h, Some(3)).await;
    assert_eq!(view["level"], 3, "{view}");
    // Caps apply between two worker batches; allow a short settle time.
    let (pairs, _) = pump(pairs, 0.3).await;
    let (pairs, capped) = pump(pairs, 1.5).await;
    println!("level 3 (audio, video) received: {capped:?}");
    let (routine_audio, routine_video) = capped[0];
    let (critical_audio, critical_video) = capped[1];
    assert!(routine_audio > 30, "routine audio stopped: {capped:?}");
    assert_eq!(routine_video, 0, "routine video not capped: {capped:?}");
    assert!(critical_audio > 30, "critical audio stopped: {capped:?}");
    assert!(critical_video > 30, "critical video capped: {capped:?}");

    let metrics = h.metrics().await;
    assert!(
        metric(&metrics, "switchboard_overload_level") == 3,
        "overload level gauge: {}",
        metrics
            .lines()
            .filter(|l| l.contains("overload"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    force_level(&h, Some(0)).await;
    let (pairs, _) = pump(pairs, 0.3).await;
    let (pairs, restored) = pump(pairs, 1.5).await;
    println!("level 0 again (audio, video) received: {restored:?}");
    assert!(
        restored[0].1 > 30,
        "routine video not restored: {restored:?}"
    );
    for p in &pairs {
        assert_eq!(p.rx.report().srtp_failures, 0);
    }
    drop(pairs);
    h.stop().await;
}
