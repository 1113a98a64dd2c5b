//! The engine's only unsafe code: operations on a raw socket descriptor that monoio's split
//! halves do not expose, reads into a buffer's spare capacity, and one process setting.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

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
