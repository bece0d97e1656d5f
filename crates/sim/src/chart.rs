//! An SVG of simulations side by side: environments kept (memory) and cold starts over
//! time, one line per policy, drawn with `plotters`.

use plotters::prelude::*;

use crate::Report;

/// Line colours that read on white, in the order lines take them (Ember's charts share it).
pub const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// What a panel plots from each timeline sample.
type Measure = fn(&crate::Sample) -> u32;

/// Two panels over the trace's span in hours: environments alive (busy or idle) and cold
/// starts per timeline slot, one line per `(name, report)`.
pub fn svg(reports: &[(String, Report)]) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((2, 1));
        let hours = reports
            .iter()
            .map(|(_, r)| r.span_seconds / 3600.0)
            .fold(0.0f64, f64::max)
            .max(1e-3);
        let series: [(&str, Measure); 2] = [
            ("Environments alive (busy or idle)", |s| s.environments),
            ("Cold starts per interval", |s| s.cold_starts),
        ];
        for (panel, (title, value)) in panels.iter().zip(series) {
            let top = reports
                .iter()
                .flat_map(|(_, r)| r.timeline.iter().map(value))
                .max()
                .unwrap_or(0)
                .max(1);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..hours, 0u32..top + top / 10 + 1)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("hours")
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, (name, report)) in reports.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(
                        report.timeline.iter().map(|s| (s.at_s / 3600.0, value(s))),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimConfig, generate, simulate};
    use std::time::Duration;

    #[test]
    fn the_chart_has_both_panels_and_a_line_per_policy() {
        let calls = generate::poisson(1, 5, Duration::from_secs(3600), 0.01);
        let report = simulate(&calls, &SimConfig::default());
        let svg = svg(&[("fixed".into(), report.clone()), ("other".into(), report)]).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Environments alive") && svg.contains("Cold starts per interval"));
        // Each policy is named in both legends and drawn as a line in both panels.
        assert_eq!(svg.matches(">\nfixed\n<").count(), 2, "{svg}");
        assert_eq!(svg.matches(">\nother\n<").count(), 2);
        assert!(svg.matches("<polyline").count() >= 4);
    }
}
