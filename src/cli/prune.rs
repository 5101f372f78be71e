//! `pglog prune`: retention on demand, for a cron line. The same passes a logger's
//! maintenance runs with `retention_days`: on a table pglog partitioned, expired
//! partitions dropped (and the default partition's old rows deleted); on a plain table,
//! deletes in batches of 5,000 rows, each its own transaction, 100 ms apart. Processes
//! take turns through the table's advisory lock, so a logger's own pass and this one
//! never run at once. A table pg_partman manages, or one partitioned by hand, is left to
//! its manager.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use tokio_postgres::types::Type;

use super::filter::duration;
use super::{Context, Db, Failure};
use crate::schema::partitioned::qualified;
use crate::sink::maintenance::plan::Plan;
use crate::sink::maintenance::{Keeper, Maintain, Pass};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Remove the events older than this many whole days before today (UTC): 30d, 2w
    #[arg(long, value_name = "AGE")]
    older_than: String,
    /// Say what would be removed, and remove nothing
    #[arg(long)]
    dry_run: bool,
}

/// How long prune waits for another process's pass (which holds the table's turn).
const BUSY_WAIT: Duration = Duration::from_secs(120);

pub(crate) fn run(context: &Context, args: &Args) -> Result<(), Failure> {
    let days = days(&args.older_than)?;
    let first_kept = Utc::now().date_naive() - Days::new(u64::from(days));
    let mut db = context.connect()?;
    let keeper = Keeper::new(db.config.clone(), Some(days));
    let (plan, schema) = keeper.preview(&mut db.session)?;
    let table = context.table()?;
    let removing = match &plan {
        Plan::Nothing => {
            super::show::line(&format!(
                "{}: nothing older than {first_kept}",
                table.quoted()
            ));
            return Ok(());
        }
        Plan::Explain(why) => return Err(why.clone().into()),
        Plan::Trim { first_kept } => vec![(
            format!(
                "rows of {} (batched deletes)",
                qualified(&schema, table.name())
            ),
            count(
                &mut db,
                &qualified(&schema, table.name()),
                Some(*first_kept),
            )?,
        )],
        Plan::Keep(keep) => {
            let mut removing = Vec::new();
            for partition in &keep.drop {
                let name = qualified(&schema, partition);
                let rows = count(&mut db, &name, None)?;
                removing.push((format!("partition {name} (dropped)"), rows));
            }
            if let (Some(default), Some(first_kept)) = (&keep.default, keep.first_kept) {
                let name = qualified(&schema, default);
                let rows = count(&mut db, &name, Some(first_kept))?;
                if rows > 0 {
                    removing.push((format!("rows of {name} (batched deletes)"), rows));
                }
            }
            removing
        }
    };
    let total: i64 = removing.iter().map(|(_, n)| n).sum();
    if total == 0 {
        super::show::line(&format!(
            "{}: nothing older than {first_kept}",
            table.quoted()
        ));
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removing"
    };
    super::show::line(&format!(
        "{}: {verb} {total} events older than {first_kept}",
        table.quoted()
    ));
    for (what, rows) in &removing {
        super::show::line(&format!("  {rows:>12}  {what}"));
    }
    if args.dry_run {
        return Ok(());
    }
    let started = Instant::now();
    passes(&keeper)?;
    let left = count(&mut db, &table.quoted(), Some(first_kept))?;
    super::show::line(&format!(
        "{}: removed {} events in {:.1} s{}",
        table.quoted(),
        total - left,
        started.elapsed().as_secs_f64(),
        if left > 0 {
            format!("; {left} older events remain (written meanwhile, or out of reach)")
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// Passes until one has done everything due.
fn passes(keeper: &Keeper) -> Result<(), Failure> {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    loop {
        match keeper.pass(&stop) {
            Pass::Done => return Ok(()),
            // Its time was up, or a lock was busy: the next pass goes on.
            Pass::Unfinished => {}
            Pass::Busy if started.elapsed() < BUSY_WAIT => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Pass::Busy => {
                return Err(
                    "another process has been maintaining the table for two minutes; \
                            try again later"
                        .into(),
                )
            }
            Pass::Failed { why, .. } => return Err(why.into()),
        }
    }
}

/// Rows of `relation`, those older than `before` when given.
fn count(db: &mut Db, relation: &str, before: Option<NaiveDate>) -> Result<i64, Failure> {
    let before = before.map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc());
    let rows = match &before {
        Some(cutoff) => db.query(
            &format!("SELECT count(*) FROM {relation} WHERE timestamp < $1"),
            &[(cutoff, Type::TIMESTAMPTZ)],
        ),
        None => db.query(&format!("SELECT count(*) FROM {relation}"), &[]),
    }
    .map_err(|e| format!("cannot count the rows of {relation}: {e}"))?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// `30d`, `2w`: whole days, as retention counts them (1 to 36,500).
fn days(text: &str) -> Result<u32, String> {
    let refuse = || {
        format!(
            "--older-than `{text}`: use whole days or weeks, from 1d to 36500d (e.g. 30d, 2w): \
             retention keeps whole days"
        )
    };
    let age = duration(text).ok_or_else(refuse)?;
    if age.num_seconds() % 86_400 != 0 {
        return Err(refuse());
    }
    u32::try_from(age.num_days())
        .ok()
        .filter(|d| (1..=36_500).contains(d))
        .ok_or_else(refuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_whole_days_or_weeks_in_retentions_range() {
        assert_eq!(days("30d"), Ok(30));
        assert_eq!(days("2w"), Ok(14));
        assert_eq!(days("36500d"), Ok(36_500));
        for bad in ["0d", "12h", "36501d", "30", "d", "-1d", "thirty"] {
            let err = days(bad).unwrap_err();
            assert!(err.contains("whole days"), "{bad}: {err}");
        }
    }
}
