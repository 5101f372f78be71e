//! Every way in: trust and peer over the Unix socket (in stogger's DSN form), scram-sha-256
//! over TCP, TLS (with the `tls-rustls` feature), and multi-host DSNs, each against a real
//! server configured for it. The builders here are made with `Builder::new`, which reads
//! nothing from the environment.

mod common;

use common::*;

/// Logs three events through a logger built from `builder`, and returns the guard's
/// count of stored events and whatever `during` saw while the logger was live.
fn log_three<T>(builder: pglog::Builder, during: impl FnOnce() -> T) -> (u64, T) {
    open_levels();
    let (logger, guard) = builder.build().expect("build");
    log::info!(logger: &logger, step = 1; "first");
    log::warn!(logger: &logger, step = 2; "second");
    log::error!(logger: &logger, step = 3; "third");
    let seen = during();
    (guard.stats().written, seen)
}

fn startup_error(builder: pglog::Builder) -> String {
    match builder.require_database(true).build() {
        Err(e @ pglog::Error::DatabaseUnavailable(_)) => e.to_string(),
        Err(other) => panic!("expected an unusable database, got: {other}"),
        Ok(_) => panic!("expected an unusable database, but it worked"),
    }
}

/// `postgresql://user:@/db?host=<dir>&port=<port>`: stogger's documented socket form.
fn socket_url(server: &throwaway_pg::Server, user: &str, db: &str) -> String {
    format!(
        "postgresql://{user}:@/{db}?host={}&port={}",
        server.socket_dir().display(),
        server.port()
    )
}

#[test]
fn trust_over_the_socket_in_stoggers_form() {
    let server = server();
    let db = database(server, "trust", "postgres");
    let builder = pglog::Builder::new()
        .dsn(socket_url(server, "postgres", &db))
        .table("trust_logs");
    let (written, over_socket) = log_three(builder, || {
        server
            .psql(
                &db,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = {} \
                     AND client_addr IS NULL AND backend_type = 'client backend' \
                     AND datname = current_database()",
                    pglog_sessions()
                ),
            )
            .unwrap()
    });
    assert_eq!(written, 3);
    assert_ne!(over_socket, "0", "pglog's sessions use the Unix socket");
    assert_eq!(
        events(&server.dsn(&db), "trust_logs"),
        ["first", "second", "third"]
    );
}

#[test]
fn peer_maps_the_os_user_to_a_role() {
    let server = auth_server();
    let db = database(server, "peer", PEER_ROLE);
    let builder = pglog::Builder::new()
        .dsn(socket_url(server, PEER_ROLE, &db))
        .table("peer_logs");
    let (written, role) = log_three(builder, || {
        server
            .psql(
                &db,
                &format!(
                    "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = {} \
                     AND datname = current_database()",
                    pglog_sessions()
                ),
            )
            .unwrap()
    });
    assert_eq!(written, 3);
    assert_eq!(role, PEER_ROLE);
    assert_eq!(
        events(&server.dsn(&db), "peer_logs"),
        ["first", "second", "third"]
    );

    // Peer is really in force: the OS user is not mapped to scram_role.
    let why = startup_error(pglog::Builder::new().dsn(socket_url(server, SCRAM_ROLE, &db)));
    assert!(why.contains("Peer authentication failed"), "{why}");
}

#[test]
fn scram_with_a_password_full_of_special_characters() {
    let server = auth_server();
    let db = database(server, "scram", SCRAM_ROLE);
    let url = format!(
        "postgresql://{SCRAM_ROLE}:{}@127.0.0.1:{}/{db}",
        percent_encode(NASTY),
        server.port()
    );
    let key_value = format!(
        "host=127.0.0.1 port={} user={SCRAM_ROLE} dbname={db} password='{}'",
        server.port(),
        NASTY.replace('\\', r"\\").replace('\'', r"\'")
    );
    for (dsn, table) in [(url, "url_logs"), (key_value, "kv_logs")] {
        let (written, ()) = log_three(pglog::Builder::new().dsn(dsn).table(table), || ());
        assert_eq!(written, 3, "{table}");
        assert_eq!(
            events(&server.dsn(&db), table),
            ["first", "second", "third"]
        );
    }

    let wrong = format!(
        "postgresql://{SCRAM_ROLE}:wrong@127.0.0.1:{}/{db}",
        server.port()
    );
    let why = startup_error(pglog::Builder::new().dsn(wrong));
    assert!(why.contains("password authentication failed"), "{why}");
    assert!(!why.contains("wrong@"), "{why}");
}

