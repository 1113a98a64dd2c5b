//! The engine's only unsafe code: operations on a socket descriptor that monoio's split
//! halves do not expose, reads into a buffer's spare capacity, and one process setting.
//!
//! What it must never do: take a descriptor as a bare number. Every function here takes a
//! [`BorrowedFd`], and the one way for the rest of the engine to get one is [`borrow_fd`],
//! which borrows the socket that owns the descriptor: a descriptor the socket has closed (or
//! that the kernel has since given to another file) cannot be named.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};

use bytes::BytesMut;

/// A socket that owns its descriptor: open from the value's creation until the value is
/// dropped or consumed, never closed or replaced through a reference.
///
/// monoio 0.2.4 implements `AsRawFd` but not `AsFd` for its sockets, and `AsRawFd` alone
/// promises nothing (a bare `RawFd` implements it), hence this trait. Implemented here only:
/// outside this module `unsafe impl` is denied.
///
/// # Safety
///
/// `raw_fd` returns a descriptor that stays open for as long as `self` is borrowed.
pub unsafe trait OwnsSocket {
    fn raw_fd(&self) -> RawFd;
}

// SAFETY: a monoio `TcpStream` closes its descriptor only when it is dropped (`into_raw_fd`
// consumes it); no method taking a reference closes or replaces it.
unsafe impl OwnsSocket for monoio::net::TcpStream {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

// SAFETY: as for `TcpStream`: a listener closes its descriptor only when dropped.
unsafe impl OwnsSocket for monoio::net::TcpListener {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

// SAFETY: the write half holds an `Rc` of the stream, so the stream, and with it its open
// descriptor, lives at least as long as the half; `reunite` consumes the half.
unsafe impl OwnsSocket for monoio::net::tcp::TcpOwnedWriteHalf {
    fn raw_fd(&self) -> RawFd {
        // SAFETY: a shared reference to the stream in the halves' cell, held only to read its
        // descriptor number, which is set when the stream is made and never written after.
        // The halves are `!Send`: the read half's task, which uses the stream through the same
        // cell, is not running while this runs, so nothing writes to the stream meanwhile. A
        // read it has pending keeps its `&mut` to the stream the way monoio's two halves
        // always do to each other (monoio's own `peer_addr` on a half reads it the same way).
        unsafe { &*self.0.get() }.as_raw_fd()
    }
}

/// The descriptor of `socket`, borrowed for as long as `socket` is.
pub fn borrow_fd<S: OwnsSocket>(socket: &S) -> BorrowedFd<'_> {
    // SAFETY: `OwnsSocket` promises the descriptor stays open while `socket` is borrowed, and
    // the result borrows `socket`.
    unsafe { BorrowedFd::borrow_raw(socket.raw_fd()) }
}

/// Shuts both directions of the socket `fd`, so a read pending in the kernel (io_uring or
/// epoll) completes with end-of-file and the connection's tasks end.
pub fn shutdown_socket(fd: BorrowedFd<'_>) {
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
}

/// Shuts the writing direction of the socket `fd` (sends FIN after what was written); reads
/// go on until the peer closes.
pub fn shutdown_write(fd: BorrowedFd<'_>) {
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write);
}

/// Reads what the socket `fd` holds, without waiting, into the spare capacity of `buf` (at
/// most `max` bytes) and appends it to `buf`. `Ok(0)` is end of stream; nothing to read is
/// `ErrorKind::WouldBlock`, whatever the descriptor's blocking mode.
pub fn recv_into(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    recv_with(fd, buf, max, libc::MSG_DONTWAIT)
}

/// As [`recv_into`], but the bytes stay queued in the socket (`MSG_PEEK`): the next read
/// returns them again (the PROXY protocol header is peeked so that nothing after it is read).
pub fn peek_into(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    recv_with(fd, buf, max, libc::MSG_DONTWAIT | libc::MSG_PEEK)
}

fn recv_with(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize, flags: i32) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // A zero-length read would look like end of stream.
    assert!(len > 0, "recv_into needs spare capacity");
    let n = socket2::SockRef::from(&fd).recv_with_flags(&mut spare[..len], flags)?;
    let n = n.min(len);
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (n ≤ len ≤ spare).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes as much of `data` as the socket `fd` takes now. A full send buffer is
/// `ErrorKind::WouldBlock`; a closed peer is an error, never SIGPIPE.
pub fn send(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_with_flags(data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// Whether the process's memory may be backed by transparent huge pages (PR_SET_THP_DISABLE;
/// applies to pages touched from now on).
pub fn set_transparent_huge_pages(enabled: bool) -> io::Result<()> {
    let disable = libc::c_ulong::from(!enabled);
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and no pointers; it only sets a flag on
    // this process.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the listening socket `fd` has a connection waiting to be accepted, without
/// accepting it (`poll(2)` with a zero timeout).
pub fn connection_waiting(fd: BorrowedFd<'_>) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid, initialised array of one element for the duration of the
    // call, and a zero timeout never blocks; `fd` is open while borrowed.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    n > 0 && pollfd.revents & libc::POLLIN != 0
}

/// Accepts a connection waiting on the listening socket `fd` now, without the runtime: a
/// blocking-free `accept4` whose descriptor is closed synchronously when the stream drops (the
/// refusal path of `accept.rs` needs the descriptor back at once; monoio's io_uring streams
/// close asynchronously).
pub fn accept_now(fd: BorrowedFd<'_>) -> io::Result<std::net::TcpStream> {
    // SAFETY: null address pointers are allowed by accept4 (the peer address is not wanted);
    // the flags are plain integers; `fd` is open while borrowed.
    let accepted = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if accepted < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(accepted) };
    Ok(std::net::TcpStream::from(owned))
}

/// Takes a freshly accepted monoio stream out of the runtime (no operation may be in flight
/// on it), so that it can be closed synchronously.
pub fn into_std(stream: monoio::net::TcpStream) -> std::net::TcpStream {
    use std::os::fd::IntoRawFd;
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up the runtime's ownership of `fd`; this is its only owner.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    std::net::TcpStream::from(owned)
}
