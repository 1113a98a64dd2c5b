//! Quotas: token buckets (publish rate and bandwidth per connection, connection rate per IP)
//! and the connection counts every shard shares (in all, and per client IP).
//!
//! What it is for: deciding, on the accept path, whether a new connection is within
//! `limits.max_connections`, `limits.max_connections_per_ip` and
//! `limits.max_connection_rate_per_ip`, and, on the publish path, whether a PUBLISH is within
//! the connection's rate and bandwidth.
//! What it must never do: allocate or make a syscall in [`TokenBucket`] or in
//! `ShardCore::check_publish_frame` (proto/quotas.rs) (they run for every PUBLISH; only a refusal builds its
//! message), or hold a stripe lock for more than one map operation.
//!
//! Why a lock here, when shards otherwise share nothing (docs/architecture.md, "Quotas"): the
//! kernel spreads one IP's connections over all shards (`SO_REUSEPORT`), so an exact per-IP
//! count needs one place that every shard's accept consults. The alternatives were a mesh round
//! trip to the IP's home shard before every CONNECT (one more cross-shard hop and a new
//! "waiting for a verdict" connection state, for every connection) or a fixed table of atomic
//! counters indexed by a hash (no lock, but colliding IPs share a count, so a client can be
//! refused for someone else's connections). Accepts are rare next to messages, the critical
//! section is one hash-map operation, and 64 cache-line-aligned stripes keep shards from
//! contending, so a striped `Mutex<HashMap>` is the cheap exact choice. With no per-IP quota
//! configured no lock is taken at all; the global count is one atomic.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::ops::metrics::Quota;

/// Tokens are kept in billionths, so refilling at any whole rate is exact integer arithmetic.
const NANO: u64 = 1_000_000_000;

/// A rate with a burst: `per_sec` tokens per second into a bucket of `burst` tokens.
/// `per_sec == 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// A rate from config values: a burst of 0 means one second's worth.
    pub fn new(per_sec: u32, burst: u32) -> Rate {
        let burst = if burst == 0 { per_sec } else { burst };
        Rate { per_sec, burst }
    }

    pub fn is_unlimited(self) -> bool {
        self.per_sec == 0
    }

    fn capacity_nano(self) -> u64 {
        u64::from(self.burst.max(1)).saturating_mul(NANO)
    }
}

/// A connection's PUBLISH quotas: messages and bytes.
#[derive(Debug, Clone, Copy)]
pub struct PublishBuckets {
    pub rate: TokenBucket,
    pub bytes: TokenBucket,
}

impl PublishBuckets {
    /// Both full. A full bucket holds no more whenever it is made, so making them at the
    /// first PUBLISH instead of at connect changes nothing.
    pub fn new(now: Instant) -> PublishBuckets {
        PublishBuckets {
            rate: TokenBucket::new(now),
            bytes: TokenBucket::new(now),
        }
    }
}

/// A token bucket, stored as how many tokens it lacks from full (so a new bucket is full
/// without knowing its capacity). The rate is passed in by the caller: every bucket of a kind
/// shares one, and a connection stays small.
///
/// A cost larger than the burst (a PUBLISH bigger than the bandwidth burst) is allowed from a
/// full bucket and then paid back: the bucket goes into debt, so the long-run rate still holds
/// and no packet size is refused forever.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Missing tokens, in billionths; 0 = full.
    deficit_nano: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant) -> TokenBucket {
        TokenBucket {
            deficit_nano: 0,
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        if now <= self.last {
            return;
        }
        let elapsed = now.duration_since(self.last).as_nanos();
        self.last = now;
        if self.deficit_nano == 0 {
            return;
        }
        // ns × tokens/s = billionths of a token; u128 cannot overflow here.
        let refill = elapsed.saturating_mul(u128::from(rate.per_sec));
        self.deficit_nano =
            u64::try_from(u128::from(self.deficit_nano).saturating_sub(refill)).unwrap_or(u64::MAX);
    }

    /// Whether `cost` tokens (at most a full bucket's worth) are there now.
    pub fn allows(&mut self, cost: u64, rate: Rate, now: Instant) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        self.refill(rate, now);
        let capacity = rate.capacity_nano();
        let need = cost.saturating_mul(NANO).min(capacity);
        self.deficit_nano <= capacity - need
    }

    /// Takes `cost` tokens if [`TokenBucket::allows`]; otherwise takes nothing and returns false.
    pub fn try_take(&mut self, cost: u64, rate: Rate, now: Instant) -> bool {
        if !self.allows(cost, rate, now) {
            return false;
        }
        self.charge(cost, rate);
        true
    }

    /// Takes `cost` tokens, unchecked: after [`TokenBucket::allows`] said yes at the same `now`.
    pub fn charge(&mut self, cost: u64, rate: Rate) {
        if !rate.is_unlimited() {
            self.deficit_nano = self.deficit_nano.saturating_add(cost.saturating_mul(NANO));
        }
    }

    /// Whether the bucket is full again (an idle per-IP entry can then be forgotten).
    pub fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.deficit_nano == 0 || rate.is_unlimited()
    }
}

