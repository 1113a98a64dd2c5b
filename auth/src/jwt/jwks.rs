//! JWKS endpoints and the background thread that fetches them.
//!
//! A [`Jwks`] is shared (`Arc`) by the compiled registry section that verifies with it and by
//! the [`JwksFetcher`] thread that refreshes it. Shards read the current [`KeySet`] through
//! `arc-swap` (no lock); the fetcher publishes a new one after each successful fetch and keeps
//! the last good one when a fetch fails. A shard that meets an unknown `kid` calls
//! [`Jwks::request_refetch`], which only sets a flag and unparks the fetcher: at most one such
//! request per endpoint per [`EARLY_REFETCH_INTERVAL_SECS`](super::EARLY_REFETCH_INTERVAL_SECS).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine as _;

use super::EARLY_REFETCH_INTERVAL_SECS;
use super::keys::KeySet;

/// Largest JWKS document read, in bytes.
pub const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// Time limit of one fetch (connect, TLS, request, body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch, retry this soon (or at the refresh interval, if shorter).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// `jwks` of a JWT section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub url: String,
    pub refresh_interval: Duration,
    /// Extra request headers (`headers`).
    pub headers: Vec<(String, String)>,
    /// HTTP basic credentials (`username`, `password`).
    pub basic_auth: Option<(String, String)>,
    /// `allowInsecureHttp`: plain http:// permitted.
    pub allow_insecure_http: bool,
    /// `caPem`: the CA certificates (DER) trusted for this endpoint instead of the public web
    /// roots, for an identity provider behind a private CA; `None`: the public roots (or the
    /// shared `[auth] jwks_ca_file`, see [`Jwks::use_shared_ca`]).
    pub ca_certificates: Option<JwksCa>,
}

/// CA certificates trusted for a JWKS endpoint.
pub type JwksCa = Arc<[rustls_pki_types::CertificateDer<'static>]>;

/// Most CA certificates in one JWKS CA bundle.
pub const MAX_JWKS_CA_CERTIFICATES: usize = 64;

/// Decodes a PEM bundle of CA certificates for JWKS endpoints (text outside the
/// `CERTIFICATE` blocks is ignored). At least one, at most [`MAX_JWKS_CA_CERTIFICATES`].
pub fn parse_ca_pem(pem: &str) -> Result<JwksCa, String> {
    use rustls_pki_types::pem::PemObject;
    let mut certs = Vec::new();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("invalid PEM: {e}"))?;
        if certs.len() == MAX_JWKS_CA_CERTIFICATES {
            return Err(format!("more than {MAX_JWKS_CA_CERTIFICATES} certificates"));
        }
        crate::x509::parse(cert.as_ref())
            .map_err(|e| format!("certificate #{}: {e}", certs.len() + 1))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block".into());
    }
    Ok(certs.into())
}

/// Why a fetch failed. The last good key set stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    #[error("request to {url} failed: {problem}")]
    Request { url: String, problem: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: bad JWKS document: {problem}")]
    Document { url: String, problem: String },
}

/// One JWKS endpoint and its current key set.
#[derive(Debug)]
pub struct Jwks {
    config: JwksConfig,
    keys: ArcSwap<KeySet>,
    /// An early refetch was requested and not yet done.
    pending: AtomicBool,
    /// Unix seconds + 1 of the last accepted early request (0: never).
    last_early_request: AtomicU64,
    early_requests: AtomicU64,
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    /// Whether the last fetch succeeded (meaningless while both counts are 0).
    last_fetch_ok: AtomicBool,
    /// The fetcher thread serving this endpoint, to wake it.
    fetcher: ArcSwapOption<Thread>,
    /// `[auth] jwks_ca_file`, for an endpoint without its own `caPem` (set once, at load).
    shared_ca: std::sync::OnceLock<JwksCa>,
}

impl Jwks {
    pub fn new(config: JwksConfig) -> Jwks {
        Jwks {
            config,
            keys: ArcSwap::from_pointee(KeySet::empty()),
            pending: AtomicBool::new(false),
            last_early_request: AtomicU64::new(0),
            early_requests: AtomicU64::new(0),
            fetches_ok: AtomicU64::new(0),
            fetches_failed: AtomicU64::new(0),
            last_fetch_ok: AtomicBool::new(false),
            fetcher: ArcSwapOption::empty(),
            shared_ca: std::sync::OnceLock::new(),
        }
    }

