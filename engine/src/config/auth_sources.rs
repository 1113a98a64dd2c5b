//! `[auth]` keys of the sources decided off the shard threads: the Mosquitto password file,
//! the webhook (`[auth.webhook]`), the pool that runs them (`[auth.pool]`), and the order in
//! which every source is tried (`[auth] order`). See docs/authentication.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// An authentication source, as `[auth] order` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A TLS client certificate checked against the registry.
    Certificate,
    /// CUSTOM-JWT / OAUTH2-JWT enhanced authentication, or a token in the password.
    Jwt,
    /// The webhook (`[auth.webhook] url` or the registry namespace's endpoint).
    Webhook,
    /// The Mosquitto password file (`[auth] password_file`).
    PasswordFile,
    /// No credentials (`allow_anonymous`).
    Anonymous,
}

/// The default order: registry certificate, JWT, webhook, password file, anonymous.
pub const DEFAULT_ORDER: [Source; 5] = [
    Source::Certificate,
    Source::Jwt,
    Source::Webhook,
    Source::PasswordFile,
    Source::Anonymous,
];

/// `[auth.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint, for deployments without a registry (a registry namespace's
    /// `clientAuthentication.webHookAuthentication.endpointUrl` takes precedence).
    pub url: Option<String>,
    /// A file holding the bearer token, re-read when it changes.
    pub bearer_token_file: Option<PathBuf>,
    /// Or a JWT the broker mints: its PEM private key (RSA, EC P-256 or Ed25519), audience,
    /// issuer and lifetime.
    pub token_key_file: Option<PathBuf>,
    pub token_audience: Option<String>,
    #[serde(default = "default_issuer")]
    pub token_issuer: String,
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u32,
    /// PEM CAs trusted for an https:// endpoint (instead of the public web roots).
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Calls in flight at once (the pool's worker threads).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// How long a decision is reused for the same credentials (capped by `expiration`).
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u32,
    /// Failures in a row that open the circuit breaker, and its cool-down.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_secs: u32,
}

fn default_issuer() -> String {
    "ringmq".into()
}
fn default_token_lifetime() -> u32 {
    3600
}
fn default_timeout_ms() -> u32 {
    5000
}
fn default_max_concurrent() -> u32 {
    16
}
fn default_cache_ttl() -> u32 {
    60
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> u32 {
    10
}

impl WebhookConfig {
    /// The settings the auth crate's client takes.
    pub fn settings(&self) -> ringmq_auth::webhook::WebhookSettings {
        use ringmq_auth::webhook::TokenSource;
        let token = match (&self.bearer_token_file, &self.token_key_file) {
            (Some(file), _) => TokenSource::File(file.clone()),
            (None, Some(key)) => TokenSource::Minted {
                key_file: key.clone(),
                audience: self.token_audience.clone().unwrap_or_default(),
                issuer: self.token_issuer.clone(),
                lifetime: Duration::from_secs(u64::from(self.token_lifetime_secs)),
            },
            (None, None) => TokenSource::None,
        };
        ringmq_auth::webhook::WebhookSettings {
            token,
            ca_file: self.ca_file.clone(),
            timeout: Duration::from_millis(u64::from(self.timeout_ms)),
            breaker_failures: self.breaker_failures,
            breaker_cooldown: Duration::from_secs(u64::from(self.breaker_cooldown_secs)),
        }
    }
}

/// `[auth.pool]`: the threads that run password checks and webhook calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Worker threads when no webhook is configured (with one: `webhook.max_concurrent`).
    pub workers: u32,
    /// Requests waiting for a worker, all shards together; over it a CONNECT gets 0x88.
    pub queue_capacity: u32,
    /// CONNECTs (and re-authentications) one shard may have waiting; over it: 0x88.
    pub max_pending_per_shard: u32,
    /// Decisions kept per shard (password checks and webhook answers).
    pub cache_capacity: u32,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            workers: 2,
            queue_capacity: 4096,
            max_pending_per_shard: 1024,
            cache_capacity: 16_384,
        }
    }
}

