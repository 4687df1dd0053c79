//! A pool of three appliances in two regions on a real etcd (Debian
//! `etcd-server`), each `switchboard run` in its own network namespace and
//! etcd in a hub namespace joined to each by a veth pair.
//!
//! Region `de-fra` (jurisdiction `de`) has box-1 and box-2, region `fr-par`
//! (jurisdiction `fr`) has box-3; tag `de` allows Germany only, tag `eu`
//! both. Every box holds two consults (practical egress ceiling 10 Mbit/s,
//! 9 Mbit/s booked per consult, never past twice the practical ceiling).
//! The test shows:
//!
//! * any appliance serves the API: a `de` consult created through the
//!   French box runs in Germany although the French box is idle;
//! * a consult created through a box runs in that box's region when its
//!   residency allows it (the nearest region to the router);
//! * routers racing from all three boxes for the last German headroom:
//!   exactly as many creates succeed as there were free slots, the rest
//!   are refused for lack of room, and no box is booked past its capacity;
//! * the German box carrying an `eu` consult killed: that consult moves to
//!   the French box within the lease TTL plus a stated bound (measured and
//!   printed), the move is shown to the participant as a reconnect hint,
//!   and their join token opens a new WHIP resource on the new box; the
//!   dead box's `de` consult, with Germany full, is left unplaced with the
//!   reason, never moved to France;
//! * box-3 cut off from etcd: it stops admitting at once and reports not
//!   ready within the TTL plus the bound; once reconnected it admits again;
//! * the German region dark (its last box killed): its `eu` consult moves
//!   to the French neighbour, its `de` consult is left unplaced;
//! * at every step no consult is carried by two boxes, and each box
//!   carries only what the pool's record says.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::appliance::{Appliance, ApplianceConfig, ADMIN_TOKEN};
use e2e::http::{Request, Response};
use e2e::{privileged_or_skip, tool_or_skip, Lab, Netns, TempDir};
use serde_json::{json, Value};
use switchboard_control::participant::Participant;

const ETCD: &str = "etcd";
const TTL_SECS: u64 = 2;
/// Beyond the lease TTL: one upkeep period (TTL/3) for a survivor to see
/// the expiry, etcd's own lease-expiry tick (500 ms), and scheduling.
const BOUND: Duration = Duration::from_secs(2);
const API_PORT: u16 = 8080;
const MEDIA_PORT: u16 = 40000;
const SIGNING_KEY: &str = "pool-signing-key-0123456789abcdef0123456789";

/// etcd in the hub namespace; killed and its data removed on drop.
struct Etcd {
    child: Child,
    _dir: TempDir,
}

