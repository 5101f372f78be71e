//! `pglog::init()` discovering its configuration: `pyproject.toml`, `PGLOG_CONFIG`, the
//! `PGLOG_*`, `STOGGER_*` and libpq variables, `%PASSWORD%`, and their precedence.
//!
//! Each case runs a child process of this binary (`harness = false`) with a cleared
//! environment, so nothing of the developer's own `PG*`, `PGLOG_*` or `STOGGER_*`
//! variables leaks in, in a scratch directory holding the configuration file under test.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

/// What the `init` program stores at the default level, in order.
const STORED: [&str; 5] = [
    "an error",
    "a warning",
    "an info",
    "noisy info",
    "noisy warn",
];

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "init" => init_program(),
            "discover_with_calls" => discover_with_calls_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        acceptance_stogger_file_and_password_with_url_specials,
        key_value_dsn_with_pglog_password,
        stogger_env_overrides_the_file,
        pglog_env_wins_over_stogger_env,
        pglog_section_wins_and_sets_level_and_filters,
        environment_level_and_filters_beat_the_file,
        rust_log_is_not_read,
        pglog_config_replaces_pyproject,
        builder_calls_sit_between_file_and_environment,
        socket_dsns_in_stoggers_form,
        unset_password_is_one_notice_and_exit_status_is_unaffected,
        enable_postgres_false_writes_stderr_only,
        malformed_configuration_says_what_to_fix,
        libpq_variables_fill_what_the_dsn_leaves_out,
        pgpassword_fills_a_dsn_without_one,
        tls_from_the_environment,
        batch_mode_from_the_file,
        a_service_file_and_pgservice,
        pgpassfile_from_the_environment,
        an_unset_password_placeholder_against_trust_stores,
    ];
}

// --- the child programs -----------------------------------------------------------------

fn init_program() {
    match pglog::init() {
        Ok(guard) => log_and_report(guard),
        Err(e) => {
            println!("init error: {e}");
            std::process::exit(3);
        }
    }
}

fn discover_with_calls_program() {
    let builder = pglog::Builder::discover().expect("discover");
    log_and_report(builder.table("code_table").try_init().expect("init"));
}

fn log_and_report(guard: pglog::Guard) {
    log::error!(n = 1; "an error");
    log::warn!("a warning");
    log::info!(via = "init"; "an info");
    log::debug!("a debug");
    log::trace!("a trace");
    noisy::speak();
    let stats = guard.stats();
    println!("written={} fallback={}", stats.written, stats.fallback);
}

mod noisy {
    pub fn speak() {
        log::info!("noisy info");
        log::warn!("noisy warn");
    }
}

// --- helpers ------------------------------------------------------------------------------

/// A scratch directory holding `pyproject.toml` with `text`.
fn project(text: &str) -> std::path::PathBuf {
    let dir = scratch_dir("project");
    fs::write(dir.join("pyproject.toml"), text).unwrap();
    dir
}

fn init_in(dir: &Path, envs: &[(&str, &str)]) -> Output {
    run_in(dir, "init", envs)
}

/// A database on the shared (trust) server: its name and a DSN to read it.
fn trust_db(prefix: &str) -> (String, String) {
    let name = database(server(), prefix, "postgres");
    let dsn = server().dsn(&name);
    (name, dsn)
}

fn url(db: &str) -> String {
    server().url(db)
}

/// Runs `init` and asserts that it stored [`STORED`] in `table`, silently.
fn assert_stored(dir: &Path, envs: &[(&str, &str)], read_dsn: &str, table: &str) -> Output {
    let output = init_in(dir, envs);
    assert_success(&output);
    assert_eq!(
        notices(&output),
        Vec::<String>::new(),
        "{}",
        stderr(&output)
    );
    assert_eq!(events(read_dsn, table), STORED);
    output
}

/// Runs `init` and returns what it printed; it must have failed with exit status 3.
fn init_error(dir: &Path, envs: &[(&str, &str)]) -> String {
    let output = init_in(dir, envs);
    assert_eq!(output.status.code(), Some(3), "{}", printed(&output));
    stdout(&output)
}

// --- the checks ---------------------------------------------------------------------------

