//! The DSN front end against libpq's rules: both forms, `%PASSWORD%`, services, the
//! password file, libpq's variables, TLS parameters and defaults.

use super::*;
use crate::settings::tests::env;

const T: Duration = Duration::from_secs(3);
/// The issue's example: every character that means something in a URL or a
/// `key=value` string.
const NASTY: &str = r#"p@ss:w/rd %2F?#&'"x"#;

fn shared(vars: &[(&str, &str)]) -> SharedEnv {
    Arc::new(env(vars))
}

fn resolved(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> Resolved {
    resolve(dsn, None, T, &shared(vars), libpq_env).unwrap()
}

fn error(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> String {
    resolve(dsn, None, T, &shared(vars), libpq_env)
        .unwrap_err()
        .to_string()
}

/// The driver configuration as a connection to the first host would use it.
fn connecting(resolved: &Resolved) -> tokio_postgres::Config {
    let mut config = resolved.driver.clone();
    let host = match &config.get_hosts()[0] {
        Host::Tcp(name) => name.clone(),
        Host::Unix(dir) => dir.display().to_string(),
    };
    let user = config.get_user().unwrap().to_owned();
    let dbname = config.get_dbname().unwrap_or(&user).to_owned();
    let to = For {
        host: &host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        dbname: &dbname,
        user: &user,
    };
    if let Some(password) = resolved.password.lookup(to) {
        config.password(password);
    }
    config
}

fn ready(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> tokio_postgres::Config {
    connecting(&resolved(dsn, vars, libpq_env))
}

fn plain(dsn: &str) -> tokio_postgres::Config {
    ready(Some(dsn), &[], false)
}

/// A scratch directory for files the DSN names.
fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pglog-dsn-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn private_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn url_and_key_value_forms_parse() {
    let url = plain("postgresql://app:secret@db.internal:6432/ops");
    assert_eq!(describe(&url), "app@db.internal:6432/ops");
    let kv = plain("host=/tmp port=5433 user=app dbname=ops");
    assert_eq!(describe(&kv), "app@/tmp:5433/ops");
    assert_eq!(kv.get_connect_timeout(), Some(&T));
    // The program's name, so that pg_stat_activity tells which tool logs.
    assert_eq!(kv.get_application_name(), Some(program_name().as_str()));
    assert!(!program_name().is_empty());
}

#[test]
fn dsn_settings_win_over_defaults() {
    let c = plain("host=h user=u connect_timeout=9 application_name=tool");
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(9)));
    assert_eq!(c.get_application_name(), Some("tool"));
}

#[test]
fn malformed_dsn_says_what_to_fix_and_hides_the_password() {
    for bad in [
        "postgresql://app:hunter2@host:notaport/db",
        "host=h password=hunter2 bogus_option=1",
        "host='unterminated hunter2",
    ] {
        let msg = error(Some(bad), &[], false);
        assert!(
            msg.starts_with("invalid pglog setting `dsn`: cannot parse the DSN"),
            "{msg}"
        );
        assert!(msg.contains("expected postgresql://"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    assert_eq!(
        error(Some("host=h sslmode=verify_full"), &[], false),
        "invalid pglog setting `sslmode`: `verify_full` is not an sslmode; use disable, \
         allow, prefer, require, verify-ca or verify-full"
    );
    assert_eq!(
        error(Some("host=h sslpassword=x"), &[], false),
        "invalid pglog setting `dsn`: the DSN sets `sslpassword`: encrypted client keys \
         are not supported; decrypt the key with `openssl pkey`"
    );
}

#[test]
fn no_dsn_means_local_socket_as_the_os_user() {
    let c = ready(None, &[], false);
    assert!(matches!(c.get_hosts(), [Host::Unix(_)]));
    assert_eq!(c.get_user(), Some(whoami::username().unwrap().as_str()));
    assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
}

#[test]
fn password_is_percent_encoded_in_urls() {
    let dsn = "postgresql://app:%PASSWORD%@db:5432/ops?application_name=x";
    let text = substitute_password(dsn, NASTY);
    assert_eq!(
        text,
        "postgresql://app:p%40ss%3Aw%2Frd%20%252F%3F%23%26%27%22x@db:5432/ops?application_name=x"
    );
    let c = ready(Some(dsn), &[("PGLOG_PASSWORD", NASTY)], false);
    assert_eq!(c.get_password(), Some(NASTY.as_bytes()));
    assert_eq!(describe(&c), "app@db:5432/ops");
    // In the query string too.
    let c = ready(
        Some("postgresql://app@db/ops?password=%PASSWORD%"),
        &[("STOGGER_POSTGRES_PASSWORD", NASTY)],
        false,
    );
    assert_eq!(c.get_password(), Some(NASTY.as_bytes()));
    let unicode = "pässwörd ✓";
    let c = ready(Some(dsn), &[("PGLOG_PASSWORD", unicode)], false);
    assert_eq!(c.get_password(), Some(unicode.as_bytes()));
}

#[test]
fn password_is_quoted_in_key_value_pairs() {
    for dsn in [
        "host=db user=app password=%PASSWORD% dbname=ops",
        "host=db user=app password='%PASSWORD%' dbname=ops",
        "host=db user=app password = %PASSWORD%",
        "  host=db\tuser=app   password=%PASSWORD%  ",
    ] {
        let c = ready(Some(dsn), &[("PGLOG_PASSWORD", NASTY)], false);
        assert_eq!(c.get_password(), Some(NASTY.as_bytes()), "{dsn}");
        assert_eq!(c.get_user(), Some("app"), "{dsn}");
        assert_eq!(c.get_hosts(), [Host::Tcp("db".into())], "{dsn}");
    }
    // Around other text, and with backslashes already in the DSN.
    let c = ready(
        Some(r"host=db password='pre\'%PASSWORD%\\post' application_name=a\ b"),
        &[("PGLOG_PASSWORD", r"x\y'z")],
        false,
    );
    assert_eq!(c.get_password(), Some(r"pre'x\y'z\post".as_bytes()));
    assert_eq!(c.get_application_name(), Some("a b"));
}

#[test]
fn pglog_password_wins_over_stoggers() {
    let c = ready(
        Some("host=db password=%PASSWORD%"),
        &[("STOGGER_POSTGRES_PASSWORD", "s"), ("PGLOG_PASSWORD", "p")],
        false,
    );
    assert_eq!(c.get_password(), Some(&b"p"[..]));
}

#[test]
fn an_unset_placeholder_means_no_password_as_in_stogger() {
    let r = resolved(Some("postgresql://u:%PASSWORD%@db/ops"), &[], false);
    assert_eq!(connecting(&r).get_password(), None);
    let hint = r.password.hint().unwrap();
    assert!(
        hint.contains("PGLOG_PASSWORD") && hint.contains("STOGGER_POSTGRES_PASSWORD"),
        "{hint}"
    );
    let r = resolved(
        Some("postgresql://u:%PASSWORD%@db/ops"),
        &[("PGLOG_PASSWORD", "pw")],
        false,
    );
    assert_eq!(r.password.hint(), None);
    assert!(!format!("{r:?}").contains("pw\""), "{r:?}");
}

#[test]
fn malformed_key_value_dsn_keeps_the_password_out_of_the_error() {
    let msg = error(
        Some("host=db password='%PASSWORD% unterminated"),
        &[("PGLOG_PASSWORD", "hunter2")],
        false,
    );
    assert!(msg.contains("unterminated"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn libpq_variables_fill_only_what_the_dsn_leaves_out() {
    let vars = [
        ("PGHOST", "/run/pg,db2"),
        ("PGPORT", "5433,5434"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGPASSWORD", "envpw"),
        ("PGAPPNAME", "envapp"),
        ("PGSSLMODE", "require"),
        ("PGOPTIONS", "-c work_mem=8MB"),
        ("PGCONNECT_TIMEOUT", "7"),
        ("PGTARGETSESSIONATTRS", "read-write"),
    ];
    let r = resolved(None, &vars, true);
    let c = connecting(&r);
    assert_eq!(
        c.get_hosts(),
        [Host::Unix("/run/pg".into()), Host::Tcp("db2".into())]
    );
    assert_eq!(c.get_ports(), [5433, 5434]);
    assert_eq!(c.get_user(), Some("envuser"));
    assert_eq!(c.get_dbname(), Some("envdb"));
    assert_eq!(c.get_password(), Some(&b"envpw"[..]));
    assert_eq!(c.get_application_name(), Some("envapp"));
    assert_eq!(c.get_options(), Some("-c work_mem=8MB"));
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(7)));
    assert_eq!(
        c.get_target_session_attrs(),
        tokio_postgres::config::TargetSessionAttrs::ReadWrite
    );
    assert_eq!(r.tls.mode, tls::Mode::Require);

    let r = resolved(
        Some("host=db port=6000 user=u dbname=d password=p application_name=a sslmode=prefer"),
        &vars,
        true,
    );
    let c = connecting(&r);
    assert_eq!(describe(&c), "u@db:6000/d");
    assert_eq!(c.get_password(), Some(&b"p"[..]));
    assert_eq!(c.get_application_name(), Some("a"));
    assert_eq!(r.tls.mode, tls::Mode::Prefer);

    let c = ready(
        Some("postgresql://u:@db:5432/d?sslmode=disable"),
        &vars,
        true,
    );
    assert_eq!(c.get_password(), Some(&b"envpw"[..]), "empty means none");
    // As in libpq, a URL without a port leaves it to PGPORT.
    let c = ready(Some("postgresql://u@db/d"), &[("PGPORT", "6000")], true);
    assert_eq!(c.get_ports(), [6000]);

    // Without libpq_env (Builder::new), none of them is read.
    let c = ready(None, &vars, false);
    assert_ne!(c.get_user(), Some("envuser"));
    assert_eq!(c.get_password(), None);
}

#[test]
fn malformed_libpq_variables_are_named() {
    assert_eq!(
        error(None, &[("PGPORT", "54x")], true),
        "invalid pglog setting `PGPORT`: invalid value for option `port` (from PGPORT)"
    );
    assert!(error(None, &[("PGSSLMODE", "verify")], true)
        .starts_with("invalid pglog setting `PGSSLMODE`: `verify` is not an sslmode"));
}

#[test]
fn tls_parameters_come_from_the_dsn_the_environment_or_pglog() {
    let r = resolved(
        Some(
            "postgresql://u@db/d?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/nonexistent.crt",
        ),
        &[],
        false,
    );
    assert_eq!(r.tls.mode, tls::Mode::VerifyFull);
    assert_eq!(
        r.tls.roots,
        Some(tls::Named {
            value: tls::Roots::File("/ca.pem".into()),
            by: "sslrootcert"
        })
    );
    assert_eq!(
        r.tls.client, None,
        "a missing client certificate is not sent"
    );
    assert_eq!(
        r.driver.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    let r = resolved(
        Some("host=db sslmode=verify-full sslrootcert=system"),
        &[],
        false,
    );
    assert_eq!(r.tls.roots.unwrap().value, tls::Roots::System);
    let vars = [("PGSSLROOTCERT", "/env-ca.pem"), ("PGSSLMODE", "verify-ca")];
    let r = resolved(Some("host=db"), &vars, true);
    assert_eq!(r.tls.mode, tls::Mode::VerifyCa);
    assert_eq!(r.tls.roots.as_ref().unwrap().by, "PGSSLROOTCERT");
    // pglog's own setting wins over libpq's.
    let r = resolve(
        Some("host=db sslrootcert=/dsn-ca.pem"),
        Some(Path::new("/mine.pem")),
        T,
        &shared(&vars),
        true,
    )
    .unwrap();
    assert_eq!(
        r.tls.roots,
        Some(tls::Named {
            value: tls::Roots::File("/mine.pem".into()),
            by: "root_cert"
        })
    );
    assert!(r.tls.pglog_root);
    // A client certificate that exists needs its key.
    let dir = scratch("cert");
    let cert = dir.join("client.crt");
    std::fs::write(&cert, "x").unwrap();
    let msg = error(
        Some(&format!("host=db sslcert={}", cert.display())),
        &[],
        false,
    );
    assert!(
        msg.starts_with("invalid pglog setting `sslkey`: the client certificate"),
        "{msg}"
    );
    let r = resolved(
        Some("host=db"),
        &[
            ("PGSSLCERT", cert.to_str().unwrap()),
            ("PGSSLKEY", "/k.key"),
        ],
        true,
    );
    let (c, k) = r.tls.client.unwrap();
    assert_eq!((c.by, k.by), ("PGSSLCERT", "PGSSLKEY"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_service_fills_what_the_dsn_leaves_out() {
    let dir = scratch("service");
    let file = dir.join("services.conf");
    private_file(
        &file,
        "[logs]\nhost=svc-host\nport=6543\ndbname=svcdb\nuser=svcuser\npassword=svcpw\nsslmode=require\n",
    );
    let vars = [("PGSERVICEFILE", file.to_str().unwrap())];
    let r = resolved(Some("service=logs dbname=mine"), &vars, false);
    let c = connecting(&r);
    assert_eq!(describe(&c), "svcuser@svc-host:6543/mine");
    assert_eq!(c.get_password(), Some(&b"svcpw"[..]));
    assert_eq!(r.tls.mode, tls::Mode::Require);
    // PGSERVICE names it when libpq's variables are read.
    let vars = [
        ("PGSERVICEFILE", file.to_str().unwrap()),
        ("PGSERVICE", "logs"),
    ];
    let c = ready(Some("postgresql:///other"), &vars, true);
    assert_eq!(describe(&c), "svcuser@svc-host:6543/other");
    // The service's password is read again for each connection.
    let r = resolved(Some("service=logs"), &vars, false);
    private_file(&file, "[logs]\nhost=svc-host\npassword=rotated\n");
    assert_eq!(connecting(&r).get_password(), Some(&b"rotated"[..]));
    let msg = error(Some("service=nope"), &vars, false);
    assert!(msg.contains("\"nope\""), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_password_file_is_read_for_each_connection() {
    let dir = scratch("pgpass");
    let file = dir.join("pgpass");
    private_file(&file, "db:5432:ops:app:first\n*:*:*:other:x\n");
    let vars = [("PGPASSFILE", file.to_str().unwrap())];
    let r = resolved(Some("postgresql://app@db/ops"), &vars, true);
    assert_eq!(connecting(&r).get_password(), Some(&b"first"[..]));
    private_file(&file, "db:5432:ops:app:second\n");
    assert_eq!(connecting(&r).get_password(), Some(&b"second"[..]));
    // The DSN's `passfile`, and libpq's order: PGPASSWORD before the file.
    let r = resolved(
        Some(&format!(
            "host=db user=app dbname=ops passfile={}",
            file.display()
        )),
        &[("PGPASSWORD", "env")],
        true,
    );
    assert_eq!(connecting(&r).get_password(), Some(&b"env"[..]));
    let r = resolved(
        Some(&format!(
            "host=db user=app dbname=ops passfile={}",
            file.display()
        )),
        &[],
        false,
    );
    assert_eq!(connecting(&r).get_password(), Some(&b"second"[..]));
    // ~/.pgpass by default.
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    private_file(&home.join(".pgpass"), "*:*:*:app:fromhome\n");
    let c = ready(
        Some("host=db user=app"),
        &[("HOME", home.to_str().unwrap())],
        false,
    );
    assert_eq!(c.get_password(), Some(&b"fromhome"[..]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stoggers_socket_form_and_unix_sockets_skip_tls() {
    let r = resolved(
        Some("postgresql://app:@/ops?host=/var/run/postgresql&sslmode=require"),
        &[],
        false,
    );
    let c = connecting(&r);
    assert_eq!(c.get_hosts(), [Host::Unix("/var/run/postgresql".into())]);
    assert_eq!(c.get_user(), Some("app"));
    assert_eq!(c.get_dbname(), Some("ops"));
    assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    assert_eq!(r.tls.mode, tls::Mode::Disable);
    let tcp = plain("postgresql://app@db/ops?sslmode=require");
    assert_eq!(tcp.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
}

#[test]
fn the_placeholder_stands_for_the_password_only() {
    for dsn in [
        "postgresql://%PASSWORD%@db/ops",
        "postgresql://u@db/%PASSWORD%",
        "host=db user=%PASSWORD%",
    ] {
        let msg = error(Some(dsn), &[("PGLOG_PASSWORD", "SECRETplace")], false);
        assert!(msg.contains("stands for the password only"), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
    }
}

#[test]
fn ports_must_pair_with_hosts() {
    assert_eq!(
        error(Some("host=a port=1,2"), &[], false),
        "invalid pglog setting `dsn`: 2 port numbers for 1 hosts; give one port, or one \
         per host"
    );
    let me = whoami::username().unwrap();
    assert_eq!(
        describe(&plain("host=a,b port=7")),
        format!("{me}@a:7,b:7/{me}")
    );
}

#[test]
fn parameters_psql_takes_are_taken() {
    let r = resolved(
        Some(
            "host=db gssencmode=disable sslcompression=0 sslsni=1 \
             ssl_min_protocol_version=TLSv1.2 requiressl=1 target_session_attrs=primary",
        ),
        &[],
        false,
    );
    assert_eq!(r.tls.mode, tls::Mode::Require);
    assert_eq!(
        r.driver.get_target_session_attrs(),
        tokio_postgres::config::TargetSessionAttrs::ReadWrite
    );
    assert!(error(Some("host=db gssencmode=require"), &[], false).contains("GSSAPI"));
    // A root file that does not exist is not checked under require, as in libpq.
    let missing = "sslrootcert=/nonexistent.pem";
    let r = resolved(
        Some(&format!("host=db sslmode=require {missing}")),
        &[],
        false,
    );
    assert_eq!(r.tls.roots, None);
    let r = resolved(
        Some(&format!("host=db sslmode=verify-ca {missing}")),
        &[],
        false,
    );
    assert!(r.tls.roots.is_some());
}

#[test]
fn libpqs_own_spellings_are_understood() {
    let c = plain("host=db keepalives_count=7 fallback_application_name=tool client_encoding=UTF8");
    assert_eq!(c.get_keepalives_retries(), Some(7));
    assert_eq!(c.get_application_name(), Some("tool"));
    let c = plain("host=db application_name=mine fallback_application_name=tool");
    assert_eq!(c.get_application_name(), Some("mine"));
    assert_eq!(
        error(Some("host=db client_encoding=LATIN1"), &[], false),
        "invalid pglog setting `client_encoding`: pglog speaks UTF-8 only, not `LATIN1`; \
         remove the setting"
    );
}

#[test]
fn multi_host_dsns_pass_through() {
    let c = plain("postgresql://u@a:5000,b:5001/d?target_session_attrs=read-write");
    assert_eq!(describe(&c), "u@a:5000,b:5001/d");
    assert_eq!(
        c.get_target_session_attrs(),
        tokio_postgres::config::TargetSessionAttrs::ReadWrite
    );
}
