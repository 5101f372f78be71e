//! The comparison's results: a Markdown table (printed, and written to
//! `benches/RESULTS.md`) and a bar chart of events/s on a log scale (`benches/results.svg`).

use std::fmt::Write;

use crate::common::{median, range, ratios, thousands};

/// One system's throughput: events/s of each run.
pub struct Rate {
    pub name: String,
    pub runs: Vec<f64>,
    pub pglog: bool,
}

/// pglog against a reference: indexes into [`Report::rates`]. Its value is the median of
/// the ratios of runs made in the same round, close in time: the machine's speed drifts
/// more between rounds than within one.
pub struct Ratio {
    pub ours: usize,
    pub reference: usize,
    /// The least acceptable `ours / reference`.
    pub target: Option<f64>,
}

/// A startup time, in seconds.
pub struct Startup {
    pub what: &'static str,
    pub median: f64,
    pub max: f64,
    /// What the same job costs without pglog: name and median seconds.
    pub reference: Option<(&'static str, f64)>,
    /// The longest acceptable median.
    pub limit: Option<f64>,
}

#[derive(Default)]
pub struct Report {
    /// Lines of context: date, machine, server, settings, sizes.
    pub context: Vec<String>,
    pub rates: Vec<Rate>,
    pub ratios: Vec<Ratio>,
    pub startup: Vec<Startup>,
    /// Notes under the tables.
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a system's runs (events/s) and returns its index for [`Ratio`].
    pub fn rate(&mut self, name: impl Into<String>, runs: &[f64], pglog: bool) -> usize {
        self.rates.push(Rate {
            name: name.into(),
            runs: runs.to_vec(),
            pglog,
        });
        self.rates.len() - 1
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# pglog benchmark results\n\n");
        for line in &self.context {
            let _ = writeln!(md, "- {line}");
        }
        md.push_str(
            "\n## Throughput\n\n\
             | pglog | events/s | reference | events/s | ratio | target |\n\
             |---|--:|---|--:|--:|---|\n",
        );
        for ratio in &self.ratios {
            let (ours, reference) = (&self.rates[ratio.ours], &self.rates[ratio.reference]);
            let paired = ratios(&ours.runs, &reference.runs);
            let value = median(&paired);
            let target = ratio
                .target
                .map_or_else(String::new, |t| format!("≥ {t}×: {}", verdict(value >= t)));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {value:.2} ({}) | {target} |",
                ours.name,
                with_range(&ours.runs, |v| format!("{:.1}k", v / 1e3)),
                reference.name,
                with_range(&reference.runs, |v| format!("{:.1}k", v / 1e3)),
                range(&paired, |v| format!("{v:.2}")),
            );
        }
        md.push_str(
            "\n## Startup\n\n\
             | pglog | median | max | without pglog | median | time ratio | target |\n\
             |---|--:|--:|---|--:|--:|---|\n",
        );
        for s in &self.startup {
            let (reference, reference_ms, ratio) = match s.reference {
                Some((name, t)) => (name, millis(t), format!("{:.2}", s.median / t)),
                None => ("", String::new(), String::new()),
            };
            let target = s.limit.map_or_else(String::new, |limit| {
                format!("< {}: {}", millis(limit), verdict(s.median < limit))
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {reference} | {reference_ms} | {ratio} | {target} |",
                s.what,
                millis(s.median),
                millis(s.max),
            );
        }
        md.push('\n');
        for note in &self.notes {
            let _ = writeln!(md, "- {note}");
        }
        md
    }

    /// Horizontal bars, one per system, on a log scale of events/s.
    pub fn svg(&self, title: &str) -> String {
        const LABEL: f64 = 300.0;
        const BARS: f64 = 440.0;
        const ROW: f64 = 28.0;
        const TOP: f64 = 50.0;
        let (lo, hi) = self.rates.iter().fold((f64::MAX, 0f64), |(lo, hi), r| {
            (lo.min(r.events_per_s()), hi.max(r.events_per_s()))
        });
        let (lo, hi) = (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        );
        let x = |rate: f64| LABEL + BARS * (rate.max(1.0).log10() - lo) / (hi - lo);
        let height = TOP + ROW * self.rates.len() as f64 + 40.0;
        let width = LABEL + BARS + 90.0;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"13\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
            escape(title)
        );
        let bottom = TOP + ROW * self.rates.len() as f64;
        for decade in lo as i32..=hi as i32 {
            let rate = 10f64.powi(decade);
            let at = x(rate);
            let _ = writeln!(
                svg,
                "<line x1=\"{at:.1}\" y1=\"{}\" x2=\"{at:.1}\" y2=\"{bottom}\" stroke=\"#ccc\"/>\
                 <text x=\"{at:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                TOP - 8.0,
                bottom + 18.0,
                short(rate)
            );
        }
        for (row, rate) in self.rates.iter().enumerate() {
            let y = TOP + ROW * row as f64;
            let end = x(rate.events_per_s());
            let colour = if rate.pglog { "#2f6fb0" } else { "#a0a0a0" };
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{LABEL}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{}</text>",
                LABEL - 8.0,
                y + 17.0,
                escape(&rate.name),
                y + 4.0,
                end - LABEL,
                ROW - 8.0,
                end + 5.0,
                y + 17.0,
                thousands(rate.events_per_s())
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{LABEL}\" y=\"{}\" fill=\"#555\">events/s (log scale); blue: pglog, grey: references</text>\n</svg>",
            bottom + 36.0
        );
        svg
    }
}

impl Rate {
    pub fn events_per_s(&self) -> f64 {
        median(&self.runs)
    }
}

/// The median of `runs`, with their range: `29,036 (27.1k–31.0k)`.
fn with_range(runs: &[f64], show: impl Fn(f64) -> String) -> String {
    format!("{} ({})", thousands(median(runs)), range(runs, show))
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn millis(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

/// An axis label: `1k`, `100k`, `1M`.
fn short(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
