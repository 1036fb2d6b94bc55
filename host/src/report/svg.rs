//! Line charts as inline SVG: one series per run, a mean line with an optional ±std band.
//! Each line is a `<path data-series="…" data-points="N">` so a test can count its points.

use std::fmt::Write;

/// One run's curve: (step, mean, std) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64, Option<f64>)>,
}

const WIDTH: f64 = 460.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// The escaped form of `text` for HTML and SVG. Control characters other than tab and line
/// ends (a completion may hold any) are shown as their symbols (U+0000 as `␀`): raw, they
/// made the report a "binary file" to grep and are not allowed in XML.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            _ => crate::control_chars::push_visible(&mut escaped, c),
        }
    }
    escaped
}

/// A chart titled `title`; `key` names its series in `data-series`. `legend`: name the runs
/// under it (a report of several runs does, even where only one has this series).
pub fn chart(title: &str, key: &str, series: &[Series<'_>], legend: bool) -> String {
    let all: Vec<&(f64, f64, Option<f64>)> = series.iter().flat_map(|s| &s.points).collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure class="chart"><figcaption>{}</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"#,
        escape(title)
    );
    if all.is_empty() {
        svg.push_str(r#"<text x="50%" y="50%" text-anchor="middle">no data yet</text></svg></figure>"#);
        return svg;
    }
    let (x_min, x_max) = bounds(all.iter().map(|p| p.0), Flat::Steps);
    let (y_min, y_max) = bounds(
        all.iter().flat_map(|p| {
            let spread = p.2.unwrap_or(0.0);
            [p.1 - spread, p.1 + spread]
        }),
        Flat::Values,
    );
    let x = |v: f64| LEFT + fraction(v, x_min, x_max) * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| HEIGHT - BOTTOM - fraction(v, y_min, y_max) * (HEIGHT - TOP - BOTTOM);
    // Axes with their extremes.
    let _ = write!(
        svg,
        r##"<g class="axes"><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/><text x="{l}" y="{t}" text-anchor="end">{}</text><text x="{l}" y="{b}" text-anchor="end">{}</text><text x="{LEFT}" y="{s}" text-anchor="start">step {}</text><text x="{r}" y="{s}" text-anchor="end">{}</text></g>"##,
        number(y_max),
        number(y_min),
        number(x_min),
        number(x_max),
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT,
        l = LEFT - 4.0,
        t = TOP + 8.0,
        s = HEIGHT - 8.0,
    );
    for s in series {
        let points = thinned(&s.points, MAX_POINTS);
        let s = &Series {
            label: s.label,
            color: s.color,
            points,
        };
        if s.points.iter().any(|p| p.2.is_some()) {
            let upper: Vec<String> = s
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1 + p.2.unwrap_or(0.0))))
                .collect();
            let lower: Vec<String> = s
                .points
                .iter()
                .rev()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1 - p.2.unwrap_or(0.0))))
                .collect();
            let _ = write!(
                svg,
                r#"<polygon class="band" fill="{}" points="{} {}"/>"#,
                s.color,
                upper.join(" "),
                lower.join(" ")
            );
        }
        let line: Vec<String> = s
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}{:.1},{:.1}", if i == 0 { 'M' } else { 'L' }, x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<path class="line" stroke="{}" data-series="{}" data-run="{}" data-points="{}" d="{}"><title>{}</title></path>"#,
            s.color,
            escape(key),
            escape(s.label),
            s.points.len(),
            line.join(" "),
            escape(s.label)
        );
        // Each point shows its numbers on hover. A path of one point draws nothing: a run of
        // one step is a dot, always shown.
        let class = if s.points.len() == 1 { "dot" } else { "point" };
        for (step, mean, std) in thinned(&s.points, MAX_HOVER_POINTS) {
            let spread = std.map(|std| format!(" ± {}", number(std))).unwrap_or_default();
            let _ = write!(
                svg,
                r#"<circle class="{class}" fill="{}" cx="{:.1}" cy="{:.1}" r="3"><title>{} · step {}: {}{spread}</title></circle>"#,
                s.color,
                x(step),
                y(mean),
                escape(s.label),
                number(step),
                number(mean),
            );
        }
    }
    svg.push_str("</svg>");
    if legend || series.len() > 1 {
        svg.push_str(r#"<div class="legend">"#);
        for s in series {
            let _ = write!(
                svg,
                r#"<span><i style="background:{}"></i>{}</span>"#,
                s.color,
                escape(s.label)
            );
        }
        svg.push_str("</div>");
    }
    svg.push_str("</figure>");
    svg
}