/// Makes the paths of these keys relative to the config file's folder.
pub(super) fn resolve_paths(auth: &mut super::AuthConfig, base: &Path) {
    let resolve = |p: &mut Option<PathBuf>| {
        if let Some(p) = p.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    };
    resolve(&mut auth.password_file);
    if let Some(w) = auth.webhook.as_mut() {
        resolve(&mut w.bearer_token_file);
        resolve(&mut w.token_key_file);
        resolve(&mut w.ca_file);
    }
}

/// Checks toml cannot express: `Err((key, problem))`.
pub(super) fn validate(auth: &super::AuthConfig) -> Result<(), (&'static str, String)> {
    if let Some(order) = &auth.order {
        for (i, s) in order.iter().enumerate() {
            if order[..i].contains(s) {
                return Err(("auth.order", format!("{s:?} is listed twice")));
            }
        }
    }
    let p = &auth.pool;
    if p.workers == 0 || p.workers > 256 {
        return Err(("auth.pool.workers", "must be between 1 and 256".into()));
    }
    if p.queue_capacity == 0 || p.max_pending_per_shard == 0 {
        return Err((
            "auth.pool",
            "queue_capacity and max_pending_per_shard must be at least 1".into(),
        ));
    }
    if let Some(w) = &auth.webhook {
        if w.url.is_none() && auth.registry.is_none() {
            return Err((
                "auth.webhook.url",
                "no endpoint: set url, or name one in the registry's namespace \
                 (clientAuthentication.webHookAuthentication.endpointUrl)"
                    .into(),
            ));
        }
        if let Some(url) = &w.url {
            ringmq_auth::webhook::check_url(url).map_err(|e| ("auth.webhook.url", e))?;
        }
        if w.timeout_ms == 0 || w.timeout_ms > 600_000 {
            return Err((
                "auth.webhook.timeout_ms",
                "must be between 1 and 600000".into(),
            ));
        }
        if w.max_concurrent == 0 || w.max_concurrent > 1024 {
            return Err((
                "auth.webhook.max_concurrent",
                "must be between 1 and 1024".into(),
            ));
        }
        if w.bearer_token_file.is_some() && w.token_key_file.is_some() {
            return Err((
                "auth.webhook",
                "give bearer_token_file or token_key_file, not both".into(),
            ));
        }
        if w.token_key_file.is_some() && w.token_audience.is_none() {
            return Err((
                "auth.webhook.token_audience",
                "a minted token needs an audience".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/ringmq/ringmq.toml"))
    }

    fn invalid_key(text: &str) -> &'static str {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn keys_parse_with_defaults_and_paths_relative_to_the_file() {
        let c = parse(
            "[auth]\npassword_file = \"passwd\"\norder = [\"password_file\", \"webhook\"]\n\
             [auth.webhook]\nurl = \"https://hook.example/auth\"\nbearer_token_file = \"tok\"\n",
        )
        .unwrap();
        assert_eq!(
            c.auth.password_file.as_deref(),
            Some(Path::new("/etc/ringmq/passwd"))
        );
        let w = c.auth.webhook.as_ref().unwrap();
        assert_eq!(
            w.bearer_token_file.as_deref(),
            Some(Path::new("/etc/ringmq/tok"))
        );
        assert_eq!(
            (w.timeout_ms, w.max_concurrent, w.cache_ttl_secs),
            (5000, 16, 60)
        );
        assert_eq!(c.auth.pool.max_pending_per_shard, 1024);
        assert!(
            !c.anonymous_allowed(),
            "a password file turns anonymous access off"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            invalid_key("[auth]\norder = [\"jwt\", \"jwt\"]\n"),
            "auth.order"
        );
        assert_eq!(
            invalid_key("[auth.webhook]\nurl = \"http://example.com/\"\n"),
            "auth.webhook.url"
        );
        assert_eq!(invalid_key("[auth.webhook]\n"), "auth.webhook.url");
        assert_eq!(
            invalid_key("[auth.webhook]\nurl = \"https://h/\"\ntimeout_ms = 0\n"),
            "auth.webhook.timeout_ms"
        );
        assert_eq!(
            invalid_key("[auth.webhook]\nurl = \"https://h/\"\ntoken_key_file = \"k\"\n"),
            "auth.webhook.token_audience"
        );
        assert_eq!(
            invalid_key("[auth.pool]\nworkers = 0\n"),
            "auth.pool.workers"
        );
        assert!(parse("[auth]\norder = [\"nonsense\"]\n").is_err());
    }
}