fn acceptance_stogger_file_and_password_with_url_specials() {
    let server = auth_server();
    let db = database(server, "accept", APP);
    let dir = project(&format!(
        "[project]\nname = \"svc\"\n\n[tool.stogger]\nenable_postgres = true\n\
         postgres_dsn = \"postgresql://{APP}:%PASSWORD%@127.0.0.1:{}/{db}\"\n\
         postgres_table = \"x\"\n",
        server.port()
    ));
    let output = assert_stored(
        &dir,
        &[("STOGGER_POSTGRES_PASSWORD", NASTY)],
        &server.dsn(&db),
        "x",
    );
    let all = printed(&output);
    assert!(
        !all.contains(NASTY) && !all.contains(&percent_encode(NASTY)),
        "{all}"
    );
    assert_eq!(stdout(&output).trim(), "written=5 fallback=0");

    // A wrong password is a notice; the real one is never printed, nor the wrong one.
    let output = init_in(&dir, &[("STOGGER_POSTGRES_PASSWORD", "not-it")]);
    assert_success(&output);
    let all = printed(&output);
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains("not-it") && !all.contains(NASTY), "{all}");
}

fn key_value_dsn_with_pglog_password() {
    let server = auth_server();
    let db = database(server, "kv", APP);
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"host=127.0.0.1 port={} user={APP} password=%PASSWORD% dbname={db}\"\n",
        server.port()
    ));
    let output = assert_stored(
        &dir,
        // PGLOG_PASSWORD wins over stogger's.
        &[
            ("PGLOG_PASSWORD", NASTY),
            ("STOGGER_POSTGRES_PASSWORD", "not-it"),
        ],
        &server.dsn(&db),
        pglog::DEFAULT_TABLE,
    );
    assert!(!printed(&output).contains(NASTY));
}

fn stogger_env_overrides_the_file() {
    let (file_db, file_dsn) = trust_db("file");
    let (env_db, env_dsn) = trust_db("env");
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"{}\"\npostgres_table = \"file_table\"\n",
        url(&file_db)
    ));
    assert_stored(
        &dir,
        &[
            ("STOGGER_POSTGRES_DSN", &url(&env_db)),
            ("STOGGER_POSTGRES_TABLE", "env_table"),
        ],
        &env_dsn,
        "env_table",
    );
    assert!(!table_exists(&file_dsn, "file_table") && !table_exists(&file_dsn, "env_table"));
    // Only the table from the environment: the DSN still comes from the file.
    assert_stored(
        &dir,
        &[("STOGGER_POSTGRES_TABLE", "env_only_table")],
        &file_dsn,
        "env_only_table",
    );
}

fn pglog_env_wins_over_stogger_env() {
    let (stogger_db, stogger_dsn) = trust_db("stogger");
    let (pglog_db, pglog_dsn) = trust_db("pglog");
    let dir = project("");
    assert_stored(
        &dir,
        &[
            ("STOGGER_POSTGRES_DSN", &url(&stogger_db)),
            ("PGLOG_DSN", &url(&pglog_db)),
            ("STOGGER_POSTGRES_TABLE", "stogger_table"),
            ("PGLOG_TABLE", "pglog_table"),
        ],
        &pglog_dsn,
        "pglog_table",
    );
    assert!(!table_exists(&stogger_dsn, "stogger_table"));
}

fn pglog_section_wins_and_sets_level_and_filters() {
    let (db, dsn) = trust_db("section");
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"{}\"\npostgres_table = \"stogger_table\"\n\n\
         [tool.pglog]\ntable = \"pglog_table\"\nlevel = \"debug\"\nfilters = \"config::noisy=warn\"\n\
         pool_size = 2\npool_wait_ms = 500\nconnect_timeout_ms = 2000\nstatement_timeout_ms = 1000\n\
         create_table = true\nrequire_database = true\n",
        url(&db)
    ));
    let output = init_in(&dir, &[]);
    assert_success(&output);
    assert_eq!(
        events(&dsn, "pglog_table"),
        ["an error", "a warning", "an info", "a debug", "noisy warn"]
    );
    assert!(!table_exists(&dsn, "stogger_table"));
}

