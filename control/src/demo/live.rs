//! Part 3 of the demo: a two-person consult through the running appliance.
//!
//! The appliance starts in this process on the embedded default
//! configuration, moved to loopback and ephemeral ports so it never clashes
//! with an appliance already running: its HTTP API, its SFU workers and the
//! engine the configuration names. A consult is created over the API, a
//! patient and a clinician each publish over WHIP and subscribe to the other
//! over WHEP, as the consult page does in a browser: ICE checks, a DTLS-SRTP
//! handshake per leg, then three seconds of audio and video both ways. Each
//! side decrypts what it receives with its own leg's keys and checks every
//! payload and the sequence. The consult is ended over the API at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use dataplane::sfu::peer::Peer;
use dataplane::sfu::MediaKind;
use serde::Serialize;
use serde_json::{json, Value};

use switchboard_control::config::{Config, DEFAULT_TOML};
use switchboard_control::participant::{drain, Answer, MediaPacer, Participant, PublishSsrcs};
use switchboard_control::server::{build_state_over_workers, Server};

/// How long media flows.
const MEDIA_SECS: u64 = 3;
/// Every network step (ICE, DTLS, HTTP) is bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Video bitrate of each synthetic camera.
const VIDEO_KBPS: u32 = 600;

/// One direction of the call.
#[derive(Debug, Clone, Serialize)]
pub struct Direction {
    /// Who publishes.
    pub from: &'static str,
    /// Who receives.
    pub to: &'static str,
    /// Media packets the publisher sent.
    pub sent: u64,
    /// Audio packets received and decrypted.
    pub audio_received: u64,
    /// Video packets received and decrypted.
    pub video_received: u64,
    /// Sequence numbers still missing at the end.
    pub missing: u64,
    /// Packets that failed SRTP on the receiving side.
    pub srtp_failures: u64,
    /// Payloads that did not verify.
    pub payload_mismatches: u64,
    /// From the first media packet sent to the first one decrypted on the
    /// other side, ms.
    pub first_packet_ms: Option<f64>,
}

/// What the live consult showed.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// The SFU engine the workers ran.
    pub engine: String,
    /// The appliance's HTTP API.
    pub api: String,
    /// The consult's id.
    pub consult: String,
    /// Legs that completed ICE and DTLS.
    pub legs_connected: usize,
    /// ICE check plus DTLS handshake of the slowest leg, ms.
    pub slowest_leg_connect_ms: f64,
    /// Patient → clinician and clinician → patient.
    pub directions: Vec<Direction>,
    /// The appliance's media statistics at the end (`/v1/admin/stats`).
    pub appliance_media: Value,
    /// Status of `DELETE /v1/consults/{id}`.
    pub end_status: u16,
}

/// A UDP port range on loopback that is free now; the workers bind it next.
fn free_port_range(workers: u16) -> Result<(u16, u16)> {
    let seed = u16::try_from(std::process::id() % 2000).unwrap_or(0);
    for attempt in 0..500u16 {
        let first = 42_000 + (seed * 7 + attempt * 11) % 20_000;
        let ports: Vec<u16> = (first..first.saturating_add(workers)).collect();
        if ports.len() == usize::from(workers)
            && ports
                .iter()
                .all(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
        {
            return Ok((first, first + workers - 1));
        }
    }
    bail!("no free UDP port range on loopback")
}

fn random_token() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map(|()| hex::encode(bytes))
        .unwrap_or_else(|_| format!("demo-{}", std::process::id()))
}

/// The appliance's embedded default configuration, moved to loopback and
/// free ports, with an admin token of this run and the audit log in `dir`.
fn demo_config(dir: &std::path::Path, admin: &str) -> Result<Config> {
    let mut config = Config::parse(DEFAULT_TOML).context("the embedded default configuration")?;
    config.http.listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    config.admin.token = admin.to_owned();
    config.media.advertised_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    config.media.workers = 1;
    let (min, max) = free_port_range(1)?;
    config.media.port_min = min;
    config.media.port_max = max;
    config.audit.path = dir.join("audit.jsonl");
    config.validate().context("the demo configuration")?;
    Ok(config)
}

struct Api {
    base: String,
    http: reqwest::Client,
    admin: String,
}

