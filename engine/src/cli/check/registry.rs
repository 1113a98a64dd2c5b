//! The registry file (`auth.registry`): parsed by the broker's own parser, which checks the CA
//! certificates, CRLs, thumbprints and JWT settings it holds and stops at the first error;
//! its warnings (ignored keys, expired CA certificates, short HMAC secrets) are all reported.
//! Then what the registry expects of the listeners.

use std::path::Path;

use ringmq::config::{ClientCertificateMode, Config};
use ringmq_auth::registry::{LoadError, Registry};

use super::{CheckOptions, Report};

/// Loads the registry the configuration names; `None` when there is none or it does not load.
pub(super) fn check_registry(
    file: &Path,
    config: &Config,
    options: CheckOptions,
    report: &mut Report,
) -> Option<Registry> {
    let path = config.auth.registry.as_deref()?;
    let registry = match Registry::load(path) {
        Ok((registry, warnings)) => {
            for w in warnings {
                let (location, message) = split_warning(&w);
                report.warning(path, location, message);
            }
            registry
        }
        Err(LoadError::Io { source, .. }) => {
            report.error(
                file,
                "auth.registry",
                format!("{}: {source}", path.display()),
            );
            return None;
        }
        Err(LoadError::Invalid { error, .. }) => {
            report.error(path, json_path(&error.path), error.problem);
            return None;
        }
        Err(other) => {
            report.error(path, "", other.to_string());
            return None;
        }
    };
    if options.fetch_jwks {
        for endpoint in ringmq_auth::jwt::jwks_endpoints(&registry) {
            let url = &endpoint.config().url;
            match endpoint.refresh_blocking() {
                Ok(keys) if keys.is_empty() => {
                    report.error(path, format!("jwks {url}"), "the key set is empty")
                }
                Ok(_) => {}
                Err(e) => report.error(path, format!("jwks {url}"), e.to_string()),
            }
        }
    }
    Some(registry)
}

/// Clients that authenticate with a certificate need a listener that asks for one.
pub(super) fn check_registry_against_listeners(
    config: &Config,
    registry: &Registry,
    report: &mut Report,
) {
    let Some(path) = config.auth.registry.as_deref() else {
        return;
    };
    let asks_for_certificates = config
        .listeners
        .iter()
        .any(|l| l.client_certificate != ClientCertificateMode::None);
    if asks_for_certificates {
        return;
    }
    let mut with_certificates = registry
        .clients()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.certificate_authentication.is_some());
    let Some((first, _)) = with_certificates.next() else {
        return;
    };
    let others = with_certificates.count();
    let also = if others > 0 {
        format!(" (and {others} more clients)")
    } else {
        String::new()
    };
    report.warning(
        path,
        format!("$.clients[{first}].clientCertificateAuthentication"),
        format!(
            "no listener asks for a client certificate (client_certificate = \"optional\" or \"required\" on an mqtts or wss listener), so this client{also} cannot authenticate with one"
        ),
    );
}

/// A registry path (`clients[3].state`, or empty for the whole document) as a JSON path.
fn json_path(path: &str) -> String {
    if path.is_empty() {
        "$".to_owned()
    } else {
        format!("$.{path}")
    }
}

/// Registry warnings read "`path`: problem" or "path: problem"; split them so the path is
/// printed like an error's.
fn split_warning(warning: &str) -> (String, String) {
    let (path, rest) = if let Some(quoted) = warning.strip_prefix('`') {
        match quoted.split_once("`: ") {
            Some((p, rest)) => (p, rest),
            None => return (String::new(), warning.to_owned()),
        }
    } else {
        match warning.split_once(": ") {
            Some((p, rest)) if !p.is_empty() && !p.contains(' ') => (p, rest),
            _ => return (String::new(), warning.to_owned()),
        }
    };
    (json_path(path), rest.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_split_into_json_path_and_problem() {
        assert_eq!(
            split_warning("`namespace.x.hmacSecrets[0]`: shorter than 32 bytes"),
            (
                "$.namespace.x.hmacSecrets[0]".to_owned(),
                "shorter than 32 bytes".to_owned()
            )
        );
        assert_eq!(
            split_warning("caCertificates[1].encodedCertificate: expired (CN=x)"),
            (
                "$.caCertificates[1].encodedCertificate".to_owned(),
                "expired (CN=x)".to_owned()
            )
        );
        assert_eq!(
            split_warning("something without a path"),
            (String::new(), "something without a path".to_owned())
        );
        assert_eq!(json_path(""), "$");
    }
}