fn environment_level_and_filters_beat_the_file() {
    let (db, dsn) = trust_db("levels");
    let dir = project(&format!(
        "[tool.pglog]\ndsn = \"{}\"\nfilters = \"warn,config::noisy=info\"\n",
        url(&db)
    ));
    // The file alone: warn and up, but noisy's info too.
    assert_success(&init_in(&dir, &[("PGLOG_TABLE", "file_levels")]));
    assert_eq!(
        events(&dsn, "file_levels"),
        ["an error", "a warning", "noisy info", "noisy warn"]
    );
    // PGLOG_LEVEL replaces the file's default; the file's per-module directive stays.
    assert_success(&init_in(
        &dir,
        &[("PGLOG_TABLE", "env_level"), ("PGLOG_LEVEL", "trace")],
    ));
    assert_eq!(
        events(&dsn, "env_level"),
        [
            "an error",
            "a warning",
            "an info",
            "a debug",
            "a trace",
            "noisy info",
            "noisy warn"
        ]
    );
    // PGLOG_LOG's directives come last and win per module.
    assert_success(&init_in(
        &dir,
        &[
            ("PGLOG_TABLE", "env_filters"),
            ("PGLOG_LOG", "debug,config::noisy=error"),
        ],
    ));
    assert_eq!(
        events(&dsn, "env_filters"),
        ["an error", "a warning", "an info", "a debug"]
    );
}

fn rust_log_is_not_read() {
    let (db, dsn) = trust_db("rustlog");
    assert_stored(
        &project(""),
        &[("PGLOG_DSN", &url(&db)), ("RUST_LOG", "trace")],
        &dsn,
        pglog::DEFAULT_TABLE,
    );
}

fn pglog_config_replaces_pyproject() {
    let (db, dsn) = trust_db("pglogconfig");
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"{}\"\npostgres_table = \"from_pyproject\"\n",
        url(&db)
    ));
    let elsewhere = scratch_dir("elsewhere").join("logging.toml");
    fs::write(
        &elsewhere,
        format!(
            "[tool.pglog]\ndsn = \"{}\"\ntable = \"from_pglog_config\"\n",
            url(&db)
        ),
    )
    .unwrap();
    assert_stored(
        &dir,
        &[("PGLOG_CONFIG", elsewhere.to_str().unwrap())],
        &dsn,
        "from_pglog_config",
    );
    assert!(!table_exists(&dsn, "from_pyproject"));

    let missing = dir.join("missing.toml");
    let msg = init_error(&dir, &[("PGLOG_CONFIG", missing.to_str().unwrap())]);
    assert!(
        msg.contains(&format!(
            "invalid pglog configuration file {}: cannot read it",
            missing.display()
        )) && msg.contains("named by PGLOG_CONFIG"),
        "{msg}"
    );
}

fn builder_calls_sit_between_file_and_environment() {
    let (db, dsn) = trust_db("calls");
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"{}\"\npostgres_table = \"file_table\"\n",
        url(&db)
    ));
    assert_success(&run_in(&dir, "discover_with_calls", &[]));
    assert_eq!(events(&dsn, "code_table"), STORED);
    assert_success(&run_in(
        &dir,
        "discover_with_calls",
        &[("PGLOG_TABLE", "env_table")],
    ));
    assert_eq!(events(&dsn, "env_table"), STORED);
    assert!(!table_exists(&dsn, "file_table"));
}

fn socket_dsns_in_stoggers_form() {
    // Trust, as the superuser.
    let (db, dsn) = trust_db("socket");
    let socket = |server: &throwaway_pg::Server, user: &str, db: &str| {
        format!(
            "postgresql://{user}:@/{db}?host={}&port={}",
            server.socket_dir().display(),
            server.port()
        )
    };
    assert_stored(
        &project(""),
        &[("STOGGER_POSTGRES_DSN", &socket(server(), "postgres", &db))],
        &dsn,
        pglog::DEFAULT_TABLE,
    );
    // Peer, the OS user mapped to `app`, from a pyproject.toml.
    let auth = auth_server();
    let db = database(auth, "peer", APP);
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"{}\"\npostgres_table = \"peer_logs\"\n",
        socket(auth, APP, &db)
    ));
    assert_stored(&dir, &[], &auth.dsn(&db), "peer_logs");
}

fn unset_password_is_one_notice_and_exit_status_is_unaffected() {
    let server = auth_server();
    let db = database(server, "nopw", APP);
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"postgresql://{APP}:%PASSWORD%@127.0.0.1:{}/{db}\"\n\
         postgres_table = \"x\"\n",
        server.port()
    ));
    let output = init_in(&dir, &[]);
    assert_success(&output);
    let notices = notices(&output);
    assert_eq!(notices.len(), 1, "{}", stderr(&output));
    assert!(
        notices[0].contains("STOGGER_POSTGRES_PASSWORD") && notices[0].contains("PGLOG_PASSWORD"),
        "{}",
        notices[0]
    );
    assert_eq!(stdout(&output).trim(), "written=0 fallback=5");
    for event in STORED {
        assert!(stderr(&output).contains(event), "{event} on stderr");
    }
    assert!(!table_exists(&server.dsn(&db), "x"));
}

