//! The engine's only unsafe code: operations on a raw socket descriptor that monoio's split
//! halves do not expose.

use std::os::fd::{BorrowedFd, RawFd};

/// Shuts both directions of the socket `fd`, so a read pending in the kernel (io_uring or
/// epoll) completes with end-of-file and the connection's tasks end.
pub fn shutdown_socket(fd: RawFd) {
    // SAFETY: the caller holds a half of the monoio TcpStream that owns `fd`, so the
    // descriptor stays open for the duration of this call; the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
}

/// Shuts the writing direction of the socket `fd` (sends FIN after what was written); reads
/// go on until the peer closes.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: as in `shutdown_socket`: the caller's half of the stream keeps `fd` open for
    // the duration of this call, and the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write);
}
