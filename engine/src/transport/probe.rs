//! Which I/O driver the shards run. `driver = "auto"` probes io_uring once at startup and
//! falls back to epoll (monoio's legacy driver) when it is unavailable, saying why in the
//! broker's first log line: Docker's default seccomp profile, `kernel.io_uring_disabled`, an
//! old kernel, or a kernel without an operation ringmq uses. `io-uring` and `legacy` are
//! taken as asked (an `io-uring` that cannot start is a startup error naming the driver).
//!
//! What it must never do: fall back silently — an operator who sees epoll throughput should
//! find the reason in the log.

use tracing::warn;

use crate::config::Driver;

/// The shards' io_uring ring size (`runtime.rs`); the probe asks for the same, so a ring the
/// probe got is a ring the shards get.
pub(crate) const RING_ENTRIES: u32 = 4096;

/// Why io_uring cannot be used here, or `None` when it can.
pub fn io_uring_unavailable() -> Option<String> {
    if let Ok(v) = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        && matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
    {
        return Some(format!("MONOIO_FORCE_LEGACY_DRIVER={v} is set"));
    }
    match io_uring::IoUring::new(RING_ENTRIES) {
        Err(e) => Some(setup_failure(&e)),
        Ok(ring) => {
            drop(ring);
            // monoio's own probe: every operation it uses is supported.
            (!monoio::utils::detect_uring())
                .then(|| "the kernel lacks io_uring operations monoio uses".to_owned())
        }
    }
}

/// The reason an `io_uring_setup` failed, with the usual cause.
fn setup_failure(e: &std::io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_owned());
    let cause = match (e.raw_os_error(), disabled.as_deref()) {
        (Some(libc::ENOSYS), _) => {
            "the kernel has no io_uring (before Linux 5.1, or built without it)"
        }
        (Some(libc::EPERM), Some("2")) => "kernel.io_uring_disabled = 2",
        (Some(libc::EPERM), Some("1")) => {
            "kernel.io_uring_disabled = 1 and this user is not in kernel.io_uring_group"
        }
        (Some(libc::EPERM), _) => {
            "a seccomp profile blocks it (Docker's default profile does; docs/deploy.md)"
        }
        (Some(libc::ENOMEM), _) => {
            "locked memory is exhausted (RLIMIT_MEMLOCK on kernels before 5.12)"
        }
        _ => "unexpected error",
    };
    format!("io_uring_setup: {e}: {cause}")
}

/// The driver the shards run for `requested`; logs the fallback (a warning, before anything
/// else is logged at startup).
pub fn choose_driver(requested: Driver) -> Driver {
    match requested {
        Driver::Auto => match io_uring_unavailable() {
            None => Driver::IoUring,
            Some(reason) => {
                warn!(
                    reason = %reason,
                    "io_uring unavailable, falling back to epoll (server.driver = \"auto\")"
                );
                Driver::Legacy
            }
        },
        d => d,
    }
}
