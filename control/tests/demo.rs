//! The README's main command: `switchboard demo` on its embedded default
//! configuration, every part of it, read back from `--json`.

use std::process::Command;

use serde_json::Value;

/// The relay part loads the XDP program into the kernel, which needs root
/// (CAP_BPF and CAP_NET_ADMIN); under CI=true that privilege is required.
fn privileged_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the demo test needs root (CAP_BPF, CAP_NET_ADMIN) to load its XDP program"
    );
    eprintln!("skipped: the demo loads an XDP program, which needs root (CAP_BPF, CAP_NET_ADMIN)");
    false
}

#[test]
fn demo_shows_a_consult_through_the_appliance() {
    if !privileged_or_skip() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["demo", "--json"])
        .output()
        .expect("running switchboard demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("demo --json prints JSON");

    let live = &report["live_consult"];
    assert_eq!(live["legs_connected"], 4, "{live}");
    assert_eq!(live["end_status"], 200, "{live}");
    let directions = live["directions"].as_array().expect("directions");
    assert_eq!(directions.len(), 2, "{live}");
    for d in directions {
        let sent = d["sent"].as_u64().unwrap();
        let received =
            d["audio_received"].as_u64().unwrap() + d["video_received"].as_u64().unwrap();
        assert!(d["audio_received"].as_u64().unwrap() > 50, "{d}");
        assert!(d["video_received"].as_u64().unwrap() > 50, "{d}");
        // Loopback loses nothing the appliance does not drop on purpose.
        assert!(received * 100 >= sent * 95, "{d}");
        assert_eq!(d["srtp_failures"], 0, "{d}");
        assert_eq!(d["payload_mismatches"], 0, "{d}");
        assert!(d["first_packet_ms"].as_f64().is_some(), "{d}");
    }
    assert!(
        live["appliance_media"]["packets_forwarded"]
            .as_u64()
            .unwrap()
            > 0,
        "{live}"
    );

    let relay = &report["relay"];
    assert!(relay.is_object(), "no relay part: {report}");
    let sfu = &report["sfu"];
    assert!(sfu.is_object(), "no sfu part: {report}");
}