/// The per-IP quotas (`limits.max_connections_per_ip`, `limits.max_connection_rate_per_ip`).
#[derive(Debug, Clone, Copy, Default)]
pub struct IpLimits {
    /// 0 = unlimited.
    pub max_connections: u32,
    pub rate: Rate,
}

impl IpLimits {
    fn enabled(&self) -> bool {
        self.max_connections > 0 || !self.rate.is_unlimited()
    }
}

const STRIPES: usize = 64;
/// A stripe's table is swept of idle entries when it reaches this size, then at twice the size
/// left after the sweep.
const SWEEP_MIN: usize = 64;

#[derive(Debug)]
struct IpEntry {
    conns: u32,
    rate: TokenBucket,
}

#[derive(Debug, Default)]
struct StripeMap {
    map: HashMap<IpAddr, IpEntry>,
    sweep_at: usize,
}

/// One lock per stripe, on its own cache lines so shards locking different stripes do not
/// contend for a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(Mutex<StripeMap>);

/// Connection counts shared by all shards: the total (`max_connections`) and, when a per-IP
/// quota is configured, a count and a connection-rate bucket per client IP.
///
/// Memory is bounded: an IP's entry is removed when its last connection closes and its rate
/// bucket is full again; entries left behind (a bucket still refilling at close) are swept
/// when their stripe grows. So the table holds the IPs with open connections plus those that
/// connected within the last burst/rate seconds.
#[derive(Debug)]
pub struct ConnQuotas {
    total: AtomicUsize,
    stripes: Box<[Stripe]>,
    /// Randomly keyed (SipHash): peers choose their addresses (within an IPv6 prefix, freely),
    /// and must not be able to make them collide.
    hasher: RandomState,
}

impl Default for ConnQuotas {
    fn default() -> Self {
        ConnQuotas::new()
    }
}

impl ConnQuotas {
    pub fn new() -> ConnQuotas {
        ConnQuotas {
            total: AtomicUsize::new(0),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn stripe(&self, ip: &IpAddr) -> MutexGuard<'_, StripeMap> {
        let i = (self.hasher.hash_one(ip) % STRIPES as u64) as usize;
        // Nothing in a critical section can panic; were one poisoned, its map is still valid.
        self.stripes[i]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `ip` (canonical: IPv4-mapped IPv6 as IPv4), or names the quota
    /// it exceeds. `Ok(true)`: it holds a per-IP count, given back by
    /// `release(Some(ip), ..)`; `Ok(false)`: only the total, given back by `release(None, ..)`.
    /// A refused connection holds nothing and does not use up the connection rate.
    pub fn admit(
        &self,
        ip: IpAddr,
        max_total: usize,
        per_ip: &IpLimits,
        now: Instant,
    ) -> Result<bool, Quota> {
        if !per_ip.enabled() {
            return self.admit_total(max_total).map(|()| false);
        }
        let mut stripe = self.stripe(&ip);
        if !stripe.map.contains_key(&ip) && stripe.map.len() >= stripe.sweep_at {
            stripe.sweep(per_ip.rate, now);
        }
        let entry = stripe.map.entry(ip).or_insert_with(|| IpEntry {
            conns: 0,
            rate: TokenBucket::new(now),
        });
        let verdict = if per_ip.max_connections > 0 && entry.conns >= per_ip.max_connections {
            Err(Quota::ConnectionsPerIp)
        } else if !entry.rate.allows(1, per_ip.rate, now) {
            Err(Quota::ConnectionRate)
        } else {
            self.admit_total(max_total)
        };
        match verdict {
            Ok(()) => {
                entry.rate.try_take(1, per_ip.rate, now);
                entry.conns += 1;
                Ok(true)
            }
            Err(q) => {
                if entry.conns == 0 && entry.rate.is_full(per_ip.rate, now) {
                    stripe.map.remove(&ip);
                }
                Err(q)
            }
        }
    }

    fn admit_total(&self, max_total: usize) -> Result<(), Quota> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| Quota::Connections)
    }

