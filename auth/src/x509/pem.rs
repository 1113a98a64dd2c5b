//! PEM text from the registry, as people paste it: with line breaks, `\r\n`, or on ONE line
//! (`-----BEGIN CERTIFICATE-----MIIB…-----END CERTIFICATE-----`, as Event Grid's guide
//! uploads it), or as bare base64 without the armour. Normalised to canonical PEM (64-column
//! lines) before `rustls-pki-types` decodes it.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

/// Largest PEM text accepted for one certificate.
pub(crate) const CERTIFICATE_PEM_MAX: usize = 64 * 1024;
/// Largest PEM text accepted for one CRL.
pub(crate) const CRL_PEM_MAX: usize = 4 * 1024 * 1024;

/// Rebuilds canonical PEM for one object labelled `label`.
pub(crate) fn normalize(text: &str, label: &str, max_len: usize) -> Result<String, String> {
    if text.len() > max_len {
        return Err(format!("longer than {max_len} bytes"));
    }
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = match text.find(&begin) {
        Some(start) => {
            if !text[..start].trim().is_empty() {
                return Err(format!("unexpected text before {begin}"));
            }
            let after = &text[start + begin.len()..];
            let Some(stop) = after.find(&end) else {
                return Err(format!("{begin} without {end}"));
            };
            let rest = &after[stop + end.len()..];
            if rest.contains("-----BEGIN") {
                return Err(format!("more than one {label}: give one per entry"));
            }
            if !rest.trim().is_empty() {
                return Err(format!("unexpected text after {end}"));
            }
            &after[..stop]
        }
        None if text.contains("-----BEGIN") => {
            return Err(format!("expected {begin}"));
        }
        None => text,
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(format!("empty {label}"));
    }
    if let Some(bad) = compact
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
    {
        return Err(format!("{bad:?} is not a base64 character"));
    }
    let mut out = String::with_capacity(compact.len() + compact.len() / 64 + begin.len() * 2 + 4);
    out.push_str(&begin);
    out.push('\n');
    // `compact` is ASCII, so byte chunks are char boundaries.
    for line in compact.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&end);
    out.push('\n');
    Ok(out)
}

/// Decodes one certificate from lenient PEM.
pub(crate) fn certificate(text: &str) -> Result<CertificateDer<'static>, String> {
    let pem = normalize(text, "CERTIFICATE", CERTIFICATE_PEM_MAX)?;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("invalid PEM: {e}"))
}

/// Decodes one CRL from lenient PEM.
pub(crate) fn crl(text: &str) -> Result<CertificateRevocationListDer<'static>, String> {
    let pem = normalize(text, "X509 CRL", CRL_PEM_MAX)?;
    CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("invalid PEM: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BODY: &str =
        "TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsuTWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsuTWFueSBoYW5kcw==";

    #[test]
    fn one_line_multi_line_and_bare_base64_normalise_alike() {
        let one = format!("-----BEGIN CERTIFICATE-----{BODY}-----END CERTIFICATE-----");
        let multi = format!(
            "-----BEGIN CERTIFICATE-----\r\n{}\r\n{}\r\n-----END CERTIFICATE-----\r\n",
            &BODY[..40],
            &BODY[40..]
        );
        let a = normalize(&one, "CERTIFICATE", 1 << 16).unwrap();
        assert_eq!(a, normalize(&multi, "CERTIFICATE", 1 << 16).unwrap());
        assert_eq!(a, normalize(BODY, "CERTIFICATE", 1 << 16).unwrap());
        assert!(a.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    }

    #[test]
    fn rejects_two_objects_wrong_label_and_junk() {
        let one = format!("-----BEGIN CERTIFICATE-----{BODY}-----END CERTIFICATE-----");
        assert!(
            normalize(&format!("{one}{one}"), "CERTIFICATE", 1 << 16)
                .unwrap_err()
                .contains("more than one")
        );
        assert!(normalize(&one, "X509 CRL", 1 << 16).is_err());
        assert!(normalize("abc$def", "CERTIFICATE", 1 << 16).is_err());
        assert!(normalize(&one, "CERTIFICATE", 10).is_err());
        assert!(normalize("  \n", "CERTIFICATE", 1 << 16).is_err());
    }
}
