//! The XDP forwarding benchmark in its short mode, end to end: namespaces,
//! veth, reflector, relay, sink, live-frame generator and (when installed)
//! rtpengine. Asserts only that every configuration forwarded traffic and
//! that the report was written, never a speed: the machines are shared.
//!
//! Needs root; outside CI it skips with a message when not root, and runs
//! without rtpengine when that is not installed. Under `CI=true` either
//! missing is a failure.

use bench::{rtpengine, xdp_bench};

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true")
}

fn privileged_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        !in_ci(),
        "CI=true but not running as root: the benchmark needs network namespaces, veth and XDP"
    );
    eprintln!("skipping: the XDP benchmark needs root (namespaces, veth, XDP); runs in CI as root");
    false
}

#[test]
fn short_benchmark_forwards_in_every_configuration_and_writes_its_report() {
    if !privileged_or_skip() {
        return;
    }
    let with_rtpengine = rtpengine::available();
    if !with_rtpengine {
        assert!(
            !in_ci(),
            "CI=true but {} is missing (Debian package {})",
            rtpengine::BINARY,
            rtpengine::PACKAGE
        );
        eprintln!(
            "{} not found (Debian package {}): measuring without it",
            rtpengine::BINARY,
            rtpengine::PACKAGE
        );
    }
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xdp-bench-{}", std::process::id()))
        .join("xdp.json");
    let _ = std::fs::remove_file(&out);
    let report = xdp_bench::run(&xdp_bench::Options {
        plan: xdp_bench::Plan::short(),
        out: out.clone(),
        rtpengine: with_rtpengine,
    })
    .expect("short benchmark run");
    println!("{}", xdp_bench::table(&report));

    assert_eq!(report.sizes.len(), xdp_bench::PAYLOAD_SIZES.len());
    for size in &report.sizes {
        let what = format!("{} B", size.udp_payload);
        for (name, tp) in [("reflector", &size.reflector), ("relay", &size.relay)] {
            assert_eq!(tp.samples.len(), report.plan.rounds, "{what} {name} rounds");
            for s in &tp.samples {
                assert!(s.offered > 0, "{what} {name}: the generator sent nothing");
                assert!(s.forwarded > 0, "{what} {name}: nothing came back: {s:?}");
            }
        }
        // The sink counts only what the relay itself says it relayed.
        let forwarded: u64 = size.relay.samples.iter().map(|s| s.forwarded).sum();
        assert!(
            size.relay_counters.tx >= forwarded,
            "{what}: sink counted {forwarded}, relay sent {}",
            size.relay_counters.tx
        );
        assert_eq!(
            size.relay_counters.dropped, 0,
            "{what}: relay dropped frames"
        );
        // The relay's rate search runs on paced live frames: its first
        // trial asks for the search's lowest rate, which a pacing generator
        // keeps to and a saturating one would overshoot a hundredfold.
        let first = size.relay_search.first().expect("relay rate search ran");
        assert!(
            (1_000.0..=20_000.0).contains(&first.offered_pps),
            "{what}: paced generator offered {} pps when asked for 10000",
            first.offered_pps
        );
        assert!(
            size.relay_max_clean_pps.is_some(),
            "{what}: no clean relay trial: {:?}",
            size.relay_search
        );
        if with_rtpengine {
            let engine = size.rtpengine.as_ref().expect("rtpengine measured");
            assert!(
                engine.search.iter().any(|s| s.forwarded > 0),
                "{what}: rtpengine forwarded nothing in any trial: {:?}",
                engine.search
            );
            assert!(
                !size.equal_load.is_empty(),
                "{what}: no equal-load comparison"
            );
            for e in &size.equal_load {
                assert!(e.relay.forwarded > 0, "{what}: relay at equal load: {e:?}");
                assert!(
                    e.rtpengine.offered > 0,
                    "{what}: nothing offered to rtpengine"
                );
            }
        }
    }
    assert!(!report.xdp_mode.is_empty());

    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("JSON report written"))
            .expect("JSON report parses");
    assert_eq!(written["plan"]["name"], "short");
    assert_eq!(
        written["sizes"].as_array().map(Vec::len),
        Some(xdp_bench::PAYLOAD_SIZES.len())
    );
    let _ = std::fs::remove_dir_all(out.parent().expect("report directory"));
}
