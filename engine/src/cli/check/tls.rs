//! A TLS listener's files: the certificate chain and the key exist, are PEM, belong together
//! (the TLS configuration the broker would build from them), the certificates are within
//! their validity, and the key is not readable by every user.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ringmq::config::ListenerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Report;

/// A server certificate expiring sooner than this is a warning.
const EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;

/// Checks listener `index` (config order, as `listener[index]` in messages).
pub(super) fn check_listener(
    file: &Path,
    index: usize,
    listener: &ListenerConfig,
    report: &mut Report,
) {
    if !listener.protocol.is_tls() {
        return;
    }
    // The configuration's validation already requires both for a TLS listener.
    let (Some(cert), Some(key)) = (&listener.cert, &listener.key) else {
        return;
    };
    let cert_ok = check_certificates(file, &format!("listener[{index}].cert"), cert, report);
    let key_ok = check_key(file, &format!("listener[{index}].key"), key, report);
    if cert_ok
        && key_ok
        && let Err(e) =
            ringmq::transport::tls::server_config(cert, key, listener.client_certificate)
    {
        report.error(file, format!("listener[{index}]"), e.to_string());
    }
}

/// The chain at `path`: readable, PEM, at least one certificate, each within its validity.
/// Returns whether it can be used.
fn check_certificates(file: &Path, key: &str, path: &Path, report: &mut Report) -> bool {
    if let Err(e) = std::fs::metadata(path) {
        report.error(file, key, format!("{}: {e}", path.display()));
        return false;
    }
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(path).and_then(Iterator::collect);
    let certs = match certs {
        Ok(c) if c.is_empty() => {
            report.error(file, key, format!("{}: no PEM certificate", path.display()));
            return false;
        }
        Ok(c) => c,
        Err(e) => {
            report.error(file, key, format!("{}: {e}", path.display()));
            return false;
        }
    };
    let now = unix_now();
    let mut usable = true;
    for (i, der) in certs.iter().enumerate() {
        let what = if i == 0 {
            "the certificate".to_owned()
        } else {
            format!("certificate {} of the chain", i + 1)
        };
        let cert = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, cert)) => cert,
            Err(e) => {
                report.error(
                    file,
                    key,
                    format!("{}: {what} is not X.509: {e}", path.display()),
                );
                usable = false;
                continue;
            }
        };
        let validity = cert.validity();
        let (not_before, not_after) = (validity.not_before, validity.not_after);
        let subject = cert.subject().to_string();
        if not_after.timestamp() < now {
            report.error(
                file,
                key,
                format!(
                    "{}: {what} ({subject}) expired on {not_after}: clients refuse the handshake",
                    path.display()
                ),
            );
        } else if not_after.timestamp() - now < EXPIRY_WARNING_SECS {
            report.warning(
                file,
                key,
                format!(
                    "{}: {what} ({subject}) expires on {not_after}",
                    path.display()
                ),
            );
        }
        if not_before.timestamp() > now {
            report.warning(
                file,
                key,
                format!(
                    "{}: {what} ({subject}) is not valid before {not_before}",
                    path.display()
                ),
            );
        }
    }
    usable
}

/// The key at `path`: readable, a PEM private key, not readable by every user.
fn check_key(file: &Path, key: &str, path: &Path, report: &mut Report) -> bool {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            report.error(file, key, format!("{}: {e}", path.display()));
            return false;
        }
    };
    if let Err(e) = PrivateKeyDer::from_pem_file(path) {
        report.error(
            file,
            key,
            format!("{}: not a PEM private key: {e}", path.display()),
        );
        return false;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        report.warning(
            file,
            key,
            format!(
                "{}: the private key is readable by every user (mode {mode:o}): chmod 600 (or 640 with the broker's group)",
                path.display()
            ),
        );
    }
    true
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
