//! The authentication pool: the threads that run password checks and webhook calls for the
//! shards, which never wait for them.
//!
//! What it is for: a shard's core emits an [`AuthRequest`] (`proto/authn_external.rs`); the
//! runtime submits it here ([`AuthPool::submit`], a bounded queue: full → the CONNECT gets
//! 0x88 at once). One of `workers` threads decides it — PBKDF2 against the password file,
//! or a POST to the webhook — and pushes the outcome to the shard's result queue, then wakes
//! the shard's result task (an `AtomicWaker`, as the mesh wakes inboxes: it works the same on
//! the io_uring and the epoll driver). The password file is reloaded here too, on change and
//! on SIGHUP; a file that does not load keeps the previous one.
//!
//! What it must never do: block a shard (submission is a `try_send`, results a lock-free
//! queue), lose a result (every request gets exactly one answer, a panic included, so the
//! shard's count of parked CONNECTs stays exact), or log a password.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use atomic_waker::AtomicWaker;
use crossbeam::channel::{Receiver, Sender, TrySendError};
use crossbeam::queue::SegQueue;
use ringmq_auth::passwd::PasswordFile;
use ringmq_auth::webhook::{Decision, Webhook, WebhookRequest};
use ringmq_auth::{ClientType, Identity, Method};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::config::auth_sources::{DEFAULT_ORDER, WebhookConfig};
use crate::proto::authn_external::{AuthOutcome, AuthRequest, ExternalConfig, ExternalSource};

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("auth.password_file {file}: {problem}")]
    PasswordFile { file: String, problem: String },
    #[error("auth.webhook: {0}")]
    Webhook(String),
    #[error("cannot start the authentication pool: {0}")]
    Thread(std::io::Error),
}

struct Job {
    shard: usize,
    request: AuthRequest,
}

/// One shard's answers and the waker of its result task.
#[derive(Default)]
struct ShardResults {
    queue: SegQueue<(u64, AuthOutcome)>,
    waker: AtomicWaker,
}

/// What the workers share.
struct Shared {
    passwords: ArcSwapOption<PasswordFile>,
    password_generation: Arc<AtomicU64>,
    /// `[auth.webhook]`, and the endpoint client in use (rebuilt when the registry names
    /// another URL).
    webhook_config: Option<WebhookConfig>,
    webhook: ArcSwapOption<Webhook>,
    auth: ringmq_auth::SharedSnapshot,
    results: Box<[ShardResults]>,
    /// Requests decided, by outcome (tests and metrics).
    decided: AtomicU64,
}

/// The pool: cheap to clone, one per server.
#[derive(Clone)]
pub struct AuthPool {
    jobs: Sender<Job>,
    shared: Arc<Shared>,
    external: Arc<ExternalConfig>,
}

impl std::fmt::Debug for AuthPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPool").finish_non_exhaustive()
    }
}

impl AuthPool {
    /// Starts the pool when an off-shard source may be used (a password file, a webhook, or a
    /// registry, whose namespace may name a webhook); `None` otherwise.
    pub fn start(
        config: &Config,
        shards: usize,
        auth: ringmq_auth::SharedSnapshot,
    ) -> Result<Option<AuthPool>, PoolError> {
        let a = &config.auth;
        if a.password_file.is_none() && a.webhook.is_none() && a.registry.is_none() {
            return Ok(None);
        }
        let passwords = match &a.password_file {
            Some(path) => Some(Arc::new(load_passwords(path)?)),
            None => None,
        };
        let webhook_config = a.webhook.clone();
        let webhook = match webhook_config
            .as_ref()
            .and_then(|w| w.url.as_ref().map(|u| (w, u)))
        {
            Some((w, url)) => Some(Arc::new(
                Webhook::new(url, w.settings()).map_err(PoolError::Webhook)?,
            )),
            None => None,
        };
        let workers = match &webhook_config {
            Some(w) => w.max_concurrent.max(a.pool.workers),
            None => a.pool.workers,
        };
        let (jobs, rx) = crossbeam::channel::bounded(a.pool.queue_capacity as usize);
        let shared = Arc::new(Shared {
            passwords: ArcSwapOption::new(passwords),
            password_generation: Arc::new(AtomicU64::new(1)),
            webhook_config,
            webhook: ArcSwapOption::new(webhook),
            auth,
            results: (0..shards).map(|_| ShardResults::default()).collect(),
            decided: AtomicU64::new(0),
        });
        for n in 0..workers {
            let rx: Receiver<Job> = rx.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("ringmq-auth-{n}"))
                .spawn(move || worker(&rx, &shared))
                .map_err(PoolError::Thread)?;
        }
        if let Some(path) = a.password_file.clone() {
            spawn_password_watch(path, shared.clone()).map_err(PoolError::Thread)?;
        }
        let external = Arc::new(ExternalConfig {
            order: a.order.clone().unwrap_or_else(|| DEFAULT_ORDER.to_vec()),
            webhook: a.webhook.as_ref().is_some_and(|w| w.url.is_some()),
            password_file: a.password_file.is_some(),
            max_pending: a.pool.max_pending_per_shard as usize,
            cache_capacity: a.pool.cache_capacity as usize,
            webhook_cache_ttl: Duration::from_secs(
                a.webhook
                    .as_ref()
                    .map_or(60, |w| u64::from(w.cache_ttl_secs)),
            ),
            password_generation: shared.password_generation.clone(),
        });
        info!(workers, "authentication pool started");
        Ok(Some(AuthPool {
            jobs,
            shared,
            external,
        }))
    }

    /// What the shards' cores are configured with.
    pub fn external_config(&self) -> Arc<ExternalConfig> {
        self.external.clone()
    }

    /// Queues `request` of `shard`; gives it back when the queue is full.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, shard: usize, request: AuthRequest) -> Result<(), AuthRequest> {
        match self.jobs.try_send(Job { shard, request }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job.request),
        }
    }

    /// The next answer for `shard`, or `Pending` with the task's waker registered.
    pub fn poll_result(&self, shard: usize, cx: &mut Context<'_>) -> Poll<(u64, AuthOutcome)> {
        let Some(r) = self.shared.results.get(shard) else {
            return Poll::Pending;
        };
        if let Some(x) = r.queue.pop() {
            return Poll::Ready(x);
        }
        r.waker.register(cx.waker());
        // A push between the pop and the registration would otherwise be missed.
        match r.queue.pop() {
            Some(x) => Poll::Ready(x),
            None => Poll::Pending,
        }
    }

    /// The next answer for `shard`, without waiting.
    pub fn try_result(&self, shard: usize) -> Option<(u64, AuthOutcome)> {
        self.shared.results.get(shard)?.queue.pop()
    }

    /// Requests decided so far.
    pub fn decided(&self) -> u64 {
        self.shared.decided.load(Ordering::Relaxed)
    }
}