impl Etcd {
    fn start(hub: &Netns, listen: &[Ipv4Addr]) -> Self {
        let dir = TempDir::new("etcd").unwrap();
        let clients: Vec<String> = listen.iter().map(|a| format!("http://{a}:2379")).collect();
        let clients = clients.join(",");
        let child = Command::new("ip")
            .args(["netns", "exec", hub.name(), ETCD])
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

fn extra_config(name: &str, region: &str, etcd: Ipv4Addr, key_file: &Path) -> String {
    format!(
        "[tokens]\nsigning_key_file = \"{key}\"\n\
         [overload]\negress_ceiling_bps = 10000000\ncpu_ceiling_percent = 100.0\n\
         [regions]\nname = \"{region}\"\n\
         [regions.jurisdictions]\nde = [\"de\"]\nfr = [\"fr\"]\n\
         [regions.residency]\neu = [\"de\", \"fr\"]\n\
         [[regions.region]]\nname = \"de-fra\"\njurisdictions = [\"de\"]\nappliances = [\"box-1\", \"box-2\"]\n\
         [[regions.region]]\nname = \"fr-par\"\njurisdictions = [\"fr\"]\nappliances = [\"box-3\"]\n\
         [regions.latency_ms.de-fra]\nfr-par = 10\n\
         [cluster]\netcd = [\"http://{etcd}:2379\"]\nname = \"{name}\"\nlease_ttl_secs = {TTL_SECS}\n\
         consult_egress_bps = 9000000\n",
        key = key_file.display(),
    )
}

fn send_json(app: &Appliance, method: &str, path: &str, bearer: &str, body: &Value) -> Response {
    let body = serde_json::to_vec(body).unwrap();
    app.send(
        &Request::new(method, path)
            .bearer(bearer)
            .body("application/json", &body)
            .timeout(Duration::from_secs(5)),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn create(app: &Appliance, residency: &str) -> Response {
    send_json(
        app,
        "POST",
        "/v1/consults",
        ADMIN_TOKEN,
        &json!({"priority": "routine", "residency": residency}),
    )
}

fn created(app: &Appliance, residency: &str) -> Value {
    let r = create(app, residency);
    assert_eq!(r.status, 201, "create {residency}: {}", r.text());
    r.json().unwrap()
}

fn get(app: &Appliance, path: &str, bearer: &str) -> Response {
    app.send(
        &Request::new("GET", path)
            .bearer(bearer)
            .timeout(Duration::from_secs(5)),
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn record(app: &Appliance, id: &str) -> Value {
    let r = get(app, &format!("/v1/consults/{id}"), ADMIN_TOKEN);
    assert_eq!(r.status, 200, "GET consult {id}: {}", r.text());
    r.json().unwrap()
}

fn appliance_of(consult: &Value) -> Option<String> {
    consult["pool"]["appliance"].as_str().map(str::to_owned)
}

fn whip_offer() -> String {
    // Only the offer's text is needed; the socket is never used.
    let p = Participant::new("pooltest", SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    p.offer("sendonly", None)
}

/// Checks that no consult is carried by two boxes and that each box
/// carries only consults the pool places on it.
fn assert_single_placement(live: &[(&str, &Appliance)], ids: &[String]) {
    let mut carriers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, app) in live {
        let r = get(app, "/v1/consults", ADMIN_TOKEN);
        assert_eq!(r.status, 200, "{}", r.text());
        for c in r.json().unwrap().as_array().unwrap() {
            carriers
                .entry(c["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(name);
        }
    }
    let (_, any) = live[0];
    for id in ids {
        let on = carriers.get(id).cloned().unwrap_or_default();
        assert!(on.len() <= 1, "consult {id} carried by {on:?}");
        let r = get(any, &format!("/v1/consults/{id}"), ADMIN_TOKEN);
        if r.status == 404 {
            assert!(on.is_empty(), "ended consult {id} still carried by {on:?}");
            continue;
        }
        let placed = appliance_of(&r.json().unwrap());
        if let Some(box_name) = on.first() {
            assert_eq!(
                placed.as_deref(),
                Some(*box_name),
                "{box_name} carries {id} but the pool places it on {placed:?}"
            );
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, at most `limit`.
fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pool_places_fails_over_and_never_double_places() {
    if !privileged_or_skip() || !tool_or_skip(ETCD, "etcd-server") {
        return;
    }
    let lab = Lab::star(3).unwrap();
    let hub_addrs: Vec<Ipv4Addr> = lab.links.iter().map(|l| l.appliance.v4).collect();
    let etcd = Etcd::start(&lab.appliance, &hub_addrs);
    let dir = TempDir::new("pool").unwrap();
    let key_file = dir.path().join("signing.key");
    std::fs::write(&key_file, SIGNING_KEY).unwrap();

    let regions = ["de-fra", "de-fra", "fr-par"];
    let mut boxes: Vec<Appliance> = lab
        .links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let cfg = ApplianceConfig {
                listen: SocketAddr::new(IpAddr::V4(link.peer.v4), API_PORT),
                advertised: vec![IpAddr::V4(link.peer.v4)],
                media_port: MEDIA_PORT,
                log_level: "info".into(),
            };
            let extra = extra_config(
                &format!("box-{}", i + 1),
                regions[i],
                link.appliance.v4,
                &key_file,
            );
            // etcd may still be starting: the appliance waits for it.
            Appliance::start_with(&link.peer.ns, &cfg, &extra).unwrap()
        })
        .collect();
    // Measured load follows this shared machine's CPU: pin the level so
    // only the bookings decide where consults fit.
    for b in &boxes {
        b.force_overload_level(Some(0)).unwrap();
    }
    // All three registered: each admits through the router.
    for b in &boxes {
        until(Duration::from_secs(20), "pool registration", || {
            let r = get(b, "/readyz", ADMIN_TOKEN);
            (r.status == 200).then_some(())
        });
    }
    // The readiness above is each box's own lease; the router also needs
    // the others' records.
    std::thread::sleep(Duration::from_secs(1));
    let mut ids: Vec<String> = Vec::new();

    // Through box-1: an `eu` consult stays in box-1's own region. Which
    // German box takes it follows their measured load: the box "x".
    let eu1 = created(&boxes[0], "eu");
    assert_eq!(eu1["pool"]["region"], "de-fra", "{eu1}");
    let x_name = appliance_of(&eu1).unwrap();
    let x = if x_name == "box-1" { 0 } else { 1 };
    let y = 1 - x;
    let eu1_id = eu1["id"].as_str().unwrap().to_owned();
    ids.push(eu1_id.clone());
    // Through the French box: a `de` consult runs in Germany although
    // box-3 is idle.
    let de = created(&boxes[2], "de");
    assert_eq!(de["pool"]["region"], "de-fra", "{de}");
    assert_eq!(
        de["pool"]["placement"]["allowed_jurisdictions"],
        json!(["de"])
    );
    ids.push(de["id"].as_str().unwrap().to_owned());
    // And an `eu` consult through it stays in France.
    let eu3 = created(&boxes[2], "eu");
    assert_eq!(appliance_of(&eu3).as_deref(), Some("box-3"), "{eu3}");
    let eu3_id = eu3["id"].as_str().unwrap().to_owned();
    ids.push(eu3_id.clone());

    // The race: two German slots left, six creates from three routers.
    let results: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let b = &boxes[i % 3];
                s.spawn(move || create(b, "de"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut won = 0;
    for r in &results {
        match r.status {
            201 => {
                won += 1;
                let v = r.json().unwrap();
                let on = appliance_of(&v);
                assert!(
                    matches!(on.as_deref(), Some("box-1" | "box-2")),
                    "a `de` consult placed on {on:?}"
                );
                ids.push(v["id"].as_str().unwrap().to_owned());
            }
            503 => {
                let v = r.json().unwrap();
                assert_eq!(v["error"], "no_room", "{v}");
                assert!(v["reason"].as_str().unwrap().contains("de-fra"), "{v}");
            }
            s => panic!("racing create: {s} {}", r.text()),
        }
    }
    assert_eq!(won, 2, "two free slots, {won} racing creates won");
    let mut per_box: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let on = appliance_of(&record(&boxes[0], id)).unwrap();
        *per_box.entry(on).or_default() += 1;
    }
    assert_eq!(
        per_box,
        BTreeMap::from([
            ("box-1".to_owned(), 2),
            ("box-2".to_owned(), 2),
            ("box-3".to_owned(), 1)
        ]),
        "bookings"
    );
    println!("race: 6 routers' creates for 2 free slots, {won} placed, 4 refused (no room)");
    // The pool report: where consults run and the boxes each region needs
    // at the practical ceiling (10/9 of a consult per box here), one spare.
    let r = get(
        &boxes[2],
        "/v1/admin/pool?surge=1.5&forecast=de-fra:10",
        ADMIN_TOKEN,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json().unwrap();
    assert_eq!(
        report["appliances"].as_array().unwrap().len(),
        3,
        "{report}"
    );
    assert_eq!(report["consults_by_appliance"]["box-3"], 1, "{report}");
    let de_fra = &report["headroom"][0];
    assert_eq!(de_fra["region"], "de-fra", "{report}");
    assert_eq!(de_fra["current"], 4.0);
    // 10 forecast → 9 + 1 boxes; 15 at the surge → 14 + 1; two declared.
    assert_eq!(
        (
            de_fra["boxes_forecast"].as_u64(),
            de_fra["boxes_surge"].as_u64()
        ),
        (Some(10), Some(15))
    );
    assert_eq!(de_fra["shortfall"], 13);
    let de_on_x: String = ids
        .iter()
        .find(|id| {
            **id != eu1_id && appliance_of(&record(&boxes[2], id)).as_deref() == Some(&x_name)
        })
        .cloned()
        .expect("a `de` consult on box x");

    // A patient joins the `eu` consult on box x (token from another box:
    // the pool shares the signing key).
    let token = send_json(
        &boxes[2],
        "POST",
        &format!("/v1/consults/{eu1_id}/tokens"),
        ADMIN_TOKEN,
        &json!({"participant": "patient-1", "role": "patient"}),
    );
    assert_eq!(token.status, 201, "{}", token.text());
    let token = token.json().unwrap()["token"].as_str().unwrap().to_owned();
    let offer = whip_offer();
    let whip = |app: &Appliance| {
        app.send(
            &Request::new("POST", &format!("/v1/consults/{eu1_id}/whip"))
                .bearer(&token)
                .body("application/sdp", offer.as_bytes())
                .timeout(Duration::from_secs(5)),
        )
        .unwrap()
    };
    let r = whip(&boxes[x]);
    assert_eq!(r.status, 201, "WHIP on {x_name}: {}", r.text());
    // Signalling on a box that does not carry it says where it runs.
    let r = whip(&boxes[y]);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&x_name), "{}", r.text());
    assert_single_placement(
        &[
            ("box-1", &boxes[0]),
            ("box-2", &boxes[1]),
            ("box-3", &boxes[2]),
        ],
        &ids,
    );

    // Box x dies.
    boxes[x].kill();
    let (moved, failover) = until(
        Duration::from_secs(TTL_SECS) + BOUND,
        "the eu consult re-placed after its box died",
        || {
            let r = get(&boxes[y], &format!("/v1/consults/{eu1_id}"), &token);
            let v = r.json().ok()?;
            (r.status == 200 && appliance_of(&v).as_deref() == Some("box-3")).then_some(v)
        },
    );
    println!(
        "failover: {x_name} killed, its `eu` consult on box-3 after {failover:?} \
         (lease TTL {TTL_SECS} s, bound TTL + {BOUND:?})"
    );
    assert_eq!(
        moved["pool"]["reconnect"]["from"],
        x_name.as_str(),
        "{moved}"
    );
    assert!(
        moved["pool"]["generation"].as_u64().unwrap() >= 2,
        "{moved}"
    );
    assert_eq!(moved["pool"]["region"], "fr-par");
    let api = moved["pool"]["api"].as_str().unwrap();
    assert_eq!(
        api,
        format!(
            "http://{}",
            SocketAddr::new(IpAddr::V4(lab.links[2].peer.v4), API_PORT)
        )
    );
    // The participant reconnects there with the token it has.
    let r = whip(&boxes[2]);
    assert_eq!(r.status, 201, "WHIP on box-3 after the move: {}", r.text());
    // Its `de` consult may not leave Germany, and Germany is full.
    let (unplaced, _) = until(
        Duration::from_secs(TTL_SECS) + BOUND,
        "the de consult marked unplaced",
        || {
            let v = record(&boxes[y], &de_on_x);
            v["pool"]["reconnect"]["from"]
                .as_str()
                .is_some()
                .then_some(v)
        },
    );
    assert!(unplaced["pool"]["appliance"].is_null(), "{unplaced}");
    let reason = unplaced["pool"]["reason"].as_str().unwrap();
    assert!(reason.contains("no allowed region has room"), "{reason}");
    println!("residency: {x_name}'s `de` consult unplaced, not moved to France: {reason}");
    let y_name = format!("box-{}", y + 1);
    let live = [(y_name.as_str(), &boxes[y]), ("box-3", &boxes[2])];
    assert_single_placement(&live, &ids);

    // box-3 cut off from etcd: no new consults at once, not ready within
    // the TTL plus the bound; its consults keep running locally.
    lab.appliance
        .ip(&["link", "set", &lab.links[2].appliance.ifname, "down"])
        .unwrap();
    let r = create(&boxes[2], "eu");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json().unwrap()["error"], "cluster_unreachable");
    let (_, not_ready) = until(
        Duration::from_secs(TTL_SECS) + BOUND,
        "box-3 not ready",
        || (get(&boxes[2], "/readyz", ADMIN_TOKEN).status == 503).then_some(()),
    );
    println!("partition: box-3 refused new consults at once, not ready after {not_ready:?}");
    // The ended `eu` consult frees room for when it is back.
    let r = send_json(
        &boxes[y],
        "DELETE",
        &format!("/v1/consults/{eu3_id}"),
        ADMIN_TOKEN,
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    lab.appliance
        .ip(&["link", "set", &lab.links[2].appliance.ifname, "up"])
        .unwrap();
    let (_, back) = until(
        Duration::from_secs(TTL_SECS) + BOUND,
        "box-3 back in the pool",
        || (get(&boxes[2], "/readyz", ADMIN_TOKEN).status == 200).then_some(()),
    );
    println!("partition healed: box-3 ready again after {back:?}");
    // Give the pool one upkeep period to settle, then check everything.
    std::thread::sleep(Duration::from_secs(TTL_SECS));
    assert_single_placement(&live, &ids);
    let r = get(&boxes[2], "/v1/consults", ADMIN_TOKEN);
    assert!(
        !r.text().contains(&eu3_id),
        "box-3 still carries the consult ended elsewhere"
    );

    // The German region goes dark: free a slot on box y, place an `eu`
    // consult there through it, then kill it. The `eu` consult moves to
    // the neighbour region its residency allows; the `de` one cannot.
    let on_y: Vec<String> = ids
        .iter()
        .filter(|id| {
            let r = get(&boxes[2], &format!("/v1/consults/{id}"), ADMIN_TOKEN);
            r.status == 200 && appliance_of(&r.json().unwrap()).as_deref() == Some(y_name.as_str())
        })
        .cloned()
        .collect();
    assert_eq!(on_y.len(), 2, "box y's consults: {on_y:?}");
    // The dead box's unplaced `de` consult waits for room in Germany and
    // would take the slot freed below at the next upkeep pass: end it first,
    // so the slot is the new consult's whichever comes first.
    let r = send_json(
        &boxes[y],
        "DELETE",
        &format!("/v1/consults/{de_on_x}"),
        ADMIN_TOKEN,
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send_json(
        &boxes[y],
        "DELETE",
        &format!("/v1/consults/{}", on_y[0]),
        ADMIN_TOKEN,
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let last = created(&boxes[y], "eu");
    assert_eq!(
        appliance_of(&last).as_deref(),
        Some(y_name.as_str()),
        "{last}"
    );
    let last_id = last["id"].as_str().unwrap().to_owned();
    ids.push(last_id.clone());
    boxes[y].kill();
    let (_, dark) = until(
        Duration::from_secs(TTL_SECS) + BOUND,
        "the eu consult moved out of the dark region",
        || (appliance_of(&record(&boxes[2], &last_id)).as_deref() == Some("box-3")).then_some(()),
    );
    println!("region de-fra dark: its `eu` consult on box-3 in fr-par after {dark:?}");
    let (stuck, _) = until(
        Duration::from_secs(TTL_SECS) + BOUND,
        "box y's de consult marked unplaced",
        || {
            let v = record(&boxes[2], &on_y[1]);
            v["pool"]["appliance"].is_null().then_some(v)
        },
    );
    assert!(
        stuck["pool"]["reason"].as_str().unwrap().contains("de-fra"),
        "{stuck}"
    );
    assert_single_placement(&[("box-3", &boxes[2])], &ids);
    drop(boxes);
    drop(etcd);
}
