//! The report's plots as PNG (plotters, bitmap backend). Text is drawn
//! with a bundled subset of DejaVu Sans through ab_glyph, so a server
//! without fonts draws the same pictures.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use mlcore_research::train::ReliabilityBin;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
static REGISTER: Once = Once::new();

const SIZE: (u32, u32) = (900, 420);

fn font() {
    REGISTER.call_once(|| {
        // The bundled font is valid TrueType; a failure would show as
        // missing text, never as a missing plot.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

type Result = std::result::Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A line over time: x in days since the first point.
pub fn series(path: &Path, title: &str, y_label: &str, points: &[(f64, f64)], fill: bool) -> Result {
    font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (x0, x1) = bounds(points.iter().map(|p| p.0));
    let (y0, y1) = bounds(points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("days into the window")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let colour = RGBColor(31, 119, 180);
    if fill {
        chart
            .draw_series(AreaSeries::new(points.iter().copied(), 0.0, colour.mix(0.25)).border_style(colour))
            .map_err(err)?;
    } else {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Reliability diagrams: mean predicted against observed per bin, one
/// series per head, with the diagonal.
pub fn reliability(path: &Path, heads: &[(String, Vec<ReliabilityBin>)]) -> Result {
    font();
    let root = BitMapBackend::new(path, (520, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Calibration on the test rows", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("mean predicted probability")
        .y_desc("observed frequency")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4)))
        .map_err(err)?;
    for (i, (head, bins)) in heads.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = bins.iter().map(|b| (b.mean_predicted, b.observed)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(head.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The θ search surface: every trial at (θ1, θ2), coloured by its Sharpe
/// (blue low, red high), infeasible ones hollow; the chosen θ ringed.
pub fn theta(path: &Path, trials: &[(f64, f64, f64, bool)], chosen: (f64, f64)) -> Result {
    font();
    let root = BitMapBackend::new(path, (620, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (x0, x1) = bounds(trials.iter().map(|t| t.0).chain([chosen.0]));
    let (y0, y1) = bounds(trials.iter().map(|t| t.1).chain([chosen.1]));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "θ search: Sharpe blue (low) → red (high); hollow: infeasible; ringed: chosen",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("θ1 (return probability)")
        .y_desc("θ2 (risk score)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let (s0, s1) = bounds(trials.iter().filter(|t| t.3).map(|t| t.2));
    let colour = |s: f64| {
        let f = ((s - s0) / (s1 - s0)).clamp(0.0, 1.0);
        RGBColor((40.0 + 200.0 * f) as u8, 60, (240.0 - 200.0 * f) as u8)
    };
    chart
        .draw_series(trials.iter().map(|&(t1, t2, s, feasible)| {
            let style = if feasible {
                colour(s).filled()
            } else {
                BLACK.mix(0.4).stroke_width(1)
            };
            Circle::new((t1, t2), 6, style)
        }))
        .map_err(err)?;
    chart
        .draw_series([Circle::new(chosen, 11, BLACK.stroke_width(2))])
        .map_err(err)?;
    root.present().map_err(err)
}

/// Bars with 90 % intervals (champion vs challenger; stress scenarios).
pub fn bars(path: &Path, title: &str, y_label: &str, bars: &[(String, f64, [f64; 2])]) -> Result {
    font();
    let root = BitMapBackend::new(path, (620, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (y0, y1) = bounds(bars.iter().flat_map(|b| [b.1, b.2[0], b.2[1], 0.0]));
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), y0..y1)
        .map_err(err)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .y_desc(y_label)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let colour = RGBColor(31, 119, 180);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, b.1)], colour.mix(0.6).filled())
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            PathElement::new([(x, b.2[0]), (x, b.2[1])], BLACK.stroke_width(2))
        }))
        .map_err(err)?;
    root.present().map_err(err)
}

/// A range covering `values` with a little room (never empty or NaN).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}
