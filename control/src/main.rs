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
    /// Run the appliance: HTTP API, signaling, overload policy, audit log.
    Run(RunArgs),
    /// Report this host's NICs and CPU for the fast path, and what to fix.
    /// Exits non-zero if XDP cannot run at all.
    Hw(HwArgs),
    /// Size a deployment: concurrency, egress, boxes per region, monthly
    /// egress volume, and a chart of demand against capacity.
    Plan(switchboard_control::plan::cli::PlanArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration; keys it leaves out take the embedded defaults.
    #[arg(long, short = 'c')]
    config: Option<std::path::PathBuf>,
    /// Print the embedded default configuration, with every key explained,
    /// and exit.
    #[arg(long)]
    print_config: bool,
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
    use tracing_subscriber::prelude::*;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn")),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Run(args) => run(args, handle, env_set),
        Command::Hw(args) => hw(&args),
        Command::Plan(args) => switchboard_control::plan::cli::run(&args),
    }
}

fn run<S: 'static>(
    args: RunArgs,
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
    env_set: bool,
) -> Result<()> {
    use switchboard_control::{config, server};
    if args.print_config {
        print!("{}", config::DEFAULT_TOML);
        return Ok(());
    }
    let config = config::Config::load(args.config.as_deref())?;
    let set_level = move |level: &str| -> Result<(), String> {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    };
    // RUST_LOG, when set, wins over the file, on start and on SIGHUP.
    let log: server::LogReload = if env_set {
        Box::new(|_| Ok(()))
    } else {
        set_level(&config.log.level).map_err(anyhow::Error::msg)?;
        Box::new(set_level)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server::run(config, args.config, log))?;
    Ok(())
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
