//! Owns `--plot`: an SVG percentile plot of the run's latency histograms (latency against
//! percentile on a log axis of 1/(1-p), as HdrHistogram's plotter draws it), written by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stats::Latency;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
/// Decades of the x axis: 0 = p0, 6 = p99.9999.
const DECADES: f64 = 6.0;

/// The SVG document for `histograms` (empty ones are left out).
pub fn svg(title: &str, histograms: &BTreeMap<String, Latency>) -> String {
    let series: Vec<(&String, Vec<(f64, f64)>)> = histograms
        .iter()
        .filter(|(_, h)| h.count() > 0)
        .map(|(name, h)| (name, points(h)))
        .collect();
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .fold(0.0, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |decade: f64| LEFT + decade / DECADES * plot_w;
    let y = |ms: f64| TOP + plot_h - ms / y_max * plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
    {
        let xi = x(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xi:.1}" y1="{TOP}" x2="{xi:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{xi:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let yi = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yi:.1}" x2="{:.1}" y2="{yi:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            yi + 4.0,
            fmt_ms(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">latency (ms)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts.iter().map(|&(d, ms)| format!("{:.1},{:.1}", x(d), y(ms))).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/>"#,
            LEFT + plot_w + 15.0,
            ly - 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            LEFT + plot_w + 35.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `(decade, ms)` points: decade `d` is percentile `1 - 10^-d`, up to what the count supports.
fn points(h: &Latency) -> Vec<(f64, f64)> {
    let last = (h.count() as f64).log10().min(DECADES);
    (0..=((last * 50.0) as usize))
        .map(|i| i as f64 / 50.0)
        .map(|d| (d, h.quantile_ms(1.0 - 10f64.powf(-d))))
        .collect()
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * step)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * step)
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_line_per_non_empty_histogram() {
        let mut h = BTreeMap::new();
        let mut rtt = Latency::new();
        (1..=1000u64).for_each(|i| rtt.record(i * 10_000));
        h.insert("rtt".to_string(), rtt);
        h.insert("empty".to_string(), Latency::new());
        let doc = svg("echo <test>", &h);
        assert!(doc.starts_with("<svg"));
        assert!(doc.trim_end().ends_with("</svg>"));
        assert_eq!(doc.matches("<polyline").count(), 1);
        assert!(doc.contains("echo &lt;test&gt;"));
        assert!(doc.contains(">10<"), "y axis up to the 10 ms maximum: {doc}");
    }

    #[test]
    fn axis_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.21), 0.25);
        assert_eq!(fmt_ms(0.25), "0.25");
    }
}
