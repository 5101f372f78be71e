//! Servers with special authentication, for the configuration and authentication tests:
//! peer over the socket, scram-sha-256 and TLS over TCP; the roles, passwords and
//! certificates they take; scratch directories for the files a test writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use throwaway_pg::Server;

use crate::common::sql_literal;

/// Every character that means something in a URL or a libpq `key=value` string.
pub const NASTY: &str = r#"p@ss:w/rd %2F?#&'"x"#;

/// Roles of [`auth_server`]: `app` and `scram_role` log in with [`NASTY`] over TCP;
/// `app` and `peer_role` log in over the socket as the OS user running the tests.
pub const APP: &str = "app";
pub const PEER_ROLE: &str = "peer_role";
pub const SCRAM_ROLE: &str = "scram_role";
/// The role of [`tls_server`] that logs in with a client certificate (`cert` in
/// pg_hba.conf): the certificate's common name.
pub const CERT_ROLE: &str = "cert_role";

/// The test's own percent-encoding (independent of pglog's), for literal URL passwords.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The OS user this process runs as, the one peer authentication sees.
pub fn os_user() -> String {
    whoami::username().expect("the OS user name")
}

/// A server where the socket takes peer authentication (the OS user mapped to `app` and
/// `peer_role`) and TCP takes scram-sha-256 (except for `postgres`, whom the harness's
/// psql uses).
pub fn auth_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let me = os_user();
        let server = throwaway_pg::Builder::new()
            .hba_lines(&[
                "local all postgres trust",
                "local all all peer map=m",
                "host all postgres 127.0.0.1/32 trust",
                "host all all 127.0.0.1/32 scram-sha-256",
            ])
            .ident_lines(&[&format!("m {me} {APP}"), &format!("m {me} {PEER_ROLE}")])
            .start()
            .expect("start the authentication server");
        let password = sql_literal(NASTY);
        server
            .psql(
                "postgres",
                &format!(
                    "CREATE ROLE {APP} LOGIN PASSWORD {password};\n\
                     CREATE ROLE {SCRAM_ROLE} LOGIN PASSWORD {password};\n\
                     CREATE ROLE {PEER_ROLE} LOGIN;"
                ),
            )
            .expect("create roles");
        assert_eq!(
            server.psql("postgres", "SHOW password_encryption").unwrap(),
            "scram-sha-256"
        );
        server
    })
}

/// A server that takes TCP connections only over TLS, with a certificate for 127.0.0.1
/// signed by a test authority; [`CERT_ROLE`] logs in with a client certificate signed by
/// the same authority.
pub struct TlsServer {
    pub server: Server,
    /// The authority that signed the server's certificate.
    pub ca: PathBuf,
    /// An authority that did not.
    pub other_ca: PathBuf,
    /// [`CERT_ROLE`]'s certificate and key (mode 0600).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The TLS server, started on first use.
pub fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = throwaway_pg::Server::start().expect("start the TLS server");
        let data = server.data_dir();
        let (ca, ca_pem) = authority("pglog test CA");
        let (_, other_pem) = authority("some other CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca).unwrap();

        // The server reads these as its own OS user; the key must be private to it.
        for (name, contents, mode) in [
            ("server.crt", cert.pem(), 0o644),
            ("server.key", key.serialize_pem(), 0o600),
        ] {
            server.write_data_file(name, contents, mode).unwrap();
        }
        // The server checks client certificates against the same authority.
        server
            .write_data_file("root.crt", ca_pem.clone(), 0o644)
            .unwrap();
        let dir = scratch_dir("tls");
        let (ca_path, other_ca) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
        fs::write(&ca_path, ca_pem).unwrap();
        fs::write(&other_ca, other_pem).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, CERT_ROLE);
        let client = params.signed_by(&client_key, &ca).unwrap();
        let (client_cert, client_key_path) = (dir.join("client.crt"), dir.join("client.key"));
        fs::write(&client_cert, client.pem()).unwrap();
        fs::write(&client_key_path, client_key.serialize_pem()).unwrap();
        fs::set_permissions(
            &client_key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();

        server
            .psql(
                "postgres",
                &format!(
                    "ALTER SYSTEM SET ssl_cert_file = {};\n\
                     ALTER SYSTEM SET ssl_key_file = {};\n\
                     ALTER SYSTEM SET ssl_ca_file = {};\n\
                     ALTER SYSTEM SET ssl = on;\n\
                     CREATE ROLE {SCRAM_ROLE} LOGIN PASSWORD {};\n\
                     CREATE ROLE {CERT_ROLE} LOGIN;",
                    sql_literal(&data.join("server.crt").to_string_lossy()),
                    sql_literal(&data.join("server.key").to_string_lossy()),
                    sql_literal(&data.join("root.crt").to_string_lossy()),
                    sql_literal(NASTY),
                ),
            )
            .expect("configure TLS");
        server
            .replace_hba(&[
                "local all all trust",
                &format!("hostssl all {SCRAM_ROLE} 127.0.0.1/32 scram-sha-256"),
                &format!("hostssl all {CERT_ROLE} 127.0.0.1/32 cert"),
                "hostssl all all 127.0.0.1/32 trust",
                // Proves that what connects over TCP used TLS.
                "hostnossl all all 127.0.0.1/32 reject",
            ])
            .unwrap();
        server.restart().expect("restart with TLS on");
        assert_eq!(server.psql("postgres", "SHOW ssl").unwrap(), "on");
        TlsServer {
            server,
            ca: ca_path,
            other_ca,
            client_cert,
            client_key: client_key_path,
        }
    })
}

/// A new certificate authority: its issuer and its certificate (PEM).
fn authority(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (rcgen::Issuer::new(params, key), cert.pem())
}

/// A fresh directory under cargo's scratch directory for integration tests.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    use crate::common::unique;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(&format!("pglog-{prefix}")));
    fs::create_dir_all(&dir).unwrap();
    dir
}
