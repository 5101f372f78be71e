//! The references pglog is measured against, each writing the rows pglog writes (same
//! columns, same JSON with a distinct `i`) into a table pglog created, on the same server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::{count_rows, create_table, run_pg_tool, ReferenceData};

/// `pgbench -M prepared`: one single-row INSERT per transaction, `clients` connections
/// (each on its own thread) sharing `events`. Returns events/s.
pub fn pgbench_insert(
    server: &throwaway_pg::Server,
    dsn: &str,
    table: &str,
    data: &ReferenceData,
    events: u64,
    clients: u64,
) -> f64 {
    create_table(dsn, table);
    let script = scratch_file(table, "sql");
    let sql = format!(
        "\\set i random(1, 1000000000)\n\
         INSERT INTO \"{table}\" (\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\") \
         VALUES (now(), 'info', 'benchmark event', NULL, NULL, ('{}')::jsonb);\n",
        data.with("' || :i || '")
    );
    std::fs::write(&script, sql).unwrap();
    let per_client = (events / clients).to_string();
    let clients = clients.to_string();
    let script_arg = script.display().to_string();
    let stdout = run_pg_tool(
        server,
        "pgbench",
        &[
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients,
            "-j",
            &clients,
            "-t",
            &per_client,
            "-f",
            &script_arg,
            "bench",
        ],
    );
    let _ = std::fs::remove_file(&script);
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"))
}

/// `psql \copy` of the same rows as text COPY input from a file, timed from starting psql
/// until it exits. Returns events/s.
pub fn psql_copy(
    server: &throwaway_pg::Server,
    dsn: &str,
    table: &str,
    data: &ReferenceData,
    events: u64,
) -> f64 {
    create_table(dsn, table);
    let path = scratch_file(table, "tsv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        // Distinct times, as pglog's rows have.
        let start = chrono::Utc::now();
        for i in 0..events {
            let at = (start + chrono::Duration::microseconds(i as i64))
                .format("%Y-%m-%d %H:%M:%S%.6f+00");
            writeln!(
                file,
                "{at}\tinfo\tbenchmark event\t\\N\t\\N\t{}",
                data.with(i)
            )
            .unwrap();
        }
    }
    let copy = format!(
        "\\copy \"{table}\" (\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\") FROM '{}'",
        path.display()
    );
    let started = Instant::now();
    run_pg_tool(
        server,
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "bench",
            "-c",
            &copy,
        ],
    );
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    assert_eq!(count_rows(dsn, table), events);
    events as f64 / elapsed.as_secs_f64()
}

/// What a program needs at least to commit its first row: connect with the driver pglog
/// uses, and INSERT. Returns seconds.
pub fn connect_and_insert(dsn: &str, table: &str, data: &ReferenceData) -> f64 {
    let started = Instant::now();
    let mut client = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
    client
        .execute(
            &format!(
                "INSERT INTO \"{table}\" (\"timestamp\", \"level\", \"event\", \"data\") \
                 VALUES (now(), 'info', 'benchmark event', $1::text::jsonb)"
            ),
            &[&data.with(0)],
        )
        .unwrap();
    started.elapsed().as_secs_f64()
}

/// The Python library fapilog's PostgreSQL sink (asyncpg, `executemany` per batch), driven
/// directly by `fapilog_driver.py` in a virtualenv this benchmark installs.
pub struct Fapilog {
    python: PathBuf,
}

impl Fapilog {
    pub const VERSION: &'static str = "0.18.1";

    /// Creates the virtualenv under the target directory and installs fapilog into it,
    /// unless that version is there already.
    pub fn install() -> Fapilog {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-venv");
        let python = venv.join("bin/python");
        let installed = |python: &Path| {
            Command::new(python)
                .args([
                    "-c",
                    "import asyncpg, importlib.metadata as m; print(m.version('fapilog'))",
                ])
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == Self::VERSION)
        };
        if !installed(&python) {
            println!(
                "installing fapilog {} into {}",
                Self::VERSION,
                venv.display()
            );
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            run(Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("fapilog[postgres]=={}", Self::VERSION),
            ]));
            assert!(
                installed(&python),
                "fapilog is not importable after pip install"
            );
        }
        Fapilog { python }
    }

    /// Writes `events` through a `PostgresSink` with `batch_size` into its own `table`
    /// (fapilog's schema). Returns events/s.
    pub fn write(
        &self,
        url: &str,
        dsn: &str,
        table: &str,
        data: &ReferenceData,
        events: u64,
        batch_size: u64,
    ) -> f64 {
        let driver = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/compare/fapilog_driver.py"
        );
        let output = Command::new(&self.python)
            .args([driver, url, table])
            .arg(events.to_string())
            .arg(batch_size.to_string())
            .arg(data.with(0))
            .output()
            .expect("run fapilog_driver.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "fapilog_driver.py failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // fapilog reports failed batches on stderr and carries on: count what arrived.
        assert_eq!(count_rows(dsn, table), events, "fapilog lost events");
        let seconds: f64 = stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no time in fapilog_driver.py output: {stdout}"));
        events as f64 / seconds
    }
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

fn scratch_file(table: &str, extension: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "pglog-bench-{}-{table}.{extension}",
        std::process::id()
    ))
}

/// Columns, index count and mean row size of `table`, for the notes.
pub fn describe_table(dsn: &str, table: &str) -> String {
    let mut client = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) \
                          FROM information_schema.columns WHERE table_name = $1), \
                        (SELECT count(*) FROM pg_indexes WHERE tablename = $1), \
                        (SELECT avg(pg_column_size(t.*))::float8 FROM \"{table}\" t)"
            ),
            &[&table],
        )
        .unwrap();
    let (columns, indexes, bytes): (String, i64, f64) = (row.get(0), row.get(1), row.get(2));
    format!("{columns}; {indexes} indexes (primary key included); {bytes:.0} bytes per row")
}