fn enable_postgres_false_writes_stderr_only() {
    let (db, dsn) = trust_db("disabled");
    let dir = project(&format!(
        "[tool.stogger]\nenable_postgres = false\npostgres_dsn = \"{}\"\npostgres_table = \"t\"\n",
        url(&db)
    ));
    let stderr_only = |envs: &[(&str, &str)]| {
        let output = init_in(&dir, envs);
        assert_success(&output);
        assert_eq!(stdout(&output).trim(), "written=0 fallback=5");
        assert!(notices(&output).is_empty(), "{}", stderr(&output));
        assert!(stderr(&output).contains("noisy warn"));
        assert!(!table_exists(&dsn, "t"));
    };
    stderr_only(&[]);
    stderr_only(&[("PGLOG_ENABLE", "No"), ("STOGGER_ENABLE_POSTGRES", "yes")]);
    // The environment turns it back on.
    assert_stored(&dir, &[("STOGGER_ENABLE_POSTGRES", "ON")], &dsn, "t");
}

fn malformed_configuration_says_what_to_fix() {
    let in_file = |text: &str| {
        let dir = project(text);
        let msg = init_error(&dir, &[]);
        let file = dir.join("pyproject.toml");
        assert!(
            msg.contains(&format!(
                "invalid pglog configuration file {}:",
                file.display()
            )),
            "{msg}"
        );
        msg
    };
    let msg = in_file("[project]\nname = \"x\"\n\n[tool.pglog]\npool_sise = 2\n");
    assert!(
        msg.contains(
            "line 5, key `pool_sise` in [tool.pglog]: unknown field `pool_sise`, expected one of"
        ),
        "{msg}"
    );
    let msg = in_file("[tool.pglog]\npool_wait_ms = \"250ms\"\n");
    assert!(
        msg.contains("line 2, key `pool_wait_ms` in [tool.pglog]: invalid type"),
        "{msg}"
    );
    let msg = in_file("[tool.stogger]\nenable_postgres = \"yes\"\n");
    assert!(
        msg.contains("key `enable_postgres` in [tool.stogger]: invalid type: string \"yes\", expected a boolean"),
        "{msg}"
    );
    let msg = in_file(&format!(
        "[tool.stogger]\npostgres_dsn = \"postgresql://u:{}\\q@h/db\"\n",
        "hunter2"
    ));
    assert!(
        msg.contains("line 2, key `postgres_dsn`") && !msg.contains("hunter2"),
        "{msg}"
    );
    let msg = in_file("[tool.stogger\n");
    assert!(msg.contains("line 1:"), "{msg}");

    let dir = project("");
    let msg = init_error(&dir, &[("STOGGER_ENABLE_POSTGRES", "maybe")]);
    assert!(
        msg.contains("`enable_postgres`: STOGGER_ENABLE_POSTGRES=`maybe`: use 1, true, yes or on"),
        "{msg}"
    );
    let msg = init_error(&dir, &[("PGLOG_LOG", "a=b=c")]);
    assert!(msg.contains("`filters`: PGLOG_LOG=`a=b=c`"), "{msg}");
    let msg = init_error(
        &dir,
        &[
            (
                "PGLOG_DSN",
                "postgresql://u:%PASSWORD%@127.0.0.1:notaport/db",
            ),
            ("PGLOG_PASSWORD", NASTY),
        ],
    );
    assert!(
        msg.contains("invalid pglog setting `dsn`: cannot parse the DSN") && !msg.contains(NASTY),
        "{msg}"
    );
    let msg = init_error(&dir, &[("PGLOG_TABLE", &"t".repeat(60))]);
    assert!(msg.contains("invalid pglog setting `table`"), "{msg}");
}

