//! TLS to the database, as libpq's `sslmode` and certificate parameters ask.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | |
//! | `allow`, `prefer` | when the server offers it | not checked (checked against pglog's own `root_cert`) |
//! | `require` | always | not checked; with a root certificate, it must chain to it (libpq's rule) |
//! | `verify-ca` | always | must chain to the root certificate |
//! | `verify-full` | always | must chain to the root certificate and name the host |
//!
//! Root certificates come from `sslrootcert` (a file, or `system` for the platform's
//! trusted roots, which libpq allows only with `verify-full`), `PGSSLROOTCERT`, or
//! `~/.postgresql/root.crt` when it exists; pglog's `root_cert` setting wins over all of
//! them and is always checked with the host name, whatever the mode. A client certificate
//! (`sslcert`/`sslkey`, `PGSSLCERT`/`PGSSLKEY`, `~/.postgresql/postgresql.crt`/`.key`) is
//! sent when its file exists, for `cert` authentication.
//!
//! TLS needs the `tls-rustls` feature; without it only plain connections exist, and a
//! DSN that demands TLS is a configuration error.

use std::fmt;
use std::path::PathBuf;

use tokio_postgres::config::SslMode;

use crate::Error;

/// libpq's `sslmode`, all six.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        Some(match text {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Allow => "allow",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told: whether TLS is tried and whether it is a must. `allow`
    /// (plain first, TLS if refused) is tried TLS first, as `prefer`: either way a server
    /// that takes one of them is reached.
    pub fn driver(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Allow | Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// A value and the parameter (or file convention) that gave it, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named<T> {
    pub value: T,
    pub by: &'static str,
}

/// Where the trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`).
    System,
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::File(path) => write!(f, "{}", path.display()),
            Roots::System => f.write_str("the system's trusted roots"),
        }
    }
}

/// What the DSN, libpq's variables and pglog's settings ask of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub mode: Mode,
    pub roots: Option<Named<Roots>>,
    /// The roots are pglog's own `root_cert` setting: always checked, with the host name.
    pub pglog_root: bool,
    /// A client certificate and its key, for `cert` authentication.
    pub client: Option<(Named<PathBuf>, Named<PathBuf>)>,
}

/// What the server's certificate must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing: the connection is encrypted, the server not authenticated.
    Nothing,
    /// A chain to the roots (`verify-ca`).
    Chain,
    /// A chain to the roots, naming the host connected to (`verify-full`).
    ChainAndName,
}

impl Wanted {
    /// The plain `sslmode=prefer` of a DSN that says nothing about TLS.
    #[cfg(test)]
    pub fn prefer() -> Wanted {
        Wanted {
            mode: Mode::Prefer,
            roots: None,
            pglog_root: false,
            client: None,
        }
    }

    fn check(&self) -> Result<Check, Error> {
        let check = match (self.mode, &self.roots) {
            (Mode::Disable, _) => Check::Nothing,
            (_, Some(_)) if self.pglog_root => Check::ChainAndName,
            (Mode::Allow | Mode::Prefer, _) => Check::Nothing,
            (Mode::Require, None) => Check::Nothing,
            (Mode::Require | Mode::VerifyCa, Some(_)) => Check::Chain,
            (Mode::VerifyFull, Some(_)) => Check::ChainAndName,
            (Mode::VerifyCa | Mode::VerifyFull, None) => {
                return Err(Error::config(
                    "sslmode",
                    format!(
                        "sslmode={} needs a root certificate to check the server's against: set \
                         sslrootcert in the DSN (a PEM file, or `system` for the platform's \
                         trusted roots), PGSSLROOTCERT, or pglog's root_cert; \
                         ~/.postgresql/root.crt does not exist either",
                        self.mode.name()
                    ),
                ))
            }
        };
        if let Some(Named {
            value: Roots::System,
            by,
        }) = &self.roots
        {
            // libpq's rule: the platform's roots trust any public certificate authority,
            // so only a certificate that also names the host proves anything.
            if check != Check::ChainAndName {
                return Err(Error::config(
                    by,
                    format!(
                        "the system's trusted roots need sslmode=verify-full (not {})",
                        self.mode.name()
                    ),
                ));
            }
        }
        Ok(check)
    }

    /// For messages about a refused certificate: how it was checked, against what.
    pub fn describe(&self) -> String {
        match &self.roots {
            Some(Named { value, by }) => {
                format!("sslmode={} with {by}={value}", self.mode.name())
            }
            None => format!("sslmode={}", self.mode.name()),
        }
    }
}

/// How sessions reach the server.
#[derive(Clone)]
pub(crate) enum Transport {
    Plain,
    #[cfg(feature = "tls-rustls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Plain => f.write_str("Plain"),
            #[cfg(feature = "tls-rustls")]
            Transport::Rustls(_) => f.write_str("Rustls"),
        }
    }
}