impl crate::ops::metrics::AuthPoolGauges for AuthPool {
    fn queued(&self) -> u64 {
        self.jobs.len() as u64
    }

    fn decided(&self) -> u64 {
        AuthPool::decided(self)
    }

    fn breaker_open(&self) -> Option<bool> {
        let webhook = self.shared.webhook.load();
        let webhook = webhook.as_ref()?;
        Some(webhook.breaker().is_open(SystemTime::now()))
    }
}

fn load_passwords(path: &std::path::Path) -> Result<PasswordFile, PoolError> {
    PasswordFile::load(path).map_err(|e| PoolError::PasswordFile {
        file: path.display().to_string(),
        problem: e.to_string(),
    })
}

fn worker(rx: &Receiver<Job>, shared: &Shared) {
    while let Ok(job) = rx.recv() {
        let Job { shard, request } = job;
        let ticket = request.ticket;
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(shared, &request)))
                .unwrap_or_else(|_| {
                    AuthOutcome::Unavailable("internal error in the authentication pool".into())
                });
        shared.decided.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = shared.results.get(shard) {
            r.queue.push((ticket, outcome));
            r.waker.wake();
        }
    }
}

fn decide(shared: &Shared, request: &AuthRequest) -> AuthOutcome {
    let creds = request.credentials.credentials();
    match request.source {
        ExternalSource::PasswordFile => {
            let (Some(user), Some(password)) = (creds.username, creds.password) else {
                return AuthOutcome::BadCredentials(
                    "a user name and a password are required".into(),
                );
            };
            let Some(file) = shared.passwords.load_full() else {
                return AuthOutcome::Unavailable("no password file is loaded".into());
            };
            if file.verify(user, password) {
                AuthOutcome::Allow(Box::new(Identity {
                    method: Method::PasswordFile,
                    client_type: ClientType::Device,
                    ..Identity::anonymous(user)
                }))
            } else {
                warn!(user, peer = %request.peer, "password file: unknown user or wrong password");
                AuthOutcome::BadCredentials("unknown user or wrong password".into())
            }
        }
        ExternalSource::Webhook => {
            let Some(hook) = webhook_for(shared) else {
                return AuthOutcome::Unavailable("no webhook endpoint is configured".into());
            };
            let body = WebhookRequest::from_credentials(&creds);
            match hook.call(&body, SystemTime::now()) {
                Ok(decision @ Decision::Allow { .. }) => {
                    if let Decision::Allow { ignored, name, .. } = &decision
                        && !ignored.is_empty()
                    {
                        warn!(client_id = %creds.client_id, authentication_name = %name, ?ignored, "webhook: attributes of an unsupported type ignored (int32, string and string arrays are)");
                    }
                    match decision.identity(creds.auth_method) {
                        Some(id) => AuthOutcome::Allow(Box::new(id)),
                        None => AuthOutcome::Unavailable("webhook: no identity".into()),
                    }
                }
                Ok(Decision::Deny { reason }) => {
                    warn!(client_id = %creds.client_id, peer = %request.peer, error_reason = %reason, "webhook denied the client");
                    AuthOutcome::Deny(reason)
                }
                Err(e) => {
                    warn!(client_id = %creds.client_id, peer = %request.peer, "webhook gave no decision: {e}");
                    AuthOutcome::Unavailable(e.to_string())
                }
            }
        }
    }
}

