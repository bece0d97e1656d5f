//! The report's charts, as SVG files drawn with `plotters`.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use ember_sim::chart::COLORS;

use super::results::{Rate, Results};

type Fail = Box<dyn std::error::Error>;

/// Draws one chart on its area.
type Draw<'a> = dyn Fn(&DrawingArea<SVGBackend, Shift>) -> Result<(), Fail> + 'a;

/// A named series of points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Writes every chart of `results` into `dir`; `latency` holds the warm hello latency
/// distributions (name, quantile → µs).
pub fn write_all(dir: &Path, results: &Results, latency: &[Line]) -> anyhow::Result<()> {
    let charts: [(&str, Box<Draw>); 6] = [
        ("latency.svg", Box::new(|a| latency_chart(a, latency))),
        ("throughput.svg", Box::new(|a| throughput_chart(a, results))),
        ("cold.svg", Box::new(|a| cold_chart(a, results))),
        ("scale-out.svg", Box::new(|a| scale_out_chart(a, results))),
        ("density.svg", Box::new(|a| density_chart(a, results))),
        ("load.svg", Box::new(|a| load_chart(a, results))),
    ];
    for (file, draw) in charts {
        let mut svg = String::new();
        {
            let area = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
            area.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
            draw(&area).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            area.present().map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        std::fs::write(dir.join(file), svg)?;
    }
    Ok(())
}

fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<(), Fail> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws `series` as lines with points on `chart`.
fn draw_lines<'a, X: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, LogCoord<f64>>>,
    x_desc: &str,
    y_desc: &str,
    series: &[Line],
) -> Result<(), Fail> {
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, line) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.points
                .iter()
                .map(|&p| Circle::new(p, 3, color.filled())),
        )?;
    }
    legend(chart, SeriesLabelPosition::UpperLeft)
}

/// Lines on a log-scaled y axis; the x axis log-scaled too if `x_log`.
fn lines(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Line],
    x_log: bool,
) -> Result<(), Fail> {
    let all = || series.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        return Ok(());
    }
    let y_range = ((y0 * 0.8).max(1e-3)..(y1 * 1.25).max(y0 * 1.01 + 1e-3)).log_scale();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if x_log {
        let x_range = (x0.max(1e-3) * 0.8..x1 * 1.25).log_scale();
        let mut chart = builder.build_cartesian_2d(x_range, y_range)?;
        draw_lines(&mut chart, x_desc, y_desc, series)
    } else {
        let pad = (x1 - x0).max(1.0) * 0.05;
        let mut chart = builder.build_cartesian_2d((x0 - pad)..(x1 + pad), y_range)?;
        draw_lines(&mut chart, x_desc, y_desc, series)
    }
}

fn latency_chart(area: &DrawingArea<SVGBackend, Shift>, latency: &[Line]) -> Result<(), Fail> {
    lines(
        area,
        "Warm hello latency distribution (one client)",
        "percentile",
        "latency, µs (log)",
        latency,
        false,
    )
}

fn rates_line(name: &str, rates: &[Rate]) -> Line {
    Line {
        name: name.to_owned(),
        points: rates.iter().map(|r| (r.clients as f64, r.rps)).collect(),
    }
}

fn throughput_chart(area: &DrawingArea<SVGBackend, Shift>, r: &Results) -> Result<(), Fail> {
    let mut series = vec![rates_line("direct hop", &r.floor.direct_rates)];
    for rt in &r.runtimes {
        series.push(rates_line(&format!("{} Invoke", rt.runtime), &rt.rates));
    }
    for (name, rates) in &r.peers.rates {
        if name != "direct hop" {
            series.push(rates_line(name, rates));
        }
    }
    lines(
        area,
        "Throughput against concurrency (hello)",
        "concurrent clients (log)",
        "requests / s (log)",
        &series,
        true,
    )
}

