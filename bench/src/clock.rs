//! Timestamps carried in payloads: nanoseconds of CLOCK_MONOTONIC, comparable between threads
//! and processes on the same machine.

/// Nanoseconds of CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Writes `ns` into the first 8 bytes of `payload` (little endian).
pub fn stamp(payload: &mut [u8], ns: u64) {
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&ns.to_le_bytes());
    }
}

/// The timestamp in the first 8 bytes of `payload`, if it has 8 bytes.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let head: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut payload = vec![0xAA; 16];
        stamp(&mut payload, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&payload), Some(0x0102_0304_0506_0708));
        assert_eq!(&payload[8..], &[0xAA; 8]);
    }

    #[test]
    fn short_payload_has_no_stamp() {
        let mut payload = vec![1, 2, 3];
        stamp(&mut payload, 5);
        assert_eq!(payload, vec![1, 2, 3]);
        assert_eq!(read_stamp(&payload), None);
    }

    #[test]
    fn monotonic_does_not_go_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        assert!(a > 0);
    }
}
