//! Runs `sfu_bench --short` and checks that its report is sane: every
//! forwarder ran, the lightest step forwarded media with little loss, and
//! the ratios are there. Speed is never asserted: these machines are
//! shared and noisy.

use std::process::Command;

#[test]
fn short_sfu_bench_produces_a_sane_report() {
    if !e2e::privileged_or_skip() {
        return;
    }
    let out = std::env::temp_dir().join(format!("sfu_bench_{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_sfu_bench"))
        .args(["--short", "--out"])
        .arg(&out)
        .status()
        .expect("running sfu_bench");
    assert!(status.success(), "sfu_bench --short failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("report written")).expect("JSON");
    let _ = std::fs::remove_file(&out);
    for profile in ["two_party", "six_party"] {
        for target in ["plain_forwarder", "io_uring", "tokio"] {
            let steps = report[profile][target]["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("{profile}/{target} has no steps"));
            let first = &steps[0];
            assert!(first["egress_pps"].as_f64().unwrap() > 0.0, "{first}");
            assert!(first["ingress_pps"].as_f64().unwrap() > 0.0, "{first}");
            // The lightest step is a few hundred packets per second.
            assert!(
                first["loss"].as_f64().unwrap() < 0.05,
                "{profile}/{target}: {first}"
            );
            assert!(first["p50_us"].as_u64().is_some(), "{first}");
        }
        let ratios = &report[profile]["ratios"];
        assert!(ratios["io_uring_over_plain_forwarder"].as_f64().unwrap() > 0.0);
        assert!(ratios["io_uring_over_tokio"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(report["setup"]["short"], true);
}
