//! TLS set-up from `--tls-cert`, `--tls-key` and `--tls-client-ca`: each file is read
//! and parsed on its own first, so an error names the flag whose file is wrong
//! (tonic's own error is only "transport error", and rustls' does not say which file).

use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::{config::Config, error::Error};

/// The server's TLS configuration, or `None` without `--tls-cert`/`--tls-key`.
pub fn server_config(config: &Config) -> Result<Option<ServerTlsConfig>, Error> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert_pem = certificates("--tls-cert", cert)?;
    let key_pem = private_key("--tls-key", key)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(certificates("--tls-client-ca", ca)?));
    }
    // What is left to find wrong is how the files go together (a key that is not the
    // certificate's, an unsupported algorithm): rustls checks that now, before the
    // store is opened.
    Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| Error::invalid("--tls-cert/--tls-key", with_causes(&e)))?;
    Ok(Some(tls))
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::invalid(flag, format!("{}: {e}", path.display())))
}

/// The file's bytes, once they are known to hold at least one PEM certificate.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    let pem = read(flag, path)?;
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            Error::invalid(
                flag,
                format!("{}: not a valid PEM certificate: {e}", path.display()),
            )
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(Error::invalid(
            flag,
            format!(
                "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(pem)
}

/// The file's bytes, once they are known to hold an unencrypted PEM private key.
fn private_key(flag: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    let pem = read(flag, path)?;
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(Error::invalid(
            flag,
            format!(
                "{}: the key is encrypted; cbd needs it unencrypted (openssl pkey -in KEY -out KEY.plain)",
                path.display()
            ),
        ));
    }
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(Error::invalid(
            flag,
            format!(
                "{}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                path.display()
            ),
        )),
        Err(e) => Err(Error::invalid(
            flag,
            format!("{}: not a valid PEM private key: {e}", path.display()),
        )),
    }
}

/// An error with its chain of causes, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
            std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
            std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write");
            Self { dir }
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }

        fn config(&self, cert: &str, key: &str, ca: Option<&str>) -> Config {
            Config {
                tls_cert: Some(self.path(cert)),
                tls_key: Some(self.path(key)),
                tls_client_ca: ca.map(|c| self.path(c)),
                ..Config::default()
            }
        }

        fn write(&self, name: &str, contents: &str) {
            std::fs::write(self.path(name), contents).expect("write");
        }
    }

    fn field_of(config: &Config) -> String {
        match server_config(config) {
            Err(Error::InvalidArgument { field, reason }) => {
                assert!(!reason.is_empty());
                field
            }
            other => panic!("expected an invalid TLS flag, got {other:?}"),
        }
    }

    #[test]
    fn good_files_make_a_config() {
        let f = Files::new();
        assert!(
            server_config(&f.config("cert.pem", "key.pem", Some("ca.pem")))
                .expect("valid")
                .is_some()
        );
    }

    #[test]
    fn each_bad_file_is_blamed_on_its_own_flag() {
        let f = Files::new();
        f.write("empty", "");
        f.write("garbage", "not a pem file at all\n");
        f.write(
            "encrypted.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        for bad in ["empty", "garbage", "encrypted.pem", "missing"] {
            assert_eq!(
                field_of(&f.config("cert.pem", bad, None)),
                "--tls-key",
                "{bad}"
            );
        }
        for bad in ["empty", "garbage", "key.pem", "missing"] {
            assert_eq!(
                field_of(&f.config(bad, "key.pem", None)),
                "--tls-cert",
                "{bad}"
            );
            assert_eq!(
                field_of(&f.config("cert.pem", "key.pem", Some(bad))),
                "--tls-client-ca",
                "{bad}"
            );
        }
    }

    #[test]
    fn an_encrypted_key_says_so() {
        let f = Files::new();
        f.write(
            "encrypted.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = server_config(&f.config("cert.pem", "encrypted.pem", None)).unwrap_err();
        assert!(err.to_string().contains("the key is encrypted"), "{err}");
    }
}
