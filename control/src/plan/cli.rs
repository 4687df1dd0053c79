//! `switchboard plan`: the command line over [`super::PlanInput`].

use std::path::PathBuf;

use super::{MeasuredCapacity, PlanInput, RegionShare};

/// The worked example, reproduced by the command in this help text.
const AFTER_HELP: &str = "\
Example (10,000 consults/day in an 8 h window, 15 min consults, 1.5 Mbit/s \
per stream, peak 2.5x, surge 1.5x -> 312.5 average, 781.25 peak, 1,171.9 \
surge concurrent consults, 3.52 Gbit/s egress at the surge peak):

  switchboard plan --consults-per-day 10000 --window-hours 8 \\
      --consult-minutes 15 --stream-mbps 1.5 --peak-factor 2.5 \\
      --surge-factor 1.5 --chart plan.png

With the benchmark's measured per-core ceiling on 16-core boxes:

  switchboard plan --consults-per-day 10000 \\
      --measured-json target/bench/sfu.json --worker-cores 16";

/// Sizes a deployment: concurrency, egress, boxes per region, monthly
/// egress volume; optionally a PNG chart of demand against capacity.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct PlanArgs {
    /// Consults per clinic day (all regions together).
    #[arg(long)]
    pub consults_per_day: f64,
    /// Hour the clinic window opens (local time of the demand), for the
    /// chart.
    #[arg(long, default_value_t = 8.0)]
    pub window_start: f64,
    /// Length of the clinic window, hours.
    #[arg(long, default_value_t = 8.0)]
    pub window_hours: f64,
    /// Average consult length, minutes.
    #[arg(long, default_value_t = 15.0)]
    pub consult_minutes: f64,
    /// Participants per consult; the box sends each one's stream to every
    /// other (2 participants: 2 streams).
    #[arg(long, default_value_t = 2)]
    pub participants: u32,
    /// Bitrate of one participant's stream (audio + video), Mbit/s.
    #[arg(long, default_value_t = 1.5)]
    pub stream_mbps: f64,
    /// Busiest minute of an ordinary day ÷ the window's average.
    #[arg(long, default_value_t = 2.5)]
    pub peak_factor: f64,
    /// Busiest minute of a surge (flu season) day ÷ the ordinary peak.
    #[arg(long, default_value_t = 1.5)]
    pub surge_factor: f64,
    /// Fraction of a box's ceiling planned for (the practical ceiling).
    #[arg(long, default_value_t = hardware::DEFAULT_PRACTICAL_FRACTION)]
    pub utilisation: f64,
    /// Egress link of one box, Gbit/s.
    #[arg(long, default_value_t = 10.0)]
    pub link_gbps: f64,
    /// The SFU benchmark's report: its two-party consults per core under
    /// 1 % loss × --worker-cores is the box's measured ceiling.
    #[arg(long, conflicts_with = "measured_consults", requires = "worker_cores")]
    pub measured_json: Option<PathBuf>,
    /// Engine whose figure is read from --measured-json.
    #[arg(long, default_value = "io_uring", value_parser = ["io_uring", "tokio"])]
    pub measured_engine: String,
    /// Media worker cores of one box (with --measured-json).
    #[arg(long)]
    pub worker_cores: Option<u32>,
    /// Consults one box carried at its measured limit (before
    /// --utilisation), e.g. from a benchmark on the target hardware.
    #[arg(long)]
    pub measured_consults: Option<f64>,
    /// Spare boxes per region beyond the surge need (1 = N+1).
    #[arg(long, default_value_t = 1)]
    pub spare_boxes: u32,
    /// Days per month for the egress volume.
    #[arg(long, default_value_t = 30.0)]
    pub days_per_month: f64,
    /// Where the day's peak sits, as a fraction of the clinic window.
    #[arg(long, default_value_t = 0.35)]
    pub peak_at: f64,
    /// A region and its weight in the demand, NAME=WEIGHT (repeatable;
    /// weights are normalised). Default: one region, "all".
    #[arg(long = "region", value_parser = parse_region)]
    pub regions: Vec<RegionShare>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a PNG chart of demand across the day against capacity.
    #[arg(long, value_name = "FILE.png")]
    pub chart: Option<PathBuf>,
}

