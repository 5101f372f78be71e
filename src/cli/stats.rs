//! `pglog stats`: how many events of each level per time bucket, as a bar chart in the
//! terminal (or an SVG file), and the most frequent events of the window.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anstyle::Style;
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::types::Type;

use super::filter::{duration, severity, FilterArgs};
use super::show::{self, level_style};
use super::{Context, Failure, Param};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The width of a bucket: 1m, 15m, 1h, 1d...
    #[arg(long, value_name = "SPAN", default_value = "1h")]
    every: String,
    /// How many of the most frequent events to list
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(i64).range(0..=1000))]
    top: i64,
    /// text: a chart; json: the same figures for scripts
    #[arg(long, value_enum, default_value_t = super::tail::Output::Text)]
    output: super::tail::Output,
    /// Also write the chart as an SVG image to this file
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Filters, as for tail; --since defaults to 24h
    #[command(flatten)]
    filters: FilterArgs,
}

/// The most buckets one chart has.
const MOST_BUCKETS: i64 = 5_000;
/// The chart's bar width in characters.
const BAR: usize = 40;

/// Counts per level in one bucket.
type Counts = BTreeMap<String, i64>;

pub(crate) fn run(context: &Context, args: &Args) -> Result<(), Failure> {
    let now = Utc::now();
    let mut filters = args.filters.filters(now)?;
    if filters.since.is_none() {
        filters.since = Some(now - chrono::Duration::hours(24));
    }
    let every = duration(&args.every)
        .filter(|d| d.num_seconds() > 0)
        .ok_or_else(|| {
            format!(
                "--every `{}`: use a span such as 1m, 15m, 1h or 1d",
                args.every
            )
        })?;
    let seconds = every.num_seconds();
    let since = filters.since.unwrap_or(now);
    let until = filters.until.unwrap_or(now);
    if since >= until {
        return Err(
            "the window is empty: --since (24h ago unless given) is not before --until".into(),
        );
    }
    let first = since.timestamp().div_euclid(seconds) * seconds;
    let last = (until.timestamp() - 1).div_euclid(seconds) * seconds;
    let buckets = (last - first) / seconds + 1;
    if buckets > MOST_BUCKETS {
        return Err(format!(
            "{buckets} buckets of {} would not fit a chart; use a larger --every or a shorter window",
            args.every
        )
        .into());
    }
    let table = context.table()?.quoted();
    let mut db = context.connect()?;
    let (conditions, params) = filters.sql(2);
    let width = seconds as f64;
    let mut all: Vec<Param<'_>> = vec![(&width, Type::FLOAT8)];
    all.extend(params.iter().cloned());
    let rows = db
        .query(
            &format!(
                "SELECT floor(extract(epoch FROM timestamp) / $1)::int8, level, count(*) \
                 FROM {table} WHERE {conditions} GROUP BY 1, 2"
            ),
            &all,
        )
        .map_err(|e| format!("cannot read {table}: {e}"))?;
    let mut chart: BTreeMap<i64, Counts> = (0..buckets)
        .map(|i| (first + i * seconds, Counts::new()))
        .collect();
    for row in &rows {
        let start = row.get::<_, i64>(0) * seconds;
        *chart
            .entry(start)
            .or_default()
            .entry(row.get::<_, String>(1))
            .or_default() += row.get::<_, i64>(2);
    }
    let (conditions, params) = filters.sql(2);
    let mut all: Vec<Param<'_>> = vec![(&args.top, Type::INT8)];
    all.extend(params.iter().cloned());
    let top: Vec<(String, i64)> = db
        .query(
            &format!(
                "SELECT event, count(*) FROM {table} WHERE {conditions} \
                 GROUP BY event ORDER BY 2 DESC, 1 LIMIT $1"
            ),
            &all,
        )
        .map_err(|e| format!("cannot read {table}: {e}"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let title = format!(
        "{table}: events per {} from {} to {} (UTC)",
        args.every,
        since.format("%Y-%m-%d %H:%M"),
        until.format("%Y-%m-%d %H:%M")
    );
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&title, &chart, seconds))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let text = match args.output {
        super::tail::Output::Json => json(&chart, seconds, &top, since, until),
        super::tail::Output::Text => terminal(&title, &chart, seconds, &top),
    };
    super::show::out(&text);
    Ok(())
}

