//! The io_uring → epoll fallback through the real binary, under the condition it exists for:
//! a seccomp filter that makes `io_uring_setup` fail with EPERM, which is what Docker's
//! default seccomp profile does. The filter is installed in the broker's process
//! just before it executes (`pre_exec`), so the broker binary carries no test switch: the
//! probe meets a real refusal from the kernel.
//!
//! With `driver = auto` the broker must start on epoll and say so in its first log line; with
//! `driver = io-uring` it must refuse to start, naming the driver. Without the filter, `auto`
//! runs io_uring (so the filter, not the machine, is what the first test observes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use ringmq_tests::process::{RawBroker, broker_command};
use ringmq_tests::*;

const START: Duration = Duration::from_secs(10);

/// seccomp_data: `nr` at offset 0, `arch` at offset 4.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Installs, in the child before exec, a filter returning EPERM for `io_uring_setup` (as
/// Docker's default profile does) and allowing everything else.
fn deny_io_uring(cmd: &mut Command) {
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        // Another architecture's system call numbers mean something else: allow them.
        bpf(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            OFFSET_ARCH,
        ),
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            3,
            AUDIT_ARCH_NATIVE,
        ),
        bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, OFFSET_NR),
        bpf(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, nr),
        bpf(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: two prctl system
    // calls on memory prepared before the fork (the filter is moved into the closure; nothing
    // is allocated here).
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            // Without CAP_SYS_ADMIN a filter needs no_new_privs.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The first line the broker logged.
fn first_line(log: &str) -> &str {
    log.lines().next().unwrap_or_default()
}

/// io_uring refused (EPERM) and `driver = auto`: the broker serves on epoll, and its first log
/// line says it fell back and why.
#[test]
fn blocked_io_uring_falls_back_to_epoll_and_says_so_first() {
    let (mut cmd, port) = broker_command();
    cmd.args(["--driver", "auto", "--log-format", "text"]);
    deny_io_uring(&mut cmd);
    let mut b = RawBroker::spawn(cmd, port);
    b.wait_accepting(START);
    Client::connect(b.addr(), Opts::v5("on-epoll")).ping();
    let log = b.log();
    let first = first_line(&log);
    assert!(
        first.contains("WARN") && first.contains("io_uring unavailable, falling back to epoll"),
        "first line: {first:?}\n{log}"
    );
    assert!(
        first.contains("Operation not permitted") && first.contains("seccomp"),
        "the reason is named: {first:?}"
    );
    assert!(log.contains("driver=Legacy"), "{log}");
}

/// io_uring refused and `driver = io-uring` asked for explicitly: no silent fallback, the
/// broker refuses to start and names the driver.
#[test]
fn blocked_io_uring_with_explicit_driver_refuses_to_start() {
    let (mut cmd, port) = broker_command();
    cmd.args(["--driver", "io-uring"]);
    deny_io_uring(&mut cmd);
    let mut b = RawBroker::spawn(cmd, port);
    let status = b.wait_exit(START).expect("the broker must not start");
    assert!(!status.success(), "{}", b.log());
    assert!(
        b.log().contains("IoUring runtime") && b.log().contains("Operation not permitted"),
        "{}",
        b.log()
    );
}

/// The control: the same start without the filter runs io_uring, and logs no fallback.
#[test]
fn io_uring_allowed_runs_io_uring() {
    let (mut cmd, port) = broker_command();
    cmd.args(["--driver", "auto"]);
    let mut b = RawBroker::spawn(cmd, port);
    b.wait_accepting(START);
    let log = b.log();
    assert!(!log.contains("falling back"), "{log}");
    assert!(log.contains("driver=IoUring"), "{log}");
}
