//! A hand-written SVG bar chart of the summary rows: one group per metric, one bar per broker,
//! bar length relative to the largest value of the group.

use std::fmt::Write as _;

use super::{Comparison, Unit, summary_rows};
use crate::report::{bytes, micros, si};

const COLORS: [&str; 6] = [
    "#d9480f", "#1971c2", "#2f9e44", "#7048e8", "#e8590c", "#495057",
];
const WIDTH: u32 = 940;
const LABEL_W: u32 = 280;
const BAR_MAX: f64 = 520.0;
const BAR_H: u32 = 16;
const GAP: u32 = 4;
const GROUP_GAP: u32 = 14;
const TOP: u32 = 64;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn chart(cmp: &Comparison) -> String {
    let rows = summary_rows(&cmp.scenarios);
    let brokers: Vec<&str> = cmp.brokers.iter().map(|b| b.name.as_str()).collect();
    let group_h = brokers.len() as u32 * (BAR_H + GAP) + GROUP_GAP;
    let height = TOP + rows.len() as u32 * group_h + 30;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">Broker comparison ({}, {} × {})</text>"#,
        escape(&cmp.generated_at),
        cmp.machine.cpus,
        escape(&cmp.machine.cpu_model)
    );
    let mut x = 10;
    for (i, b) in brokers.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(s, r#"<text x="{}" y="45">{}</text>"#, x + 16, escape(b));
        x += 30 + 8 * b.len() as u32;
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="45" fill="#555">↓ = lower is better</text>"##,
        x + 10
    );
    for (g, row) in rows.iter().enumerate() {
        let y0 = TOP + g as u32 * group_h;
        let values: Vec<Option<f64>> = brokers
            .iter()
            .map(|b| cmp.report(b, row.scenario).and_then(row.value))
            .collect();
        let max = values.iter().flatten().fold(0.0_f64, |m, v| m.max(*v));
        let arrow = if row.higher_is_better { "" } else { " ↓" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} {}{arrow}</text>"#,
            LABEL_W - 8,
            y0 + BAR_H - 3,
            escape(row.scenario),
            escape(row.metric)
        );
        for (i, v) in values.iter().enumerate() {
            let y = y0 + i as u32 * (BAR_H + GAP);
            let color = COLORS[i % COLORS.len()];
            match v {
                Some(v) => {
                    let w = if max > 0.0 {
                        (v / max * BAR_MAX).max(1.0)
                    } else {
                        1.0
                    };
                    let label = match row.unit {
                        Unit::PerSec => si(*v),
                        Unit::Bytes => bytes(*v),
                        Unit::Micros => micros(*v),
                    };
                    let _ = writeln!(
                        s,
                        r#"<rect x="{LABEL_W}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{color}"/>"#
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{}">{}</text>"#,
                        f64::from(LABEL_W) + w + 4.0,
                        y + BAR_H - 3,
                        escape(&label)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{}" y="{}" fill="#999">no result</text>"##,
                        LABEL_W + 4,
                        y + BAR_H - 3
                    );
                }
            }
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_bar_per_broker_and_value_labels() {
        let svg = chart(&crate::compare::markdown::tests::comparison());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Legend squares (2) + one bar per broker for the one summary row (2).
        assert_eq!(svg.matches("<rect x=").count(), 4, "{svg}");
        assert!(
            svg.contains(">123k</text>") && svg.contains(">247k</text>"),
            "{svg}"
        );
        // The faster broker's bar is the full width.
        assert!(svg.contains(&format!("width=\"{BAR_MAX:.1}\"")), "{svg}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