/// Horizontal stacked bars, one per label, of `segments` (name, value) each.
fn stacked_bars(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    x_desc: &str,
    bars: &[(String, Vec<f64>)],
    segments: &[&str],
) -> Result<(), Fail> {
    if bars.is_empty() {
        return Ok(());
    }
    let top = bars
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-3);
    let n = bars.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..top * 1.1, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => bars.get(*i).map_or(String::new(), |b| b.0.clone()),
            _ => String::new(),
        })
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (s, name) in segments.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, values))| {
                let start: f64 = values[..s].iter().sum();
                let end = start + values[s];
                Rectangle::new(
                    [
                        (start, SegmentValue::Exact(i)),
                        (end, SegmentValue::Exact(i + 1)),
                    ],
                    color.filled(),
                )
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

fn cold_chart(area: &DrawingArea<SVGBackend, Shift>, r: &Results) -> Result<(), Fail> {
    let bars: Vec<(String, Vec<f64>)> = r
        .cold
        .iter()
        .map(|c| {
            let s = &c.stages;
            (
                format!("{} / {}", c.runtime, c.backend),
                [
                    s.placement_us,
                    s.sandbox_us,
                    s.runtime_init_us,
                    s.code_init_us,
                    s.handler_us,
                ]
                .iter()
                .map(|v| v / 1000.0)
                .collect(),
            )
        })
        .collect();
    stacked_bars(
        area,
        "Cold start by runtime and backend, by stage (medians)",
        "ms",
        &bars,
        &[
            "placement",
            "sandbox",
            "runtime init",
            "code init",
            "handler",
        ],
    )
}

fn scale_out_chart(area: &DrawingArea<SVGBackend, Shift>, r: &Results) -> Result<(), Fail> {
    let top_ms = r
        .scale_out
        .iter()
        .flat_map(|s| s.ready_ms.last().copied())
        .fold(1.0, f64::max);
    let top_n = r
        .scale_out
        .iter()
        .map(|s| s.environments)
        .max()
        .unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Scale-out: environments taking calls after a burst of 100",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..top_ms * 1.05, 0usize..top_n + top_n / 10)?;
    chart
        .configure_mesh()
        .x_desc("ms since the burst")
        .y_desc("environments")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in r.scale_out.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = vec![(0.0, 0)];
        for (k, &t) in s.ready_ms.iter().enumerate() {
            points.push((t, k));
            points.push((t, k + 1));
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(s.runtime.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

fn density_chart(area: &DrawingArea<SVGBackend, Shift>, r: &Results) -> Result<(), Fail> {
    let mib = |b: f64| b / 1024.0 / 1024.0;
    let mut bars: Vec<(String, Vec<f64>)> = Vec::new();
    for d in &r.density {
        bars.push((
            d.runtime.clone(),
            vec![mib(d.environment_bytes), mib(d.platform_bytes), 0.0],
        ));
        if let Some(bare) = d.bare_bytes {
            bars.push((format!("{} bare", d.runtime), vec![0.0, 0.0, mib(bare)]));
        }
    }
    stacked_bars(
        area,
        "Memory per idle warm environment",
        "MiB",
        &bars,
        &[
            "environment's processes (PSS)",
            "Ember's own, per environment",
            "bare interpreter (baseline)",
        ],
    )
}

fn load_chart(area: &DrawingArea<SVGBackend, Shift>, r: &Results) -> Result<(), Fail> {
    let Some(l) = &r.load else { return Ok(()) };
    let pick = |name: &str, f: &dyn Fn(&super::results::LoadPoint) -> f64| Line {
        name: name.to_owned(),
        points: l
            .points
            .iter()
            .map(|p| (f64::from(p.percent), f(p)))
            .collect(),
    };
    let series = [
        pick(&format!("{} p99", l.runtime), &|p| p.latency.p99_us),
        pick(&format!("{} p50", l.runtime), &|p| p.latency.p50_us),
        pick("direct hop p99", &|p| p.direct.p99_us),
    ];
    lines(
        area,
        "Latency against load (% of the throughput ceiling)",
        "% of ceiling",
        "latency, µs (log)",
        &series,
        false,
    )
}
