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
