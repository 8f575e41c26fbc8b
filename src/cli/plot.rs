//! A loss curve as a small standalone SVG (one polyline per loss term, log-scaled y).

/// Writes `series` (name, values per step) as an SVG line chart.
pub fn loss_svg(title: &str, series: &[(&str, Vec<f64>)]) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if all.is_empty() {
        (1e-3, 1.0)
    } else {
        (lo.log10(), hi.log10().max(lo.log10() + 1e-6))
    };
    let n = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v.max(1e-30).log10() - lo) / (hi - lo);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"20\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n\
         <text x=\"5\" y=\"{}\">{:.3}</text><text x=\"5\" y=\"{}\">{:.3}</text>\n",
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        w / 2.0,
        h - 15.0,
        pad + 4.0,
        10f64.powf(hi),
        h - pad,
        10f64.powf(lo),
    );
    for (k, (name, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0 && v.is_finite())
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let c = colours[k % colours.len()];
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            points.join(" ")
        );
        out += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
            w - pad - 80.0,
            pad + 15.0 * k as f64
        );
    }
    out + "</svg>\n"
}
