//! `throughput.png`: items/s against batch size, one line per implementation, one panel per
//! (bound, item type, producers). Text uses DejaVu Sans embedded from the `dejavu` crate through
//! plotters' `ab_glyph` backend, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::peers::{Impl, Role};
use crate::suite::Measured;
use crate::workload::{BATCH_SIZES, Bound, ItemKind, PRODUCERS};

const WIDTH: u32 = 1800;
const HEIGHT: u32 = 2100;
const LEGEND_WIDTH: u32 = 420;

fn err(e: impl std::fmt::Debug) -> String {
    format!("drawing the chart: {e:?}")
}

/// Makes the embedded font the one plotters uses for "sans-serif".
fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font does not parse".to_owned());
    });
    result
}

/// Colour and width of an implementation's line.
fn style(imp: Impl) -> (RGBColor, u32) {
    match imp {
        Impl::BatchTokioAdd => (RGBColor(214, 39, 40), 4),
        Impl::BatchTokioAddMany => (RGBColor(140, 20, 140), 4),
        Impl::TokioStreamChunks => (RGBColor(31, 119, 180), 2),
        Impl::FuturesBatch => (RGBColor(255, 127, 14), 2),
        Impl::RecvMany => (RGBColor(44, 160, 44), 2),
        Impl::ReserveMany => (RGBColor(23, 190, 207), 2),
        Impl::FlumeTryRecv => (RGBColor(188, 189, 34), 2),
        Impl::FlumeDrain => (RGBColor(140, 86, 75), 2),
        Impl::Kanal => (RGBColor(227, 119, 194), 3),
        Impl::LimitHeapless => (RGBColor(40, 40, 40), 2),
        Impl::LimitVec => (RGBColor(150, 150, 150), 2),
    }
}

/// `12M`-style tick labels.
fn short_rate(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.0}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else {
        format!("{:.0}k", v / 1e3)
    }
}

/// Draws the chart into `path` (PNG).
pub(crate) fn draw(measured: &Measured, title: &str, path: &Path) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 28)).map_err(err)?;
    let (grid, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);

    let rates: Vec<f64> = measured.rows.iter().map(crate::suite::Row::items_per_sec).collect();
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min).max(1.0) / 1.5;
    let hi = rates.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.5;
    let (x_lo, x_hi) = (BATCH_SIZES[0] as f64 / 1.5, BATCH_SIZES[BATCH_SIZES.len() - 1] as f64 * 1.5);

    let panels: Vec<(Bound, ItemKind, usize)> = Bound::ALL
        .into_iter()
        .flat_map(|bound| ItemKind::ALL.into_iter().flat_map(move |item| PRODUCERS.map(|p| (bound, item, p))))
        .collect();
    let areas = grid.split_evenly((Bound::ALL.len() * ItemKind::ALL.len(), PRODUCERS.len()));
    for ((bound, item, producers), area) in panels.into_iter().zip(areas.iter()) {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("bound {bound}, {item} items, P = {producers}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x_lo..x_hi).log_scale().with_key_points(BATCH_SIZES.map(|b| b as f64).to_vec()),
                (lo..hi).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("batch size B")
            .y_desc("items/s (log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| short_rate(*y))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for imp in Impl::ALL {
            let points: Vec<(f64, f64)> = measured
                .rows
                .iter()
                .filter(|r| {
                    (r.case.bound, r.case.item, r.case.producers, r.case.imp) == (bound, item, producers, imp)
                })
                .map(|r| (r.case.batch as f64, r.items_per_sec()))
                .collect();
            let (colour, width) = style(imp);
            chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(width))).map_err(err)?;
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, width + 2, colour.filled())))
                .map_err(err)?;
        }
    }

    let text = ("sans-serif", 17).into_font();
    legend.draw(&Text::new("implementation", (10, 40), ("sans-serif", 20).into_font())).map_err(err)?;
    for (k, imp) in (0..).zip(Impl::ALL) {
        let y = 80 + 34 * k;
        let (colour, width) = style(imp);
        legend.draw(&PathElement::new(vec![(10, y), (50, y)], colour.stroke_width(width))).map_err(err)?;
        legend.draw(&Circle::new((30, y), width + 2, colour.filled())).map_err(err)?;
        let label = match imp.role() {
            Role::Subject | Role::Peer => imp.label().to_owned(),
            Role::Limit => format!("{} (1 thread)", imp.label()),
        };
        legend.draw(&Text::new(label, (60, y - 9), text.clone())).map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
