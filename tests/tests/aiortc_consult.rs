//! aiortc, a WebRTC stack independent of Chromium's, against the appliance:
//! it publishes a synthetic camera and microphone over WHIP as one
//! participant and receives them back over WHEP as another participant of
//! the same consult, through `switchboard run` in its own namespace. The
//! client is `tests/clients/aiortc_whip_whep.py` (Debian python3-aiortc).

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::appliance::{Appliance, ApplianceConfig};
use e2e::{privileged_or_skip, Lab};
use serde_json::Value;

/// Debian's interpreter: python3-aiortc is installed for it, not for
/// whatever `python3` comes first on PATH.
const PYTHON: &str = "/usr/bin/python3";
/// The client's own bound on waiting for frames.
const CLIENT_TIMEOUT_S: u64 = 30;

fn aiortc_or_skip() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiortc, av, numpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "CI=true but {PYTHON} cannot import aiortc (Debian package python3-aiortc)"
    );
    eprintln!("skipping: {PYTHON} cannot import aiortc (Debian package python3-aiortc)");
    false
}

#[test]
fn aiortc_publishes_over_whip_and_receives_over_whep() {
    if !privileged_or_skip() || !aiortc_or_skip() {
        return;
    }
    let lab = Lab::star(1).expect("lab");
    let link = &lab.links[0];
    let api = SocketAddr::new(IpAddr::V4(link.appliance.v4), 8080);
    let appliance = Appliance::start(
        &lab.appliance,
        &ApplianceConfig {
            listen: api,
            advertised: vec![IpAddr::V4(link.appliance.v4)],
            media_port: 40000,
            log_level: "info".into(),
        },
    )
    .expect("appliance");
    // The overload level follows host CPU, which the client's encoder and
    // decoder share; the ladder has its own tests.
    appliance.force_overload_level(Some(0)).unwrap();
    let consult = appliance.create_consult("routine").unwrap();
    let publisher = appliance.token(&consult, "aio-pub", "patient").unwrap();
    let subscriber = appliance.token(&consult, "aio-sub", "clinician").unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/aiortc_whip_whep.py");
    let mut child = Command::new("ip")
        .args(["netns", "exec", link.peer.ns.name(), PYTHON])
        .arg(&script)
        .args(["--base", &format!("http://{api}"), "--consult", &consult])
        .args(["--timeout", &CLIENT_TIMEOUT_S.to_string()])
        .args(["--min-video-frames", "90", "--min-audio-frames", "150"])
        .env("SWITCHBOARD_PUBLISH_TOKEN", &publisher)
        .env("SWITCHBOARD_SUBSCRIBE_TOKEN", &subscriber)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the aiortc client");
    // Bounded here too, whatever the client does.
    let deadline = Instant::now() + Duration::from_secs(CLIENT_TIMEOUT_S + 45);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let report = || {
        format!(
            "client stdout:\n{stdout}\nclient stderr:\n{stderr}\nappliance log:\n{}\nappliance stats: {}",
            appliance.log_tail(6000),
            appliance
                .admin_get("/v1/admin/stats")
                .map_or_else(|e| e.to_string(), |v| v.to_string())
        )
    };
    let status = status.unwrap_or_else(|| panic!("the client overran its time\n{}", report()));
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary\n{}", report()));
    assert!(status.success(), "client failed: {status}\n{}", report());
    assert_eq!(summary["ok"], true, "{}", report());
    assert!(summary["video_frames"].as_u64().unwrap() >= 90, "{summary}");
    assert!(
        summary["audio_frames"].as_u64().unwrap() >= 150,
        "{summary}"
    );
    assert_eq!(
        summary["video_sizes"],
        serde_json::json!(["320x240"]),
        "{summary}"
    );
    // Both legs were deleted by their own participants.
    assert_eq!(
        summary["deleted"],
        serde_json::json!([200, 200]),
        "{summary}"
    );
    let c = appliance
        .admin_get(&format!("/v1/consults/{consult}"))
        .unwrap();
    assert!(c["legs"].as_array().unwrap().is_empty(), "{c}");
    println!("aiortc figures: {summary}");
}
