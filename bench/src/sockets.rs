//! Closing every connection at the end of a run.
//!
//! monoio does not drop the tasks still waiting on I/O when a runtime is dropped, so their
//! sockets would stay open: in `compare`, which runs many scenarios in one process, they
//! piled up to the open-files limit. So each thread records the descriptors it connects, and
//! at the end shuts them all down (a pending read then completes with end of stream, its task
//! ends and drops the socket) and waits until its socket tasks have finished.

use core::cell::{Cell, RefCell};
use core::future::Future;
use std::os::fd::RawFd;

thread_local! {
    static FDS: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
    static LIVE_TASKS: Cell<usize> = const { Cell::new(0) };
}

/// Remembers a connected socket of this thread.
pub fn register(fd: RawFd) {
    FDS.with(|fds| fds.borrow_mut().push(fd));
}

/// Shuts down every socket this thread registered.
///
/// A registered descriptor may already have been closed (the broker closed the connection)
/// and its number reused; at this point every socket of the process belongs to this run and is
/// being shut down too, and on a non-socket descriptor shutdown(2) fails with ENOTSOCK and
/// does nothing.
pub fn shutdown_all() {
    let fds = FDS.with(|fds| std::mem::take(&mut *fds.borrow_mut()));
    for fd in fds {
        // SAFETY: shutdown(2) takes a plain integer and has no memory-safety preconditions.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// Socket-owning tasks of this thread still running.
pub fn live_tasks() -> usize {
    LIVE_TASKS.with(Cell::get)
}

struct LiveGuard;

impl LiveGuard {
    fn new() -> LiveGuard {
        LIVE_TASKS.with(|n| n.set(n.get() + 1));
        LiveGuard
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE_TASKS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Spawns a task that owns a socket (or half of one), counted by [`live_tasks`] until the
/// future — and with it the socket — is dropped.
pub fn spawn_io<F: Future<Output = ()> + 'static>(future: F) {
    let guard = LiveGuard::new();
    monoio::spawn(async move {
        future.await;
        drop(guard);
    });
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_live_tasks() {
        assert_eq!(live_tasks(), 0);
        let a = LiveGuard::new();
        let b = LiveGuard::new();
        assert_eq!(live_tasks(), 2);
        drop(a);
        assert_eq!(live_tasks(), 1);
        drop(b);
        assert_eq!(live_tasks(), 0);
    }

    #[test]
    fn shutdown_forgets_the_registered_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let (mut server, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        register(std::os::fd::AsRawFd::as_raw_fd(&client));
        shutdown_all();
        // The peer sees end of stream.
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut server, &mut byte).unwrap_or(1), 0);
        assert!(FDS.with(|fds| fds.borrow().is_empty()));
    }
}
