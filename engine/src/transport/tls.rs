//! TLS for `mqtts` and `wss` listeners: rustls (aws-lc-rs provider, TLS 1.2 and 1.3) driven
//! as a sans-IO `ServerConnection` inside the connection's own byte pump (`layer.rs`,
//! `layer_pump.rs`), so no byte read during or after the handshake is lost (the trap of
//! monoio-rustls' `into_parts`).
//!
//! Each listener's configuration sits behind an `ArcSwap` ([`ListenerTls`]): a reload (SIGHUP,
//! or the certificate or key file changing) builds a new one from the files and swaps it in;
//! accepts pick up the current one without a lock, and established connections keep the one
//! they started with. A file that does not load leaves the previous configuration in force.
//!
//! The TLS layer checks only that the client holds the key of the certificate it presents
//! (the handshake signature). Chain, validity, revocation and name checks are authentication's
//! job (`ringmq_auth::x509`), so a rejected client gets a CONNACK with a reason code and
//! string instead of a bare TLS alert.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::config::ClientCertificateMode;

/// Why a TLS listener could not be set up; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificate chain: {message}")]
    Certs { path: String, message: String },
    #[error("{path}: no certificate found")]
    NoCerts { path: String },
    #[error("{path}: cannot read private key: {message}")]
    Key { path: String, message: String },
    #[error("listener {bind}: a TLS listener needs `cert` and `key`")]
    Missing { bind: std::net::SocketAddr },
    #[error("certificate {cert} and key {key} do not form a usable TLS configuration: {message}")]
    Config {
        cert: String,
        key: String,
        message: String,
    },
}

/// The TLS configuration of one `mqtts` or `wss` listener, reloadable from its files.
#[derive(Debug)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mode: ClientCertificateMode,
    current: ArcSwap<ServerConfig>,
}

impl ListenerTls {
    /// Loads the certificate chain and key (at startup: an error stops startup).
    pub fn load(
        cert: &Path,
        key: &Path,
        mode: ClientCertificateMode,
    ) -> Result<ListenerTls, TlsError> {
        let config = server_config(cert, key, mode)?;
        Ok(ListenerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            mode,
            current: ArcSwap::new(config),
        })
    }

    /// The configuration for a new connection (a reference count, no lock).
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again and swaps in the new configuration. On an error the current
    /// configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key, self.mode)?;
        self.current.store(config);
        Ok(())
    }

    /// The modification times of the certificate and key files, to notice a change.
    pub fn files_modified(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (modified(&self.cert), modified(&self.key))
    }
}

/// Builds the server configuration of one `mqtts` or `wss` listener.
pub fn server_config(
    cert: &Path,
    key: &Path,
    mode: ClientCertificateMode,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Certs {
            path: cert_name.clone(),
            message: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certs {
            path: cert_name.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts { path: cert_name });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key_name.clone(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyClientCert {
        mode,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config {
            cert: cert_name.clone(),
            key: key_name.clone(),
            message: e.to_string(),
        })?;
    let builder = match mode {
        ClientCertificateMode::None => builder.with_no_client_auth(),
        _ => builder.with_client_cert_verifier(verifier),
    };
    let config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| match e {
            // rustls words this for a peer's certificate; here it is our own file.
            rustls::Error::InvalidCertificate(problem) => TlsError::Certs {
                path: cert_name,
                message: format!("not a usable X.509 certificate ({problem:?})"),
            },
            e => TlsError::Config {
                cert: cert_name,
                key: key_name,
                message: e.to_string(),
            },
        })?;
    Ok(Arc::new(config))
}

/// Accepts any well-formed client certificate and checks the handshake signature made with
/// its key; policy is left to authentication.
#[derive(Debug)]
struct AnyClientCert {
    mode: ClientCertificateMode,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        self.mode != ClientCertificateMode::None
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == ClientCertificateMode::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Parse only: a certificate rustls cannot even read cannot prove key possession.
        webpki_parse(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn webpki_parse(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    // The signature check above parses the certificate again; here it is enough that the
    // outer DER structure is sound.
    if cert.as_ref().len() < 16 || cert.as_ref()[0] != 0x30 {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = server_config(
            Path::new("/nonexistent/server.pem"),
            Path::new("/nonexistent/server.key"),
            ClientCertificateMode::None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/server.pem"), "{e}");
    }

    #[test]
    fn builds_from_generated_certificate() {
        let dir = std::env::temp_dir().join(format!("ringmq-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        for mode in [
            ClientCertificateMode::None,
            ClientCertificateMode::Optional,
            ClientCertificateMode::Required,
        ] {
            server_config(&dir.join("c.pem"), &dir.join("k.pem"), mode).unwrap();
        }
        // A key that does not match the certificate is refused at startup.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(dir.join("k2.pem"), other.signing_key.serialize_pem()).unwrap();
        assert!(
            server_config(
                &dir.join("c.pem"),
                &dir.join("k2.pem"),
                ClientCertificateMode::None
            )
            .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A reload swaps in the new certificate; a broken file leaves the current one in force,
    /// with an error naming the file.
    #[test]
    fn reload_swaps_or_keeps_the_current_certificate() {
        let dir = std::env::temp_dir().join(format!("ringmq-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let write = |names: Vec<String>| {
            let ck = rcgen::generate_simple_self_signed(names).unwrap();
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            ck.cert.der().clone()
        };
        let served = |l: &ListenerTls, root: &CertificateDer<'static>, name: &'static str| {
            peer_certificate(l.current(), root, name)
        };
        let a = write(vec!["a.test".into()]);
        let l = ListenerTls::load(&cert, &key, ClientCertificateMode::None).unwrap();
        let before = l.current();
        assert_eq!(served(&l, &a, "a.test"), a);
        let b = write(vec!["b.test".into()]);
        l.reload().unwrap();
        assert_eq!(served(&l, &b, "b.test"), b);
        // A connection set up before the reload keeps its configuration.
        assert!(!Arc::ptr_eq(&before, &l.current()));
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = l.reload().unwrap_err().to_string();
        assert!(e.contains(&cert.display().to_string()), "{e}");
        assert_eq!(served(&l, &b, "b.test"), b);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs a handshake in memory with a client trusting `root` for `name`; returns the
    /// certificate the server presented.
    fn peer_certificate(
        config: Arc<ServerConfig>,
        root: &CertificateDer<'static>,
        name: &'static str,
    ) -> CertificateDer<'static> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(config).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut input = &buf[..];
            while !input.is_empty() {
                server.read_tls(&mut input).unwrap();
                server.process_new_packets().unwrap();
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut input = &buf[..];
            while !input.is_empty() {
                client.read_tls(&mut input).unwrap();
                client.process_new_packets().unwrap();
            }
            if !client.is_handshaking() {
                return client.peer_certificates().unwrap()[0].clone().into_owned();
            }
        }
        panic!("handshake did not complete");
    }
}
