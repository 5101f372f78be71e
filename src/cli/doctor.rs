//! `pglog doctor`: what to run when logs do not appear. First the configuration as a
//! logging program resolves it, each value with where it came from; then each check with
//! its verdict and, when it is not fine, the fix. Exits 1 when a check fails.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use tokio_postgres::config::Host;
use tokio_postgres::types::Type;

use super::{Context, Db, Failure};
use crate::dsn::{self, For, LIBPQ_VARS};
use crate::schema::partitioned::marked_span;
use crate::schema::{Table, INDEXES};
use crate::settings::KEYS;
use crate::sink::maintenance::plan::Found;
use crate::sink::maintenance::Keeper;
use crate::sink::trouble::Kind;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    Ok,
    /// Works, but something deserves the operator's attention.
    Warn,
    Fail,
    /// Not run: an earlier check failed.
    Skipped,
}

/// One check: its name, verdict, what was found, and the fix.
pub(crate) struct Check {
    name: &'static str,
    verdict: Verdict,
    found: String,
    fix: Option<String>,
}

fn check(name: &'static str, verdict: Verdict, found: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        found: found.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

pub(crate) fn run(context: &Context) -> Result<(), Failure> {
    let mut out = String::new();
    configuration(context, &mut out);
    let checks = checks(context);
    let bold = Style::new().bold();
    let _ = writeln!(out, "\n{bold}checks{bold:#}");
    for c in &checks {
        let (mark, style) = match c.verdict {
            Verdict::Ok => ("ok  ", Style::new().fg_color(Some(AnsiColor::Green.into()))),
            Verdict::Warn => (
                "warn",
                Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
            ),
            Verdict::Fail => (
                "FAIL",
                Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            ),
            Verdict::Skipped => ("skip", Style::new().dimmed()),
        };
        let _ = writeln!(out, "  {style}{mark}{style:#}  {:<16} {}", c.name, c.found);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "        {:<16} fix: {fix}", "");
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let warned = checks.iter().filter(|c| c.verdict == Verdict::Warn).count();
    let _ = writeln!(
        out,
        "\n{}",
        match (failed, warned) {
            (0, 0) => "every check passed".to_owned(),
            (0, w) => format!("no check failed; {w} to look at"),
            (f, w) => format!("{f} failed, {w} to look at"),
        }
    );
    super::show::out(&out);
    if failed > 0 {
        return Err(Failure {
            message: String::new(),
            code: 1,
        });
    }
    Ok(())
}

/// The resolved configuration, each value with its source.
fn configuration(context: &Context, out: &mut String) {
    let bold = Style::new().bold();
    let dim = Style::new().dimmed();
    let _ = writeln!(out, "{bold}configuration{bold:#}");
    let file = match &context.file {
        Some((path, _)) => path.display().to_string(),
        None => "none (no PGLOG_CONFIG, no ./pyproject.toml)".to_owned(),
    };
    let _ = writeln!(out, "  {:<20} {file}", "file");
    let shown = context.settings.shown();
    for (name, _, vars) in KEYS {
        let value = match *name {
            "dsn" => match &context.settings.dsn {
                Some(_) => "set (not shown; where it leads is below)".to_owned(),
                None => "not set: libpq's defaults and variables".to_owned(),
            },
            _ => shown
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        };
        let origin = origin(context, name, vars);
        let _ = writeln!(out, "  {name:<20} {value}  {dim}({origin}){dim:#}");
    }
    match dsn::resolve(
        context.settings.dsn.as_ref().map(|d| d.as_str()),
        context.settings.root_cert.as_deref(),
        context.settings.connect_timeout,
        &context.env,
        true,
    ) {
        Ok(resolved) => {
            let _ = writeln!(
                out,
                "  {:<20} {}, sslmode {:?}",
                "connects to",
                dsn::describe(&resolved.driver),
                resolved.driver.get_ssl_mode()
            );
            let user = resolved.driver.get_user().unwrap_or_default();
            let (host, port) = first_address(&resolved.driver);
            let to = For {
                host: &host,
                port,
                dbname: resolved.driver.get_dbname().unwrap_or(user),
                user,
            };
            let password = match resolved.password.find(to) {
                Some((_, from)) => format!("set (from {from})"),
                None => format!(
                    "not set (looked in {}); fine for peer, trust or certificate login",
                    resolved.password.searched()
                ),
            };
            let _ = writeln!(out, "  {:<20} {password}", "password");
        }
        Err(e) => {
            let _ = writeln!(out, "  {:<20} the DSN does not resolve: {e}", "connects to");
        }
    }
    let libpq: Vec<String> = LIBPQ_VARS
        .iter()
        .filter(|(var, _)| (context.env)(var).is_some())
        .map(|(var, _)| (*var).to_owned())
        .chain(
            ["PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE"]
                .iter()
                .filter(|v| (context.env)(v).is_some())
                .map(|v| (*v).to_owned()),
        )
        .collect();
    let _ = writeln!(
        out,
        "  {:<20} {}",
        "libpq variables",
        if libpq.is_empty() {
            "none set".to_owned()
        } else {
            format!("{} (fill what the DSN leaves out)", libpq.join(", "))
        }
    );
}

fn first_address(driver: &tokio_postgres::Config) -> (String, u16) {
    let host = match driver.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    (host, driver.get_ports().first().copied().unwrap_or(5432))
}

/// Where a setting's value came from: the command line, a variable, the file (with its
/// line), or the default.
fn origin(context: &Context, name: &str, vars: &[&str]) -> String {
    if context.flags.set_names().contains(&name) {
        return format!("--{name}");
    }
    if context.env_config.set_names().contains(&name) {
        if let Some(var) = vars.iter().find(|v| (context.env)(v).is_some()) {
            return format!("environment {var}");
        }
    }
    if context.file_config.set_names().contains(&name) {
        if let Some((path, text)) = &context.file {
            let file_key = KEYS
                .iter()
                .find(|(n, ..)| *n == name)
                .map_or(name, |(_, key, _)| *key);
            let stogger_key = match name {
                "dsn" => Some("postgres_dsn"),
                "table" => Some("postgres_table"),
                "enable_postgres" => Some("enable_postgres"),
                _ => None,
            };
            // [tool.pglog] wins over [tool.stogger] in one file.
            let place = key_line(text, "tool.pglog", file_key)
                .map(|line| format!("line {line}, [tool.pglog] {file_key}"))
                .or_else(|| {
                    let key = stogger_key?;
                    key_line(text, "tool.stogger", key)
                        .map(|line| format!("line {line}, [tool.stogger] {key}"))
                });
            return match place {
                Some(place) => format!("{}, {place}", path.display()),
                None => path.display().to_string(),
            };
        }
    }
    "default".to_owned()
}

/// What stogger, reading the same file and variables, would do differently from pglog
/// (pyproject-compat/README.md): said only where a stogger section or variable is set.
fn stogger(context: &Context) -> Option<Check> {
    let raw = |name: &str| std::env::var(name).ok();
    let section = context
        .file
        .as_ref()
        .filter(|(_, text)| has_section(text, "tool.stogger"));
    let variables = [
        "STOGGER_ENABLE_POSTGRES",
        "STOGGER_POSTGRES_DSN",
        "STOGGER_POSTGRES_TABLE",
    ];
    if section.is_none() && variables.iter().all(|v| raw(v).is_none()) {
        return None;
    }
    let mut differences = Vec::new();
    let mut fixes = Vec::new();
    if let Some((path, text)) = section {
        if key_line(text, "tool.stogger", "enable_postgres").is_none() {
            differences.push(format!(
                "{}'s [tool.stogger] has no enable_postgres: stogger leaves its PostgreSQL \
                 target off, pglog writes",
                path.display()
            ));
            fixes.push("write enable_postgres = true (or false) in [tool.stogger]".to_owned());
        }
    }
    if let Some(value) = raw("STOGGER_ENABLE_POSTGRES") {
        let word = value.trim().to_ascii_lowercase();
        if !["1", "true", "yes", "0", "false", "no"].contains(&word.as_str()) {
            differences.push(format!(
                "STOGGER_ENABLE_POSTGRES=`{value}`: stogger ignores this value (it reads 1, \
                 true, yes, 0, false, no), pglog {}",
                match word.as_str() {
                    "on" => "turns the database on",
                    "off" => "turns the database off",
                    "" => "counts it as unset",
                    _ => "refuses it",
                }
            ));
            fixes.push("set STOGGER_ENABLE_POSTGRES to 1 or 0".to_owned());
        }
    }
    if raw("STOGGER_POSTGRES_TABLE").is_some_and(|v| v.is_empty()) {
        differences.push(
            "STOGGER_POSTGRES_TABLE is empty: pglog counts it as unset, stogger names the \
             table `\"\"` and loses every event"
                .to_owned(),
        );
        fixes.push("unset STOGGER_POSTGRES_TABLE".to_owned());
    }
    Some(if differences.is_empty() {
        check(
            "stogger",
            Verdict::Ok,
            "stogger reads this configuration as pglog does",
        )
    } else {
        check("stogger", Verdict::Warn, differences.join("; ")).fix(fixes.join("; "))
    })
}

/// Whether the TOML `text` has the table `section` (`[tool.stogger]`, or dotted keys in it).
fn has_section(text: &str, section: &str) -> bool {
    text.lines().map(str::trim).any(|line| {
        header(line).as_deref() == Some(section)
            || line.replace(' ', "").starts_with(&format!("{section}."))
    })
}

/// The table a trimmed TOML line opens (`[tool.stogger]`, `[ "tool" . pglog ]`), spaces
/// and quotes taken out.
fn header(line: &str) -> Option<String> {
    let inside = line.strip_prefix('[')?;
    Some(
        inside
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .replace(['"', ' '], ""),
    )
}

/// The line of `key = ...` in the TOML `section` of `text`, 1-based.
fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(opened) = header(line) {
            current = opened;
            continue;
        }
        let Some((left, _)) = line.split_once('=') else {
            continue;
        };
        let left = left.trim().trim_matches('"');
        if current == section && left == key {
            return Some(i + 1);
        }
        // A dotted key at the top level or in a parent table: `tool.pglog.dsn = ...`.
        let full = if current.is_empty() {
            left.replace(' ', "")
        } else {
            format!("{current}.{}", left.replace(' ', ""))
        };
        if full == format!("{section}.{key}") {
            return Some(i + 1);
        }
    }
    None
}