    /// Trusts `ca` (the shared `[auth] jwks_ca_file`) for this endpoint instead of the public
    /// web roots, unless the endpoint has its own `caPem`. Set once; later calls are ignored.
    pub fn use_shared_ca(&self, ca: JwksCa) {
        let _ = self.shared_ca.set(ca);
    }

    /// The CA certificates this endpoint trusts; `None`: the public web roots.
    pub fn trusted_ca(&self) -> Option<&JwksCa> {
        self.config
            .ca_certificates
            .as_ref()
            .or_else(|| self.shared_ca.get())
    }

    pub fn config(&self) -> &JwksConfig {
        &self.config
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// The current key set, for the verification path (no reference count traffic).
    pub(crate) fn keys_guard(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Publishes a key set (what a fetch does; also a reload carrying keys over).
    pub fn install(&self, keys: Arc<KeySet>) {
        self.keys.store(keys);
    }

    /// Asks the fetcher for an early refetch because a token named an unknown `kid`. Never
    /// blocks. Returns whether the request was accepted: at most one per
    /// `EARLY_REFETCH_INTERVAL_SECS` (by `now`, the caller's clock).
    pub fn request_refetch(&self, now: SystemTime) -> bool {
        let secs = unix_secs(now);
        let last = self.last_early_request.load(Ordering::Relaxed);
        if last != 0 && secs < (last - 1).saturating_add(EARLY_REFETCH_INTERVAL_SECS) {
            return false;
        }
        if self
            .last_early_request
            .compare_exchange(
                last,
                secs.saturating_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false; // another shard asked at the same moment
        }
        self.early_requests.fetch_add(1, Ordering::Relaxed);
        self.pending.store(true, Ordering::Release);
        if let Some(thread) = self.fetcher.load().as_ref() {
            thread.unpark();
        }
        true
    }

    /// Accepted early refetch requests so far.
    pub fn early_requests(&self) -> u64 {
        self.early_requests.load(Ordering::Relaxed)
    }

    /// Successful fetches so far.
    pub fn fetches_ok(&self) -> u64 {
        self.fetches_ok.load(Ordering::Relaxed)
    }

    /// Failed fetches so far.
    pub fn fetches_failed(&self) -> u64 {
        self.fetches_failed.load(Ordering::Relaxed)
    }

    /// Whether the last fetch succeeded; `None` before the first one.
    pub fn last_fetch_succeeded(&self) -> Option<bool> {
        let fetched = self.fetches_ok() != 0 || self.fetches_failed() != 0;
        fetched.then(|| self.last_fetch_ok.load(Ordering::Relaxed))
    }

    /// Fetches the document now, on the calling thread (blocking, up to [`FETCH_TIMEOUT`]),
    /// and publishes the new key set. On failure the current key set stays. Not for shards.
    pub fn refresh_blocking(&self) -> Result<Arc<KeySet>, JwksError> {
        match self.fetch() {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::info!(
                    url = %self.config.url,
                    keys = set.len(),
                    skipped = set.skipped().len(),
                    generation = set.generation(),
                    "JWKS fetched"
                );
                for why in set.skipped() {
                    tracing::warn!(url = %self.config.url, "JWKS key skipped: {why}");
                }
                self.keys.store(Arc::clone(&set));
                self.last_fetch_ok.store(true, Ordering::Relaxed);
                self.fetches_ok.fetch_add(1, Ordering::Relaxed);
                Ok(set)
            }
            Err(e) => {
                self.last_fetch_ok.store(false, Ordering::Relaxed);
                self.fetches_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.config.url, "JWKS fetch failed, keeping the last good keys: {e}");
                Err(e)
            }
        }
    }

