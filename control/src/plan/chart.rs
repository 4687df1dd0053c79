//! The plan as a PNG: concurrent consults across the day on an ordinary day
//! and on a surge day (the band between them), against the practical
//! capacity of 1..N boxes.
//!
//! Text is drawn with ab_glyph from DejaVu Sans (Debian `fonts-dejavu-core`,
//! installed by `cargo xtask setup`), so no fontconfig or freetype is
//! needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{fmt_num, Plan};

/// Where the font is looked for.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Why the chart could not be drawn.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChartError {
    /// No usable font file.
    #[error(
        "no font for the chart's text: none of {} is a readable TrueType font \
         (install the Debian package fonts-dejavu-core)",
        FONT_PATHS.join(", ")
    )]
    NoFont,
    /// Drawing or writing the PNG failed.
    #[error("drawing the chart: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Registers the font once per process.
fn ensure_font() -> Result<(), ChartError> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            let Ok(bytes) = std::fs::read(p) else {
                return false;
            };
            // Registered fonts must live for the process; this happens once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    });
    if *ok {
        Ok(())
    } else {
        Err(ChartError::NoFont)
    }
}

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (1200, 700);

/// The capacity levels drawn: k boxes for the k in `1..=n`, thinned to at
/// most ten lines (always including n and n − 1).
fn capacity_steps(n: u32) -> Vec<u32> {
    if n <= 10 {
        return (1..=n).collect();
    }
    let stride = n.div_ceil(8);
    let mut steps: Vec<u32> = (1..=n).filter(|k| k % stride == 0).collect();
    for k in [n - 1, n] {
        if !steps.contains(&k) {
            steps.push(k);
        }
    }
    steps.sort_unstable();
    steps
}

/// Draws the plan to a PNG file.
pub fn write_png(plan: &Plan, path: &Path) -> Result<(), ChartError> {
    ensure_font()?;
    let points = plan.curve_points(5);
    let per_box = plan.per_box.practical;
    let n = plan.total_boxes;
    let top_demand = points.iter().map(|p| p.surge).fold(0.0, f64::max);
    // Room above the top line for the legend.
    let y_max = (top_demand.max(f64::from(n) * per_box) * 1.4).max(1.0);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let title = format!(
        "{} consults/day, {} min, {} × {} Mbit/s: peak {}, surge {} concurrent, {} Gbit/s",
        fmt_num(plan.input.consults_per_day, 0),
        fmt_num(plan.input.consult_minutes, 2),
        plan.streams_per_consult,
        fmt_num(plan.input.stream_bps / 1e6, 3),
        fmt_num(plan.concurrency.peak, 0),
        fmt_num(plan.concurrency.surge, 0),
        fmt_num(plan.egress_bps.surge / 1e9, 2),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..24f64, 0f64..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(13)
        .x_label_formatter(&|h| format!("{:02}:00", h.round() as u32))
        .y_labels(10)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("hour of the day")
        .y_desc("concurrent consults")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;

    // The surge band: between the ordinary and the surge-day curves.
    let band_colour = RGBColor(230, 90, 60);
    let mut band: Vec<(f64, f64)> = points.iter().map(|p| (p.hour, p.surge)).collect();
    band.extend(points.iter().rev().map(|p| (p.hour, p.ordinary)));
    chart
        .draw_series(std::iter::once(Polygon::new(band, band_colour.mix(0.3))))
        .map_err(draw_err)?
        .label(format!("surge band (× {})", plan.input.surge_factor))
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 6), (x + 24, y + 6)], band_colour.mix(0.3).filled())
        });
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.hour, p.surge)),
            band_colour.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label("surge-day demand")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], band_colour.stroke_width(2)));
    let demand_colour = RGBColor(30, 90, 200);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.hour, p.ordinary)),
            demand_colour.stroke_width(3),
        ))
        .map_err(draw_err)?
        .label("ordinary-day demand")
        .legend(move |(x, y)| {
            PathElement::new([(x, y), (x + 24, y)], demand_colour.stroke_width(3))
        });
    let start = plan.input.window_start_hour;
    let end = start + plan.input.window_hours;
    let avg = plan.concurrency.average;
    let grey = RGBColor(110, 110, 110);
    chart
        .draw_series(DashedLineSeries::new(
            [(start, avg), (end, avg)],
            8,
            6,
            grey.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label(format!("average {avg:.0}"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], grey.stroke_width(2)));

    // Practical capacity of k boxes; N (all planned boxes) in bold.
    let cap_colour = RGBColor(20, 140, 60);
    // Labels closer than this to the one above would overprint it.
    let label_gap = y_max * 0.045;
    let steps = capacity_steps(n);
    for (idx, &k) in steps.iter().enumerate() {
        let level = f64::from(k) * per_box;
        let width = if k == n { 3 } else { 1 };
        let series = chart
            .draw_series(LineSeries::new(
                [(0.0, level), (24.0, level)],
                cap_colour.stroke_width(width),
            ))
            .map_err(draw_err)?;
        if k == n {
            series
                .label(format!(
                    "practical capacity of k boxes ({per_box:.0} each), N = {n} bold"
                ))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], cap_colour.stroke_width(3))
                });
        }
        let next = steps.get(idx + 1).map(|&j| f64::from(j) * per_box);
        if next.is_some_and(|next| next - level < label_gap) {
            continue;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{k} box{}", if k == 1 { "" } else { "es" }),
                (0.3, level + y_max * 0.035),
                ("sans-serif", 15).into_font().color(&cap_colour),
            )))
            .map_err(draw_err)?;
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanInput;

    #[test]
    fn capacity_steps_are_thinned_but_keep_the_top() {
        assert_eq!(capacity_steps(0), Vec::<u32>::new());
        assert_eq!(capacity_steps(3), vec![1, 2, 3]);
        let s = capacity_steps(40);
        assert!(s.len() <= 11, "{s:?}");
        assert!(s.ends_with(&[39, 40]), "{s:?}");
    }

    #[test]
    fn writes_a_png() {
        if ensure_font().is_err() {
            // The font package is part of `cargo xtask setup`; CI has it.
            assert!(
                std::env::var_os("CI").is_none(),
                "fonts-dejavu-core is missing under CI"
            );
            eprintln!("skipping: no DejaVu Sans (install fonts-dejavu-core)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("switchboard-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.png");
        let plan = PlanInput::default().plan().unwrap();
        write_png(&plan, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height.
        assert_eq!(
            u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
            SIZE.0
        );
        assert_eq!(
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
            SIZE.1
        );
    }
}
