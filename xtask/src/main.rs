//! Project automation, run as `cargo xtask <command>`.
//!
//! - `setup`: install what the build and the tests need (idempotent).
//! - `demo`:  setup, build the appliance in release mode, run its demo.
//! - `ci`:    setup, then every check CI runs: fmt, clippy, all tests, fuzzing.
//! - `fuzz`:  run every fuzz target for a bounded time.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

/// bpf-linker must match the LLVM of the pinned nightly (LLVM 22); newer
/// releases expect LLVM 23.
const BPF_LINKER_VERSION: &str = "0.10.4";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Debian packages: C toolchain pieces for aws-lc and libsrtp (built from
/// source against OpenSSL, bindings generated with libclang, for the
/// benchmarks and interop tests), iproute2/ethtool for test hosts,
/// GStreamer as an independent SRTP peer over the relay, and rtpengine as the
/// userspace relay the XDP benchmark is compared with; DejaVu Sans for the
/// text of `switchboard plan --chart`; headless Chromium with its WebDriver
/// and aiortc (for Debian's /usr/bin/python3) as the WebRTC clients of the
/// browser and WHIP/WHEP tests; etcd for the appliance pool's tests.
const DEBIAN_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "libssl-dev",
    "libclang-dev",
    "iproute2",
    "ethtool",
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "rtpengine-daemon",
    "fonts-dejavu-core",
    "chromium",
    "chromium-driver",
    "python3-aiortc",
    "etcd-server",
];
/// Seconds each fuzz target runs in `ci`; `fuzz --seconds N` overrides.
const CI_FUZZ_SECONDS: u64 = 30;

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    match command {
        "setup" => setup(),
        "demo" => {
            setup()?;
            demo(rest)
        }
        "ci" => {
            setup()?;
            ci()
        }
        "fuzz" => {
            setup()?;
            let seconds = match rest {
                [flag, n] if flag == "--seconds" => {
                    n.parse().context("--seconds takes a number")?
                }
                [] => CI_FUZZ_SECONDS,
                _ => bail!("usage: cargo xtask fuzz [--seconds N]"),
            };
            fuzz(seconds)
        }
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <setup|demo|ci|fuzz [--seconds N]>");
            Ok(())
        }
        other => bail!("unknown command {other:?}; try `cargo xtask help`"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// Runs a command in the workspace root, failing with its name if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(root());
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

fn setup() -> Result<()> {
    let started = Instant::now();
    step("set-up: Debian packages");
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("all present: {}", DEBIAN_PACKAGES.join(" "));
    } else if is_root() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        bail!(
            "missing Debian packages {}; run as root or `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }

    step("set-up: nightly rust-src (the BPF programs build core from source)");
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        println!("present");
    } else {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    step(&format!("set-up: bpf-linker {BPF_LINKER_VERSION}"));
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        println!("present: {}", have.trim());
    } else {
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }

    step(&format!("set-up: cargo-fuzz {CARGO_FUZZ_VERSION}"));
    let have = output(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if have.contains(CARGO_FUZZ_VERSION) {
        println!("present: {}", have.trim());
    } else {
        run(Command::new("cargo").args([
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    println!("set-up done in {:.0?}", started.elapsed());
    Ok(())
}

fn demo(extra: &[String]) -> Result<()> {
    step("build: switchboard (release, BPF object embedded)");
    run(Command::new("cargo").args(["build", "--release", "--locked", "-p", "switchboard"]))?;
    step("run: switchboard demo");
    run(Command::new(root().join("target/release/switchboard"))
        .arg("demo")
        .args(extra))
}

fn ci() -> Result<()> {
    let started = Instant::now();
    step("cargo fmt --check");
    run(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    step("cargo clippy --all-targets -- -D warnings");
    run(Command::new("cargo").args([
        "clippy",
        "--locked",
        "--workspace",
        "--exclude",
        "switchboard-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("cargo test (every crate; privileged tests need root and run under CI=true)");
    if env::var_os("CI").is_some_and(|v| v == "true") && !is_root() {
        bail!("CI=true needs root: the XDP and network-namespace tests must run, not skip");
    }
    let tally = run_tests(Command::new("cargo").args([
        "test",
        "--locked",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "switchboard-ebpf",
    ]))?;
    fuzz(CI_FUZZ_SECONDS)?;
    println!("\nci: all checks passed in {:.0?}", started.elapsed());
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test`, echoing its output and summing its `test result:` lines.
fn run_tests(cmd: &mut Command) -> Result<Tally> {
    use std::io::{BufRead, BufReader};
    cmd.current_dir(root()).stdout(std::process::Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    let stdout = child.stdout.take().context("test output")?;
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split([';', '.']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => tally.passed += n,
                        "failed" => tally.failed += n,
                        "ignored" => tally.ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            tally.passed, tally.failed, tally.ignored
        );
        bail!("{shown} failed: {status}");
    }
    Ok(tally)
}

fn fuzz(seconds: u64) -> Result<()> {
    let fuzz_dir = root().join("dataplane/fuzz");
    let targets = output(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "list", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .current_dir(root()),
    )
    .context("listing fuzz targets")?;
    let targets: Vec<&str> = targets
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets found in {}", fuzz_dir.display());
    }
    step(&format!("fuzz: build {} targets", targets.len()));
    run(Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "--fuzz-dir"])
        .arg(&fuzz_dir))?;
    let mut report = Vec::new();
    for target in &targets {
        step(&format!("fuzz: {target} for {seconds} s"));
        let started = Instant::now();
        run(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg(target)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
            ]))?;
        report.push(format!(
            "{target:<24} {:>5.0?} without a crash",
            started.elapsed()
        ));
    }
    println!("\nfuzz summary:");
    for line in &report {
        println!("  {line}");
    }
    Ok(())
}
