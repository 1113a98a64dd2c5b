//! TLS settings of a run (`--ssl`): the rustls client configuration built from the CA file,
//! the client certificate and key — one per client when their paths contain `%i` — the server
//! name, and `--insecure`.
//!
//! Only configuration lives here; the bytes go through rustls's sans-IO `ClientConnection` in
//! [`crate::transport`]. Nothing a file holds can panic: every problem is a [`TlsError`] naming
//! the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::template;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("CA file {path}: certificate {index} is not a usable trust anchor: {reason}")]
    Anchor {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("client certificate {cert} with key {key}: {reason}")]
    Identity {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("TLS server name {name:?} (--sni, default --host) is invalid: {reason}")]
    ServerName { name: String, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// What the command line says about TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates the broker's certificate must chain to; `None` with `insecure`.
    pub ca_file: Option<String>,
    /// Client certificate chain and key (PEM) templates; `%i` is the connection number.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Accept any broker certificate (its handshake signature is still verified).
    pub insecure: bool,
    /// Name for SNI and certificate verification.
    pub server_name: String,
}

/// The client certificate(s).
enum Identity {
    /// No certificate, or one for every client: one configuration shared by all.
    Shared(Arc<ClientConfig>),
    /// Paths with `%i`: each client loads its own files when it connects.
    PerClient { cert: String, key: String },
}

/// Everything a client needs to open a TLS connection; shared by the load threads.
pub struct TlsSetup {
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    server_name: ServerName<'static>,
    identity: Identity,
    options: TlsOptions,
}

impl core::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Loads the CA file and, unless its paths contain `%i`, the client certificate and key, so
    /// a missing or bad file stops the run before it starts.
    pub fn new(options: &TlsOptions) -> Result<TlsSetup, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server_name = ServerName::try_from(options.server_name.clone()).map_err(|e| {
            TlsError::ServerName {
                name: options.server_name.clone(),
                reason: e.to_string(),
            }
        })?;
        let verifier: Arc<dyn ServerCertVerifier> = match &options.ca_file {
            Some(path) if !options.insecure => {
                let roots = load_roots(path)?;
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Setup(format!("CA file {path}: {e}")))?
            }
            _ => Arc::new(NoServerVerification(
                provider.signature_verification_algorithms,
            )),
        };
        let mut setup = TlsSetup {
            provider,
            verifier,
            server_name,
            // Replaced below.
            identity: Identity::PerClient {
                cert: String::new(),
                key: String::new(),
            },
            options: options.clone(),
        };
        setup.identity = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) if is_template(cert) || is_template(key) => {
                Identity::PerClient {
                    cert: cert.clone(),
                    key: key.clone(),
                }
            }
            (Some(cert), Some(key)) => Identity::Shared(setup.build(Some((cert, key)))?),
            _ => Identity::Shared(setup.build(None)?),
        };
        Ok(setup)
    }

    /// The configuration connection number `index` connects with: the shared one, or one
    /// built from its own certificate and key files. Connection numbers are unique in a run
    /// (idle clients and subscribers from 0, then publishers), so no two connections present
    /// the same certificate: a broker may allow one session per identity.
    pub fn client_config(&self, index: u32) -> Result<Arc<ClientConfig>, TlsError> {
        match &self.identity {
            Identity::Shared(config) => Ok(config.clone()),
            Identity::PerClient { cert, key } => {
                let cert = template::expand(cert, index);
                let key = template::expand(key, index);
                self.build(Some((&cert, &key)))
            }
        }
    }

    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    fn build(&self, identity: Option<(&str, &str)>) -> Result<Arc<ClientConfig>, TlsError> {
        // The dangerous builder is the one that takes a verifier as a trait object; the
        // verifier is webpki's unless --insecure.
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone());
        let mut config = match identity {
            Some((cert, key)) => {
                let chain = load_chain(cert)?;
                let private_key = load_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| TlsError::Identity {
                        cert: cert.to_string(),
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        // Every simulated client is a separate device: each connection makes a full handshake,
        // as a fleet connecting for the first time would, instead of resuming from a ticket
        // another client received.
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// Whether `path` contains `%i` (as expanded by [`template::expand`]).
fn is_template(path: &str) -> bool {
    template::expand(path, 0) != template::expand(path, 1)
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|e| TlsError::Read {
        what,
        path: path.to_string(),
        reason: e.to_string(),
    })
}

fn pem_error(what: &'static str, path: &str, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Every CERTIFICATE block of a PEM file, at least one.
fn load_certs(what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

fn load_roots(path: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in load_certs("CA file", path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::Anchor {
            path: path.to_string(),
            index: index + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn load_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_certs("client certificate", path)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("client key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => pem_error(
            "client key",
            path,
            "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block in the file",
        ),
        other => pem_error("client key", path, other),
    })
}

/// `--insecure`: any certificate is accepted as the broker's, but the handshake signature must
/// still be made with its key, so the connection is encrypted to whoever holds it.
#[derive(Debug)]
struct NoServerVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoServerVerification {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rb-tls-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    fn options(dir: &Path) -> TlsOptions {
        TlsOptions {
            ca_file: Some(dir.join("ca.pem").display().to_string()),
            cert_file: None,
            key_file: None,
            insecure: false,
            server_name: "127.0.0.1".into(),
        }
    }

    fn err(result: Result<TlsSetup, TlsError>) -> String {
        match result {
            Ok(setup) => panic!("expected an error, got {setup:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = scratch("files");
        let msg = err(TlsSetup::new(&options(&dir)));
        assert!(
            msg.contains("cannot read CA file") && msg.contains("ca.pem"),
            "{msg}"
        );

        std::fs::write(dir.join("ca.pem"), "not pem at all\n").unwrap_or_else(|e| panic!("{e}"));
        let msg = err(TlsSetup::new(&options(&dir)));
        assert!(msg.contains("no CERTIFICATE block"), "{msg}");

        std::fs::write(
            dir.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let msg = err(TlsSetup::new(&options(&dir)));
        assert!(msg.contains("not a usable trust anchor"), "{msg}");

        // --insecure needs no CA file; a fixed client certificate is loaded at startup.
        let mut opts = options(&dir);
        opts.insecure = true;
        opts.cert_file = Some(dir.join("client.pem").display().to_string());
        opts.key_file = Some(dir.join("client.key").display().to_string());
        let msg = err(TlsSetup::new(&opts));
        assert!(
            msg.contains("cannot read client certificate") && msg.contains("client.pem"),
            "{msg}"
        );
    }

    #[test]
    fn per_client_paths_are_loaded_when_a_client_connects() {
        let dir = scratch("template");
        let mut opts = options(&dir);
        opts.insecure = true;
        opts.cert_file = Some(dir.join("c%i.pem").display().to_string());
        opts.key_file = Some(dir.join("c%i.key").display().to_string());
        let setup = TlsSetup::new(&opts).unwrap_or_else(|e| panic!("{e}"));
        let Err(e) = setup.client_config(7) else {
            panic!("c7.pem does not exist")
        };
        assert!(e.to_string().contains("c7.pem"), "{e}");
    }

    #[test]
    fn bad_server_name_is_an_error() {
        let mut opts = options(Path::new("/nonexistent"));
        opts.insecure = true;
        opts.server_name = "not a name!".into();
        let msg = err(TlsSetup::new(&opts));
        assert!(msg.contains("server name"), "{msg}");
    }

    #[test]
    fn templates() {
        assert!(is_template("certs/%i.pem"));
        assert!(!is_template("certs/client.pem"));
        assert!(!is_template("certs/100%%.pem"));
    }
}
