//! The appliance in a pool on a real etcd (Debian `etcd-server`, started
//! by the test on loopback): it registers under a lease, create-if-absent
//! lets exactly one of several racing writers win, and when etcd goes away
//! the appliance stops admitting new consults within the lease TTL plus a
//! stated bound, then admits again once etcd is back.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard_control::cluster::{appliance_key, ApplianceRecord, EtcdClient};
use switchboard_control::config::Config;
use switchboard_control::media::InMemoryMediaPlane;
use switchboard_control::server::{build_state, spawn_pool_registration, Server};

const ETCD: &str = "/usr/bin/etcd";
const ADMIN: &str = "admin-token-0123456789";
const TTL_SECS: u64 = 2;
/// Beyond the TTL: one refresh period (TTL/3) to notice, plus the
/// request timeout and scheduling.
const BOUND: Duration = Duration::from_secs(2);

fn etcd_or_skip() -> bool {
    if Path::new(ETCD).is_file() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {ETCD} is missing (Debian package etcd-server)"
    );
    eprintln!("skipping: {ETCD} is missing (Debian package etcd-server)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// An etcd on loopback with its own data directory; killed and removed on
/// drop.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
}

impl Etcd {
    fn start(dir: PathBuf, client_port: u16, peer_port: u16) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--name", "pool-test"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("pool-test={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        Self {
            child: Some(child),
            dir,
            client_port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) until etcd answers.
    async fn ready(&self) {
        let client = EtcdClient::new(&[self.url()], Duration::from_millis(500)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.list("/").await.is_err() {
            assert!(Instant::now() < deadline, "etcd did not start within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn create_consult(http: &reqwest::Client, base: &str) -> (StatusCode, Value) {
    let r = http
        .post(format!("{base}/v1/consults"))
        .bearer_auth(ADMIN)
        .json(&json!({"priority": "routine", "residency": "eu"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `create_consult` answers `want`; how long it took.
async fn until_status(
    http: &reqwest::Client,
    base: &str,
    want: StatusCode,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = create_consult(http, base).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {status} {body} after {limit:?}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_registers_under_a_lease_and_stops_admitting_without_etcd() {
    if !etcd_or_skip() {
        return;
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("switchboard-pool-{}-{stamp}", std::process::id()));
    let (client_port, peer_port) = (free_port(), free_port());
    let mut etcd = Etcd::start(dir.join("etcd"), client_port, peer_port);
    etcd.ready().await;

    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\ntoken = \"{ADMIN}\"\n\
         [audit]\npath = \"{}\"\nfsync = \"group\"\ngroup_commit_ms = 5\n\
         [regions]\nname = \"eu-west\"\n\
         [cluster]\netcd = [\"{}\"]\nname = \"box-a\"\nlease_ttl_secs = {TTL_SECS}\n",
        dir.join("audit.jsonl").display(),
        etcd.url()
    );
    let config = Config::parse(&text).unwrap();
    let cluster = config.cluster.clone();
    let state = build_state(config, Arc::new(InMemoryMediaPlane::new())).unwrap();
    let server = Server::start(state.clone()).await.unwrap();
    let registration = spawn_pool_registration(&state).unwrap().expect("a pool");
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Registered under a lease, and admitting.
    until_status(&http, &base, StatusCode::CREATED, Duration::from_secs(5)).await;
    let client = EtcdClient::new(&[etcd.url()], Duration::from_secs(2)).unwrap();
    let records = client.list(&cluster.prefix).await.unwrap();
    let key = appliance_key(&cluster, "box-a");
    let mine = records.iter().find(|kv| kv.key == key).expect("registered");
    assert_ne!(mine.lease, 0, "the record is not bound to a lease");
    let record: ApplianceRecord = serde_json::from_slice(&mine.value).unwrap();
    assert_eq!(record.region, "eu-west");
    assert_eq!(record.overload_level, 0);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // Racing writers of one placement key: exactly one wins.
    let placement = format!("{}consults/c-race", cluster.prefix);
    let attempts = (0..8).map(|i| {
        let (client, placement) = (client.clone(), placement.clone());
        tokio::spawn(async move {
            client
                .create(&placement, format!("box-{i}").as_bytes(), None)
                .await
                .unwrap()
        })
    });
    let mut winners = 0;
    for a in attempts {
        winners += usize::from(a.await.unwrap());
    }
    assert_eq!(winners, 1, "create-if-absent let {winners} writers win");
    assert!(client.delete(&placement).await.unwrap());

    // etcd gone: no new consults within the TTL plus the bound.
    etcd.kill();
    let took = until_status(
        &http,
        &base,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(TTL_SECS) + BOUND,
    )
    .await;
    println!("etcd unreachable: admission stopped after {took:?} (lease TTL {TTL_SECS} s)");
    let (_, body) = create_consult(&http, &base).await;
    assert_eq!(body["error"], "cluster_unreachable", "{body}");
    // The router needs etcd for every placement, so creates fail at once;
    // readiness follows the lease: out of the pool once it has lapsed.
    let started = Instant::now();
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(TTL_SECS) + BOUND,
            "readyz still {} after the lease TTL plus {BOUND:?}",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("etcd unreachable: readyz 503 after {:?}", started.elapsed());

    // etcd back: registered again under a new lease, admitting again.
    let etcd = Etcd::start(dir.join("etcd"), client_port, peer_port);
    etcd.ready().await;
    let took = until_status(
        &http,
        &base,
        StatusCode::CREATED,
        Duration::from_secs(TTL_SECS) + BOUND + Duration::from_secs(2),
    )
    .await;
    println!("etcd back: admitting again after {took:?}");
    let records = client.list(&cluster.prefix).await.unwrap();
    assert!(records.iter().any(|kv| kv.key == key && kv.lease != 0));

    registration.abort();
    server.shutdown().await.unwrap();
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}