/// The most points a line is drawn with: a run of 50,000 steps drew 50,000-point paths that
/// a browser took minutes to show, for a chart 460 pixels wide.
const MAX_POINTS: usize = 1000;

/// The most points of a line that show their numbers on hover: each is an SVG element, and a
/// report of long runs compared held tens of thousands.
const MAX_HOVER_POINTS: usize = 200;

/// `points`, every k-th of them (and the last) when there are more than `most`.
fn thinned(points: &[(f64, f64, Option<f64>)], most: usize) -> Vec<(f64, f64, Option<f64>)> {
    if points.len() <= most {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(most);
    let last = points.len() - 1;
    points
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i == last)
        .map(|(_, p)| *p)
        .collect()
}

/// How a flat range (one value) is widened so its points have a place.
#[derive(Clone, Copy)]
enum Flat {
    /// Steps: a whole step either side, so the axis reads `step 2` … `4`, not `2.850`.
    Steps,
    /// Values: 5% of the value either side (a constant learning rate of 1e-4 reads
    /// `9.50e-5` … `1.05e-4`, not ±0.05), or 0 … 1 for a line at zero.
    Values,
}

/// The range of the finite `values`, widened when flat. Both ends stay finite: widening a
/// flat line at ±f64::MAX stops at f64's end.
fn bounds(values: impl Iterator<Item = f64>, flat: Flat) -> (f64, f64) {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    if high - low <= low.abs().max(high.abs()) * 1e-12 {
        let (below, above) = match flat {
            Flat::Steps => (1.0, 1.0),
            Flat::Values if low == 0.0 => (0.0, 1.0),
            Flat::Values => (low.abs() * 0.05, low.abs() * 0.05),
        };
        return ((low - below).max(f64::MIN), (high + above).min(f64::MAX));
    }
    (low, high)
}

