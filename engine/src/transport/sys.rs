//! The engine's only unsafe code: operations on a raw socket descriptor that monoio's split
//! halves do not expose, reads into a buffer's spare capacity, and one process setting.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

use bytes::BytesMut;

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

/// Reads what the socket `fd` holds, without waiting, into the spare capacity of `buf` (at
/// most `max` bytes) and appends it to `buf`. `Ok(0)` is end of stream; nothing to read is
/// `ErrorKind::WouldBlock`, whatever the descriptor's blocking mode.
pub fn recv_into(fd: RawFd, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    // SAFETY: the caller owns the monoio TcpStream of `fd` for the duration of this call, so
    // the descriptor stays open; the borrow does not outlive the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // A zero-length read would look like end of stream.
    assert!(len > 0, "recv_into needs spare capacity");
    let n = socket2::SockRef::from(&fd).recv_with_flags(&mut spare[..len], libc::MSG_DONTWAIT)?;
    let n = n.min(len);
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (n ≤ len ≤ spare).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes as much of `data` as the socket `fd` takes now. A full send buffer is
/// `ErrorKind::WouldBlock`; a closed peer is an error, never SIGPIPE.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: as in `recv_into`: the caller owns the stream of `fd` for the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
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
pub fn connection_waiting(fd: RawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid, initialised array of one element for the duration of the
    // call, and a zero timeout never blocks; the caller's listener keeps `fd` open.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    n > 0 && pollfd.revents & libc::POLLIN != 0
}

/// Accepts a connection waiting on the listening socket `fd` now, without the runtime: a
/// blocking-free `accept4` whose descriptor is closed synchronously when the stream drops (the
/// refusal path of `accept.rs` needs the descriptor back at once; monoio's io_uring streams
/// close asynchronously).
pub fn accept_now(fd: RawFd) -> io::Result<std::net::TcpStream> {
    // SAFETY: null address pointers are allowed by accept4 (the peer address is not wanted);
    // the flags are plain integers; the caller's listener keeps `fd` open for the call.
    let accepted = unsafe {
        libc::accept4(
            fd,
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