impl Api {
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .timeout(STEP_TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn token(&self, consult: &str, participant: &str, role: &str) -> Result<String> {
        let (status, v) = self
            .json(
                reqwest::Method::POST,
                &format!("/v1/consults/{consult}/tokens"),
                &self.admin,
                Some(json!({"participant": participant, "role": role})),
            )
            .await?;
        ensure!(status == 201, "token for {participant}: {status} {v}");
        v["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }

    /// WHIP or WHEP: the SDP answer.
    async fn signal(
        &self,
        consult: &str,
        kind: &str,
        token: &str,
        offer: String,
    ) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/v1/consults/{consult}/{kind}", self.base))
            .header("content-type", "application/sdp")
            .bearer_auth(token)
            .body(offer)
            .timeout(STEP_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("POST {kind}"))?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.as_u16() == 201, "{kind}: {status} {text}");
        Ok(text)
    }
}

/// One participant's two legs.
struct Side {
    name: &'static str,
    publisher: Participant,
    subscriber: Participant,
    ssrcs: PublishSsrcs,
    publish_answer: Option<Answer>,
    subscribe_answer: Option<Answer>,
}

/// A side once connected: its SRTP endpoints and where it sends.
struct ConnectedSide {
    name: &'static str,
    publisher: Participant,
    subscriber: Participant,
    tx: Peer,
    rx: Peer,
    to: SocketAddr,
    first_sent: Option<Instant>,
    first_received: Option<Instant>,
}

fn connect_side(side: Side) -> Result<(ConnectedSide, Duration)> {
    let started = Instant::now();
    let publish = side.publish_answer.context("no WHIP answer")?;
    let subscribe = side.subscribe_answer.context("no WHEP answer")?;
    let tx = side
        .publisher
        .connect(&publish, STEP_TIMEOUT)
        .with_context(|| format!("{}'s publish leg", side.name))?
        .peer(Some(side.ssrcs), VIDEO_KBPS)?;
    let mut rx = side
        .subscriber
        .connect(&subscribe, STEP_TIMEOUT)
        .with_context(|| format!("{}'s subscribe leg", side.name))?
        .peer(None, VIDEO_KBPS)?;
    rx.expect(
        subscribe
            .ssrcs
            .context("the WHEP answer announces no SSRCs")?,
    );
    for p in [&side.publisher, &side.subscriber] {
        p.socket.set_nonblocking(true)?;
    }
    Ok((
        ConnectedSide {
            name: side.name,
            publisher: side.publisher,
            subscriber: side.subscriber,
            tx,
            rx,
            to: publish.candidate,
            first_sent: None,
            first_received: None,
        },
        started.elapsed(),
    ))
}

/// Audio every 20 ms and 30 fps video from both sides for [`MEDIA_SECS`].
fn exchange_media(sides: &mut [ConnectedSide]) -> Result<()> {
    let mut pacers: Vec<MediaPacer> = sides.iter().map(|_| MediaPacer::new()).collect();
    while pacers[0].elapsed() < Duration::from_secs(MEDIA_SECS) {
        for (side, pacer) in sides.iter_mut().zip(&mut pacers) {
            if pacer.send_due(&mut side.tx, &side.publisher.socket, side.to)? > 0 {
                side.first_sent.get_or_insert_with(Instant::now);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
        for side in sides.iter_mut() {
            // Publishers hear key-frame requests and reports.
            drain(&side.publisher.socket, &mut side.tx);
            if drain(&side.subscriber.socket, &mut side.rx) > 0 {
                side.first_received.get_or_insert_with(Instant::now);
            }
        }
    }
    // What is still in flight.
    std::thread::sleep(Duration::from_millis(50));
    for side in sides.iter_mut() {
        drain(&side.subscriber.socket, &mut side.rx);
    }
    Ok(())
}

/// Runs the live consult; the appliance stops before this returns.
pub fn run() -> Result<LiveReport> {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-demo-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run_in(&dir)));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &std::path::Path) -> Result<LiveReport> {
    use switchboard_control::config::Engine;
    let admin = random_token();
    let config = demo_config(dir, &admin)?;
    let (state, engine) = match build_state_over_workers(config.clone()) {
        Ok(state) => (state, config.media.engine),
        // A host that forbids io_uring (some container profiles) still
        // shows the consult, on the baseline engine, and says so.
        Err(e) if config.media.engine == Engine::IoUring => {
            eprintln!("note: the io_uring media worker did not start ({e}); the live consult runs on the tokio engine");
            let mut fallback = config;
            fallback.media.engine = Engine::Tokio;
            let state = build_state_over_workers(fallback).context("starting the SFU workers")?;
            (state, Engine::Tokio)
        }
        Err(e) => return Err(e).context("starting the SFU workers"),
    };
    let engine = match engine {
        Engine::IoUring => "io_uring",
        Engine::Tokio => "tokio",
    }
    .to_owned();
    let server = Server::start(state.clone())
        .await
        .context("starting the HTTP API")?;
    let api = Api {
        base: format!("http://{}", server.addr),
        http: reqwest::Client::new(),
        admin,
    };
    let outcome = consult(&api, engine).await;
    let stopped = server.shutdown().await;
    state.media().shutdown();
    let report = outcome?;
    stopped.context("stopping the HTTP API")?;
    Ok(report)
}

async fn consult(api: &Api, engine: String) -> Result<LiveReport> {
    let (status, created) = api
        .json(
            reqwest::Method::POST,
            "/v1/consults",
            &api.admin,
            Some(json!({"priority": "routine", "residency": "eu"})),
        )
        .await?;
    ensure!(status == 201, "creating the consult: {status} {created}");
    let consult = created["id"]
        .as_str()
        .context("no consult id in the answer")?
        .to_owned();
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let mut sides = Vec::new();
    for (name, role, base) in [
        ("patient", "patient", 0x5a00_0001u32),
        ("clinician", "clinician", 0x5b00_0001u32),
    ] {
        sides.push((
            api.token(&consult, name, role).await?,
            Side {
                name,
                publisher: Participant::new(&format!("{name}-pub"), loopback)?,
                subscriber: Participant::new(&format!("{name}-sub"), loopback)?,
                ssrcs: PublishSsrcs::from_base(base),
                publish_answer: None,
                subscribe_answer: None,
            },
        ));
    }
    // Both publish first, then both subscribe to the other: the order a
    // consult page follows once the camera is on.
    for (token, side) in &mut sides {
        let offer = side.publisher.offer("sendonly", Some(side.ssrcs));
        let answer = api.signal(&consult, "whip", token, offer).await?;
        side.publish_answer = Some(Answer::parse(&answer)?);
    }
    for (token, side) in &mut sides {
        let offer = side.subscriber.offer("recvonly", None);
        let answer = api.signal(&consult, "whep", token, offer).await?;
        side.subscribe_answer = Some(Answer::parse(&answer)?);
    }
    let sides: Vec<Side> = sides.into_iter().map(|(_, s)| s).collect();
    let (mut connected, slowest) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut connected = Vec::new();
        let mut slowest = Duration::ZERO;
        for side in sides {
            let (c, took) = connect_side(side)?;
            slowest = slowest.max(took);
            connected.push(c);
        }
        Ok((connected, slowest))
    })
    .await??;
    let legs_connected = connected.len() * 2;
    connected = tokio::task::spawn_blocking(move || -> Result<_> {
        exchange_media(&mut connected)?;
        Ok(connected)
    })
    .await??;

    let mut directions = Vec::new();
    for (i, side) in connected.iter().enumerate() {
        let other = &connected[1 - i];
        let count = |kind: MediaKind| {
            other
                .rx
                .streams()
                .filter(|(k, _)| *k == kind)
                .map(|(_, s)| s.received)
                .sum::<u64>()
        };
        let streams: Vec<_> = other.rx.streams().map(|(_, s)| s.clone()).collect();
        directions.push(Direction {
            from: side.name,
            to: other.name,
            sent: side.tx.report().sent,
            audio_received: count(MediaKind::Audio),
            video_received: count(MediaKind::Video),
            missing: streams.iter().map(|s| s.missing).sum(),
            srtp_failures: other.rx.report().srtp_failures,
            payload_mismatches: streams.iter().map(|s| s.payload_mismatches).sum(),
            first_packet_ms: side
                .first_sent
                .zip(other.first_received)
                .map(|(s, r)| r.saturating_duration_since(s).as_secs_f64() * 1e3),
        });
    }
    let (_, stats) = api
        .json(reqwest::Method::GET, "/v1/admin/stats", &api.admin, None)
        .await?;
    let (end_status, _) = api
        .json(
            reqwest::Method::DELETE,
            &format!("/v1/consults/{consult}"),
            &api.admin,
            None,
        )
        .await?;
    Ok(LiveReport {
        engine,
        api: api.base.clone(),
        consult,
        legs_connected,
        slowest_leg_connect_ms: slowest.as_secs_f64() * 1e3,
        directions,
        appliance_media: stats["media"].clone(),
        end_status,
    })
}

