//! The HTTP API over a real socket: consult lifecycle, tokens, WHIP/WHEP,
//! overload, metrics and the audit log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard_control::config::Config;
use switchboard_control::media::{InMemoryMediaPlane, MediaPlane};
use switchboard_control::overload::VideoCap;
use switchboard_control::server::{build_state, drain_until_done, Server};
use switchboard_control::token::{Claims, Role, TokenSigner};

const ADMIN: &str = "admin-token-0123456789";
const KEY: [u8; 32] = [0x42; 32];
const CHROME_OFFER: &str = include_str!("fixtures/chrome_whip_offer.sdp");

struct Harness {
    base: String,
    http: reqwest::Client,
    media: Arc<InMemoryMediaPlane>,
    server: Server,
    dir: PathBuf,
}

impl Harness {
    async fn start(name: &str) -> Self {
        Self::start_with_regions(name, "").await
    }

    /// `regions` is appended to the `[regions]` table (a region map).
    async fn start_with_regions(name: &str, regions: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-http-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("token.key");
        std::fs::write(&key_file, KEY).unwrap();
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\ntoken = \"{ADMIN}\"\n\
             [media]\nadvertised_addresses = [\"198.18.0.1\"]\nworkers = 2\n\
             [tokens]\nsigning_key_file = \"{}\"\n\
             [audit]\npath = \"{}\"\nfsync = \"group\"\ngroup_commit_ms = 5\n\
             [regions]\nname = \"eu-west\"\n{regions}\n[drain]\ntimeout_secs = 30\n",
            key_file.display(),
            dir.join("audit.jsonl").display()
        );
        let config = Config::parse(&text).unwrap();
        let media = Arc::new(InMemoryMediaPlane::new());
        let plane: Arc<dyn MediaPlane> = media.clone();
        let state = build_state(config, plane).unwrap();
        let server = Server::start(state).await.unwrap();
        Self {
            base: format!("http://{}", server.addr),
            http: reqwest::Client::new(),
            media,
            server,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn create_consult(&self, priority: &str) -> String {
        let r = self
            .admin_post(
                "/v1/consults",
                json!({"priority": priority, "residency": "eu"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn token(&self, consult: &str, participant: &str, role: &str) -> String {
        let r = self
            .admin_post(
                &format!("/v1/consults/{consult}/tokens"),
                json!({"participant": participant, "role": role}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn offer(
        &self,
        consult: &str,
        kind: &str,
        token: Option<&str>,
        sdp: &str,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(&format!("/v1/consults/{consult}/{kind}")))
            .header("content-type", "application/sdp")
            .body(sdp.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

fn whep_offer() -> String {
    CHROME_OFFER
        .replace("a=sendonly", "a=recvonly")
        .replace("a=simulcast:send q;h;f\r\n", "")
        .replace("a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n", "")
}

#[tokio::test]
async fn consult_lifecycle_tokens_whip_whep_overload_metrics_audit() {
    let h = Harness::start("lifecycle").await;

    assert_eq!(
        h.http.get(h.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        h.http.get(h.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Consult management needs the admin token.
    let r = h
        .http
        .post(h.url("/v1/consults"))
        .json(&json!({"priority": "routine", "residency": "eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = h
        .http
        .post(h.url("/v1/consults"))
        .bearer_auth("not-the-admin-token")
        .json(&json!({"priority": "routine", "residency": "eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = h
        .admin_post(
            "/v1/consults",
            json!({"priority": "whenever", "residency": "eu"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let list: Value = h
        .http
        .get(h.url("/v1/consults"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]), "nothing admitted");

    let c1 = h.create_consult("urgent").await;
    let c2 = h.create_consult("critical").await;
    let patient = h.token(&c1, "pat-1", "patient").await;
    let observer = h.token(&c1, "obs-1", "observer").await;
    let clinician_c2 = h.token(&c2, "doc-2", "clinician").await;

    // GET with a join token of the consult works; of another consult: 403.
    let r = h
        .http
        .get(h.url(&format!("/v1/consults/{c1}")))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["priority"], "urgent");
    assert_eq!(body["region"], "eu-west");
    let r = h
        .http
        .get(h.url(&format!("/v1/consults/{c1}")))
        .bearer_auth(&clinician_c2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // WHIP: every bad token is refused and nothing reaches the media plane.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = TokenSigner::new(&KEY).unwrap().issue(&Claims::new(
        &c1,
        "pat-1",
        Role::Patient,
        now - 100,
        10,
    ));
    let foreign = TokenSigner::new(&[1; 32]).unwrap().issue(&Claims::new(
        &c1,
        "pat-1",
        Role::Patient,
        now,
        100,
    ));
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("garbage"), StatusCode::UNAUTHORIZED),
        (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
        (Some(foreign.as_str()), StatusCode::UNAUTHORIZED),
        (Some(clinician_c2.as_str()), StatusCode::FORBIDDEN),
        (Some(observer.as_str()), StatusCode::FORBIDDEN),
    ] {
        let r = h.offer(&c1, "whip", token, CHROME_OFFER).await;
        assert_eq!(r.status(), status, "token {token:?}");
        assert!(h.media.legs().is_empty());
    }
    let r = h
        .http
        .post(h.url(&format!("/v1/consults/{c1}/whip")))
        .bearer_auth(&patient)
        .header("content-type", "text/plain")
        .body(CHROME_OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Malformed SDP: 400 with the reason.
    let r = h
        .offer(&c1, "whip", Some(&patient), "v=0\r\nnonsense\r\n")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "bad_sdp");
    assert!(e["reason"].as_str().unwrap().contains("SDP"), "{e}");
    let r = h
        .offer(
            &c1,
            "whip",
            Some(&patient),
            &CHROME_OFFER.replace("a=rtcp-mux\r\n", ""),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("rtcp-mux"));
    assert!(h.media.legs().is_empty());

    // A Chrome simulcast offer gets a WHIP answer.
    let r = h.offer(&c1, "whip", Some(&patient), CHROME_OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/v1/legs/"));
    assert!(r.headers().contains_key("etag"));
    let answer = r.text().await.unwrap();
    webrtc_sdp::parse_sdp(&answer, true).expect("answer parses");
    for line in [
        "a=ice-lite",
        "a=setup:passive",
        "a=rid:q recv",
        "a=simulcast:recv q;h;f",
        "a=candidate:1 1 udp 2130706431 198.18.0.1 4000",
    ] {
        assert!(answer.contains(line), "missing {line} in\n{answer}");
    }
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
    let fp = stats["dtls_fingerprint"].as_str().unwrap();
    assert!(answer.contains(&format!("a=fingerprint:sha-256 {fp}\r\n")));
    let legs = h.media.legs();
    assert_eq!(legs.len(), 1);
    let pub_leg = legs[0];
    let setup = h.media.leg(pub_leg).unwrap();
    assert_eq!(setup.negotiated.media[1].rids, vec!["q", "h", "f"]);
    assert_eq!(setup.negotiated.remote_ice.ufrag, "Jq4E");

    // WHEP by the observer subscribes it to the patient's publication.
    let r = h.offer(&c1, "whep", Some(&observer), &whep_offer()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let whep_answer = r.text().await.unwrap();
    assert!(whep_answer.contains("a=sendonly"));
    let sub_leg: u64 = h.media.legs().into_iter().find(|l| *l != pub_leg).unwrap();
    assert_eq!(h.media.subscriptions(), vec![(sub_leg, pub_leg)]);

    // No trickle ICE on an ICE-lite endpoint (RFC 9725 §4.3.1).
    let r = h
        .http
        .patch(h.url(&location))
        .bearer_auth(&patient)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=candidate:1 1 udp 1 198.18.0.2 5000 typ host\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "DELETE");

    // Only the leg's participant (or admin) ends it.
    let r = h
        .http
        .delete(h.url(&location))
        .bearer_auth(&observer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h.http.delete(h.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.media.legs().len(), 2);
    let r = h
        .http
        .delete(h.url(&location))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h.media.legs(), vec![sub_leg]);
    assert!(h.media.subscriptions().is_empty());
    let r = h
        .http
        .delete(h.url(&location))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Forced level 4: no new consults, urgent goes audio-only, critical
    // keeps its lowest layer.
    let r = h
        .http
        .put(h.url("/v1/admin/overload"))
        .bearer_auth(ADMIN)
        .json(&json!({"level": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["level"], 4);
    assert_eq!(view["forced"], 4);
    assert_eq!(view["consults"][&c1], "audio_only");
    assert_eq!(view["consults"][&c2], "lowest_only");
    let r = h
        .admin_post(
            "/v1/consults",
            json!({"priority": "critical", "residency": "eu"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "30");
    let rooms: Vec<VideoCap> = [1u32, 2]
        .iter()
        .map(|room| h.media.room_cap(*room).unwrap().video)
        .collect();
    assert_eq!(rooms, vec![VideoCap::AudioOnly, VideoCap::LowestOnly]);
    // Existing consults keep working at level 4: a new leg is admitted.
    let r = h.offer(&c1, "whip", Some(&patient), CHROME_OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = h
        .http
        .put(h.url("/v1/admin/overload"))
        .bearer_auth(ADMIN)
        .json(&json!({"level": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = h
        .http
        .put(h.url("/v1/admin/overload"))
        .bearer_auth(ADMIN)
        .json(&json!({"level": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["level"], 0);
    h.create_consult("routine").await;

    // Ending a consult: the patient may not, the clinician may.
    let r = h
        .http
        .delete(h.url(&format!("/v1/consults/{c1}")))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h
        .http
        .delete(h.url(&format!("/v1/consults/{c2}")))
        .bearer_auth(&clinician_c2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = h
        .http
        .delete(h.url(&format!("/v1/consults/{c1}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(h.media.legs().is_empty());

    // Metrics.
    let r = h.http.get(h.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    for needle in [
        "switchboard_consults 1\n",
        "switchboard_legs{direction=\"publish\"} 0\n",
        "switchboard_overload_level 0\n",
        "switchboard_overload_level_changes_total{from=\"0\",to=\"4\",reason=\"forced\"} 1\n",
        "switchboard_overload_level_changes_total{from=\"4\",to=\"0\",reason=\"force_cleared\"} 1\n",
        "switchboard_http_requests_total{route=\"/v1/consults/{id}/whip\",status=\"401\"} 4\n",
        "switchboard_http_requests_total{route=\"/v1/consults/{id}/whip\",status=\"201\"} 2\n",
        "switchboard_sdp_rejected_total 2\n",
        "switchboard_media_legs 0\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }

    // Audit: who, what, where; never SDP or tokens.
    let lines = h.audit_lines();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    for e in [
        "consult_created",
        "token_issued",
        "leg_publish",
        "leg_subscribe",
        "leg_ended",
        "overload_level",
        "consult_refused",
        "consult_ended",
    ] {
        assert!(events.contains(&e), "no {e} in {events:?}");
    }
    let publish = lines.iter().find(|l| l["event"] == "leg_publish").unwrap();
    assert_eq!(publish["participant"], "pat-1");
    assert_eq!(publish["role"], "patient");
    assert_eq!(publish["region"], "eu-west");
    assert!(publish["remote"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let raw = std::fs::read_to_string(h.dir.join("audit.jsonl")).unwrap();
    assert!(!raw.contains("v=0") && !raw.contains(&patient) && !raw.contains("Jq4E"));

    h.server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&h.dir).unwrap();
}

#[tokio::test]
async fn drain_refuses_new_consults_and_ends_when_consults_end() {
    let h = Harness::start("drain").await;
    let c = h.create_consult("routine").await;
    let state = h.server.state.clone();
    state.begin_drain(Instant::now());
    let r = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = h
        .admin_post(
            "/v1/consults",
            json!({"priority": "critical", "residency": "eu"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "draining");
    // Running consults still take legs while draining.
    let t = h.token(&c, "pat-9", "patient").await;
    assert_eq!(
        h.offer(&c, "whip", Some(&t), CHROME_OFFER).await.status(),
        StatusCode::CREATED
    );
    let waiter = tokio::spawn({
        let state = state.clone();
        async move { drain_until_done(&state).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "a consult is still open");
    let r = h
        .http
        .delete(h.url(&format!("/v1/consults/{c}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let remaining = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("drain ends once the consult ends")
        .unwrap();
    assert_eq!(remaining, 0);
    h.server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&h.dir).unwrap();
}

/// With a region map, a consult whose residency tag excludes this
/// appliance's region is refused with the reason, audited, and not created.
#[tokio::test]
async fn residency_outside_this_region_is_refused_with_the_reason() {
    let h = Harness::start_with_regions(
        "residency",
        "[[regions.region]]\nname = \"eu-west\"\njurisdictions = [\"eu\"]\n\
         appliances = [\"sb-eu-1\"]\n\
         [[regions.region]]\nname = \"us-east\"\njurisdictions = [\"us\"]\n\
         appliances = [\"sb-us-1\"]\n\
         [regions.latency_ms.eu-west]\nus-east = 40\n",
    )
    .await;
    let create = |tag: &str| {
        h.admin_post(
            "/v1/consults",
            json!({"priority": "routine", "residency": tag}),
        )
    };
    // A German patient (country code) and an EU tag may use this EU box.
    for tag in ["de", "eu"] {
        let r = create(tag).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{tag}");
    }
    // A US-only consult may not, even though this box is idle.
    let r = create("us").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "residency", "{e}");
    let message = e["reason"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("us") && message.contains("eu-west"), "{e}");
    // An unknown tag is refused too, never placed by default.
    let r = create("atlantis").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let list: Value = h
        .http
        .get(h.url("/v1/consults"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consults = list
        .as_array()
        .or_else(|| list["consults"].as_array())
        .map_or(0, Vec::len);
    assert_eq!(consults, 2, "{list}");
    let refused = h
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "consult_refused")
        .count();
    assert_eq!(refused, 2, "{:?}", h.audit_lines());
}