fn checks(context: &Context) -> Vec<Check> {
    let mut checks = Vec::new();
    if !context.settings.enable_postgres {
        checks.push(
            check(
                "enabled",
                Verdict::Warn,
                "enable_postgres is off: programs log to stderr only",
            )
            .fix("set enable_postgres = true (or PGLOG_ENABLE=1)"),
        );
    }
    checks.extend(stogger(context));
    let table = match context.table() {
        Ok(table) => table,
        Err(e) => {
            checks.push(check("table name", Verdict::Fail, e.message));
            return checks;
        }
    };
    let started = Instant::now();
    let config = match context.session_config() {
        Ok(config) => config,
        Err(failure) => {
            return without_connection(checks, check("connect", Verdict::Fail, failure.message))
        }
    };
    let mut db = match Db::open(Arc::clone(&config)) {
        Ok(db) => db,
        Err(trouble) => {
            let failed = connect_failure(trouble.kind, &trouble.detail, &config.target);
            return without_connection(checks, failed);
        }
    };
    let version = db
        .query("SHOW server_version", &[])
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get::<_, String>(0)))
        .unwrap_or_default();
    checks.push(check(
        "connect",
        Verdict::Ok,
        format!(
            "reached {} in {} ms (PostgreSQL {version}), logged in",
            db.target(),
            started.elapsed().as_millis()
        ),
    ));
    checks.push(tls(&mut db));
    let exists = checks_of_table(context, &mut db, &table, &mut checks);
    if exists {
        checks.push(partitions(context, &mut db, &table));
    } else {
        checks.push(check("partitions", Verdict::Skipped, "no table"));
    }
    checks.push(pooler(&mut db));
    checks.push(server_settings(context, &mut db));
    checks
}