/// The endpoint client for the URL in force: the registry namespace's, else `[auth.webhook]
/// url`. Rebuilt when the URL changes (a registry reload), keeping `[auth.webhook]`'s settings.
fn webhook_for(shared: &Shared) -> Option<Arc<Webhook>> {
    let snapshot = shared.auth.load();
    let url = snapshot
        .registry
        .as_ref()
        .and_then(|r| r.webhook_url.clone())
        .or_else(|| shared.webhook_config.as_ref().and_then(|w| w.url.clone()))?;
    if let Some(current) = shared.webhook.load_full()
        && current.url() == url
    {
        return Some(current);
    }
    let settings = match &shared.webhook_config {
        Some(w) => w.settings(),
        None => ringmq_auth::webhook::WebhookSettings {
            token: ringmq_auth::webhook::TokenSource::None,
            ca_file: None,
            timeout: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(10),
        },
    };
    match Webhook::new(&url, settings) {
        Ok(hook) => {
            let hook = Arc::new(hook);
            shared.webhook.store(Some(hook.clone()));
            Some(hook)
        }
        Err(e) => {
            error!("webhook {url}: {e}");
            None
        }
    }
}

/// Reloads the password file when it changes and on SIGHUP (checked every 0.5 s, like the
/// registry); a file that does not load keeps the previous one.
fn spawn_password_watch(path: PathBuf, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    std::thread::Builder::new()
        .name("ringmq-passwd".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let hup = signals.pending().count() > 0;
                let now = modified(&path);
                if !hup && now == last {
                    continue;
                }
                last = now;
                match PasswordFile::load(&path) {
                    Ok(file) => {
                        let users = file.len();
                        shared.passwords.store(Some(Arc::new(file)));
                        shared.password_generation.fetch_add(1, Ordering::AcqRel);
                        info!(file = %path.display(), users, "password file reloaded");
                    }
                    Err(e) => error!(
                        file = %path.display(),
                        "password file reload refused, the previous file stays in force: {e}"
                    ),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ids::ConnId;
    use crate::proto::authn::StoredCredentials;
    use crate::proto::authn_external::OwnedCredentials;
    use crate::shard::mesh::ConnToken;
    use ringmq_codec::Str;

    fn request(ticket: u64, user: &str, password: &'static [u8]) -> AuthRequest {
        AuthRequest {
            conn: ConnToken {
                conn: ConnId::from_slot(0),
                serial: ticket,
            },
            ticket,
            source: ExternalSource::PasswordFile,
            credentials: OwnedCredentials {
                client_id: Str::copy_from("c").unwrap(),
                stored: StoredCredentials {
                    username: Some(Str::copy_from(user).unwrap()),
                    password: Some(bytes::Bytes::from_static(password)),
                    ..Default::default()
                },
                peer_certificates: Vec::new(),
                v5: true,
            },
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    /// One worker busy with a slow check and a queue of one: a third request is refused at
    /// once (the runtime then answers it 0x88); the others are answered on their shard.
    #[test]
    fn a_full_queue_refuses_and_every_queued_request_is_answered() {
        let dir = std::env::temp_dir().join(format!("ringmq-authpool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("passwd");
        // Slow on purpose (about 0.1–0.5 s per check), so the worker is busy.
        let hash = ringmq_auth::passwd::Hash::new_pbkdf2(
            b"pw",
            std::num::NonZeroU32::new(200_000).unwrap(),
        )
        .unwrap();
        std::fs::write(&file, ringmq_auth::passwd::update_text("", "u", &hash)).unwrap();
        let mut config = Config::default();
        config.auth.password_file = Some(file);
        config.auth.pool.workers = 1;
        config.auth.pool.queue_capacity = 1;
        let auth = ringmq_auth::SharedSnapshot::new(ringmq_auth::Snapshot::allow_all());
        let pool = AuthPool::start(&config, 2, auth).unwrap().unwrap();
        assert!(pool.submit(1, request(1, "u", b"pw")).is_ok());
        let second = pool.submit(1, request(2, "u", b"bad"));
        let third = pool.submit(1, request(3, "u", b"pw"));
        // At most one request in the worker and one queued: the third cannot fit.
        let refused = third.expect_err("the queue holds one");
        assert_eq!(refused.ticket, 3);
        let expected = if second.is_ok() { 2 } else { 1 };
        let mut answers = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while answers.len() < expected && std::time::Instant::now() < deadline {
            match pool.try_result(1) {
                Some(a) => answers.push(a),
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        assert_eq!(answers.len(), expected, "every queued request is answered");
        assert!(matches!(answers[0], (1, AuthOutcome::Allow(_))));
        if expected == 2 {
            assert!(matches!(answers[1], (2, AuthOutcome::BadCredentials(_))));
        }
        assert!(
            pool.try_result(0).is_none(),
            "answers go to their own shard"
        );
    }
}