    fn fetch(&self) -> Result<KeySet, JwksError> {
        let url = &self.config.url;
        let req_err = |e: ureq::Error| JwksError::Request {
            url: url.clone(),
            problem: e.to_string(),
        };
        let roots = match self.trusted_ca() {
            None => ureq::tls::RootCerts::WebPki,
            Some(cas) => ureq::tls::RootCerts::from(
                cas.iter()
                    .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()),
            ),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(crate::https::tls_config(roots))
            .https_only(!self.config.allow_insecure_http)
            .http_status_as_error(false)
            .timeout_global(Some(FETCH_TIMEOUT))
            .max_redirects(3)
            .build()
            .into();
        let mut req = agent.get(url).header("Accept", "application/json");
        for (name, value) in &self.config.headers {
            req = req.header(name, value);
        }
        if let Some((user, pass)) = &self.config.basic_auth {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req = req.header("Authorization", format!("Basic {b64}"));
        }
        let mut resp = req.call().map_err(req_err)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(JwksError::Status {
                url: url.clone(),
                status,
            });
        }
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(MAX_JWKS_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| JwksError::Request {
                url: url.clone(),
                problem: e.to_string(),
            })?;
        if body.len() as u64 > MAX_JWKS_BYTES {
            return Err(JwksError::Document {
                url: url.clone(),
                problem: format!("larger than {MAX_JWKS_BYTES} bytes"),
            });
        }
        KeySet::from_jwks_json(&body, SystemTime::now()).map_err(|problem| JwksError::Document {
            url: url.clone(),
            problem,
        })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A background thread that keeps JWKS endpoints fresh: it fetches each at start (unless its
/// keys are younger than the refresh interval: fetched with [`Jwks::refresh_blocking`] before,
/// or carried over by [`super::carry_over_keys`]), then every `refreshIntervalSeconds`, on
/// early requests ([`Jwks::request_refetch`]), and sooner after a failure. One per registry snapshot: start it after compiling a registry, stop it when
/// the registry is replaced.
#[derive(Debug)]
pub struct JwksFetcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    endpoints: Vec<Arc<Jwks>>,
}

impl JwksFetcher {
    /// Starts the thread for `endpoints` (see [`super::jwks_endpoints`]). With no endpoint no
    /// thread is started.
    pub fn start(endpoints: Vec<Arc<Jwks>>) -> std::io::Result<JwksFetcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = if endpoints.is_empty() {
            None
        } else {
            let (stop2, eps) = (Arc::clone(&stop), endpoints.clone());
            let handle = std::thread::Builder::new()
                .name("ringmq-jwks".into())
                .spawn(move || run(&eps, &stop2))?;
            for e in &endpoints {
                e.fetcher.store(Some(Arc::new(handle.thread().clone())));
            }
            Some(handle)
        };
        Ok(JwksFetcher {
            stop,
            handle,
            endpoints,
        })
    }

    /// Starts a fetcher for the JWKS endpoints of a registry.
    pub fn for_registry(reg: &crate::registry::Registry) -> std::io::Result<JwksFetcher> {
        JwksFetcher::start(super::jwks_endpoints(reg))
    }

    pub fn endpoints(&self) -> &[Arc<Jwks>] {
        &self.endpoints
    }

    /// Stops the thread and waits for it (at most one fetch in flight: up to
    /// [`FETCH_TIMEOUT`]). Dropping the fetcher stops it without waiting.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("the JWKS fetcher thread panicked");
        }
    }

    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = &self.handle {
            let ours = handle.thread().id();
            for e in &self.endpoints {
                // Leave a waker another fetcher of the same endpoint installed since.
                e.fetcher
                    .rcu(|t| t.as_ref().filter(|t| t.id() != ours).map(Arc::clone));
            }
            handle.thread().unpark();
        }
    }
}

impl Drop for JwksFetcher {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn run(endpoints: &[Arc<Jwks>], stop: &AtomicBool) {
    // An endpoint whose keys are already fresh (fetched before the fetcher started, or
    // carried over from the previous registry) is next due when they age out.
    let start = Instant::now();
    let wall = SystemTime::now();
    let mut next_due: Vec<Instant> = endpoints
        .iter()
        .map(|e| {
            let age = e
                .keys()
                .fetched_at()
                .and_then(|t| wall.duration_since(t).ok());
            match age {
                Some(age) => start + e.config.refresh_interval.saturating_sub(age),
                None => start,
            }
        })
        .collect();
    while !stop.load(Ordering::Acquire) {
        for (e, due) in endpoints.iter().zip(next_due.iter_mut()) {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let early = e.pending.swap(false, Ordering::AcqRel);
            if !early && Instant::now() < *due {
                continue;
            }
            let interval = e.config.refresh_interval;
            *due = Instant::now()
                + match e.refresh_blocking() {
                    Ok(_) => interval,
                    Err(_) => interval.min(RETRY_AFTER_FAILURE),
                };
        }
        let now = Instant::now();
        let wake_at = next_due.iter().min().copied().unwrap_or(now);
        if endpoints.iter().any(|e| e.pending.load(Ordering::Acquire)) {
            continue;
        }
        if wake_at > now {
            std::thread::park_timeout(wake_at - now);
        }
    }
}