fn libpq_variables_fill_what_the_dsn_leaves_out() {
    let (db, dsn) = trust_db("libpq");
    let port = server().port().to_string();
    let socket_dir = server().socket_dir().display().to_string();
    // No DSN at all: the socket, port, user and database all come from libpq's variables.
    assert_stored(
        &project(""),
        &[
            ("PGHOST", &socket_dir),
            ("PGPORT", &port),
            ("PGUSER", "postgres"),
            ("PGDATABASE", &db),
        ],
        &dsn,
        pglog::DEFAULT_TABLE,
    );
    // What the DSN sets wins: PGDATABASE names another database.
    let (other, other_dsn) = trust_db("libpq_other");
    assert_stored(
        &project(""),
        &[
            (
                "PGLOG_DSN",
                &format!("host=127.0.0.1 user=postgres dbname={db}"),
            ),
            ("PGPORT", &port),
            ("PGDATABASE", &other),
            ("PGLOG_TABLE", "dsn_wins"),
        ],
        &dsn,
        "dsn_wins",
    );
    assert!(!table_exists(&other_dsn, "dsn_wins"));
}

fn pgpassword_fills_a_dsn_without_one() {
    let server = auth_server();
    let db = database(server, "pgpassword", SCRAM_ROLE);
    let output = assert_stored(
        &project(""),
        &[
            (
                "PGLOG_DSN",
                &format!("postgresql://{SCRAM_ROLE}@127.0.0.1:{}/{db}", server.port()),
            ),
            ("PGPASSWORD", NASTY),
        ],
        &server.dsn(&db),
        pglog::DEFAULT_TABLE,
    );
    assert!(!printed(&output).contains(NASTY));
}

fn batch_mode_from_the_file() {
    let (db, dsn) = trust_db("batch");
    // The server's log tells COPY (batch mode) from INSERT (blocking mode).
    server()
        .psql(
            "postgres",
            &format!("ALTER DATABASE \"{db}\" SET log_statement = 'all'"),
        )
        .unwrap();
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"{}\"\n\n[tool.pglog]\nbatch = true\nqueue_capacity = 100\n\
         batch_size = 2\nflush_interval_ms = 10\noverflow = \"block\"\noverflow_wait_ms = 1000\n\
         flush_level = \"off\"\nflush_timeout_ms = 10000\n",
        url(&db)
    ));
    assert_stored(&dir, &[("PGLOG_TABLE", "batch_logs")], &dsn, "batch_logs");
    assert!(server().server_log().contains("COPY \"batch_logs\""));
    // The environment turns it off.
    assert_stored(
        &dir,
        &[("PGLOG_TABLE", "blocking_logs"), ("PGLOG_BATCH", "off")],
        &dsn,
        "blocking_logs",
    );
    let log = server().server_log();
    assert!(
        log.contains("INSERT INTO \"blocking_logs\"") && !log.contains("COPY \"blocking_logs\"")
    );
}

#[cfg(not(feature = "tls-rustls"))]
fn tls_from_the_environment() {
    let msg = init_error(
        &project(""),
        &[
            ("PGLOG_DSN", "host=127.0.0.1 user=postgres"),
            ("PGSSLMODE", "require"),
        ],
    );
    assert!(
        msg.contains("invalid pglog setting `sslmode`")
            && msg.contains("`tls-rustls` cargo feature"),
        "{msg}"
    );
    let msg = init_error(&project(""), &[("PGLOG_SSLROOTCERT", "/etc/ca.pem")]);
    assert!(msg.contains("invalid pglog setting `root_cert`"), "{msg}");
}

#[cfg(feature = "tls-rustls")]
fn tls_from_the_environment() {
    let tls = tls_server();
    let db = database(&tls.server, "tls_env", "postgres");
    let local = tls.server.socket_dsn(&db);
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        tls.server.port()
    );
    // libpq's variables: PGSSLMODE=require with PGSSLROOTCERT verifies.
    assert_stored(
        &project(""),
        &[
            ("PGLOG_DSN", &dsn),
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", tls.ca.to_str().unwrap()),
            ("PGLOG_TABLE", "libpq_tls"),
        ],
        &local,
        "libpq_tls",
    );
    // pglog's own root certificate wins over libpq's, and is checked even under `prefer`.
    let dir = project(&format!(
        "[tool.pglog]\nroot_cert = \"{}\"\n",
        tls.ca.display()
    ));
    let output = init_in(
        &dir,
        &[
            ("PGLOG_DSN", &dsn),
            ("PGLOG_SSLROOTCERT", tls.other_ca.to_str().unwrap()),
            ("PGSSLROOTCERT", tls.ca.to_str().unwrap()),
            ("PGLOG_TABLE", "wrong_ca"),
        ],
    );
    assert_success(&output);
    assert!(
        stderr(&output).contains("UnknownIssuer"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output).trim(), "written=0 fallback=5");
    // The file's root certificate, with nothing in the environment.
    assert_stored(
        &dir,
        &[("PGLOG_DSN", &dsn), ("PGLOG_TABLE", "file_ca")],
        &local,
        "file_ca",
    );
    // A client certificate through PGSSLCERT and PGSSLKEY, verified both ways.
    let cert_db = database(&tls.server, "tls_env_cert", CERT_ROLE);
    assert_stored(
        &project(""),
        &[
            (
                "PGLOG_DSN",
                &format!(
                    "host=127.0.0.1 port={} user={CERT_ROLE} dbname={cert_db}",
                    tls.server.port()
                ),
            ),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", tls.ca.to_str().unwrap()),
            ("PGSSLCERT", tls.client_cert.to_str().unwrap()),
            ("PGSSLKEY", tls.client_key.to_str().unwrap()),
        ],
        &tls.server.socket_dsn(&cert_db),
        pglog::DEFAULT_TABLE,
    );
}

