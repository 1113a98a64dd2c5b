//! The runtime's side of a shard core: the core, the wakers of the tasks that serve it, and
//! the clock. The core is sans-IO (it neither reads a clock nor wakes a task); after each input
//! [`Host::handle`] drains what it reported — connections whose parked writer has output, an
//! outbox waiting for a full inbox — and wakes the tasks concerned.

use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use crate::ids::ConnId;
use crate::proto::{Handled, Input, Now, ShardCore};

/// The time now, for an input.
pub(crate) fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

pub(crate) struct Host {
    core: ShardCore,
    /// By connection slot: the waker of its writer while parked.
    writers: Vec<Option<Waker>>,
    /// The mesh retry task, parked until an outbox keeps messages a full inbox refused.
    backlog: Option<Waker>,
    /// This shard's number and the pool that runs its off-shard authentications.
    auth_pool: Option<(usize, crate::authpool::AuthPool)>,
    /// The shard's log, when storage is on: the core's records go there after every input.
    persist: Option<crate::transport::storage::Persist>,
}

impl Host {
    pub fn new(core: ShardCore) -> Host {
        Host {
            core,
            writers: Vec::new(),
            backlog: None,
            auth_pool: None,
            persist: None,
        }
    }

    /// Submits the core's authentication requests to `pool` after each input.
    pub fn set_auth_pool(&mut self, shard: usize, pool: crate::authpool::AuthPool) {
        self.auth_pool = Some((shard, pool));
    }

    /// The core's authentication requests go to the pool; one the pool's full queue refuses
    /// is answered at once (0x88), so a flood of CONNECTs never waits here.
    fn submit_auth_requests(&mut self) {
        let Some((shard, pool)) = &self.auth_pool else {
            return;
        };
        while let Some(request) = self.core.poll_auth_request() {
            if let Err(request) = pool.submit(*shard, request) {
                let outcome = crate::proto::authn_external::AuthOutcome::Unavailable(
                    "the authentication pool is full (auth.pool.queue_capacity)".into(),
                );
                let _ = self.core.handle(
                    Input::AuthResult {
                        ticket: request.ticket,
                        outcome,
                    },
                    now(),
                );
            }
        }
    }

    /// Hands `input` to the core at the current time, then wakes whom it concerns.
    pub fn handle(&mut self, input: Input<'_>) -> Handled {
        let released = match input {
            Input::Release(conn) => Some(conn),
            _ => None,
        };
        let handled = self.core.handle(input, now());
        self.submit_auth_requests();
        self.drain_to_log();
        if let Some(conn) = released
            && let Some(slot) = self.writers.get_mut(conn.slot())
        {
            // The connection's tasks have ended: its waker would keep the task's memory alive
            // until the slot is reused.
            *slot = None;
        }
        self.wake_ready();
        handled
    }

    /// Storage on: the core's records go to `persist` after every input.
    pub fn set_persist(&mut self, persist: crate::transport::storage::Persist) {
        self.persist = Some(persist);
        self.drain_to_log();
    }

    /// Appends what the core emitted to the log (nothing without storage).
    pub fn drain_to_log(&mut self) {
        if let Some(p) = self.persist.as_mut() {
            p.drain(&mut self.core);
        }
    }

    /// The log is durable through sequence number `through`: held acknowledgements go out.
    pub fn log_durable(&mut self, through: u64) {
        let upto = self.persist.as_mut().and_then(|p| p.durable(through));
        if let Some(upto) = upto {
            let _ = self.handle(Input::Durable { upto });
        }
    }

    fn wake_ready(&mut self) {
        while let Some(conn) = self.core.poll_writable() {
            if let Some(waker) = self.writers.get_mut(conn.slot()).and_then(Option::take) {
                waker.wake();
            }
        }
        if self.core.mesh_backlog()
            && let Some(waker) = self.backlog.take()
        {
            waker.wake();
        }
    }

    /// Parks the writer of `conn` until the core has output for it; `false` when it has
    /// already (or the connection is closing or gone), and the writer goes on.
    pub fn park_writer(&mut self, conn: ConnId, waker: &Waker) -> bool {
        if !self.core.park_writer(conn) {
            return false;
        }
        let slot = conn.slot();
        if self.writers.len() <= slot {
            self.writers.resize_with(slot + 1, || None);
        }
        match &mut self.writers[slot] {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        true
    }

    /// The task of `conn` is running: it does not wait for output now.
    pub fn unpark_writer(&mut self, conn: ConnId) {
        self.core.unpark_writer(conn);
    }

    /// Wakes the writer of `conn` (its transport layer has bytes of its own to send).
    pub fn wake_writer(&mut self, conn: ConnId) {
        self.core.unpark_writer(conn);
        if let Some(waker) = self.writers.get_mut(conn.slot()).and_then(Option::take) {
            waker.wake();
        }
    }

    /// `Ready` while an outbox holds messages its destination's inbox refused (the caller
    /// retries soon); otherwise parks the task until one does.
    pub fn poll_mesh_backlog(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.core.mesh_backlog() {
            return Poll::Ready(());
        }
        self.backlog = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Deref for Host {
    type Target = ShardCore;

    fn deref(&self) -> &ShardCore {
        &self.core
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut ShardCore {
        &mut self.core
    }
}
