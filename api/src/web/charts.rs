//! Bar charts as server-made SVG (no script, no library): the portal's cases per day and
//! check-ins per hour. Each bar carries a `<title>` with its label and value; the page also
//! offers the same figures as a table. Colours come from `site.css` classes (the CSP allows no
//! inline style), and every text is our own numbers and dates, escaped all the same.

use std::fmt::Write as _;

/// One bar: its axis label and value.
pub struct Bar {
    pub label: String,
    pub value: u64,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 240;
const LEFT: u32 = 44;
const BOTTOM: u32 = 28;
const TOP: u32 = 12;

/// An SVG bar chart of `bars`, labelled by `title_id` (the id of the heading that names it);
/// every `label_every`-th bar gets an axis label.
pub fn bar_chart(bars: &[Bar], title_id: &str, label_every: usize) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    // A round top for the axis: 1, 2 or 5 times a power of ten.
    let mut top = 1u64;
    while top < max {
        top = match top.to_string().as_bytes().first() {
            Some(b'1') => top * 2,
            Some(b'2') => top / 2 * 5,
            _ => top * 2,
        };
    }
    let plot_w = WIDTH - LEFT - 8;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = bars.len().max(1) as u32;
    let slot = plot_w as f64 / f64::from(n);
    let mut s = String::with_capacity(256 + bars.len() * 160);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"{id}\" preserveAspectRatio=\"xMidYMid meet\">",
        id = escape(title_id)
    );
    for frac in [0u64, 1, 2] {
        if frac == 1 && !top.is_multiple_of(2) {
            continue;
        }
        let v = top * frac / 2;
        let y = f64::from(TOP) + f64::from(plot_h) * (1.0 - frac as f64 / 2.0);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{v}</text>",
            x2 = WIDTH - 8,
            tx = LEFT - 6,
            ty = y + 4.0,
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let h = f64::from(plot_h) * b.value as f64 / top as f64;
        let x = f64::from(LEFT) + slot * i as f64 + slot * 0.15;
        let w = (slot * 0.7).max(1.0);
        let y = f64::from(TOP) + f64::from(plot_h) - h;
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"><title>{label}: {v}</title></rect>",
            label = escape(&b.label),
            v = b.value,
        );
        if label_every > 0 && i % label_every == 0 {
            let _ = write!(
                s,
                "<text class=\"axis\" x=\"{cx:.1}\" y=\"{ly}\" text-anchor=\"middle\">{label}</text>",
                cx = x + w / 2.0,
                ly = HEIGHT - 8,
                label = escape(&b.label),
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Escapes text for SVG/HTML content and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_titled_bar_per_value_and_escapes_labels() {
        let bars: Vec<Bar> = (0..30)
            .map(|i| Bar {
                label: format!("{i}<x>"),
                value: i,
            })
            .collect();
        let svg = bar_chart(&bars, "t\"1", 5);
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 30);
        assert!(svg.contains("<title>29&lt;x&gt;: 29</title>"));
        assert!(svg.contains("aria-labelledby=\"t&quot;1\""));
        assert!(!svg.contains("style="));
        // The axis top is a round number at or above the largest value.
        assert!(svg.contains(">50</text>"));
    }

    #[test]
    fn an_empty_chart_still_draws() {
        let svg = bar_chart(&[], "t", 1);
        assert!(svg.contains("<svg") && !svg.contains("<rect"));
    }
}
