//! Shared by the TLS, identity, token and wss tests here and by bench/tests: a test PKI made
//! with rcgen, and a broker launched with a plain listener plus TLS listeners from a config file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{broker_binary, free_port, temp_dir};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A CA, a server certificate for 127.0.0.1, and a client certificate, written to `dir`.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertifiedIssuer<'static, KeyPair>,
    pub intermediate: CertifiedIssuer<'static, KeyPair>,
    /// A CA that no registry knows.
    pub rogue: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

// `new` makes keys and writes files: not something a `Default` should do.
#[allow(clippy::new_without_default)]
impl Pki {
    pub fn new() -> Pki {
        let dir = temp_dir("tls");
        let ca =
            CertifiedIssuer::self_signed(ca_params("ringmq test CA"), KeyPair::generate().unwrap())
                .unwrap();
        fs::write(dir.join("ca.pem"), ca.pem()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = server.signed_by(&server_key, &ca).unwrap();
        fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
        fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "truck-17");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca).unwrap();
        fs::write(dir.join("client.pem"), client_cert.pem()).unwrap();
        fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("ringmq test intermediate"),
            KeyPair::generate().unwrap(),
            &ca,
        )
        .unwrap();
        fs::write(dir.join("intermediate.pem"), intermediate.pem()).unwrap();
        let rogue =
            CertifiedIssuer::self_signed(ca_params("rogue CA"), KeyPair::generate().unwrap())
                .unwrap();
        Pki {
            dir,
            ca,
            intermediate,
            rogue,
        }
    }

    /// A client certificate `{file}.pem` / `{file}.key` with subject CN `cn` and the
    /// clientAuth extended key usage, issued by `issuer`.
    pub fn leaf(&self, file: &str, cn: &str, issuer: &CertifiedIssuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).unwrap();
        fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    /// Like [`Pki::leaf`], with a chosen serial number (for revocation).
    pub fn leaf_with_serial(
        &self,
        file: &str,
        cn: &str,
        issuer: &CertifiedIssuer<'static, KeyPair>,
        serial: u64,
    ) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, issuer).unwrap();
        fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    /// A CRL of `issuer` revoking `serials` (PEM).
    pub fn crl(&self, issuer: &CertifiedIssuer<'static, KeyPair>, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(s),
                    revocation_time: now - time::Duration::seconds(30),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(issuer).unwrap().pem().unwrap()
    }

    pub fn rogue_pem(&self) -> String {
        self.rogue.pem()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn intermediate_pem(&self) -> String {
        self.intermediate.pem()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A broker with a plain listener (for readiness) and an `mqtts` one, killed on drop.
///
/// Like the harness's `Broker`, it runs `RINGMQ_TEST_SHARDS` shards (default 2) on the
/// `RINGMQ_TEST_DRIVER` driver when those are set.
#[derive(Debug)]
pub struct TlsBroker {
    child: Child,
    pub tls_port: u16,
    pub plain_port: u16,
    /// The ports of the TLS listeners, in the order they were asked for (`tls_port` first).
    pub tls_ports: Vec<u16>,
    log: PathBuf,
}

impl TlsBroker {
    pub fn start(pki: &Pki, client_certificate: &str, extra: &str) -> TlsBroker {
        TlsBroker::start_listeners(pki, extra, &[("mqtts", client_certificate)])
    }

    /// A plain listener plus one TLS listener per `(protocol, client_certificate)` (`mqtts`
    /// or `wss`), all serving `server.pem` / `server.key` from the PKI directory.
    pub fn start_listeners(pki: &Pki, extra: &str, listeners: &[(&str, &str)]) -> TlsBroker {
        let plain_port = free_port();
        let shards = std::env::var("RINGMQ_TEST_SHARDS").unwrap_or_else(|_| "2".to_owned());
        let mut config = format!(
            "[server]\nshards = {shards}\n{extra}\n[[listener]]\nbind = \"127.0.0.1:{plain_port}\"\n"
        );
        let mut tls_ports = Vec::new();
        for (protocol, client_certificate) in listeners {
            let port = free_port();
            config.push_str(&format!(
                "\n[[listener]]\nbind = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_certificate = \"{client_certificate}\"\n"
            ));
            tls_ports.push(port);
        }
        let tls_port = tls_ports[0];
        let path = pki.dir.join(format!("ringmq-{tls_port}.toml"));
        fs::write(&path, config).unwrap();
        let log = pki.dir.join(format!("broker-{tls_port}.log"));
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(broker_binary());
        cmd.arg("--config").arg(&path);
        if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
            cmd.arg("--driver").arg(driver);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let broker = TlsBroker {
            child,
            tls_port,
            plain_port,
            tls_ports,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in broker.tls_ports.iter().chain([&plain_port]) {
            while TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "broker did not start:\n{}",
                    broker.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        broker
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The broker's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- broker log:\n{}", self.log());
        }
    }
}