fn parse_region(s: &str) -> Result<RegionShare, String> {
    let (name, weight) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=WEIGHT"))?;
    let weight: f64 = weight
        .parse()
        .map_err(|_| format!("weight `{weight}` is not a number"))?;
    if name.is_empty() {
        return Err("the region name is empty".into());
    }
    Ok(RegionShare {
        name: name.to_owned(),
        weight,
    })
}

impl PlanArgs {
    /// The plan's input from the flags (reads --measured-json).
    pub fn input(&self) -> anyhow::Result<PlanInput> {
        let link_bps = self.link_gbps * 1e9;
        if !(link_bps.is_finite() && link_bps >= 1.0 && link_bps <= u64::MAX as f64) {
            anyhow::bail!("link-gbps: must be above 0");
        }
        let measured = match (&self.measured_json, self.measured_consults) {
            (Some(path), _) => Some(MeasuredCapacity::from_sfu_report_file(
                path,
                &self.measured_engine,
                self.worker_cores.unwrap_or(1),
            )?),
            (None, Some(n)) => Some(MeasuredCapacity {
                consults_per_box: n,
                lower_bound: false,
                source: "--measured-consults".into(),
            }),
            (None, None) => None,
        };
        let defaults = PlanInput::default();
        Ok(PlanInput {
            consults_per_day: self.consults_per_day,
            window_start_hour: self.window_start,
            window_hours: self.window_hours,
            consult_minutes: self.consult_minutes,
            participants: self.participants,
            stream_bps: self.stream_mbps * 1e6,
            peak_factor: self.peak_factor,
            surge_factor: self.surge_factor,
            utilisation: self.utilisation,
            link_bps: link_bps.round() as u64,
            measured,
            spare_boxes: self.spare_boxes,
            days_per_month: self.days_per_month,
            peak_at: self.peak_at,
            regions: if self.regions.is_empty() {
                defaults.regions
            } else {
                self.regions.clone()
            },
        })
    }
}

/// Runs `switchboard plan`.
pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let plan = args.input()?.plan()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.render_text());
    }
    if let Some(path) = &args.chart {
        super::chart::write_png(&plan, path)?;
        if !args.json {
            println!("chart: {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PlanArgs,
    }

    fn parse(argv: &[&str]) -> Result<PlanArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("plan").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn documented_example_reproduces_the_figures() {
        let args = parse(&[
            "--consults-per-day",
            "10000",
            "--window-hours",
            "8",
            "--consult-minutes",
            "15",
            "--stream-mbps",
            "1.5",
            "--peak-factor",
            "2.5",
            "--surge-factor",
            "1.5",
        ])
        .unwrap();
        let input = args.input().unwrap();
        assert_eq!(input, PlanInput::default());
        let plan = input.plan().unwrap();
        assert_eq!(plan.concurrency.surge, 1171.875);
    }

    #[test]
    fn regions_and_measured_flags() {
        let args = parse(&[
            "--consults-per-day",
            "100",
            "--region",
            "eu=2",
            "--region",
            "us=1",
            "--measured-consults",
            "400",
        ])
        .unwrap();
        let input = args.input().unwrap();
        assert_eq!(input.regions.len(), 2);
        assert_eq!(input.regions[0].name, "eu");
        assert_eq!(input.measured.unwrap().consults_per_box, 400.0);
        assert!(parse(&["--consults-per-day", "1", "--region", "eu"]).is_err());
        // A benchmark report needs the box's core count.
        assert!(parse(&["--consults-per-day", "1", "--measured-json", "x.json"]).is_err());
        assert!(parse(&[
            "--consults-per-day",
            "1",
            "--measured-json",
            "x.json",
            "--worker-cores",
            "4",
            "--measured-consults",
            "3"
        ])
        .is_err());
    }
}
