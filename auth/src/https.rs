//! The TLS side of the HTTPS clients (JWKS fetches, webhook calls): ureq on rustls with the
//! aws-lc-rs provider, trusting either the public web roots or the CAs given.

use std::sync::Arc;

/// rustls with aws-lc-rs (no `ring`), trusting `roots`.
pub(crate) fn tls_config(roots: ureq::tls::RootCerts) -> ureq::tls::TlsConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(provider)
        .build()
}
