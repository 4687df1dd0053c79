//! The `switchboard` appliance binary.

mod demo;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Edge media forwarding for video consultations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the media paths on an embedded default configuration and report.
    Demo(demo::DemoArgs),
    /// Report this host's NICs and CPU for the fast path, and what to fix.
    /// Exits non-zero if XDP cannot run at all.
    Hw(HwArgs),
}

#[derive(Debug, clap::Args)]
struct HwArgs {
    /// Only these interfaces (repeatable); default: every interface.
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Hw(args) => hw(&args),
    }
}

fn hw(args: &HwArgs) -> Result<()> {
    let only = (!args.interfaces.is_empty()).then_some(args.interfaces.as_slice());
    let report = hardware::HostReport::detect(only)?;
    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", hardware::render_text(&report));
    }
    if !report.xdp_can_run() {
        std::process::exit(2);
    }
    Ok(())
}
