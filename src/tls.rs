//! TLS to the database: which connector sessions use, chosen from the DSN's `sslmode`
//! and the root certificate setting.
//!
//! With the `tls-rustls` feature, `prefer` and `require` behave as in libpq: without a
//! root certificate the connection is encrypted but the server is not authenticated;
//! with one, the server's certificate must chain to it and name the host connected to
//! (libpq's `verify-full`). Without the feature only plain connections exist, and a DSN
//! that demands TLS is a configuration error.

use std::fmt;
use std::path::{Path, PathBuf};

use tokio_postgres::config::SslMode;

use crate::settings::Lookup;
use crate::Error;

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

/// libpq's root certificate variable: used when no pglog setting names one.
const ENV_LIBPQ_ROOT_CERT: &str = "PGSSLROOTCERT";

/// A root certificate file and the setting that named it, for messages.
#[derive(Debug, Clone)]
pub(crate) struct RootCert {
    pub path: PathBuf,
    pub key: &'static str,
    /// Set by pglog's own settings rather than libpq's `PGSSLROOTCERT` convention. Only
    /// then does `sslmode=prefer` verify with it, and is a build without TLS told that it
    /// cannot honour it.
    pub explicit: bool,
}

/// The root certificate to use: the `root_cert` setting, else (when libpq's variables are
/// read, through `libpq_env`) `PGSSLROOTCERT`.
pub(crate) fn root_cert(setting: Option<&Path>, libpq_env: Option<Lookup<'_>>) -> Option<RootCert> {
    if let Some(path) = setting {
        return Some(RootCert {
            path: path.to_owned(),
            key: "root_cert",
            explicit: true,
        });
    }
    let path = libpq_env.and_then(|env| env(ENV_LIBPQ_ROOT_CERT))?;
    Some(RootCert {
        path: PathBuf::from(path),
        key: ENV_LIBPQ_ROOT_CERT,
        explicit: false,
    })
}

/// The transport `driver` (whose `sslmode` is final) needs.
///
/// # Errors
///
/// `sslmode=require`, or an explicit root certificate, in a build without TLS; a root
/// certificate file that cannot be read or holds no certificate.
#[cfg(not(feature = "tls-rustls"))]
pub(crate) fn transport(
    driver: &tokio_postgres::Config,
    root_cert: Option<RootCert>,
) -> Result<Transport, Error> {
    if driver.get_ssl_mode() == SslMode::Require {
        return Err(Error::config(
            "sslmode",
            "sslmode=require needs TLS, which this build of pglog lacks: enable pglog's \
             `tls-rustls` cargo feature, or use sslmode=prefer or disable",
        ));
    }
    if let Some(root) = root_cert.filter(|r| r.explicit) {
        return Err(Error::config(
            root.key,
            format!(
                "a root certificate ({}) needs TLS, which this build of pglog lacks: enable \
                 pglog's `tls-rustls` cargo feature, or remove the setting",
                root.path.display()
            ),
        ));
    }
    Ok(Transport::Plain)
}

/// The transport `driver` (whose `sslmode` is final) needs.
///
/// # Errors
///
/// A root certificate file that cannot be read or holds no certificate.
#[cfg(feature = "tls-rustls")]
pub(crate) fn transport(
    driver: &tokio_postgres::Config,
    root_cert: Option<RootCert>,
) -> Result<Transport, Error> {
    let mode = driver.get_ssl_mode();
    if mode == SslMode::Disable {
        return Ok(Transport::Plain);
    }
    // As in libpq, PGSSLROOTCERT makes `require` verify but leaves `prefer` opportunistic;
    // a root certificate given to pglog itself is always meant to be checked.
    let root_cert = root_cert.filter(|r| r.explicit || mode == SslMode::Require);
    let config = rustls_support::client_config(root_cert)?;
    Ok(Transport::Rustls(
        tokio_postgres_rustls::MakeRustlsConnect::new(config),
    ))
}