/// Whether the consult worked: media both ways, all of it verified.
pub fn check(report: &LiveReport) -> Result<()> {
    ensure!(
        report.legs_connected == 4,
        "{} legs connected",
        report.legs_connected
    );
    for d in &report.directions {
        let who = format!("{} → {}", d.from, d.to);
        ensure!(
            d.audio_received > 0 && d.video_received > 0,
            "{who}: no media arrived"
        );
        ensure!(
            d.srtp_failures == 0,
            "{who}: {} SRTP failures",
            d.srtp_failures
        );
        ensure!(
            d.payload_mismatches == 0,
            "{who}: {} payloads did not verify",
            d.payload_mismatches
        );
    }
    ensure!(
        report.end_status == 200,
        "ending the consult: {}",
        report.end_status
    );
    Ok(())
}

/// Prints the live consult's table.
pub fn print(report: &LiveReport) {
    println!(
        "3. live consult through the appliance ({} engine)",
        report.engine
    );
    println!(
        "   API {}, consult {}: {} legs over WHIP/WHEP, ICE + DTLS-SRTP (slowest leg {:.1} ms)",
        report.api, report.consult, report.legs_connected, report.slowest_leg_connect_ms
    );
    println!(
        "   {:<22} {:>6} {:>7} {:>7} {:>8} {:>6} {:>11}",
        "direction", "sent", "audio", "video", "missing", "srtp!", "first (ms)"
    );
    for d in &report.directions {
        println!(
            "   {:<22} {:>6} {:>7} {:>7} {:>8} {:>6} {:>11}",
            format!("{} → {}", d.from, d.to),
            d.sent,
            d.audio_received,
            d.video_received,
            d.missing,
            d.srtp_failures,
            d.first_packet_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
        );
    }
    let m = &report.appliance_media;
    println!(
        "   appliance: {} packets forwarded, {} active legs at the end; consult ended ({})",
        m["packets_forwarded"], m["active_legs"], report.end_status
    );
}