/// The transport `wanted` needs.
///
/// # Errors
///
/// A mode the certificates given cannot serve; TLS demanded (a mode from `require` on,
/// pglog's `root_cert`) in a build without TLS.
#[cfg(not(feature = "tls-rustls"))]
pub(crate) fn transport(wanted: &Wanted) -> Result<Transport, Error> {
    // What the DSN asks must make sense whatever the build can do.
    wanted.check()?;
    let lacking = |key: &'static str, what: String| {
        Error::config(
            key,
            format!(
                "{what} needs TLS, which this build of pglog lacks: enable pglog's \
                 `tls-rustls` cargo feature, or remove the setting"
            ),
        )
    };
    if wanted.mode.driver() == SslMode::Require {
        return Err(lacking(
            "sslmode",
            format!("sslmode={}", wanted.mode.name()),
        ));
    }
    match &wanted.roots {
        Some(root) if wanted.pglog_root => Err(lacking(
            root.by,
            format!("a root certificate ({})", root.value),
        )),
        _ => Ok(Transport::Plain),
    }
}

/// The transport `wanted` needs.
///
/// # Errors
///
/// A mode the certificates given cannot serve; a root certificate, client certificate or
/// key that cannot be read, holds nothing usable, or (the key) is readable by others.
#[cfg(feature = "tls-rustls")]
pub(crate) fn transport(wanted: &Wanted) -> Result<Transport, Error> {
    if wanted.mode == Mode::Disable {
        return Ok(Transport::Plain);
    }
    let config = rustls_support::client_config(wanted, wanted.check()?)?;
    Ok(Transport::Rustls(
        tokio_postgres_rustls::MakeRustlsConnect::new(config),
    ))
}

/// Whether the key file is private enough, as libpq demands: no access for others, and
/// none for the group unless root owns it (read-only then, for a group of services).
#[cfg_attr(not(feature = "tls-rustls"), allow(dead_code))]
fn private_enough(mode: u32, owner_is_root: bool) -> bool {
    let allowed = if owner_is_root { 0o640 } else { 0o600 };
    mode & 0o777 & !allowed == 0
}

