//! `ringmq thumbprint CERT.pem`: the SHA-256 thumbprint of a certificate, computed by the same
//! function authentication compares (`ringmq_auth::x509::thumbprint`, over the leaf's DER),
//! printed in the form docs/registry.md shows for `allowedThumbprints` (uppercase hex pairs
//! joined by `:`, what `openssl x509 -noout -fingerprint -sha256` prints after the `=`).

use std::path::PathBuf;
use std::process::ExitCode;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// `ringmq thumbprint`'s options.
#[derive(Debug, clap::Args)]
pub struct ThumbprintArgs {
    /// A certificate file: PEM (the first certificate, the leaf, when it holds a chain) or DER.
    pub cert: PathBuf,
    /// Print the 64 hex digits without `:` separators (the registry accepts both).
    #[arg(long)]
    pub no_colons: bool,
}

/// Runs `ringmq thumbprint`: the thumbprint on stdout, problems on stderr (exit status 1).
pub fn run(args: &ThumbprintArgs) -> ExitCode {
    match thumbprint_of_file(&args.cert) {
        Ok((print, chain_len)) => {
            if chain_len > 1 {
                eprintln!(
                    "ringmq: {}: {chain_len} certificates; the thumbprint is the first one's (the leaf, which ThumbprintMatch compares)",
                    args.cert.display()
                );
            }
            println!("{}", format_thumbprint(&print, !args.no_colons));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringmq: {}: {e}", args.cert.display());
            ExitCode::from(1)
        }
    }
}

/// The thumbprint of the first certificate in `path`, and how many certificates it holds.
fn thumbprint_of_file(path: &std::path::Path) -> Result<([u8; 32], usize), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let pem: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = match pem {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) if !bytes.starts_with(b"-----") && bytes.first() == Some(&0x30) => {
            // No PEM block: a DER certificate (an ASN.1 SEQUENCE).
            vec![CertificateDer::from(bytes)]
        }
        Ok(_) => return Err("no PEM certificate (-----BEGIN CERTIFICATE-----)".into()),
        Err(e) => return Err(format!("not a PEM certificate: {e}")),
    };
    let leaf = &certs[0];
    x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok((ringmq_auth::x509::thumbprint(leaf), certs.len()))
}

fn format_thumbprint(print: &[u8; 32], colons: bool) -> String {
    let hex: Vec<String> = print.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(if colons { ":" } else { "" })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_openssl_and_plain() {
        let mut print = [0u8; 32];
        print[0] = 0xB3;
        print[31] = 0x0f;
        let colons = format_thumbprint(&print, true);
        assert!(colons.starts_with("B3:00:"), "{colons}");
        assert!(colons.ends_with(":0F"), "{colons}");
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert_eq!(format_thumbprint(&print, false).len(), 64);
    }
}
