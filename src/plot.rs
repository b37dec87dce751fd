//! curve.png: train and validation NLL per epoch. The font is embedded (DejaVu Sans) so the
//! plot renders the same on a machine without fontconfig or any installed font.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

static FONT: Once = Once::new();

fn ensure_font() {
    FONT.call_once(|| {
        // Registration fails only for bytes that are not a font; these are DejaVu's own.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One point per epoch (1-based): (epoch, train NLL, valid NLL when that epoch validated).
pub fn write_curve(path: &Path, points: &[(usize, f64, Option<f64>)], title: &str) -> Result<()> {
    ensure_font();
    let (width, height) = (900u32, 560u32);
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(&root, points, title)
            .map_err(|e| anyhow!("{}: cannot draw the curve: {e}", path.display()))?;
        root.present()
            .map_err(|e| anyhow!("{}: cannot draw the curve: {e}", path.display()))?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| anyhow!("curve buffer size"))?;
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    crate::io::write_atomically(path, &png)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    points: &[(usize, f64, Option<f64>)],
    title: &str,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let last_epoch = points.iter().map(|p| p.0).max().unwrap_or(1).max(2);
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| [Some(p.1), p.2])
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if values.is_empty() {
        (lo, hi) = (0.0, 1.0);
    }
    // The first epochs sit far above the rest; a view from the minimum up to a bit over the
    // late values keeps the interesting part readable.
    let late: Vec<f64> = points
        .iter()
        .skip(points.len() / 5)
        .flat_map(|p| [Some(p.1), p.2])
        .flatten()
        .collect();
    if let Some(late_hi) = late
        .iter()
        .cloned()
        .filter(|v| v.is_finite())
        .reduce(f64::max)
    {
        hi = hi.min(lo + 3.0 * (late_hi - lo).max(0.5));
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1usize..last_epoch, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("NLL (nats per image)")
        .label_style(("sans-serif", 15))
        .draw()?;
    let train = points.iter().map(|p| (p.0, p.1));
    // Only the validated epochs (train.valid_every), joined by straight lines.
    let valid = points.iter().filter_map(|p| p.2.map(|v| (p.0, v)));
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))?
        .label("train (running mean over the epoch)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(valid, RED.stroke_width(2)))?
        .label("validation (exact)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}
