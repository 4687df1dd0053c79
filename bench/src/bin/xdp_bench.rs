//! The XDP forwarding benchmark: relay ÷ bare reflector and relay ÷
//! rtpengine on one veth pair in one run, for 160- and 1200-byte packets.
//! Needs root (namespaces, XDP). Writes a JSON report and prints a table.
//!
//! Usage: `xdp_bench [--short] [--out PATH] [--no-rtpengine]`

use std::{path::PathBuf, process::ExitCode};

use bench::{stop, xdp_bench};

const USAGE: &str = "usage: xdp_bench [--short] [--out PATH] [--no-rtpengine]
  --short          a few seconds per measurement (CI); the default runs longer
  --out PATH       JSON report (default: target/bench/xdp.json in the workspace)
  --no-rtpengine   skip the rtpengine comparison";

fn default_out() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            bench_dir.parent().unwrap_or(&bench_dir).join("target")
        })
        .join("bench/xdp.json")
}

fn main() -> ExitCode {
    let mut plan = xdp_bench::Plan::full();
    let mut out = default_out();
    let mut rtpengine = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--short" => plan = xdp_bench::Plan::short(),
            "--no-rtpengine" => rtpengine = false,
            "--out" => match args.next() {
                Some(path) => out = PathBuf::from(path),
                None => {
                    eprintln!("--out needs a path\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xdp_bench needs root: network namespaces, veth and XDP programs");
        return ExitCode::FAILURE;
    }
    if let Err(err) = stop::install_handler() {
        eprintln!("installing the SIGINT/SIGTERM handler: {err}");
        return ExitCode::FAILURE;
    }
    let options = xdp_bench::Options {
        plan,
        out: out.clone(),
        rtpengine,
    };
    match xdp_bench::run(&options) {
        Ok(report) => {
            print!("{}", xdp_bench::table(&report));
            println!("JSON report: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("xdp_bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