/// A role whose password is only in a password file (named by the DSN's `passfile`):
/// rows land; the password is changed on the server and in the file while the logger
/// runs, its sessions are terminated, and rows land again once it reconnects.
#[test]
fn a_password_file_is_read_again_at_each_reconnect() {
    let server = auth_server();
    let role = unique("rotating");
    server
        .psql(
            "postgres",
            &format!(
                "CREATE ROLE {role} LOGIN PASSWORD {}",
                sql_literal("first pw")
            ),
        )
        .unwrap();
    let db = database(server, "passfile", &role);
    let passfile = scratch_dir("passfile").join("pgpass");
    let write = |password: &str| {
        std::fs::write(
            &passfile,
            format!(
                "# pglog test\n127.0.0.1:{}:*:{role}:{password}\n",
                server.port()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &passfile,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    };
    write("first pw");
    open_levels();
    let (logger, guard) = pglog::Builder::new()
        .dsn(format!(
            "host=127.0.0.1 port={} user={role} dbname={db} passfile='{}'",
            server.port(),
            passfile.display()
        ))
        .table("rotated_logs")
        .require_database(true)
        .build()
        .expect("build");
    for i in 0..3 {
        log::info!(logger: &logger, i; "before");
    }
    assert_eq!(guard.stats().written, 3);
    server
        .psql(
            "postgres",
            &format!(
                "ALTER ROLE {role} PASSWORD {};\n\
                 SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {};",
                sql_literal("second pw"),
                sql_literal(&role)
            ),
        )
        .unwrap();
    write("second pw");
    for i in 0..3 {
        log::info!(logger: &logger, i; "after");
    }
    let stats = guard.stats();
    let stored = events(&server.dsn(&db), "rotated_logs");
    assert_eq!(
        stats.written + stats.fallback + stats.uncertain,
        6,
        "{stats:?}"
    );
    assert_eq!(stored.iter().filter(|e| *e == "before").count(), 3);
    println!("    after the rotation: {stats:?}");
    assert!(
        stored.iter().filter(|e| *e == "after").count() >= 2,
        "{stored:?} {stats:?}"
    );
    assert_eq!(stored.len() as u64, stats.written, "{stats:?}");
}

#[test]
fn multi_host_dsn_skips_a_closed_port() {
    let server = server();
    let db = database(server, "multihost", "postgres");
    let closed = {
        // Bound then released: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!(
        "postgresql://postgres@127.0.0.1:{closed},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        server.port()
    );
    let key_value = format!(
        "host=127.0.0.1,127.0.0.1 port={closed},{} user=postgres dbname={db} target_session_attrs=read-write",
        server.port()
    );
    for (dsn, table) in [(url, "url_logs"), (key_value, "kv_logs")] {
        let (written, ()) = log_three(
            pglog::Builder::new()
                .dsn(dsn)
                .table(table)
                .require_database(true),
            || (),
        );
        assert_eq!(written, 3, "{table}");
        assert_eq!(
            events(&server.dsn(&db), table),
            ["first", "second", "third"]
        );
    }
}

#[test]
fn read_write_skips_a_read_only_server() {
    let read_only = throwaway_pg::Builder::new()
        .setting("default_transaction_read_only", "on")
        .start()
        .expect("start a read-only server");
    let server = server();
    let db = database(server, "readwrite", "postgres");
    read_only
        .psql(
            "postgres",
            &format!("SET default_transaction_read_only = off;\nCREATE DATABASE \"{db}\";"),
        )
        .unwrap();
    let dsn = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        read_only.port(),
        server.port()
    );
    let (written, ()) = log_three(
        pglog::Builder::new()
            .dsn(dsn)
            .table("rw_logs")
            .require_database(true),
        || (),
    );
    assert_eq!(written, 3);
    assert_eq!(events(&server.dsn(&db), "rw_logs").len(), 3);
    assert!(!table_exists(&read_only.dsn(&db), "rw_logs"));
}

#[cfg(not(feature = "tls-rustls"))]
#[test]
fn without_tls_sslmode_require_names_the_feature() {
    let err = pglog::Builder::new()
        .dsn(format!(
            "host=127.0.0.1 port={} user=postgres sslmode=require",
            server().port()
        ))
        .build()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid pglog setting `sslmode`")
            && err.contains("`tls-rustls` cargo feature"),
        "{err}"
    );
}

#[cfg(feature = "tls-rustls")]
mod tls {
    use super::*;