/// `checks`, the connection's failure, and every check that needs a connection skipped.
fn without_connection(mut checks: Vec<Check>, failed: Check) -> Vec<Check> {
    checks.push(failed);
    for name in [
        "privileges",
        "table",
        "partitions",
        "pooler",
        "server settings",
    ] {
        checks.push(check(name, Verdict::Skipped, "needs a connection"));
    }
    checks
}

/// The verdict on a connection that failed, by its cause.
fn connect_failure(kind: Kind, detail: &str, target: &str) -> Check {
    let (name, fix) = match kind {
        Kind::Login => (
            "authentication",
            "check the role, the password (see `password` above: PGLOG_PASSWORD or \
             STOGGER_POSTGRES_PASSWORD for %PASSWORD%, else PGPASSWORD or ~/.pgpass) and the \
             server's pg_hba.conf; `psql` with the same DSN shows the same refusal",
        ),
        Kind::Untrusted => (
            "TLS",
            "give the server's CA (root_cert / PGLOG_ROOT_CERT, or sslrootcert in the DSN), \
             or a weaker sslmode if you accept the risk",
        ),
        Kind::Unreachable | Kind::Silent => (
            "connect",
            "is the server running and listening there (host, port, socket directory)? \
             check the DSN and PGHOST/PGPORT; `pg_isready` tells",
        ),
        Kind::NotPostgres => (
            "connect",
            "something that is not PostgreSQL answers at that address: check the port",
        ),
        _ => (
            "connect",
            "see the server's message; the server's log says more",
        ),
    };
    check(name, Verdict::Fail, format!("{target}: {detail}")).fix(fix)
}

