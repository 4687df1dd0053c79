//! Runs `sfu_bench --short` and checks its report: every forwarder of
//! every profile forwarded media end to end (sampled packets decrypted with
//! the receiver's key, payloads intact, latencies measured), and every
//! search's recorded steps are exactly the steps the search asks for, with
//! the outcome it reports. Speed is never asserted: these machines are
//! shared and noisy, and the goals are for the full run.

use std::process::Command;

use bench::sfu_search::{replay, SearchConfig, Verdict};
use serde_json::Value;

fn verdict(v: &Value) -> Verdict {
    match v.as_str() {
        Some("clean") => Verdict::Clean,
        Some("overloaded") => Verdict::Overloaded,
        Some("generator_limited") => Verdict::GeneratorLimited,
        other => panic!("unknown verdict {other:?}"),
    }
}

fn check_search(what: &str, r: &Value) {
    let c = &r["search"];
    let config = SearchConfig {
        start: c["start"].as_u64().unwrap() as usize,
        max: c["max"].as_u64().unwrap() as usize,
        max_steps: c["max_steps"].as_u64().unwrap() as usize,
        resolution: c["resolution"].as_f64().unwrap(),
    };
    let trace: Vec<(usize, Verdict)> = r["trace"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no trace"))
        .iter()
        .map(|t| (t[0].as_u64().unwrap() as usize, verdict(&t[1])))
        .collect();
    assert!(!trace.is_empty(), "{what}: the search ran no step");
    let outcome = replay(config, &trace).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        serde_json::to_value(outcome).unwrap(),
        r["outcome"],
        "{what}: reported outcome differs from the replayed search"
    );
    // Every load of the trace was run, its last run giving the verdict.
    let steps = r["steps"].as_array().unwrap();
    for (load, v) in &trace {
        let last = steps
            .iter()
            .rev()
            .find(|s| s["load"].as_u64() == Some(*load as u64))
            .unwrap_or_else(|| panic!("{what}: step {load} missing"));
        assert_eq!(verdict(&last["verdict"]), *v, "{what}: step {load}");
    }
    // The figure is the largest clean load, and its egress is reported.
    let clean = trace
        .iter()
        .filter(|(_, v)| *v == Verdict::Clean)
        .map(|(l, _)| *l)
        .max();
    assert_eq!(
        r["clean_load"].as_u64().map(|v| v as usize),
        clean,
        "{what}"
    );
    if clean.is_some() {
        assert!(r["max_clean_egress_pps"].as_f64().unwrap() > 0.0, "{what}");
    }
}

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
    let report: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("report written")).expect("JSON");
    let _ = std::fs::remove_file(&out);
    assert_eq!(report["setup"]["short"], true);
    for profile in ["two_party", "six_party"] {
        for target in ["plain_forwarder", "io_uring", "tokio"] {
            let what = format!("{profile}/{target}");
            let r = &report[profile]["forwarders"][target];
            check_search(&what, r);
            // The lightest step: a few thousand packets per second, which
            // every forwarder passes on, end to end.
            let first = &r["steps"][0];
            let m = &first["measured"];
            assert!(m["sent"].as_u64().unwrap() > 0, "{what}: {first}");
            assert!(
                m["received"].as_u64().unwrap() > 0,
                "{what}: forwarded nothing"
            );
            assert!(
                first["loss"].as_f64().unwrap() < 0.2,
                "{what}: most media lost: {first}"
            );
            assert!(
                m["samples"].as_u64().unwrap() > 0,
                "{what}: no sample: {first}"
            );
            assert_eq!(m["srtp_failures"], 0, "{what}: {first}");
            assert_eq!(m["payload_mismatches"], 0, "{what}: {first}");
            assert_eq!(m["misrouted"], 0, "{what}: {first}");
            assert!(first["p50_us"].as_f64().unwrap() > 0.0, "{what}");
        }
        for ratio in ["io_uring_over_plain_forwarder", "io_uring_over_tokio"] {
            let r = &report[profile]["ratios"][ratio];
            assert!(r["reading"].is_string(), "{profile}: {ratio} missing");
        }
        assert!(
            report[profile]["generator_vs_plain_forwarder"].is_object(),
            "{profile}: no generator capacity"
        );
    }
}
