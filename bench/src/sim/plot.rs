//! The completion plot: machines booted over time, one curve per server under test, as a PNG
//! (plotters' bitmap backend; text drawn with ab_glyph from a TrueType font found at run time,
//! DejaVu Sans from Debian's fonts-dejavu-core; without one the plot has no text).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::Context as _;
use plotters::prelude::*;

use super::report::Report;

/// Fonts tried, in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
/// Picture size.
const SIZE: (u32, u32) = (1000, 600);
/// Curve colours, in order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One curve: a label and the sorted completion times.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    /// Legend.
    pub label: String,
    /// Machines in the rack (the curve's ceiling).
    pub machines: usize,
    /// Sorted seconds at which machines booted.
    pub completions: Vec<f64>,
}

impl Curve {
    /// The curve of a report.
    pub(crate) fn of(report: &Report) -> Curve {
        let s = &report.summary;
        let label = match s.all_booted_secs {
            Some(t) => format!("{}: all {} booted in {t:.1} s", s.label, s.machines),
            None => format!("{}: {} of {} booted", s.label, s.booted, s.machines),
        };
        Curve {
            label,
            machines: s.machines,
            completions: report.completions.clone(),
        }
    }
}

/// Registers a font once; whether text can be drawn.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws `curves` into a PNG at `path`.
pub(crate) fn draw(path: &Path, title: &str, curves: &[Curve]) -> anyhow::Result<()> {
    draw_inner(path, title, curves, font_ready())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

fn draw_inner(
    path: &Path,
    title: &str,
    curves: &[Curve],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = curves
        .iter()
        .filter_map(|c| c.completions.last().copied())
        .fold(1.0_f64, f64::max)
        * 1.05;
    let y_max = curves.iter().map(|c| c.machines).max().unwrap_or(1).max(1) as f64;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(title, ("sans-serif", 26))
            .x_label_area_size(45)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.02)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since the first power-on")
            .y_desc("machines booted")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 16));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    for (i, curve) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // The count of machines booted by each completion time.
        let mut points = vec![(0.0, 0.0)];
        for (k, t) in curve.completions.iter().enumerate() {
            points.push((*t, (k + 1) as f64));
        }
        if let Some(&(t, n)) = points.last() {
            points.push((t.max(x_max), n));
        }
        let series = chart.draw_series(LineSeries::new(points, colour.stroke_width(3)))?;
        if text {
            series.label(curve.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 18))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Options of `pxe-bench plot`.
#[derive(Debug, clap::Args)]
pub(crate) struct PlotArgs {
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The title.
    #[arg(long, default_value = "Machines booted over time")]
    pub title: String,
    /// Reports written by `pxe-bench rack --json`, one curve each.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// Runs `pxe-bench plot`.
pub(crate) fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let mut curves = Vec::new();
    for path in &args.reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a rack report", path.display()))?;
        curves.push(Curve::of(&report));
    }
    draw(&args.out, &args.title, &curves)
}