fn tls(db: &mut Db) -> Check {
    let rows = db.query(
        "SELECT s.ssl, s.version, s.cipher, coalesce(inet_server_addr() <<= '127.0.0.0/8' \
                OR inet_server_addr() = '::1', true) \
         FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
        &[],
    );
    match rows.as_deref() {
        Ok([row, ..]) => {
            let (ssl, version, cipher, socket): (bool, Option<String>, Option<String>, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if ssl {
                check(
                    "TLS",
                    Verdict::Ok,
                    format!(
                        "{} {}",
                        version.unwrap_or_default(),
                        cipher.unwrap_or_default()
                    ),
                )
            } else if socket {
                check(
                    "TLS",
                    Verdict::Ok,
                    "not used: a Unix socket or the loopback, which stay on this host",
                )
            } else {
                check(
                    "TLS",
                    Verdict::Warn,
                    "not used over TCP: the password and the events cross the network in clear",
                )
                .fix(
                    "sslmode=verify-full in the DSN (pglog built with the tls-rustls feature), \
                     when the network is not trusted",
                )
            }
        }
        Ok([]) => check("TLS", Verdict::Warn, "unknown: the server does not say"),
        Err(e) => check("TLS", Verdict::Warn, format!("unknown: {e}")),
    }
}

/// Privileges and the table's shape; whether the table exists.
fn checks_of_table(context: &Context, db: &mut Db, table: &Table, checks: &mut Vec<Check>) -> bool {
    let quoted = table.quoted();
    let sql = "SELECT to_regclass($1) IS NOT NULL, current_user::text, current_schema()::text, \
               coalesce(has_schema_privilege(current_schema(), 'CREATE'), false), \
               coalesce(has_table_privilege(to_regclass($1), 'INSERT'), false), \
               coalesce(has_table_privilege(to_regclass($1), 'SELECT'), false), \
               pg_get_serial_sequence(to_regclass($1)::text, 'id')";
    let row = match db.query(sql, &[(&quoted, Type::TEXT)]) {
        Ok(rows) if !rows.is_empty() => rows.into_iter().next().unwrap(),
        Ok(_) => return false,
        Err(e) => {
            checks.push(check(
                "privileges",
                Verdict::Fail,
                format!("cannot read the catalog: {e}"),
            ));
            return false;
        }
    };
    let exists: bool = row.get(0);
    let user: String = row.get(1);
    let schema: Option<String> = row.get(2);
    let create: bool = row.get(3);
    let insert: bool = row.get(4);
    let select: bool = row.get(5);
    let sequence: Option<String> = row.get(6);
    let schema = schema.unwrap_or_else(|| "public".to_owned());
    if !exists {
        let ddl = format!(
            "{}; {}",
            table.create_table_sql(),
            table.create_index_sql().join("; ")
        );
        if context.settings.create_table && create {
            checks.push(check(
                "privileges",
                Verdict::Ok,
                format!("{user} may CREATE in schema {schema}: pglog creates {quoted} at its first connection"),
            ));
            checks.push(
                check(
                    "table",
                    Verdict::Warn,
                    format!("{quoted} does not exist yet"),
                )
                .fix("nothing to do: the first logging program creates it"),
            );
        } else {
            let why = if context.settings.create_table {
                format!("{quoted} does not exist, and {user} may not CREATE in schema {schema}")
            } else {
                format!("{quoted} does not exist, and create_table is off")
            };
            checks.push(check("table", Verdict::Fail, why).fix(format!(
                "as a role that may, run: {ddl}; then GRANT INSERT ON {quoted} TO {user}; \
                 GRANT USAGE ON SEQUENCE {} TO {user}",
                crate::schema::quote_ident(&format!("{}_id_seq", table.name()))
            )));
            checks.push(check("privileges", Verdict::Skipped, "no table"));
        }
        return false;
    }
    let sequence_usage = match &sequence {
        Some(seq) => db
            .query(
                "SELECT has_sequence_privilege($1, 'USAGE')",
                &[(seq, Type::TEXT)],
            )
            .ok()
            .and_then(|r| r.first().map(|r| r.get::<_, bool>(0)))
            .unwrap_or(false),
        None => true,
    };
    let mut missing = Vec::new();
    let mut grants = Vec::new();
    if !insert {
        missing.push(format!("INSERT on {quoted}"));
        grants.push(format!(
            "GRANT INSERT ON {quoted} TO {}",
            crate::schema::quote_ident(&user)
        ));
    }
    if !sequence_usage {
        let seq = sequence.clone().unwrap_or_default();
        missing.push(format!("USAGE on the sequence {seq}"));
        grants.push(format!(
            "GRANT USAGE ON SEQUENCE {seq} TO {}",
            crate::schema::quote_ident(&user)
        ));
    }
    if missing.is_empty() {
        let mut found = format!("{user} may INSERT into {quoted} and use its id sequence");
        if !select {
            found.push_str(" (not SELECT: fine for logging; this command needs it to read)");
        }
        checks.push(check("privileges", Verdict::Ok, found));
    } else {
        checks.push(
            check(
                "privileges",
                Verdict::Fail,
                format!(
                    "{user} lacks {}: events go to stderr",
                    missing.join(" and ")
                ),
            )
            .fix(format!("as the table's owner, run: {}", grants.join("; "))),
        );
    }
    checks.push(shape(db, table, &schema));
    true
}

/// Columns and stogger's four index names: missing ones, and twins (the same index
/// under another name, which every insert pays for twice).
fn shape(db: &mut Db, table: &Table, schema: &str) -> Check {
    let quoted = table.quoted();
    let columns = db.query(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        &[(&quoted, Type::TEXT)],
    );
    let indexes = db.query(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indisvalid \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary",
        &[(&quoted, Type::TEXT)],
    );
    let (Ok(columns), Ok(indexes)) = (columns, indexes) else {
        return check("table", Verdict::Warn, "cannot read the catalog");
    };
    let expected_columns = [
        ("id", "bigint"),
        ("timestamp", "timestamp with time zone"),
        ("level", "text"),
        ("event", "text"),
        ("func", "text"),
        ("scope", "text"),
        ("data", "jsonb"),
    ];
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (name, wanted) in expected_columns {
        match columns.iter().find(|r| r.get::<_, String>(0) == name) {
            None => problems.push(format!("no column {name}")),
            Some(row) => {
                let found: String = row.get(1);
                let fine = found == wanted || (name == "data" && found == "json");
                if !fine {
                    problems.push(format!("column {name} is {found}, not {wanted}"));
                }
            }
        }
    }
    let found: Vec<(String, String, bool)> = indexes
        .iter()
        .map(|r| (r.get(0), index_key(&r.get::<_, String>(1)), r.get(2)))
        .collect();
    let names = table.index_names();
    let concurrently = table.create_index_concurrently_sql();
    for (i, (_, definition)) in INDEXES.iter().enumerate() {
        let want = expected_key(definition);
        let name = &names[i];
        match found.iter().find(|(n, ..)| n == name) {
            None => {
                problems.push(format!("index {name} is missing"));
                fixes.push(concurrently[i].clone());
            }
            Some((_, key, valid)) => {
                if !valid {
                    problems.push(format!("index {name} is invalid (an interrupted build)"));
                    fixes.push(format!(
                        "REINDEX INDEX CONCURRENTLY {}",
                        crate::schema::partitioned::qualified(schema, name)
                    ));
                } else if *key != want {
                    problems.push(format!("index {name} is on {key}, not {want}"));
                }
            }
        }
        for (twin, ..) in found.iter().filter(|(n, key, _)| n != name && *key == want) {
            problems.push(format!(
                "index {twin} is a twin of {name} (the same {want}), which every insert pays for again"
            ));
            fixes.push(format!(
                "DROP INDEX CONCURRENTLY {}",
                crate::schema::partitioned::qualified(schema, twin)
            ));
        }
    }
    if problems.is_empty() {
        return check(
            "table",
            Verdict::Ok,
            format!("{quoted}: stogger's columns and its four index names, no twin"),
        );
    }
    let verdict = if problems
        .iter()
        .any(|p| p.starts_with("no column") || p.starts_with("column"))
    {
        Verdict::Fail
    } else {
        Verdict::Warn
    };
    let c = check(
        "table",
        verdict,
        format!("{quoted}: {}", problems.join("; ")),
    );
    if fixes.is_empty() {
        c.fix("the table is not stogger's shape: log to another table, or recreate it")
    } else {
        c.fix(format!("run {}", fixes.join("; ")))
    }
}

/// `btree (level)` from `CREATE INDEX x ON t USING btree (level)`: what the index is on,
/// quotes and case aside.
fn index_key(definition: &str) -> String {
    definition
        .split_once(" USING ")
        .map_or(definition, |(_, key)| key)
        .replace('"', "")
        .to_lowercase()
}

/// What an index pglog creates is on, as [`index_key`] reads it: from the definition in
/// [`INDEXES`] (`(timestamp DESC)`, `USING GIN (data)`), btree unless it says otherwise.
fn expected_key(definition: &str) -> String {
    let key = match definition.strip_prefix("USING ") {
        Some(with_method) => with_method.to_owned(),
        None => format!("btree {definition}"),
    };
    key.to_lowercase()
}

fn partitions(context: &Context, db: &mut Db, table: &Table) -> Check {
    let quoted = table.quoted();
    // What maintenance itself reads of the catalog: the same verdict on who manages it.
    let keeper = Keeper::new(Arc::clone(&db.config), context.settings.retention_days);
    let found = match keeper.inspect(&mut db.session) {
        Ok(Some(found)) => found,
        Ok(None) => return check("partitions", Verdict::Skipped, "no table"),
        Err(e) => return check("partitions", Verdict::Warn, e),
    };
    let oldest = db
        .query(&format!("SELECT min(timestamp) FROM {quoted}"), &[])
        .map(|rows| {
            rows.first()
                .and_then(|r| r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0))
        });
    let Found {
        schema,
        kind,
        comment,
        default,
        children,
        partman,
    } = found;
    let children = children.len();
    let retention = context.settings.retention_days;
    let oldest_text = match &oldest {
        Ok(Some(t)) => format!("oldest row {}", t.format("%Y-%m-%d %H:%M UTC")),
        Ok(None) => "no rows".to_owned(),
        Err(e) => format!("oldest row unknown ({e})"),
    };
    let oldest = oldest.ok().flatten();
    let expired = match (retention, oldest) {
        (Some(days), Some(oldest)) => {
            let first_kept = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(days));
            // A day of slack: maintenance runs hourly.
            (oldest.date_naive() < first_kept - chrono::Days::new(1)).then_some(days)
        }
        _ => None,
    };
    let retention_text = match retention {
        Some(days) => format!("retention {days} days"),
        None => "no retention (everything is kept)".to_owned(),
    };
    let span = comment.as_deref().and_then(marked_span);
    let mut c = if kind == "p" && span.is_some() && !partman {
        let default_rows = match &default {
            Some(d) => db
                .query(
                    &format!(
                        "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 100000) d",
                        crate::schema::partitioned::qualified(&schema, d)
                    ),
                    &[],
                )
                .ok()
                .and_then(|r| r.first().map(|r| r.get::<_, i64>(0)))
                .unwrap_or(0),
            None => 0,
        };
        let found = format!(
            "{quoted} is partitioned by pglog ({}): {children} partitions, {oldest_text}; {retention_text}",
            comment.as_deref().unwrap_or_default().trim_start_matches("pglog: ")
        );
        if default_rows > 0 {
            check(
                "partitions",
                Verdict::Warn,
                format!("{found}; the default partition holds {default_rows} rows"),
            )
            .fix(
                "rows land there when their period has no partition; a logging program's \
                 maintenance (hourly) moves them out, or run `pglog prune` with the retention",
            )
        } else {
            check("partitions", Verdict::Ok, found)
        }
    } else if kind == "p" || children > 0 {
        let manager = if partman {
            "pg_partman"
        } else {
            "its owner (by hand)"
        };
        check(
            "partitions",
            Verdict::Ok,
            format!("{quoted} is partitioned and managed by {manager}: pglog only writes to it; {oldest_text}"),
        )
    } else {
        let mut c = check(
            "partitions",
            Verdict::Ok,
            format!("{quoted} is a plain table; {oldest_text}; {retention_text}"),
        );
        if context.settings.partition != crate::Partition::None {
            c.verdict = Verdict::Warn;
            c = c.fix(format!(
                "partition = {:?} applies to a table pglog creates; to partition this one, \
                 convert it (README: converting an existing table)",
                context.settings.partition
            ));
        }
        c
    };
    if let Some(days) = expired {
        c.verdict = c.verdict.max(Verdict::Warn);
        c.found
            .push_str(&format!("; rows older than {days} days remain"));
        c.fix = Some(format!(
            "retention runs in programs that log with retention_days set, hourly; run \
             `pglog prune --older-than {days}d` now"
        ));
    }
    c
}

