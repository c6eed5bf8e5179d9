//! `--plot FILE.svg`: the run's publish-to-delivery latency as a percentile
//! distribution, the way HdrHistogram plots it: x is the percentile on a
//! log scale of 1/(1-q) (0 %, 90 %, 99 %, 99.9 %, ... evenly spaced), y the
//! latency in milliseconds. SVG only (plotters' SVG backend, no fonts to
//! load), written once after the run.

use std::path::Path;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Plot size in pixels.
const SIZE: (u32, u32) = (960, 540);

/// The points of the distribution: (log10(1/(1-q)), latency in ms), up to
/// the resolution the sample count allows (x_max), ending at the maximum.
fn points(latency: &Histogram<u64>) -> (Vec<(f64, f64)>, f64) {
    let count = latency.len().max(1) as f64;
    // Beyond 1/(1-q) = count every percentile is the maximum.
    let x_max = count.log10().ceil().max(1.0);
    let mut out = Vec::new();
    for v in latency.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            x_max
        } else {
            (1.0 / (1.0 - q)).log10().min(x_max)
        };
        out.push((x, v.value_iterated_to() as f64 / 1_000.0));
    }
    out.push((x_max, latency.max() as f64 / 1_000.0));
    (out, x_max)
}

/// "99.9%" for x = 3: the percentile at x on the 1/(1-q) scale.
fn percentile_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let decimals = (x.ceil() as i64 - 2).max(0) as usize;
    format!("{:.*}%", decimals, q * 100.0)
}

/// Writes the SVG plot of `latency` (microseconds) to `path`.
pub fn write(path: &Path, latency: &Histogram<u64>, title: &str) -> anyhow::Result<()> {
    if latency.is_empty() {
        bail!("no delivery was timed, so there is no latency to plot");
    }
    let (points, x_max) = points(latency);
    let y_max = (latency.max() as f64 / 1_000.0 * 1.1).max(0.01);
    let draw = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| percentile_label(*x))
            .x_desc("percentile")
            .y_desc("publish-to-delivery latency (ms)")
            .draw()?;
        chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot write the latency plot {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
    }

    #[test]
    fn the_distribution_rises_to_the_maximum() {
        let mut h = Histogram::<u64>::new(2).unwrap();
        for us in 1..=1_000 {
            h.record(us).unwrap();
        }
        let (points, x_max) = points(&h);
        assert_eq!(x_max, 3.0);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let (x, ms) = points.last().copied().unwrap();
        assert_eq!(x, 3.0);
        assert!((1.0..1.02).contains(&ms), "{ms}");
    }

    #[test]
    fn writes_an_svg_file() {
        let mut h = Histogram::<u64>::new(2).unwrap();
        for us in [100, 200, 300, 5_000] {
            h.record(us).unwrap();
        }
        let path = std::env::temp_dir().join(format!("crier-bench-plot-{}.svg", std::process::id()));
        write(&path, &h, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("<svg"), "{svg}");
    }
}
