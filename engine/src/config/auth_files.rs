//! The `[auth]` keys of the Mosquitto-style policy files: `acl_file`, `client_ca`,
//! `client_crl`, `certificate_identity`, `jwks_ca_file` (docs/configuration.md). Their
//! fields live in [`super::AuthConfig`]; the checks, path resolution and loading are here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringmq_auth::AuthFiles;
use ringmq_auth::acl::AclFile;
use ringmq_auth::registry::LoadError;
use ringmq_auth::x509::{CertificateIdentity, ClientCa};
use serde::Deserialize;
use tracing::{info, warn};

use super::{AuthConfig, ClientCertificateMode, Config, ConfigError};

/// `certificate_identity`: the certificate field a `client_ca` certificate is named by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateIdentityName {
    #[default]
    SubjectCn,
    SubjectDn,
    SanDns,
    SanUri,
    SanEmail,
    SanIp,
}

impl From<CertificateIdentityName> for CertificateIdentity {
    fn from(name: CertificateIdentityName) -> CertificateIdentity {
        match name {
            CertificateIdentityName::SubjectCn => CertificateIdentity::SubjectCn,
            CertificateIdentityName::SubjectDn => CertificateIdentity::SubjectDn,
            CertificateIdentityName::SanDns => CertificateIdentity::SanDns,
            CertificateIdentityName::SanUri => CertificateIdentity::SanUri,
            CertificateIdentityName::SanEmail => CertificateIdentity::SanEmail,
            CertificateIdentityName::SanIp => CertificateIdentity::SanIp,
        }
    }
}

impl AuthConfig {
    /// Makes the file paths relative to the config file's directory `base`.
    pub(super) fn resolve_file_paths(&mut self, base: &Path) {
        for p in [
            &mut self.acl_file,
            &mut self.client_ca,
            &mut self.client_crl,
            &mut self.jwks_ca_file,
        ] {
            if let Some(p) = p.as_mut()
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
    }

    /// The policy files a reload re-reads and whose changes trigger one: the registry, the
    /// ACL file, the client CA bundle and CRL.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        [
            &self.registry,
            &self.acl_file,
            &self.client_ca,
            &self.client_crl,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

impl Config {
    /// Keys of the policy files that need one another.
    pub(super) fn validate_auth_files(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                key,
                problem: problem.to_owned(),
            })
        };
        let a = &self.auth;
        if a.jwks_ca_file.is_some() && a.registry.is_none() {
            return invalid(
                "auth.jwks_ca_file",
                "needs `auth.registry` (JWKS endpoints are configured in its JWT sections)",
            );
        }
        if a.client_ca.is_none() {
            if a.client_crl.is_some() {
                return invalid("auth.client_crl", "needs `auth.client_ca`");
            }
            if a.certificate_identity.is_some() {
                return invalid("auth.certificate_identity", "needs `auth.client_ca`");
            }
        } else if self
            .listeners
            .iter()
            .all(|l| l.client_certificate == ClientCertificateMode::None)
        {
            return invalid(
                "auth.client_ca",
                "no listener asks for client certificates: set client_certificate = \"required\" \
                 (or \"optional\") on an mqtts or wss listener",
            );
        }
        Ok(())
    }
}

/// Loads the ACL file and the client CA of `config` (none configured: the default). Errors
/// name the file (and line); warnings are logged.
pub fn load_auth_files(config: &Config) -> Result<AuthFiles, LoadError> {
    let a = &config.auth;
    let acl = match &a.acl_file {
        None => None,
        Some(path) => {
            let (acl, warnings) = AclFile::load(path)?;
            for w in warnings {
                warn!(file = %path.display(), "acl_file: {w}");
            }
            info!(file = %path.display(), users = acl.users(), "ACL file loaded");
            Some(acl)
        }
    };
    let client_ca = match &a.client_ca {
        None => None,
        Some(path) => {
            let identity = a.certificate_identity.unwrap_or_default().into();
            let skew = Duration::from_secs(u64::from(a.clock_skew_secs));
            let ca = ClientCa::load(path, a.client_crl.as_deref(), identity, skew)?;
            info!(file = %path.display(), cas = ?ca.subjects(), identity = ca.identity_field().as_str(), "client CA loaded");
            Some(ca)
        }
    };
    Ok(AuthFiles { acl, client_ca })
}

/// Gives every JWKS endpoint of `registry` without its own `caPem` the CAs of
/// `[auth] jwks_ca_file` (read at each registry load), in place of the public web roots.
pub fn apply_jwks_ca_file(
    config: &Config,
    registry: &ringmq_auth::registry::Registry,
) -> Result<(), LoadError> {
    let Some(path) = &config.auth.jwks_ca_file else {
        return Ok(());
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: file.clone(),
        source,
    })?;
    let cas = ringmq_auth::jwt::parse_ca_pem(&text)
        .map_err(|problem| LoadError::File { file, problem })?;
    for endpoint in ringmq_auth::jwt::jwks_endpoints(registry) {
        if endpoint.config().ca_certificates.is_none() {
            endpoint.use_shared_ca(std::sync::Arc::clone(&cas));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/ringmq/ringmq.toml"))
    }

    const TLS: &str = "[[listener]]\nbind = \"127.0.0.1:8883\"\nprotocol = \"mqtts\"\ncert = \"s.pem\"\nkey = \"s.key\"\nclient_certificate = \"required\"\n";

    #[test]
    fn keys_resolve_and_default() {
        let c = parse(&format!(
            "{TLS}[auth]\nacl_file = \"acl\"\nclient_ca = \"/pki/ca.pem\"\nclient_crl = \"crl.pem\"\ncertificate_identity = \"san-dns\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.auth.acl_file.as_deref(),
            Some(Path::new("/etc/ringmq/acl"))
        );
        assert_eq!(c.auth.client_ca.as_deref(), Some(Path::new("/pki/ca.pem")));
        assert_eq!(
            c.auth.certificate_identity,
            Some(CertificateIdentityName::SanDns)
        );
        assert_eq!(c.auth.watched_files().len(), 3);
        // A client CA makes anonymous access opt-in, as a registry does.
        assert!(!c.anonymous_allowed());
        let acl_only = parse("[auth]\nacl_file = \"acl\"\n").unwrap();
        assert!(acl_only.anonymous_allowed());
    }

    #[test]
    fn keys_that_need_one_another() {
        for (text, key) in [
            ("[auth]\nclient_crl = \"c\"\n", "auth.client_crl"),
            (
                "[auth]\ncertificate_identity = \"subject-dn\"\n",
                "auth.certificate_identity",
            ),
            ("[auth]\nclient_ca = \"c\"\n", "auth.client_ca"),
            ("[auth]\njwks_ca_file = \"c\"\n", "auth.jwks_ca_file"),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{text}: {other:?}"),
            }
        }
        let bad = parse("[auth]\ncertificate_identity = \"cn\"\n").unwrap_err();
        assert!(
            bad.to_string().contains("certificate_identity") || bad.to_string().contains("variant"),
            "{bad}"
        );
    }
}