#[cfg(feature = "tls-rustls")]
mod rustls_support {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use super::RootCert;
    use crate::Error;

    pub(super) fn client_config(root_cert: Option<RootCert>) -> Result<ClientConfig, Error> {
        // An explicit provider: the process-wide default may be unset, or another
        // crate's choice.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("sslmode", format!("cannot set up TLS: {e}")))?;
        Ok(match root_cert {
            Some(root) => builder
                .with_root_certificates(roots(root)?)
                .with_no_client_auth(),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
        })
    }

    fn roots(root: RootCert) -> Result<RootCertStore, Error> {
        let fail = |why: String| {
            Error::config(
                root.key,
                format!(
                    "cannot use {} as root certificate: {why}; give a PEM file with the \
                     certificate of the authority that signed the server's certificate",
                    root.path.display()
                ),
            )
        };
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&root.path).map_err(|e| fail(e.to_string()))? {
            let cert = cert.map_err(|e| fail(e.to_string()))?;
            store.add(cert).map_err(|e| fail(e.to_string()))?;
        }
        if store.is_empty() {
            return Err(fail("it holds no certificate".to_owned()));
        }
        Ok(store)
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

    fn driver(dsn: &str) -> tokio_postgres::Config {
        dsn.parse().unwrap()
    }

    fn missing() -> RootCert {
        RootCert {
            path: PathBuf::from("/nonexistent/ca.pem"),
            key: "root_cert",
            explicit: true,
        }
    }

    #[test]
    fn the_setting_wins_over_pgsslrootcert_which_is_read_only_with_the_environment() {
        let env = |name: &str| (name == "PGSSLROOTCERT").then(|| "/libpq/ca.pem".to_owned());
        let chosen = root_cert(Some(Path::new("/mine.pem")), Some(&env)).unwrap();
        assert_eq!(
            (chosen.path.to_str(), chosen.explicit),
            (Some("/mine.pem"), true)
        );
        let chosen = root_cert(None, Some(&env)).unwrap();
        assert_eq!((chosen.key, chosen.explicit), ("PGSSLROOTCERT", false));
        assert!(root_cert(None, None).is_none());
    }

    #[test]
    fn disable_and_prefer_need_no_tls() {
        assert!(matches!(
            transport(&driver("host=h sslmode=disable"), None),
            Ok(Transport::Plain)
        ));
        assert!(transport(&driver("host=h"), None).is_ok());
    }

    #[cfg(not(feature = "tls-rustls"))]
    #[test]
    fn without_the_feature_tls_demands_name_the_feature() {
        let msg = transport(&driver("host=h sslmode=require"), None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid pglog setting `sslmode`") && msg.contains("`tls-rustls`"),
            "{msg}"
        );
        let msg = transport(&driver("host=h"), Some(missing()))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid pglog setting `root_cert`") && msg.contains("`tls-rustls`"),
            "{msg}"
        );
        // libpq's PGSSLROOTCERT is a convention, not a demand: a plain build ignores it.
        let implicit = RootCert {
            explicit: false,
            key: "PGSSLROOTCERT",
            ..missing()
        };
        assert!(transport(&driver("host=h"), Some(implicit)).is_ok());
    }

    #[cfg(feature = "tls-rustls")]
    #[test]
    fn with_the_feature_prefer_and_require_use_rustls() {
        for dsn in ["host=h", "host=h sslmode=require"] {
            assert!(matches!(
                transport(&driver(dsn), None),
                Ok(Transport::Rustls(_))
            ));
        }
        let msg = transport(&driver("host=h sslmode=require"), Some(missing()))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid pglog setting `root_cert`: cannot use /nonexistent/ca.pem"),
            "{msg}"
        );
        let dir = std::env::temp_dir().join(format!("pglog-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let root = RootCert {
            path: empty,
            ..missing()
        };
        let msg = transport(&driver("host=h"), Some(root))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("holds no certificate"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
