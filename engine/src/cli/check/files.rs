//! The files of the other authentication sources (password file, ACL file, client CA and CRL,
//! JWKS CA, the webhook's token, key and CA files) and the storage directory: each loaded or
//! inspected exactly as startup does it, without changing anything.

use std::path::Path;

use ringmq::config::Config;
use ringmq_auth::acl::AclFile;
use ringmq_auth::passwd::PasswordFile;
use ringmq_auth::webhook::Webhook;

use super::Report;

/// `[auth] password_file`, `acl_file`, `client_ca`/`client_crl`, `jwks_ca_file` and
/// `[auth.webhook]`'s files.
pub(super) fn check_auth_files(file: &Path, config: &Config, report: &mut Report) {
    let a = &config.auth;
    if let Some(path) = &a.password_file {
        match PasswordFile::load(path) {
            Ok(_) => {}
            Err(e) => report.error(
                file,
                "auth.password_file",
                format!("{}: {e}", path.display()),
            ),
        }
    }
    if let Some(path) = &a.acl_file {
        match AclFile::load(path) {
            Ok((_, warnings)) => {
                for w in warnings {
                    report.warning(path, "", w);
                }
            }
            Err(e) => report.error(file, "auth.acl_file", e.to_string()),
        }
    }
    if a.client_ca.is_some()
        && let Err(e) = ringmq::config::auth_files::load_auth_files(config)
    {
        report.error(file, "auth.client_ca", e.to_string());
    }
    if let Some(path) = &a.jwks_ca_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Err(problem) = ringmq_auth::jwt::parse_ca_pem(&text) {
                    report.error(
                        file,
                        "auth.jwks_ca_file",
                        format!("{}: {problem}", path.display()),
                    );
                }
            }
            Err(e) => report.error(
                file,
                "auth.jwks_ca_file",
                format!("{}: {e}", path.display()),
            ),
        }
    }
    if let Some(w) = &a.webhook {
        if let Some(path) = &w.bearer_token_file {
            match std::fs::read_to_string(path) {
                Ok(token) if token.trim().is_empty() => report.error(
                    file,
                    "auth.webhook.bearer_token_file",
                    format!("{}: empty", path.display()),
                ),
                Ok(_) => {}
                Err(e) => report.error(
                    file,
                    "auth.webhook.bearer_token_file",
                    format!("{}: {e}", path.display()),
                ),
            }
        }
        // Builds the client as startup does: reads `ca_file` and `token_key_file`. Without a
        // `url` (the registry names the endpoint) a loopback stand-in checks the files.
        let url = w.url.as_deref().unwrap_or("http://127.0.0.1/");
        if let Err(problem) = Webhook::new(url, w.settings()) {
            report.error(file, "auth.webhook", problem);
        }
    }
}

/// `[storage] dir`: what startup's `Store::open` checks, read-only (nothing is created or
/// locked). A directory locked by a running broker is a warning.
pub(super) fn check_storage(file: &Path, config: &Config, report: &mut Report) {
    let Some(dir) = &config.storage.dir else {
        return;
    };
    let shards = config.server.shard_count();
    match ringmq_storage::inspect(dir) {
        Ok(found) => {
            if found.locked {
                report.warning(
                    file,
                    "storage.dir",
                    format!(
                        "{}: a running ringmq holds its lock (fine if it is the broker of this \
                         configuration; a second one would not start)",
                        dir.display()
                    ),
                );
            }
            if let Some(recorded) = found.recorded_shards.filter(|&n| n != shards) {
                report.warning(
                    file,
                    "storage.dir",
                    format!(
                        "{}: holds the logs of {recorded} shards; the next start re-homes the \
                         sessions into {shards} (docs/storage.md, \"A changed shard count\")",
                        dir.display()
                    ),
                );
            }
        }
        Err(e) => report.error(file, "storage.dir", e.to_string()),
    }
}
