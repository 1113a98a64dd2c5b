//! The certificates of the TLS scenarios (`*-tls`): a CA and a server certificate for
//! 127.0.0.1 and localhost, made with rcgen into the comparison's work directory, served by
//! every broker's TLS listener and trusted by the load generator (`--cacertfile`).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

use super::CompareError;

/// Where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn tls_error(why: impl ToString) -> CompareError {
    CompareError::Start {
        name: "TLS certificates".into(),
        why: why.to_string(),
    }
}

impl TlsFiles {
    /// A new CA (ECDSA P-256, rcgen's default, as a fleet would use) and a server certificate
    /// it signs, written to `dir`.
    pub fn generate(dir: &Path) -> Result<TlsFiles, CompareError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ringmq-bench compare CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(tls_error)?;
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_error)?;

        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).map_err(tls_error)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.signed_by(&key, &ca).map_err(tls_error)?;

        let files = TlsFiles {
            ca: dir.join("compare-ca.pem"),
            cert: dir.join("compare-server.pem"),
            key: dir.join("compare-server.key"),
        };
        for (path, text) in [
            (&files.ca, ca.pem()),
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(|e| CompareError::Write {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
        }
        Ok(files)
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    /// The files load as the load generator loads them: the CA as a trust anchor that
    /// verifies the server certificate for 127.0.0.1.
    #[test]
    fn generated_files_load_and_verify() {
        let dir = std::env::temp_dir().join(format!("rb-compare-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let files = TlsFiles::generate(&dir).unwrap_or_else(|e| panic!("{e}"));
        let setup = crate::tls::TlsSetup::new(&crate::tls::TlsOptions {
            ca_file: Some(files.ca.display().to_string()),
            server_name: "127.0.0.1".into(),
            ..Default::default()
        });
        assert!(setup.is_ok(), "{setup:?}");
        let key = std::fs::read_to_string(&files.key).unwrap_or_default();
        assert!(key.contains("PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