    /// An admitted connection closed: gives back its total count and, with `Some(ip)`, its
    /// per-IP count (`rate` decides whether the IP's entry can be forgotten).
    pub fn release(&self, ip: Option<IpAddr>, rate: Rate, now: Instant) {
        let _ = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        let Some(ip) = ip else { return };
        let mut stripe = self.stripe(&ip);
        let Some(entry) = stripe.map.get_mut(&ip) else {
            debug_assert!(false, "per-IP count released twice");
            return;
        };
        entry.conns = entry.conns.saturating_sub(1);
        if entry.conns == 0 && entry.rate.is_full(rate, now) {
            stripe.map.remove(&ip);
        }
    }

    /// Connections admitted and not yet released, over all shards.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// IPs with an entry (open connections or a refilling rate bucket); for tests and metrics.
    pub fn tracked_ips(&self) -> usize {
        (0..STRIPES)
            .map(|i| {
                self.stripes[i]
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map
                    .len()
            })
            .sum()
    }
}

impl StripeMap {
    /// Forgets IPs without connections whose rate bucket has refilled.
    fn sweep(&mut self, rate: Rate, now: Instant) {
        self.map
            .retain(|_, e| e.conns > 0 || !e.rate.is_full(rate, now));
        self.sweep_at = (self.map.len() * 2).max(SWEEP_MIN);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 5);
        let mut b = TokenBucket::new(t0);
        for _ in 0..5 {
            assert!(b.try_take(1, rate, t0));
        }
        assert!(!b.try_take(1, rate, t0), "burst of 5 used up");
        // 10/s: one token per 100 ms, exactly.
        assert!(!b.try_take(1, rate, t0 + Duration::from_millis(99)));
        assert!(b.try_take(1, rate, t0 + Duration::from_millis(100)));
        assert!(!b.try_take(1, rate, t0 + Duration::from_millis(100)));
        // Never above the burst, however long idle.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(b.try_take(1, rate, later));
        }
        assert!(!b.try_take(1, rate, later));
        assert!(!b.is_full(rate, later));
        assert!(b.is_full(rate, later + Duration::from_millis(500)));
    }

    #[test]
    fn cost_above_burst_goes_into_debt() {
        let t0 = Instant::now();
        let rate = Rate::new(1000, 0); // 1000 bytes/s, burst one second's worth
        assert_eq!(rate.burst, 1000);
        let mut b = TokenBucket::new(t0);
        assert!(
            b.try_take(5000, rate, t0),
            "a full bucket lets a big packet through"
        );
        // 5000 taken from 1000: 4 s of debt before even one byte is allowed, 5 s to be full.
        assert!(!b.try_take(1, rate, t0 + Duration::from_millis(3999)));
        assert!(b.allows(1, rate, t0 + Duration::from_millis(4001)));
        assert!(!b.allows(5000, rate, t0 + Duration::from_millis(4999)));
        assert!(b.allows(5000, rate, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn unlimited_rate_always_allows() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        for _ in 0..1000 {
            assert!(b.try_take(u64::MAX, Rate::UNLIMITED, t0));
        }
        assert!(b.is_full(Rate::UNLIMITED, t0));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let rate = Rate::new(1, 1);
        let mut b = TokenBucket::new(t0);
        assert!(b.try_take(1, rate, t0));
        assert!(!b.try_take(1, rate, t0 - Duration::from_secs(5)));
        assert!(b.try_take(1, rate, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn total_is_exact_and_given_back() {
        let q = ConnQuotas::new();
        let t0 = Instant::now();
        let off = IpLimits::default();
        assert_eq!(q.admit(ip(1), 2, &off, t0), Ok(false));
        assert_eq!(q.admit(ip(2), 2, &off, t0), Ok(false));
        assert_eq!(q.admit(ip(3), 2, &off, t0), Err(Quota::Connections));
        q.release(None, Rate::UNLIMITED, t0);
        assert_eq!(q.total(), 1);
        assert_eq!(q.admit(ip(3), 2, &off, t0), Ok(false));
        assert_eq!(
            q.tracked_ips(),
            0,
            "no per-IP entries without a per-IP quota"
        );
    }

    #[test]
    fn per_ip_count_and_entries_removed_at_zero() {
        let q = ConnQuotas::new();
        let t0 = Instant::now();
        let lim = IpLimits {
            max_connections: 2,
            rate: Rate::UNLIMITED,
        };
        assert_eq!(q.admit(ip(1), 100, &lim, t0), Ok(true));
        assert_eq!(q.admit(ip(1), 100, &lim, t0), Ok(true));
        assert_eq!(q.admit(ip(1), 100, &lim, t0), Err(Quota::ConnectionsPerIp));
        assert_eq!(
            q.admit(ip(2), 100, &lim, t0),
            Ok(true),
            "other IPs unaffected"
        );
        assert_eq!(q.total(), 3);
        q.release(Some(ip(1)), lim.rate, t0);
        assert_eq!(q.admit(ip(1), 100, &lim, t0), Ok(true));
        for _ in 0..2 {
            q.release(Some(ip(1)), lim.rate, t0);
        }
        q.release(Some(ip(2)), lim.rate, t0);
        assert_eq!(q.total(), 0);
        assert_eq!(q.tracked_ips(), 0, "entries go when counts reach zero");
    }

    #[test]
    fn per_ip_rate_refuses_without_using_tokens() {
        let q = ConnQuotas::new();
        let t0 = Instant::now();
        let lim = IpLimits {
            max_connections: 0,
            rate: Rate::new(2, 2),
        };
        assert_eq!(q.admit(ip(1), 100, &lim, t0), Ok(true));
        assert_eq!(q.admit(ip(1), 100, &lim, t0), Ok(true));
        for _ in 0..10 {
            assert_eq!(q.admit(ip(1), 100, &lim, t0), Err(Quota::ConnectionRate));
        }
        // Refusals did not use tokens: one is back after 500 ms.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(q.admit(ip(1), 100, &lim, t1), Ok(true));
        assert_eq!(q.admit(ip(1), 100, &lim, t1), Err(Quota::ConnectionRate));
        // Closed, but the bucket is still refilling: the entry stays (the rate must hold
        // across reconnects) until it is full.
        for _ in 0..3 {
            q.release(Some(ip(1)), lim.rate, t1);
        }
        assert_eq!(q.tracked_ips(), 1);
    }

    #[test]
    fn idle_entries_are_swept() {
        let q = ConnQuotas::new();
        let t0 = Instant::now();
        let lim = IpLimits {
            max_connections: 0,
            rate: Rate::new(1, 1),
        };
        // Many IPs connect and close within their refill time: entries stay for now.
        let n = 20_000;
        for i in 0..n {
            assert_eq!(q.admit(ip(i), usize::MAX, &lim, t0), Ok(true));
            q.release(Some(ip(i)), lim.rate, t0);
        }
        assert!(q.tracked_ips() <= n as usize);
        // Later, new IPs arrive: the stale entries are swept as stripes grow, so the table
        // stays near the number of recently active IPs, not the number ever seen.
        let t1 = t0 + Duration::from_secs(2);
        for i in n..2 * n {
            assert_eq!(q.admit(ip(i), usize::MAX, &lim, t1), Ok(true));
            q.release(Some(ip(i)), lim.rate, t1);
        }
        let tracked = q.tracked_ips();
        assert!(
            tracked <= n as usize + STRIPES * SWEEP_MIN,
            "{tracked} entries for {n} recent IPs"
        );
        // A refused admission of a new IP leaves nothing behind.
        let q = ConnQuotas::new();
        assert_eq!(q.admit(ip(1), 0, &lim, t0), Err(Quota::Connections));
        assert_eq!(q.tracked_ips(), 0);
    }

    #[test]
    fn shared_across_threads() {
        let q = std::sync::Arc::new(ConnQuotas::new());
        let t0 = Instant::now();
        let lim = IpLimits {
            max_connections: 1000,
            rate: Rate::UNLIMITED,
        };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| q.admit(ip(7), usize::MAX, &lim, t0).is_ok())
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 1000, "exactly the per-IP maximum, across threads");
    }
}
