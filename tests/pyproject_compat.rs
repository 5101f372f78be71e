//! The example files in `pyproject-compat/fixtures`, read through `pglog::init()` and
//! logged into real servers.
//!
//! Each fixture is copied into a scratch directory with its address pointed at a test
//! server (`127.0.0.1:5432` and `port=5432` become the server's port, the socket
//! directory becomes the server's), then a child process of this binary (`harness =
//! false`) runs `pglog::init()` there, with a cleared environment plus what the fixture
//! needs. Every fixture directory must have a case here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "init" => init_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    // One check per fixture directory, named after it.
    run_checks(&[
        ("every_fixture_has_a_case", every_fixture_has_a_case),
        ("minimal", || check(&case("minimal"))),
        ("socket_auth", || check(&case("socket_auth"))),
        ("password", || check(&case("password"))),
        ("pglog_extras", || check(&case("pglog_extras"))),
        ("disabled", || check(&case("disabled"))),
        ("own_file", || check(&case("own_file"))),
        ("batch_mode", || check(&case("batch_mode"))),
    ]);
}

/// Logs one event per level, and from two other targets that filters may name.
fn init_program() {
    let guard = match pglog::init() {
        Ok(guard) => guard,
        Err(e) => {
            println!("init error: {e}");
            std::process::exit(3);
        }
    };
    log::error!(invoice = 1017; "an error");
    log::warn!("a warning");
    log::info!("an info");
    log::debug!("a debug");
    log::trace!("a trace");
    log::trace!(target: "billing::db", "a db trace");
    log::info!(target: "noisy_dependency", "noisy info");
    log::warn!(target: "noisy_dependency", "noisy warn");
    let stats = guard.stats();
    println!("written={} fallback={}", stats.written, stats.fallback);
}

/// At the default level (`info`), what `init_program` stores.
const AT_INFO: &[&str] = &[
    "an error",
    "a warning",
    "an info",
    "noisy info",
    "noisy warn",
];

struct Case {
    /// Directory under `pyproject-compat/fixtures`.
    name: &'static str,
    /// The file in it, and the variable naming it if it is not `pyproject.toml`.
    file: &'static str,
    config_var: Option<&'static str>,
    server: fn() -> &'static throwaway_pg::Server,
    /// The database the fixture's DSN names, and its owner.
    database: &'static str,
    owner: &'static str,
    table: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// The events stored, in order; none means "stderr only".
    stored: &'static [&'static str],
}

fn case(name: &str) -> Case {
    let base = Case {
        name: "",
        file: "pyproject.toml",
        config_var: None,
        server: common::server,
        database: "",
        owner: "postgres",
        table: pglog::DEFAULT_TABLE,
        env: &[],
        stored: AT_INFO,
    };
    match name {
        "minimal" => Case {
            name: "minimal",
            database: "minimal",
            ..base
        },
        "socket_auth" => Case {
            name: "socket_auth",
            server: auth_server,
            database: "socket_auth",
            owner: APP,
            table: "socket_logs",
            ..base
        },
        "password" => Case {
            name: "password",
            server: auth_server,
            database: "password_auth",
            owner: APP,
            table: "password_logs",
            env: &[("STOGGER_POSTGRES_PASSWORD", NASTY)],
            ..base
        },
        "pglog_extras" => Case {
            name: "pglog_extras",
            server: auth_server,
            database: "pglog_extras",
            owner: APP,
            table: "extras_logs",
            env: &[("PGLOG_PASSWORD", NASTY)],
            stored: &[
                "an error",
                "a warning",
                "an info",
                "a debug",
                "a db trace",
                "noisy warn",
            ],
            ..base
        },
        "disabled" => Case {
            name: "disabled",
            database: "disabled",
            stored: &[],
            ..base
        },
        "own_file" => Case {
            name: "own_file",
            file: "pglog.toml",
            config_var: Some("PGLOG_CONFIG"),
            database: "own_file",
            table: "own_logs",
            stored: &["an error", "a warning", "noisy warn"],
            ..base
        },
        "batch_mode" => Case {
            name: "batch_mode",
            database: "batch_mode",
            table: "batch_logs",
            ..base
        },
        other => panic!("no case for fixture {other}"),
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pyproject-compat/fixtures")
}

fn every_fixture_has_a_case() {
    let mut names: Vec<String> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "batch_mode",
            "disabled",
            "minimal",
            "own_file",
            "password",
            "pglog_extras",
            "socket_auth"
        ]
    );
    for name in &names {
        let case = case(name);
        assert!(fixtures().join(name).join(case.file).is_file(), "{name}");
    }
}

/// The fixture's text aimed at `server`. Each fixture names the standard port or socket
/// directory exactly once, so that it reads as a real file.
fn aimed_at(text: &str, server: &throwaway_pg::Server) -> String {
    let port = server.port();
    let replacements = [
        ("127.0.0.1:5432", format!("127.0.0.1:{port}")),
        ("port=5432", format!("port={port}")),
        (
            "host=/var/run/postgresql",
            format!("host={}&port={port}", server.socket_dir().display()),
        ),
    ];
    let mut aimed = text.to_owned();
    for (from, to) in &replacements {
        aimed = aimed.replace(from, to);
    }
    let replaced = replacements
        .iter()
        .filter(|(from, _)| text.contains(from))
        .count();
    assert_eq!(
        replaced, 1,
        "the fixture names one standard address:\n{text}"
    );
    aimed
}

fn check(case: &Case) {
    let server = (case.server)();
    server
        .psql(
            "postgres",
            &format!(
                "CREATE DATABASE \"{}\" OWNER \"{}\"",
                case.database, case.owner
            ),
        )
        .expect("create the fixture's database");
    let text = fs::read_to_string(fixtures().join(case.name).join(case.file)).unwrap();
    let dir = scratch_dir(case.name);
    fs::write(dir.join(case.file), aimed_at(&text, server)).unwrap();

    let file = dir.join(case.file);
    let mut env: Vec<(&str, &str)> = case.env.to_vec();
    if let Some(var) = case.config_var {
        env.push((var, file.to_str().unwrap()));
    }
    let output = run_in(&dir, "init", &env);
    assert_success(&output);
    let all = printed(&output);
    assert!(!all.contains(NASTY), "{all}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("pglog: "),
        "no notices expected:\n{stderr}"
    );

    let read = server.dsn(case.database);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if case.stored.is_empty() {
        assert!(!table_exists(&read, case.table));
        assert_eq!(
            stdout.trim(),
            format!("written=0 fallback={}", AT_INFO.len())
        );
        for event in AT_INFO {
            assert!(stderr.contains(event), "{event} on stderr:\n{stderr}");
        }
    } else {
        let rows = rows(&read, case.table);
        let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(events, case.stored);
        assert_eq!(rows[0].data["invoice"], serde_json::json!(1017));
        assert_eq!(index_names(&read, case.table), expected_indexes(case.table));
    }
}
