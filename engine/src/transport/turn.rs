//! Fair turns on a shard: work that is still ready after its budget waits for the next
//! *driver* turn, not for the next slot in monoio's run queue.
//!
//! Why this exists (issue 12, the freeze under an open-loop flood): monoio 0.2.4's `block_on`
//! runs ready tasks until its queue is empty and only then parks in the driver, where timers
//! fire (`TimeDriver::park_internal`) and where io_uring completions and epoll events are
//! gathered in full. A task that yields by waking itself (`yield_once`) goes straight back into
//! that queue. Under a flood some connection always has more to read, so the queue never empties:
//! timers never fired (the tick, congestion backoffs, linger deadlines), and completions were
//! only reaped in the runtime's "cold path", after `2 × tasks` polls, behind publishers that
//! were ready again at once. Accepts, write readiness of subscribers and PINGREQs starved.
//!
//! A task that has used its budget calls [`next_turn`]: it parks itself here and returns
//! `Pending`. The first task to park writes one byte to a socket pair; one task per shard (the
//! [`TurnGate::run`] loop) waits for that socket's *readiness*, which only the driver reports.
//! So every round of deferred work is separated by a full driver poll: timers fire, every
//! completion and readiness event is delivered, new connections are accepted — then the
//! parked tasks run again, in the order they parked, at most [`GATE_BATCH`] per driver turn.
//! No task can starve another, and a shard under flood still wakes every timer within one
//! round.
//!
//! The wake-up that is proven to fire: the byte written when the first task parks makes the
//! receiving end readable; the gate's readiness wait (an io_uring poll, or epoll readiness
//! with `relaxed = false`, which re-checks with `poll(2)`) completes at the next driver turn.
//! `signalled` is reset after the byte is drained and before any waker runs, so a task parking
//! while they run sends a new byte; tasks still parked after a batch get one too.
//!
//! What it must never do: park a task without a byte outstanding (that task would sleep until
//! something else woke the shard), or block the shard thread (both ends are non-blocking).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::task::{Poll, Waker};

use tracing::warn;

use crate::ops::stall::PulseHandle;

/// Parked tasks resumed per driver turn.
const GATE_BATCH: usize = 64;

thread_local! {
    /// The gate of the shard running on this thread (none outside a shard, e.g. in unit
    /// tests of a pump: [`next_turn`] then yields through the run queue).
    static GATE: RefCell<Option<Rc<TurnGate>>> = const { RefCell::new(None) };
}

/// One shard's gate between driver turns.
pub(crate) struct TurnGate {
    /// Tasks waiting for the next driver turn, in the order they parked.
    parked: RefCell<std::collections::VecDeque<Waker>>,
    /// A byte is outstanding on the socket pair.
    signalled: Cell<bool>,
    /// Tasks that parked and have not run since: parked, or woken by a turn and still in
    /// the run queue (what the stall detector counts as ready work).
    waiting: Cell<usize>,
    tx: StdUnixStream,
    /// The receiving end, read (drained) through std...
    rx_read: StdUnixStream,
    /// ...and the same socket (a duplicated descriptor) waited on through the driver.
    rx: monoio::net::UnixStream,
    /// The stall detector's view: a turn is progress, parked tasks are ready work.
    pulse: PulseHandle,
}

impl TurnGate {
    /// Makes the gate of the current shard thread and returns it; the caller spawns
    /// [`TurnGate::run`] on the shard's runtime.
    pub(crate) fn install(pulse: PulseHandle) -> io::Result<Rc<TurnGate>> {
        let (tx, rx) = StdUnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        let rx_read = rx.try_clone()?;
        let gate = Rc::new(TurnGate {
            parked: RefCell::new(std::collections::VecDeque::new()),
            signalled: Cell::new(false),
            waiting: Cell::new(0),
            tx,
            rx_read,
            rx: monoio::net::UnixStream::from_std(rx)?,
            pulse,
        });
        GATE.with(|g| *g.borrow_mut() = Some(gate.clone()));
        Ok(gate)
    }