/// The levels present, most severe first.
fn levels(chart: &BTreeMap<i64, Counts>) -> Vec<String> {
    let mut levels: Vec<String> = chart
        .values()
        .flat_map(|c| c.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    levels.sort_by_key(|l| std::cmp::Reverse(severity(l)));
    levels
}

/// The most events in one bucket (at least 1: the scale of every bar).
fn busiest(chart: &BTreeMap<i64, Counts>) -> i64 {
    chart
        .values()
        .map(|c| c.values().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1)
}

fn bucket_label(start: i64, seconds: i64) -> String {
    let at = Utc.timestamp_opt(start, 0).single().unwrap_or_default();
    if seconds % 86_400 == 0 {
        at.format("%Y-%m-%d").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// A table with a stacked bar per bucket: each level its colour on a terminal, its
/// initial otherwise; then the most frequent events.
fn terminal(
    title: &str,
    chart: &BTreeMap<i64, Counts>,
    seconds: i64,
    top: &[(String, i64)],
) -> String {
    let levels = levels(chart);
    let colours = show::colours_on();
    let most = busiest(chart);
    let mut out = format!("{title}\n\n");
    let label_width = bucket_label(0, seconds).len();
    let _ = write!(out, "{:<label_width$} {:>9}", "bucket", "events");
    for level in &levels {
        let _ = write!(out, " {:>9}", level);
    }
    out.push('\n');
    for (start, counts) in chart {
        let total: i64 = counts.values().sum();
        let _ = write!(
            out,
            "{:<label_width$} {:>9}",
            bucket_label(*start, seconds),
            total
        );
        for level in &levels {
            let _ = write!(out, " {:>9}", counts.get(level).copied().unwrap_or(0));
        }
        out.push_str("  ");
        // Each level's share, rounded so that the bar's length stays proportional.
        let mut drawn = 0usize;
        let mut sum = 0i64;
        for level in &levels {
            let n = counts.get(level).copied().unwrap_or(0);
            sum += n;
            let upto = (sum as f64 / most as f64 * BAR as f64).round() as usize;
            let cells = upto.saturating_sub(drawn);
            drawn += cells;
            if cells == 0 {
                continue;
            }
            if colours {
                let style = level_style(level);
                let _ = write!(out, "{style}{}{style:#}", "█".repeat(cells));
            } else {
                let mark = level.chars().next().unwrap_or('#').to_ascii_uppercase();
                out.push_str(&mark.to_string().repeat(cells));
            }
        }
        out.push('\n');
    }
    if !top.is_empty() {
        let bold = Style::new().bold();
        let _ = writeln!(out, "\n{bold}most frequent events{bold:#}");
        for (event, n) in top {
            let mut shown = String::new();
            crate::fallback::escape_into(&mut shown, event);
            if shown.chars().count() > 100 {
                shown = shown.chars().take(99).collect::<String>() + "…";
            }
            let _ = writeln!(out, "{n:>9}  {shown}");
        }
    }
    out
}

fn json(
    chart: &BTreeMap<i64, Counts>,
    seconds: i64,
    top: &[(String, i64)],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> String {
    let at = |start: i64| {
        Utc.timestamp_opt(start, 0)
            .single()
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let value = serde_json::json!({
        "since": since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "until": until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "bucket_seconds": seconds,
        "buckets": chart.iter().map(|(start, counts)| serde_json::json!({
            "start": at(*start),
            "total": counts.values().sum::<i64>(),
            "levels": counts,
        })).collect::<Vec<_>>(),
        "top_events": top.iter().map(|(event, count)| serde_json::json!({
            "event": event, "count": count,
        })).collect::<Vec<_>>(),
    });
    format!("{value}\n")
}

/// The chart as an SVG image: stacked columns per bucket, a colour per level, a legend.
fn svg(title: &str, chart: &BTreeMap<i64, Counts>, seconds: i64) -> String {
    const WIDTH: f64 = 960.0;
    const HEIGHT: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 70.0;
    let levels = levels(chart);
    let most = busiest(chart) as f64;
    let plot_w = WIDTH - LEFT - 150.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let column = plot_w / chart.len().max(1) as f64;
    let colour = |level: &str| match severity(level) {
        5.. => "#7f0000",
        4 => "#d62728",
        3 => "#ff9f1c",
        2 => "#2ca02c",
        1 => "#1f77b4",
        _ => "#9e9e9e",
    };
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"28\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    for i in 0..=4 {
        let value = most * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value:.0}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let label_every = (chart.len() / 12).max(1);
    for (i, (start, counts)) in chart.iter().enumerate() {
        let x = LEFT + column * i as f64;
        let mut y = TOP + plot_h;
        for level in levels.iter().rev() {
            let n = counts.get(level).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = plot_h * n as f64 / most;
            y -= h;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{} {}: {n}</title></rect>",
                x + column * 0.1,
                column * 0.8,
                colour(level),
                bucket_label(*start, seconds),
                escape(level)
            );
        }
        if i % label_every == 0 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(45 {:.1} {:.1})\">{}</text>",
                x + column / 2.0,
                TOP + plot_h + 14.0,
                x + column / 2.0,
                TOP + plot_h + 14.0,
                bucket_label(*start, seconds)
            );
        }
    }
    for (i, level) in levels.iter().enumerate() {
        let y = TOP + 20.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            WIDTH - 130.0,
            colour(level),
            WIDTH - 112.0,
            y + 10.0,
            escape(level)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> BTreeMap<i64, Counts> {
        let mut chart = BTreeMap::new();
        chart.insert(
            0,
            Counts::from([("info".to_owned(), 30), ("error".to_owned(), 10)]),
        );
        chart.insert(3600, Counts::from([("critical".to_owned(), 4)]));
        chart.insert(7200, Counts::new());
        chart
    }

    #[test]
    fn the_terminal_chart_has_a_row_per_bucket_and_bars_in_proportion() {
        let text = terminal("t", &chart(), 3600, &[("boom\nx".to_owned(), 14)]);
        let plain = anstream::adapter::strip_str(&text).to_string();
        let rows: Vec<&str> = plain.lines().filter(|l| l.starts_with("1970")).collect();
        assert_eq!(rows.len(), 3, "{plain}");
        assert!(plain.contains("bucket"), "{plain}");
        assert!(plain.contains("critical"), "{plain}");
        assert!(plain.contains("boom\\nx"), "an event is one line: {plain}");
        assert_eq!(levels(&chart()), ["critical", "error", "info"]);
    }

    #[test]
    fn json_and_svg_carry_the_same_figures() {
        let text = json(&chart(), 3600, &[], Utc::now(), Utc::now());
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["buckets"][0]["total"], 40);
        assert_eq!(value["buckets"][1]["levels"]["critical"], 4);
        assert_eq!(value["buckets"][2]["total"], 0);
        let image = svg("a <title>", &chart(), 3600);
        assert!(image.starts_with("<svg"));
        assert!(image.contains("a &lt;title&gt;"));
        assert_eq!(
            image.matches("<rect x=").count(),
            3 + 3,
            "3 bars + 3 legend keys"
        );
    }
}