// --- libpq's files: services and passwords ----------------------------------------------

fn a_service_file_and_pgservice() {
    let (svc_db, svc_dsn) = trust_db("svc");
    let (own_db, own_dsn) = trust_db("svc_own");
    let dir = project("");
    let file = dir.join("services.conf");
    fs::write(
        &file,
        format!(
            "# shared with psql\n[logs]\nhost=127.0.0.1\nport={}\nuser=postgres\ndbname={svc_db}\n",
            server().port()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // The DSN's own parameters win over the service's.
    assert_stored(
        &dir,
        &[
            ("PGLOG_DSN", &format!("service=logs dbname={own_db}")),
            ("PGSERVICEFILE", file),
        ],
        &own_dsn,
        pglog::DEFAULT_TABLE,
    );
    // PGSERVICE, with no DSN at all.
    assert_stored(
        &dir,
        &[("PGSERVICE", "logs"), ("PGSERVICEFILE", file)],
        &svc_dsn,
        pglog::DEFAULT_TABLE,
    );
    let msg = init_error(
        &dir,
        &[("PGLOG_DSN", "service=nope"), ("PGSERVICEFILE", file)],
    );
    assert!(
        msg.contains("invalid pglog setting `service`: definition of service \"nope\" not found"),
        "{msg}"
    );
}

fn pgpassfile_from_the_environment() {
    let server = auth_server();
    let db = database(server, "pgpassfile", SCRAM_ROLE);
    let dir = project("");
    let file = dir.join("pgpass");
    // libpq's escapes: `\:` and `\\` inside a field.
    let escaped = NASTY.replace('\\', "\\\\").replace(':', "\\:");
    fs::write(
        &file,
        format!("127.0.0.1:{}:{db}:{SCRAM_ROLE}:{escaped}\n", server.port()),
    )
    .unwrap();
    let private = |mode| {
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    private(0o600);
    let envs = [
        (
            "PGLOG_DSN",
            format!("postgresql://{SCRAM_ROLE}@127.0.0.1:{}/{db}", server.port()),
        ),
        ("PGPASSFILE", file.to_str().unwrap().to_owned()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = assert_stored(&dir, &envs, &server.dsn(&db), pglog::DEFAULT_TABLE);
    assert!(!printed(&output).contains(NASTY));
    // A file others may read is ignored, as libpq does, and said once.
    private(0o644);
    let output = init_in(&dir, &envs);
    assert_success(&output);
    let notices = notices(&output);
    assert!(
        notices.iter().any(|n| n.contains("u=rw (0600) or less")),
        "{notices:?}"
    );
    assert_eq!(stdout(&output).trim(), "written=0 fallback=5");
    assert!(!printed(&output).contains(NASTY));
}

fn an_unset_password_placeholder_against_trust_stores() {
    // As stogger: no password variable means an empty password, which a server that
    // does not ask for one (trust, peer, cert) never needs.
    let (db, dsn) = trust_db("nopw_trust");
    let dir = project(&format!(
        "[tool.stogger]\npostgres_dsn = \"postgresql://postgres:%PASSWORD%@127.0.0.1:{}/{db}\"\n",
        server().port()
    ));
    assert_stored(&dir, &[], &dsn, pglog::DEFAULT_TABLE);
}