    fn tcp(db: &str, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} {extra}",
            tls_server().server.port()
        )
    }

    /// A database on the TLS server, and a DSN over its socket to read rows back.
    fn db(prefix: &str) -> (String, String) {
        let server = &tls_server().server;
        let db = database(server, prefix, "postgres");
        let local = server.socket_dsn(&db);
        (db, local)
    }

    /// Whether pglog's sessions to `db` use TLS (tests run in parallel on one server:
    /// only this test's database counts).
    fn ssl_sessions(db: &str) -> String {
        tls_server()
            .server
            .psql(
                db,
                &format!(
                    "SELECT string_agg(DISTINCT s.ssl::text, ',') FROM pg_stat_ssl s \
                     JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = {} AND a.datname = current_database()",
                    pglog_sessions()
                ),
            )
            .unwrap()
    }

    #[test]
    fn require_with_the_root_cert_verifies_and_encrypts() {
        let (db, local) = db("tls_verify");
        let builder = pglog::Builder::new()
            .dsn(tcp(&db, "sslmode=require"))
            .root_cert(&tls_server().ca)
            .table("tls_logs");
        let (written, ssl) = log_three(builder, || ssl_sessions(&db));
        assert_eq!(written, 3);
        assert_eq!(ssl, "true");
        assert_eq!(events(&local, "tls_logs"), ["first", "second", "third"]);
    }

    #[test]
    fn prefer_and_require_without_a_root_cert_encrypt() {
        for mode in ["", "sslmode=prefer", "sslmode=require"] {
            let (db, local) = db("tls_encrypt");
            let builder = pglog::Builder::new().dsn(tcp(&db, mode)).table("tls_logs");
            let (written, ssl) = log_three(builder, || ssl_sessions(&db));
            assert_eq!(written, 3, "{mode}");
            assert_eq!(ssl, "true", "{mode}");
            assert_eq!(events(&local, "tls_logs").len(), 3, "{mode}");
        }
    }

    #[test]
    fn a_certificate_from_another_authority_is_refused() {
        let (db, _) = db("tls_wrong_ca");
        for mode in ["sslmode=require", "sslmode=prefer"] {
            let why = startup_error(
                pglog::Builder::new()
                    .dsn(tcp(&db, mode))
                    .root_cert(&tls_server().other_ca),
            );
            assert!(why.contains("certificate"), "{mode}: {why}");
        }
    }

    #[test]
    fn the_certificate_must_name_the_host() {
        let (db, _) = db("tls_host");
        let dsn = format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname={db} sslmode=require",
            tls_server().server.port()
        );
        let why = startup_error(pglog::Builder::new().dsn(dsn).root_cert(&tls_server().ca));
        assert!(why.contains("certificate"), "{why}");
    }

    #[test]
    fn disable_is_honoured() {
        let (db, _) = db("tls_disable");
        let why = startup_error(pglog::Builder::new().dsn(tcp(&db, "sslmode=disable")));
        assert!(why.contains("no encryption"), "{why}");
    }

    #[test]
    fn scram_with_channel_binding_over_tls() {
        let server = &tls_server().server;
        let db = database(server, "tls_scram", SCRAM_ROLE);
        let dsn = format!(
            "postgresql://{SCRAM_ROLE}:{}@127.0.0.1:{}/{db}?sslmode=require&channel_binding=require",
            percent_encode(NASTY),
            server.port()
        );
        let builder = pglog::Builder::new()
            .dsn(dsn)
            .root_cert(&tls_server().ca)
            .table("scram_tls_logs");
        let (written, ssl) = log_three(builder, || ssl_sessions(&db));
        assert_eq!(written, 3);
        assert_eq!(ssl, "true");
        assert_eq!(
            events(&server.socket_dsn(&db), "scram_tls_logs"),
            ["first", "second", "third"]
        );
    }

    #[test]
    fn unix_sockets_skip_tls_even_when_required() {
        let server = &tls_server().server;
        let db = database(server, "tls_socket", "postgres");
        let dsn = format!(
            "postgresql://postgres:@/{db}?host={}&port={}&sslmode=require",
            server.socket_dir().display(),
            server.port()
        );
        let (written, ()) = log_three(
            pglog::Builder::new()
                .dsn(dsn)
                .table("socket_logs")
                .require_database(true),
            || (),
        );
        assert_eq!(written, 3);
    }

    // --- libpq's verification modes and client certificates -------------------------

    /// The server's certificate names 127.0.0.1; this DSN connects there as `localhost`.
    fn other_name(db: &str, extra: &str) -> String {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname={db} {extra}",
            tls_server().server.port()
        )
    }

    fn rootcert(ca: &std::path::Path) -> String {
        format!("sslrootcert='{}'", ca.display())
    }

    #[test]
    fn verify_full_with_the_right_host_connects() {
        let (db, local) = db("verify_full");
        let builder = pglog::Builder::new()
            .dsn(tcp(
                &db,
                &format!("sslmode=verify-full {}", rootcert(&tls_server().ca)),
            ))
            .table("vf_logs");
        let (written, ssl) = log_three(builder, || ssl_sessions(&db));
        assert_eq!((written, ssl.as_str()), (3, "true"));
        assert_eq!(events(&local, "vf_logs"), ["first", "second", "third"]);
    }

    #[test]
    fn verify_full_refuses_another_host_or_authority_and_says_how_it_checked() {
        let (db, _) = db("verify_full_bad");
        let ca = rootcert(&tls_server().ca);
        let other = rootcert(&tls_server().other_ca);
        for dsn in [
            other_name(&db, &format!("sslmode=verify-full {ca}")),
            tcp(&db, &format!("sslmode=verify-full {other}")),
        ] {
            let why = startup_error(pglog::Builder::new().dsn(&dsn));
            assert!(
                why.contains("certificate")
                    && why.contains("sslmode=verify-full with sslrootcert="),
                "{dsn}: {why}"
            );
        }
        // Without a root certificate anywhere, verify-full is a configuration error.
        let err = pglog::Builder::new()
            .dsn(tcp(&db, "sslmode=verify-full"))
            .build()
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid pglog setting `sslmode`: sslmode=verify-full needs a root certificate"
            ),
            "{err}"
        );
    }

    #[test]
    fn verify_ca_takes_another_host_name_but_not_another_authority() {
        let (db, local) = db("verify_ca");
        let builder = pglog::Builder::new()
            .dsn(other_name(
                &db,
                &format!("sslmode=verify-ca {}", rootcert(&tls_server().ca)),
            ))
            .table("vca_logs");
        let (written, ssl) = log_three(builder, || ssl_sessions(&db));
        assert_eq!((written, ssl.as_str()), (3, "true"));
        assert_eq!(events(&local, "vca_logs").len(), 3);
        let why = startup_error(pglog::Builder::new().dsn(other_name(
            &db,
            &format!("sslmode=verify-ca {}", rootcert(&tls_server().other_ca)),
        )));
        assert!(why.contains("sslmode=verify-ca with sslrootcert="), "{why}");
    }

    #[test]
    fn the_system_roots_do_not_trust_a_private_authority() {
        let (db, _) = db("tls_system");
        let why = startup_error(
            pglog::Builder::new().dsn(tcp(&db, "sslmode=verify-full sslrootcert=system")),
        );
        assert!(
            why.contains("certificate") && why.contains("the system's trusted roots"),
            "{why}"
        );
    }

    #[test]
    fn client_certificate_authentication() {
        let tls = tls_server();
        let db = database(&tls.server, "tls_cert", CERT_ROLE);
        let local = tls.server.socket_dsn(&db);
        let dsn = format!(
            "postgresql://{CERT_ROLE}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            tls.server.port(),
            percent_encode(&tls.ca.to_string_lossy()),
            percent_encode(&tls.client_cert.to_string_lossy()),
            percent_encode(&tls.client_key.to_string_lossy()),
        );
        let (written, ()) = log_three(
            pglog::Builder::new()
                .dsn(&dsn)
                .table("cert_logs")
                .require_database(true),
            || (),
        );
        assert_eq!(written, 3);
        assert_eq!(events(&local, "cert_logs"), ["first", "second", "third"]);
        // Without the certificate the server refuses the role.
        let why = startup_error(pglog::Builder::new().dsn(format!(
            "host=127.0.0.1 port={} user={CERT_ROLE} dbname={db} sslmode=require",
            tls.server.port()
        )));
        assert!(why.contains("sslcert and sslkey"), "{why}");
        // A key others may read is refused before any connection, as libpq does.
        let open_key = scratch_dir("open-key").join("client.key");
        std::fs::copy(&tls.client_key, &open_key).unwrap();
        std::fs::set_permissions(
            &open_key,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let err = pglog::Builder::new()
            .dsn(format!(
                "host=127.0.0.1 port={} user={CERT_ROLE} dbname={db} sslcert='{}' sslkey='{}'",
                tls.server.port(),
                tls.client_cert.display(),
                open_key.display()
            ))
            .build()
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid pglog setting `sslkey`") && err.contains("others may read it"),
            "{err}"
        );
    }
}
