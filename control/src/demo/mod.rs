//! `switchboard demo`: the appliance's media paths on an embedded default
//! configuration, without a network.
//!
//! 1. sfu leg: a simulated consult (a publisher with three simulcast layers and
//!    Opus, a subscriber whose bandwidth estimate drops and recovers) through
//!    the sans-IO media core on a virtual clock: SRTP unprotect, layer
//!    selection, header rewriting, SRTP protect with the subscriber's own key,
//!    and the subscriber's own decryption and checks.
//! 2. relay leg: the embedded XDP program run by the kernel on the publisher's
//!    SRTP packets (`BPF_PROG_TEST_RUN`), rewriting them towards a receiver,
//!    then a room cap from the overload policy applied mid-way.
//! 3. live consult: the appliance itself on loopback (HTTP API, SFU
//!    workers), a patient and a clinician publishing over WHIP and
//!    subscribing to each other over WHEP with ICE and DTLS-SRTP, media both
//!    ways, verified by each side with its own keys (see [`live`]).

mod config;
mod consult;
mod live;
mod relay;

use std::path::PathBuf;

use anyhow::{Context, Result};
pub use config::DemoConfig;

/// Options of `switchboard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// A TOML file replacing the embedded default configuration.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    if args.print_config {
        print!("{}", config::DEFAULT_TOML);
        return Ok(());
    }
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            DemoConfig::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => DemoConfig::embedded(),
    };
    let cpu = hardware::CpuProfile::detect().ok();
    let sfu = consult::run(&config)?;
    let relay = relay::run(&config, &sfu.publisher_key)?;
    let live = live::run().context("the live consult through the appliance")?;
    if args.json {
        let report = serde_json::json!({
            "cpu": cpu,
            "sfu": sfu.report,
            "relay": relay,
            "live_consult": live,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return live::check(&live);
    }
    println!(
        "switchboard demo ({} configuration)",
        match args.config {
            Some(_) => "custom",
            None => "embedded default",
        }
    );
    if let Some(cpu) = &cpu {
        println!(
            "host: {} ({} logical CPUs); AES-NI {}, PCLMULQDQ {}, VAES {}, SHA-NI {}",
            cpu.model,
            cpu.logical_cpus,
            yes_no(cpu.aes_ni),
            yes_no(cpu.pclmulqdq),
            yes_no(cpu.vaes),
            yes_no(cpu.sha_ni)
        );
        for advice in cpu.advice() {
            println!("  note: {advice}");
        }
    }
    println!();
    consult::print(&config, &sfu.report);
    println!();
    relay::print(&relay);
    println!();
    live::print(&live);
    live::check(&live)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
