//! Levels and per-module filters: parsing them, and layering the directives of several
//! sources (file, code, environment) into one filter.

use std::str::FromStr;

use log::LevelFilter;

/// `log`'s level names in any case, and stogger's `warning`.
pub(crate) fn parse_level(text: &str) -> Result<LevelFilter, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("warning") {
        return Ok(LevelFilter::Warn);
    }
    LevelFilter::from_str(text).map_err(|_| {
        format!("`{text}` is not a level; use off, error, warn (or warning), info, debug or trace")
    })
}

/// The filter for a default `level` and `RUST_LOG`-style directives; a bare level among
/// them replaces `level`.
pub(crate) fn build(
    level: LevelFilter,
    directives: Option<&str>,
) -> Result<env_filter::Filter, String> {
    let mut builder = env_filter::Builder::new();
    builder.filter_level(level);
    if let Some(spec) = directives {
        builder.try_parse(spec).map_err(|e| {
            format!("{e}; expected directives such as `info,my_tool::db=debug` (RUST_LOG syntax)")
        })?;
    }
    Ok(builder.build())
}

/// Checks `RUST_LOG`-style directives with the parser that will apply them.
pub(crate) fn check(spec: &str) -> Result<(), String> {
    build(LevelFilter::Info, Some(spec)).map(drop)
}

/// The directives of a lower source (`low`) under those of a higher one (`high`).
///
/// Directives accumulate and the later win per module, so the higher source's come
/// last. When the higher source sets `level`, the lower ones' bare levels (`warn` in
/// `warn,a=debug`) go: that level replaces their default.
pub(crate) fn layer(
    low: Option<String>,
    high_sets_level: bool,
    high: Option<String>,
) -> Option<String> {
    let low = match low {
        Some(spec) if high_sets_level => Some(without_default_level(&spec)),
        other => other,
    };
    match (low, high) {
        (Some(low), Some(high)) => Some(join_filters(&low, &high)),
        (low, high) => high.or(low),
    }
    .filter(|spec| !spec.is_empty())
}

/// `modules/regex` of a `RUST_LOG` spec: the message regex applies to all of it.
fn split_regex(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('/') {
        Some((modules, regex)) => (modules, Some(regex)),
        None => (spec, None),
    }
}

fn join_filters(low: &str, high: &str) -> String {
    let (low_modules, low_regex) = split_regex(low);
    let (high_modules, high_regex) = split_regex(high);
    let modules: Vec<&str> = [low_modules, high_modules]
        .into_iter()
        .filter(|m| !m.trim().is_empty())
        .collect();
    let mut spec = modules.join(",");
    if let Some(regex) = high_regex.or(low_regex) {
        spec.push('/');
        spec.push_str(regex);
    }
    spec
}

fn without_default_level(spec: &str) -> String {
    let (modules, regex) = split_regex(spec);
    let mut kept: String = modules
        .split(',')
        .filter(|d| !d.trim().is_empty() && parse_level(d).is_err())
        .collect::<Vec<_>>()
        .join(",");
    if let Some(regex) = regex {
        kept.push('/');
        kept.push_str(regex);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_level_replaces_lower_default_levels_but_keeps_their_modules() {
        let low = Some("warn,a=debug".to_owned());
        assert_eq!(layer(low.clone(), true, None).as_deref(), Some("a=debug"));
        assert_eq!(
            layer(low.clone(), false, Some("b=trace".into())).as_deref(),
            Some("warn,a=debug,b=trace")
        );
        assert_eq!(
            layer(low, true, Some("info".into())).as_deref(),
            Some("a=debug,info")
        );
        assert_eq!(
            layer(Some("a=info/low".into()), false, Some("b=info".into())).as_deref(),
            Some("a=info,b=info/low")
        );
        assert_eq!(
            layer(Some("a=info/low".into()), true, Some("b=info/high".into())).as_deref(),
            Some("a=info,b=info/high")
        );
        assert_eq!(layer(None, true, Some("x".into())).as_deref(), Some("x"));
        // Everything a layer can produce still parses.
        check("a=info,b=info/high").unwrap();
    }

    #[test]
    fn filters_refine_the_default_level_per_module() {
        use log::{Level, Metadata};
        let enabled = |filter: &env_filter::Filter, target: &str, level: Level| {
            filter.enabled(&Metadata::builder().target(target).level(level).build())
        };
        let f = build(LevelFilter::Info, Some("noisy=warn,my_tool::db=trace")).unwrap();
        assert!(enabled(&f, "my_tool", Level::Info));
        assert!(!enabled(&f, "my_tool", Level::Debug));
        assert!(enabled(&f, "my_tool::db::pool", Level::Trace));
        assert!(!enabled(&f, "noisy::x", Level::Info));
        assert_eq!(f.filter(), LevelFilter::Trace);
        let bare = build(LevelFilter::Info, Some("debug")).unwrap();
        assert!(enabled(&bare, "any", Level::Debug));
        assert!(build(LevelFilter::Info, Some("a=b=c")).is_err());
    }

    #[test]
    fn levels_accept_stoggers_words() {
        assert_eq!(parse_level("warning"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("WARN"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("off"), Ok(LevelFilter::Off));
        assert_eq!(parse_level("Trace"), Ok(LevelFilter::Trace));
        assert!(parse_level("critical").is_err());
    }
}
