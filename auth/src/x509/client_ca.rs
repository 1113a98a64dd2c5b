//! CA-only client certificates (`[auth] client_ca`): any certificate that chains to one of
//! the configured CAs (and is not revoked by `client_crl`) is accepted, its name taken from
//! one configured field (`certificate_identity`) — Mosquitto's `require_certificate` +
//! `use_identity_as_username` / `use_subject_as_username`, EMQX's `peer_cert_as_username`.
//! No registry entry per device.
//!
//! The chain is checked by the same code as registry CA certificates (validity with clock
//! skew, CA bits, key usages, signatures, CRLs): the CAs are held in a [`Registry`] that has
//! nothing else. Results are cached in the shard's [`X509Cache`] like registry results.

use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{Cert, X509Cache, cache_key, chain, names, parse_chain, unix_secs};
use crate::registry::{LoadError, NameSource, Registry};
use crate::{AuthError, ClientType, Identity, Method};

/// Which certificate field names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertificateIdentity {
    /// The subject's common name (Mosquitto `use_identity_as_username`).
    #[default]
    SubjectCn,
    /// The whole subject DN in RFC 4514 form, `CN=dev1,O=Acme` (Mosquitto
    /// `use_subject_as_username`).
    SubjectDn,
    /// The first SAN DNS name.
    SanDns,
    /// The first SAN URI.
    SanUri,
    /// The first SAN email (rfc822Name).
    SanEmail,
    /// The first SAN IP address, in textual form.
    SanIp,
}

impl CertificateIdentity {
    pub const ALL: [CertificateIdentity; 6] = [
        CertificateIdentity::SubjectCn,
        CertificateIdentity::SubjectDn,
        CertificateIdentity::SanDns,
        CertificateIdentity::SanUri,
        CertificateIdentity::SanEmail,
        CertificateIdentity::SanIp,
    ];

    /// The configuration spelling (`subject-cn`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateIdentity::SubjectCn => "subject-cn",
            CertificateIdentity::SubjectDn => "subject-dn",
            CertificateIdentity::SanDns => "san-dns",
            CertificateIdentity::SanUri => "san-uri",
            CertificateIdentity::SanEmail => "san-email",
            CertificateIdentity::SanIp => "san-ip",
        }
    }

    /// The name this field gives `cert`, if it has a non-empty one.
    fn name_of(self, cert: &X509Certificate<'_>) -> Option<String> {
        let source = match self {
            CertificateIdentity::SubjectDn => {
                let dn = names::rfc4514(cert.subject());
                return (!dn.is_empty()).then_some(dn);
            }
            CertificateIdentity::SubjectCn => NameSource::ClientCertificateSubject,
            CertificateIdentity::SanDns => NameSource::ClientCertificateDns,
            CertificateIdentity::SanUri => NameSource::ClientCertificateUri,
            CertificateIdentity::SanEmail => NameSource::ClientCertificateEmail,
            CertificateIdentity::SanIp => NameSource::ClientCertificateIp,
        };
        names::name_from_sources(&[source], cert)
    }
}

/// Longest name taken from a certificate (an MQTT string).
const IDENTITY_CHARS_MAX: usize = 65_535;
/// How long a refusal stays cached (keyed by the snapshot version too).
const REFUSAL_CACHE_SECS: i64 = 60;
/// Marks the cache keys of this trust store apart from registry results: a CONNECT user name
/// cannot contain U+0000 [MQTT-1.5.4-2].
const CACHE_MARK: &str = "\0client_ca";

/// The trusted CAs, their CRLs and the identity field.
#[derive(Debug)]
pub struct ClientCa {
    trust: Registry,
    identity: CertificateIdentity,
    /// Subjects of the CAs, for the startup log.
    subjects: Vec<String>,
}