/// Where `value` lies from `low` (0) to `high` (1), for `low < high` as `bounds` gives them.
/// Halving first keeps the differences finite for any finite bounds (`1e308 - -1e308`
/// overflows to inf, and inf / inf drew NaN coordinates). A value past the bounds (a band's
/// edge that overflowed to ±inf) is held at the edge, and NaN at the middle, so the SVG only
/// ever holds finite numbers.
fn fraction(value: f64, low: f64, high: f64) -> f64 {
    let share = (value / 2.0 - low / 2.0) / (high / 2.0 - low / 2.0);
    if share.is_nan() {
        0.5
    } else {
        share.clamp(0.0, 1.0)
    }
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e6 {
        format!("{value:.0}")
    } else if value != 0.0 && (value.abs() < 1e-3 || value.abs() >= 1e5) {
        format!("{value:.2e}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_one_point_per_step_for_each_run() {
        let series = [
            Series {
                label: "grpo",
                color: "#c33",
                points: vec![(1.0, 0.1, Some(0.05)), (2.0, 0.4, Some(0.1)), (3.0, 0.9, None)],
            },
            Series {
                label: "crpo <full>",
                color: "#36c",
                points: vec![(1.0, 0.2, None), (2.0, 0.2, None)],
            },
        ];
        let svg = chart("accuracy", "objective/accuracy", &series, false);
        assert_eq!(svg.matches("data-series=\"objective/accuracy\"").count(), 2);
        assert!(svg.contains("data-points=\"3\"") && svg.contains("data-points=\"2\""));
        assert!(svg.contains("crpo &lt;full&gt;"), "labels are escaped");
        assert_eq!(
            svg.matches("<polygon").count(),
            1,
            "a band only where a std is known"
        );
        let path = svg.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(path.matches(['M', 'L']).count(), 3);
        assert!(chart("empty", "k", &[], false).contains("no data yet"));
        // Every point tells its numbers on hover.
        assert_eq!(svg.matches("class=\"point\"").count(), 5);
        assert!(
            svg.contains("<title>grpo · step 2: 0.400 ± 0.100</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>crpo &lt;full&gt; · step 1: 0.200</title>"),
            "{svg}"
        );
    }

    /// One step is a dot (a path of one point drew nothing); a long run is drawn with at most
    /// MAX_POINTS points, its last among them.
    #[test]
    fn one_point_is_a_dot_and_a_long_run_is_thinned() {
        let one = [Series {
            label: "run",
            color: "#c33",
            points: vec![(1.0, 0.5, None)],
        }];
        assert_eq!(chart("a", "k", &one, false).matches("<circle").count(), 1);
        assert!(!chart("a", "k", &one, false).contains("legend"));
        assert!(
            chart("a", "k", &one, true).contains("class=\"legend\""),
            "one run's series in a report of several"
        );
        let long: Vec<_> = (0..50_000).map(|i| (i as f64, i as f64, None)).collect();
        let drawn = thinned(&long, MAX_POINTS);
        assert!(drawn.len() <= MAX_POINTS + 1, "{}", drawn.len());
        assert_eq!(drawn.last(), long.last());
        assert_eq!(drawn[0], long[0]);
        let svg = chart(
            "a",
            "k",
            &[Series {
                label: "run",
                color: "#c33",
                points: long,
            }],
            false,
        );
        let hover = svg.matches("class=\"point\"").count();
        assert!(hover <= MAX_HOVER_POINTS + 1, "{hover} hover points");
    }

    /// Every number in the SVG's coordinates (`points`, `d`) and axes parses as finite.
    fn assert_coordinates_finite(svg: &str) {
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        for attribute in ["points=\"", " d=\""] {
            for value in svg.split(attribute).skip(1) {
                let coordinates = value.split('"').next().unwrap();
                for number in coordinates.split([' ', ',', 'M', 'L']).filter(|n| !n.is_empty()) {
                    let parsed: f64 = number.parse().unwrap();
                    assert!(parsed.is_finite(), "{number} in {coordinates}");
                }
            }
        }
    }

    #[test]
    fn values_at_the_ends_of_f64_draw_finite_coordinates() {
        let extreme = Series {
            label: "run",
            color: "#c33",
            // max − min overflows to inf; the band's upper edge overflows to inf itself.
            points: vec![
                (1.0, -1e308, None),
                (2.0, 1e308, Some(1e308)),
                (3.0, f64::MAX, Some(f64::MAX)),
            ],
        };
        let svg = chart("extreme", "k", &[extreme], false);
        assert_coordinates_finite(&svg);
        let flat_at_the_end = Series {
            label: "run",
            color: "#c33",
            points: vec![(1.0, f64::MAX, None), (2.0, f64::MAX, None)],
        };
        assert_coordinates_finite(&chart("flat", "k", &[flat_at_the_end], false));
        assert_eq!(fraction(f64::INFINITY, -1.0, 1.0), 1.0);
        assert_eq!(fraction(f64::NEG_INFINITY, -1.0, 1.0), 0.0);
        assert_eq!(fraction(f64::NAN, -1.0, 1.0), 0.5);
        assert_eq!(fraction(0.0, -f64::MAX, f64::MAX), 0.5);
    }

    #[test]
    fn a_flat_line_gets_an_axis_it_can_be_read_on() {
        // A constant learning rate: the axis spans it, not ±0.05 around it.
        let (low, high) = bounds([1e-4, 1e-4].into_iter(), Flat::Values);
        assert!(low < 1e-4 && high > 1e-4 && high - low < 2e-5, "{low} {high}");
        assert_eq!((number(low), number(high)), ("9.50e-5".into(), "1.05e-4".into()));
        assert_eq!(bounds([0.0, 0.0].into_iter(), Flat::Values), (0.0, 1.0));
        assert_eq!(bounds([-2.0].into_iter(), Flat::Values), (-2.1, -1.9));
        // One step: whole steps either side.
        assert_eq!(bounds([3.0].into_iter(), Flat::Steps), (2.0, 4.0));
        assert_eq!(bounds([1.0, 5.0].into_iter(), Flat::Steps), (1.0, 5.0));
    }

    #[test]
    fn escaping_keeps_text_and_shows_control_characters() {
        assert_eq!(escape("a<b>&\"c\"\n\td"), "a&lt;b&gt;&amp;&quot;c&quot;\n\td");
        assert_eq!(
            escape("x\u{0}y\u{1b}[31m\u{7f}"),
            "x\u{2400}y\u{241b}[31m\u{2421}"
        );
    }
}