fn pooler(db: &mut Db) -> Check {
    match db.session.is_direct() {
        Ok(true) => check(
            "pooler",
            Verdict::Ok,
            "none: the session reaches the server itself (named statements and COPY in use)",
        ),
        Ok(false) => check(
            "pooler",
            Verdict::Ok,
            "a transaction pooler may sit in between (or TLS hides the server's process id): \
             pglog uses one unnamed statement per write, safe behind any pooler, ~15% slower",
        ),
        Err(trouble) => check(
            "pooler",
            Verdict::Warn,
            format!("cannot tell: {}", trouble.detail),
        ),
    }
}

fn server_settings(context: &Context, db: &mut Db) -> Check {
    let rows = db.query(
        "SELECT current_setting('statement_timeout'), \
                current_setting('idle_session_timeout', true), \
                current_setting('idle_in_transaction_session_timeout'), \
                (SELECT setting::int8 FROM pg_settings WHERE name = 'statement_timeout'), \
                (SELECT setting::int8 FROM pg_settings WHERE name = 'idle_session_timeout'), \
                current_user::text",
        &[],
    );
    let Ok([row, ..]) = rows.as_deref() else {
        return check("server settings", Verdict::Warn, "cannot read them");
    };
    let statement: String = row.get(0);
    let idle: Option<String> = row.get(1);
    let idle_tx: String = row.get(2);
    let statement_ms: i64 = row.get(3);
    let idle_ms: Option<i64> = row.get(4);
    let user = crate::schema::quote_ident(&row.get::<_, String>(5));
    let mut found = format!(
        "statement_timeout = {statement}, idle_session_timeout = {}, \
         idle_in_transaction_session_timeout = {idle_tx}",
        idle.as_deref().unwrap_or("(not in this version)")
    );
    let ours_idle = context.settings.idle_timeout;
    let ours_statement = context.settings.statement_timeout;
    let mut verdict = Verdict::Ok;
    let mut fixes = Vec::new();
    if let Some(ms) = idle_ms.filter(|ms| *ms > 0) {
        let server = Duration::from_millis(ms as u64);
        if server <= ours_idle {
            verdict = Verdict::Warn;
            found.push_str(&format!(
                "; the server ends sessions idle for {server:?}, before pglog's idle_timeout \
                 ({ours_idle:?}) closes them: each quiet spell costs a reconnect and a server \
                 log line"
            ));
            fixes.push(format!(
                "set pglog's idle_timeout below it (PGLOG_IDLE_TIMEOUT_MS={}), or exempt the \
                 role: ALTER ROLE {user} SET idle_session_timeout = 0",
                (ms * 3 / 4).max(1),
            ));
        }
    }
    if statement_ms > 0 && Duration::from_millis(statement_ms as u64) < ours_statement {
        verdict = Verdict::Warn;
        found.push_str(&format!(
            "; the server's statement_timeout is shorter than pglog's ({ours_statement:?}): \
             behind a pooler, where pglog cannot set its own, a slow batch is cancelled sooner"
        ));
        fixes.push(format!(
            "ALTER ROLE {user} SET statement_timeout = '{}ms', or lower pglog's statement_timeout",
            ours_statement.as_millis()
        ));
    }
    let c = check("server settings", verdict, found);
    if fixes.is_empty() {
        c
    } else {
        c.fix(fixes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_line_is_found_in_its_section_only() {
        let text = "[project]\nname = \"x\"\n\n[tool.stogger]\npostgres_dsn = \"a\"\n\
                    [tool.pglog]\n# dsn = \"old\"\n dsn = \"b\"\n[tool.other]\ndsn = 1\n";
        assert_eq!(key_line(text, "tool.stogger", "postgres_dsn"), Some(5));
        assert_eq!(key_line(text, "tool.pglog", "dsn"), Some(8));
        assert_eq!(key_line(text, "tool.pglog", "table"), None);
        assert_eq!(
            key_line("tool.pglog.table = \"t\"\n", "tool.pglog", "table"),
            Some(1)
        );
        assert_eq!(
            key_line("[tool]\npglog.table = \"t\"\n", "tool.pglog", "table"),
            Some(2)
        );
    }

    #[test]
    fn an_index_is_known_by_what_it_is_on() {
        assert_eq!(
            index_key("CREATE INDEX idx_t_timestamp ON public.t USING btree (\"timestamp\" DESC)"),
            expected_key(INDEXES[0].1)
        );
        assert_eq!(expected_key(INDEXES[0].1), "btree (timestamp desc)");
        assert_eq!(expected_key(INDEXES[1].1), "btree (level)");
        assert_eq!(
            index_key("CREATE INDEX x ON ONLY public.t USING gin (data)"),
            expected_key(INDEXES[3].1)
        );
        assert_eq!(expected_key(INDEXES[3].1), "gin (data)");
        assert_eq!(
            index_key("CREATE INDEX y ON public.t USING btree (level)"),
            "btree (level)"
        );
    }
}