impl ClientCa {
    /// Builds the trust store from a PEM bundle of CA certificates and an optional PEM bundle
    /// of CRLs (each CRL must be issued by one of the CAs and signed by it).
    pub fn from_pem(
        ca_pem: &str,
        crl_pem: Option<&str>,
        identity: CertificateIdentity,
        clock_skew: std::time::Duration,
    ) -> Result<ClientCa, String> {
        let cas = pem_blocks(ca_pem, "CERTIFICATE");
        if cas.is_empty() {
            return Err("no `-----BEGIN CERTIFICATE-----` block".into());
        }
        if cas.len() > crate::registry::CA_CERTIFICATES_MAX {
            return Err(format!(
                "more than {} CA certificates",
                crate::registry::CA_CERTIFICATES_MAX
            ));
        }
        let crls = crl_pem
            .map(|t| pem_blocks(t, "X509 CRL"))
            .unwrap_or_default();
        if crl_pem.is_some() && crls.is_empty() {
            return Err("client_crl: no `-----BEGIN X509 CRL-----` block".into());
        }
        // Each CA with the CRLs its subject issued.
        let mut subjects = Vec::with_capacity(cas.len());
        let mut entries = Vec::with_capacity(cas.len());
        let mut crl_used = vec![false; crls.len()];
        for (i, pem) in cas.iter().enumerate() {
            let der = super::pem::certificate(pem)
                .map_err(|e| format!("CA certificate #{}: {e}", i + 1))?;
            let cert = chain::parse(der.as_ref())
                .map_err(|e| format!("CA certificate #{}: unparseable: {e}", i + 1))?;
            let subject = cert.x.subject().as_raw().to_vec();
            subjects.push(names::rfc4514(cert.x.subject()));
            let mut mine = Vec::new();
            for (j, crl) in crls.iter().enumerate() {
                if crl_issuer(crl).map_err(|e| format!("client_crl: CRL #{}: {e}", j + 1))?
                    == subject
                {
                    mine.push(serde_json::Value::String((*crl).to_owned()));
                    crl_used[j] = true;
                }
            }
            entries.push(serde_json::json!({
                "name": format!("client-ca-{}", i + 1),
                "encodedCertificate": pem,
                "crls": mine,
            }));
        }
        if let Some(j) = crl_used.iter().position(|used| !used) {
            return Err(format!(
                "client_crl: CRL #{} is not issued by any CA of client_ca",
                j + 1
            ));
        }
        let json = serde_json::json!({ "caCertificates": entries }).to_string();
        let mut warnings = Vec::new();
        let mut trust = Registry::parse(&json, &mut warnings).map_err(|e| {
            // `caCertificates[2].crls[0]` → the third CA certificate of the bundle.
            format!(
                "{}: {}",
                e.path.replace("caCertificates", "CA certificates"),
                e.problem
            )
        })?;
        for w in warnings {
            tracing::warn!("client_ca: {w}");
        }
        trust.set_clock_skew(clock_skew);
        Ok(ClientCa {
            trust,
            identity,
            subjects,
        })
    }