#[cfg(feature = "tls-rustls")]
mod rustls_support {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };

    use super::{private_enough, Check, Named, Roots, Wanted};
    use crate::libpq::{read_regular, SMALL_FILE_LIMIT};
    use crate::Error;

    pub(super) fn client_config(wanted: &Wanted, check: Check) -> Result<ClientConfig, Error> {
        // An explicit provider: the process-wide default may be unset, or another
        // crate's choice.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("sslmode", format!("cannot set up TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (check, &wanted.roots) {
            (Check::Chain | Check::ChainAndName, Some(roots)) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(store(roots)?),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| Error::config(roots.by, format!("cannot use {}: {e}", roots.value)))?;
                if check == Check::Chain {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
            _ => Arc::new(EncryptOnly(provider)),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &wanted.client {
            Some((cert, key)) => {
                let chain = certificates(&cert.value).map_err(|why| {
                    Error::config(
                        cert.by,
                        format!(
                            "cannot use {} as client certificate: {why}",
                            cert.value.display()
                        ),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, private_key(key)?)
                    .map_err(|e| {
                        Error::config(
                            key.by,
                            format!(
                                "the key {} does not fit the client certificate: {e}",
                                key.value.display()
                            ),
                        )
                    })
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }

    fn store(roots: &Named<Roots>) -> Result<RootCertStore, Error> {
        let mut store = RootCertStore::empty();
        match &roots.value {
            Roots::File(path) => {
                let fail = |why: String| {
                    Error::config(
                        roots.by,
                        format!(
                            "cannot use {} as root certificate: {why}; give a PEM file with the \
                             certificate of the authority that signed the server's certificate",
                            path.display()
                        ),
                    )
                };
                for cert in certificates(path).map_err(fail)? {
                    store.add(cert).map_err(|e| fail(e.to_string()))?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::config(
                        roots.by,
                        "found no trusted root certificate on this system (looked where \
                         OpenSSL looks: SSL_CERT_FILE, SSL_CERT_DIR, the distribution's bundle)",
                    ));
                }
            }
        }
        Ok(store)
    }

    /// Every certificate in a PEM file; at least one.
    fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read_regular(path, SMALL_FILE_LIMIT).map_err(|e| e.to_string())?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if certs.is_empty() {
            return Err("it holds no certificate".to_owned());
        }
        Ok(certs)
    }

    fn private_key(key: &Named<std::path::PathBuf>) -> Result<PrivateKeyDer<'static>, Error> {
        let path = &key.value;
        let fail = |why: String| {
            Error::config(
                key.by,
                format!("cannot use {} as private key: {why}", path.display()),
            )
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if !private_enough(meta.mode(), meta.uid() == 0) {
            return Err(fail(
                "its group or others may read it; allow only its owner (chmod 600), or \
                 root and its group (chmod 640, owned by root), as libpq does"
                    .to_owned(),
            ));
        }
        let pem = read_regular(path, SMALL_FILE_LIMIT).map_err(|e| fail(e.to_string()))?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            fail(format!(
                "{e} (an encrypted key, which would need sslpassword, is not supported: \
                 decrypt it with `openssl pkey`)"
            ))
        })
    }

    /// libpq's `verify-ca`: the chain must lead to a trusted root; the name in the
    /// certificate may be any.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// libpq's `sslmode=prefer`/`require` without a root certificate: encrypt, check the
    /// handshake's signatures, but do not authenticate the server's certificate.
    #[derive(Debug)]
    struct EncryptOnly(Arc<CryptoProvider>);

    impl ServerCertVerifier for EncryptOnly {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(mode: Mode, roots: Option<Roots>, pglog_root: bool) -> Wanted {
        Wanted {
            mode,
            roots: roots.map(|value| Named {
                value,
                by: if pglog_root {
                    "root_cert"
                } else {
                    "sslrootcert"
                },
            }),
            pglog_root,
            client: None,
        }
    }

    fn file() -> Option<Roots> {
        Some(Roots::File(PathBuf::from("/ca.pem")))
    }

    #[test]
    fn modes_parse_as_libpq_spells_them() {
        for name in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(Mode::parse(name).map(Mode::name), Some(name));
        }
        assert_eq!(Mode::parse("verify_full"), None);
        assert_eq!(Mode::VerifyCa.driver(), SslMode::Require);
        assert_eq!(Mode::Allow.driver(), SslMode::Prefer);
    }

    #[test]
    fn each_mode_checks_what_libpq_checks() {
        let check = |mode, roots, pglog| wanted(mode, roots, pglog).check().unwrap();
        assert_eq!(check(Mode::Prefer, file(), false), Check::Nothing);
        assert_eq!(check(Mode::Prefer, file(), true), Check::ChainAndName);
        assert_eq!(check(Mode::Require, None, false), Check::Nothing);
        assert_eq!(check(Mode::Require, file(), false), Check::Chain);
        assert_eq!(check(Mode::Require, file(), true), Check::ChainAndName);
        assert_eq!(check(Mode::VerifyCa, file(), false), Check::Chain);
        assert_eq!(check(Mode::VerifyFull, file(), false), Check::ChainAndName);
        assert_eq!(
            check(Mode::VerifyFull, Some(Roots::System), false),
            Check::ChainAndName
        );
    }

    #[test]
    fn impossible_checks_name_what_to_change() {
        let msg = wanted(Mode::VerifyFull, None, false)
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "invalid pglog setting `sslmode`: sslmode=verify-full needs a root certificate"
            ),
            "{msg}"
        );
        let msg = wanted(Mode::Require, Some(Roots::System), false)
            .check()
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid pglog setting `sslrootcert`: the system's trusted roots need \
             sslmode=verify-full (not require)"
        );
    }

    #[test]
    fn a_key_must_be_private_as_libpq_demands() {
        assert!(private_enough(0o600, false));
        assert!(private_enough(0o400, false));
        assert!(!private_enough(0o640, false));
        assert!(private_enough(0o640, true));
        assert!(!private_enough(0o644, true));
        assert!(!private_enough(0o604, false));
    }

    #[cfg(not(feature = "tls-rustls"))]
    #[test]
    fn without_the_feature_tls_demands_name_the_feature() {
        assert!(matches!(transport(&Wanted::prefer()), Ok(Transport::Plain)));
        let msg = transport(&wanted(Mode::VerifyFull, file(), false))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid pglog setting `sslmode`: sslmode=verify-full needs TLS")
                && msg.contains("`tls-rustls`"),
            "{msg}"
        );
        let msg = transport(&wanted(Mode::Prefer, file(), true))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid pglog setting `root_cert`") && msg.contains("`tls-rustls`"),
            "{msg}"
        );
        // libpq's conventions are not demands: a plain build ignores them under prefer.
        assert!(transport(&wanted(Mode::Prefer, file(), false)).is_ok());
    }

    #[cfg(feature = "tls-rustls")]
    #[test]
    fn with_the_feature_files_are_checked_at_start() {
        assert!(matches!(
            transport(&Wanted::prefer()),
            Ok(Transport::Rustls(_))
        ));
        assert!(matches!(
            transport(&wanted(Mode::Disable, file(), true)),
            Ok(Transport::Plain)
        ));
        let missing = wanted(
            Mode::Require,
            Some(Roots::File(PathBuf::from("/nonexistent/ca.pem"))),
            true,
        );
        let msg = transport(&missing).unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid pglog setting `root_cert`: cannot use /nonexistent/ca.pem"),
            "{msg}"
        );
        let dir = std::env::temp_dir().join(format!("pglog-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let msg = transport(&wanted(Mode::VerifyCa, Some(Roots::File(empty)), false))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("holds no certificate"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