    fn park(&self, waker: &Waker) {
        self.parked.borrow_mut().push_back(waker.clone());
        self.waiting.set(self.waiting.get() + 1);
        self.pulse.set_parked(self.waiting.get());
        if !self.signalled.get() {
            self.signal();
        }
    }

    fn signal(&self) {
        use std::io::Write;
        match (&self.tx).write(&[1]) {
            Ok(_) => self.signalled.set(true),
            // Full (cannot happen with one byte outstanding at most) or interrupted: the byte
            // already there, or the next park, wakes the gate.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.signalled.set(true),
            Err(e) => {
                // The pair is broken: wake the parked tasks through the run queue instead, so
                // nothing sleeps forever (they are then merely unfair).
                warn!("turn gate signal failed: {e}");
                for w in self.parked.borrow_mut().drain(..) {
                    w.wake();
                }
            }
        }
    }

    /// The shard's gate task: after each driver turn that reported the signal, resumes the
    /// tasks parked until then, at most [`GATE_BATCH`] of them; if more wait, signals again,
    /// so the next batch runs after the next driver turn. With many flooding connections a
    /// round of all of them took ~50 ms on two cores (1 000 open-loop pairs), and a new
    /// client's CONNECT waited that long to be read; in batches, I/O, accepts and timers are
    /// polled every `GATE_BATCH` connections' worth of work.
    pub(crate) async fn run(self: Rc<TurnGate>) {
        let mut drain = [0u8; 64];
        loop {
            if let Err(e) = self.rx.readable(false).await {
                // Not expected on a socket pair; the parked tasks still run below, and the
                // pause keeps a persistent error from spinning the shard.
                warn!("turn gate wait failed: {e}");
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            // Drain what is there (one byte, normally) without waiting.
            loop {
                use std::io::Read;
                match (&self.rx_read).read(&mut drain) {
                    Ok(1..) => continue,
                    Ok(0) | Err(_) => break,
                }
            }
            self.signalled.set(false);
            self.pulse.progressed();
            for _ in 0..GATE_BATCH {
                // Waking only schedules the task; it runs (and may park again, at the back)
                // after this loop.
                let Some(waker) = self.parked.borrow_mut().pop_front() else {
                    break;
                };
                waker.wake();
            }
            if !self.parked.borrow().is_empty() && !self.signalled.get() {
                self.signal();
            }
        }
    }
}

/// A task parked with [`next_turn`] ran again (or gave up waiting).
fn resumed() {
    GATE.with(|g| {
        if let Some(gate) = g.borrow().as_ref() {
            debug_assert!(gate.waiting.get() > 0, "more resumptions than parkings");
            gate.waiting.set(gate.waiting.get().saturating_sub(1));
            gate.pulse.set_parked(gate.waiting.get());
        }
    });
}

/// Waits for the next driver turn: the caller has used its budget and has more to do.
///
/// With a gate installed (every shard), resumes after the driver has polled for I/O and timers
/// once; without one (unit tests), after the other ready tasks ran once.
pub(crate) fn next_turn() -> NextTurn {
    NextTurn { state: State::New }
}

/// The future of [`next_turn`].
pub(crate) struct NextTurn {
    state: State,
}

#[derive(PartialEq, Eq)]
enum State {
    New,
    /// Parked in the gate (counted in its `waiting`).
    Gated,
    /// Woke itself (no gate).
    Yielded,
    Done,
}

impl Future for NextTurn {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match self.state {
            State::New => {
                let gated = GATE.with(|g| match g.borrow().as_ref() {
                    Some(gate) => {
                        gate.park(cx.waker());
                        true
                    }
                    None => false,
                });
                if gated {
                    self.state = State::Gated;
                } else {
                    self.state = State::Yielded;
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            State::Gated => {
                self.state = State::Done;
                resumed();
                Poll::Ready(())
            }
            State::Yielded | State::Done => {
                self.state = State::Done;
                Poll::Ready(())
            }
        }
    }
}

impl Drop for NextTurn {
    fn drop(&mut self) {
        // Dropped while parked (its task ended): no longer ready work.
        if self.state == State::Gated {
            resumed();
        }
    }
}