    /// Reads `ca_file` (and `crl_file`); errors name the file.
    pub fn load(
        ca_file: &Path,
        crl_file: Option<&Path>,
        identity: CertificateIdentity,
        clock_skew: std::time::Duration,
    ) -> Result<ClientCa, LoadError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| LoadError::Io {
                file: path.display().to_string(),
                source,
            })
        };
        let ca = read(ca_file)?;
        let crl = crl_file.map(read).transpose()?;
        ClientCa::from_pem(&ca, crl.as_deref(), identity, clock_skew).map_err(|problem| {
            LoadError::File {
                file: ca_file.display().to_string(),
                problem,
            }
        })
    }

    pub fn identity_field(&self) -> CertificateIdentity {
        self.identity
    }

    /// The subjects of the trusted CAs (RFC 4514).
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Authenticates a presented chain (leaf first): it must chain to a configured CA and
    /// carry the identity field. Refusals are bad credentials (0x86 / 3.1.1 0x04), as every
    /// X.509 refusal.
    pub fn authenticate(
        &self,
        chain: &[CertificateDer<'_>],
        cache: &mut X509Cache,
        snapshot_version: u64,
        now: SystemTime,
    ) -> Result<Identity, AuthError> {
        let now = unix_secs(now);
        let key = cache_key(chain, snapshot_version, Some(CACHE_MARK));
        if let Some(hit) = cache.get(&key, now) {
            return hit;
        }
        cache.verifications += 1;
        let (result, until) = match parse_chain(chain) {
            Ok(certs) => match self.identify(&certs, now) {
                Ok((identity, until)) => (Ok(identity), until),
                Err(e) => (
                    Err(e),
                    refusal_until(&certs, now, self.trust.clock_skew_secs()),
                ),
            },
            Err(e) => (Err(e), now.saturating_add(REFUSAL_CACHE_SECS)),
        };
        cache.insert(key, result.clone(), until, now);
        result
    }

    fn identify(&self, certs: &[Cert<'_>], now: i64) -> Result<(Identity, i64), AuthError> {
        let Some(leaf) = certs.first() else {
            return Err(AuthError::BadCredentials("no client certificate".into()));
        };
        let skew = self.trust.clock_skew_secs();
        chain::check_leaf(leaf, now, skew)?;
        let valid_until = chain::validate_path(&self.trust, certs, now, skew)?;
        let name = self.identity.name_of(&leaf.x).ok_or_else(|| {
            AuthError::BadCredentials(format!(
                "the certificate has no {} (certificate_identity)",
                self.identity.as_str()
            ))
        })?;
        if name.len() > IDENTITY_CHARS_MAX || name.contains('\0') {
            return Err(AuthError::BadCredentials(format!(
                "the certificate's {} is not a usable name",
                self.identity.as_str()
            )));
        }
        let identity = Identity {
            method: Method::Certificate,
            authentication_name: name.into(),
            client_type: ClientType::Device,
            ..Identity::anonymous("")
        };
        Ok((identity, valid_until))
    }
}

/// Until when a refusal may be cached: a certificate not yet valid may become valid.
fn refusal_until(certs: &[Cert<'_>], now: i64, skew: i64) -> i64 {
    let soonest_valid = certs
        .iter()
        .map(|c| c.not_before.saturating_sub(skew))
        .filter(|t| *t > now)
        .min()
        .unwrap_or(i64::MAX);
    now.saturating_add(REFUSAL_CACHE_SECS).min(soonest_valid)
}

/// The issuer DN (DER) of a PEM CRL.
fn crl_issuer(pem: &str) -> Result<Vec<u8>, String> {
    let der = super::pem::crl(pem)?;
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| format!("unparseable CRL: {e}"))?;
    Ok(crl.issuer().as_raw().to_vec())
}

/// The `-----BEGIN {label}-----` … `-----END {label}-----` blocks of a PEM bundle (text
/// between blocks, such as `openssl x509 -text` output, is ignored).
fn pem_blocks<'t>(text: &'t str, label: &str) -> Vec<&'t str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let Some(stop) = rest[start..].find(&end) else {
            break;
        };
        let block_end = start + stop + end.len();
        out.push(&rest[start..block_end]);
        rest = &rest[block_end..];
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevokedCertParams, SanType, SerialNumber,
    };
    use std::time::Duration;

    type Ca = CertifiedIssuer<'static, KeyPair>;

    fn ca(cn: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(ca: &Ca, cn: Option<&str>, sans: Vec<SanType>, serial: u64) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.distinguished_name.push(DnType::OrganizationName, "Acme");
        p.subject_alt_names = sans;
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, ca).unwrap().der().clone()
    }

    fn store(ca_pem: &str, crl: Option<&str>, id: CertificateIdentity) -> ClientCa {
        ClientCa::from_pem(ca_pem, crl, id, Duration::from_secs(60)).unwrap()
    }

    fn auth(store: &ClientCa, cert: CertificateDer<'static>) -> Result<Identity, AuthError> {
        store.authenticate(&[cert], &mut X509Cache::default(), 1, SystemTime::now())
    }

    #[test]
    fn identity_fields() {
        let a = ca("CA A");
        let cert = leaf(
            &a,
            Some("dev-1"),
            vec![
                SanType::DnsName("dev1.example".try_into().unwrap()),
                SanType::URI("spiffe://acme/dev1".try_into().unwrap()),
                SanType::Rfc822Name("dev1@acme.example".try_into().unwrap()),
                SanType::IpAddress("10.0.0.7".parse().unwrap()),
            ],
            1,
        );
        for (field, want) in [
            (CertificateIdentity::SubjectCn, "dev-1"),
            (CertificateIdentity::SubjectDn, "O=Acme,CN=dev-1"),
            (CertificateIdentity::SanDns, "dev1.example"),
            (CertificateIdentity::SanUri, "spiffe://acme/dev1"),
            (CertificateIdentity::SanEmail, "dev1@acme.example"),
            (CertificateIdentity::SanIp, "10.0.0.7"),
        ] {
            let s = store(&a.pem(), None, field);
            let id = auth(&s, cert.clone()).unwrap();
            assert_eq!(&*id.authentication_name, want, "{field:?}");
            assert_eq!(id.method, Method::Certificate);
        }
    }

    #[test]
    fn refusals() {
        let (a, b) = (ca("CA A"), ca("CA B"));
        let s = store(&a.pem(), None, CertificateIdentity::SubjectCn);
        let e = auth(&s, leaf(&b, Some("x"), vec![], 2)).unwrap_err();
        assert_eq!(
            e.reason_code(),
            ringmq_codec::ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        assert!(e.to_string().contains("unknown CA"), "{e}");
        let e = auth(&s, leaf(&a, None, vec![], 3)).unwrap_err();
        assert!(e.to_string().contains("subject-cn"), "{e}");
        let san = store(&a.pem(), None, CertificateIdentity::SanDns);
        assert!(auth(&san, leaf(&a, Some("x"), vec![], 4)).is_err());
        assert!(
            s.authenticate(&[], &mut X509Cache::default(), 1, SystemTime::now())
                .is_err()
        );
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(auth(&s, junk).is_err());
    }

    #[test]
    fn bundle_of_two_cas_and_a_crl() {
        let (a, b) = (ca("CA A"), ca("CA B"));
        let bundle = format!("subject=CA A\n{}\nsome text\n{}", a.pem(), b.pem());
        let mut crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(66u64),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl_pem = crl.clone().signed_by(&b).unwrap().pem().unwrap();
        let s = store(&bundle, Some(&crl_pem), CertificateIdentity::SubjectCn);
        assert_eq!(s.subjects().len(), 2);
        assert!(auth(&s, leaf(&a, Some("a1"), vec![], 66)).is_ok());
        assert!(auth(&s, leaf(&b, Some("b1"), vec![], 65)).is_ok());
        let e = auth(&s, leaf(&b, Some("b2"), vec![], 66)).unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        // A CRL from a CA not in the bundle is a load error.
        let c = ca("CA C");
        crl.crl_number = SerialNumber::from(2u64);
        let foreign = crl.signed_by(&c).unwrap().pem().unwrap();
        let e = ClientCa::from_pem(
            &bundle,
            Some(&foreign),
            CertificateIdentity::SubjectCn,
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(e.contains("not issued by any CA"), "{e}");
    }

    #[test]
    fn load_errors() {
        for bad in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                ClientCa::from_pem(bad, None, CertificateIdentity::SubjectCn, Duration::ZERO)
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn results_are_cached() {
        let a = ca("CA A");
        let s = store(&a.pem(), None, CertificateIdentity::SubjectCn);
        let cert = leaf(&a, Some("d"), vec![], 9);
        let mut cache = X509Cache::default();
        for _ in 0..3 {
            let id = s
                .authenticate(
                    std::slice::from_ref(&cert),
                    &mut cache,
                    7,
                    SystemTime::now(),
                )
                .unwrap();
            assert_eq!(&*id.authentication_name, "d");
        }
        assert_eq!((cache.verifications(), cache.hits()), (1, 2));
    }
}
