//! The store's directory: creation, the `LOCK` file, the `META` file and the shard folders.
//! Blocking calls only: this runs once, at startup.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::stats::LogStats;
use crate::{StorageError, StoreConfig};

const META_FILE: &str = "META";
const LOCK_FILE: &str = "LOCK";
const META_HEADER: &str = "ringmq-storage 1";

/// What every shard's log shares: the configuration, the lock (released when the last holder
/// drops) and the counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: StoreConfig,
    pub shard_count: usize,
    pub stats: Vec<Arc<LogStats>>,
    /// Set once a shard was recovered: a second `recover` would give two appenders one log.
    pub claimed: Vec<AtomicBool>,
    /// Holding the descriptor holds the `flock`.
    _lock: File,
}

impl Shared {
    pub fn open(config: StoreConfig, shard_count: usize) -> Result<Shared, StorageError> {
        let dir = config.dir.clone();
        ensure_dir(&dir)?;
        let lock = lock(&dir)?;
        check_meta(&dir, shard_count)?;
        for shard in 0..shard_count {
            let path = shard_dir(&dir, shard);
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(StorageError::io("create directory", &path, e)),
            }
        }
        sync_dir(&dir)?;
        Ok(Shared {
            config,
            shard_count,
            stats: (0..shard_count).map(|_| Arc::default()).collect(),
            claimed: (0..shard_count).map(|_| AtomicBool::new(false)).collect(),
            _lock: lock,
        })
    }
}

/// `dir/shard-NNN`.
pub(crate) fn shard_dir(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard:03}"))
}

/// `SSSSSSSSSSSSSSSSSSSS.log`: the segment number, so that names sort in log order.
pub(crate) fn segment_name(segment: u64) -> String {
    format!("{segment:020}.log")
}

/// The segment number of a file name made by [`segment_name`], or none.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `fsync`s a directory, so that files created or removed in it stay so after a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(StorageError::NotADirectory {
                dir: dir.to_owned(),
            });
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StorageError::NotWritable {
                dir: dir.to_owned(),
                source: e,
            });
        }
    }
    // The parent must exist: creating a whole tree would hide a typo in the path.
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StorageError::NotADirectory {
                dir: parent.to_owned(),
            });
        }
        Err(_) => {
            return Err(StorageError::ParentMissing {
                dir: dir.to_owned(),
            });
        }
    }
    fs::create_dir(dir).map_err(|source| StorageError::NotWritable {
        dir: dir.to_owned(),
        source,
    })?;
    sync_dir(parent)
}

fn lock(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StorageError::NotWritable {
            dir: dir.to_owned(),
            source,
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            return Err(StorageError::Locked {
                dir: dir.to_owned(),
                lock: path,
            });
        }
        Err(e) => return Err(StorageError::io("flock", &path, e.into())),
    }
    // The holder's pid, for a human looking at the directory; the lock is the flock.
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| (&file).write_all(pid.as_bytes()))
        .map_err(|source| StorageError::NotWritable {
            dir: dir.to_owned(),
            source,
        })?;
    Ok(file)
}

fn check_meta(dir: &Path, shard_count: usize) -> Result<(), StorageError> {
    let path = dir.join(META_FILE);
    let bad = |problem: String| StorageError::BadDirectory {
        dir: dir.to_owned(),
        file: path.clone(),
        problem,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut lines = text.lines();
            if lines.next() != Some(META_HEADER) {
                return Err(bad(format!(
                    "not a ringmq storage directory of this version (first line is not `{META_HEADER}`)"
                )));
            }
            let recorded = lines
                .next()
                .and_then(|l| l.strip_prefix("shards "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .ok_or_else(|| bad("no `shards N` line".into()))?;
            if recorded != shard_count {
                return Err(StorageError::ShardCountChanged {
                    dir: dir.to_owned(),
                    recorded,
                    configured: shard_count,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(stray) = fs::read_dir(dir)
                .map_err(|e| StorageError::io("read directory", dir, e))?
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().starts_with("shard-"))
            {
                return Err(bad(format!(
                    "missing, yet `{}` exists: refusing to guess the shard count",
                    stray.path().display()
                )));
            }
            // Written to a temporary name, synced, renamed: META is whole or absent.
            let tmp = dir.join("META.tmp");
            let text = format!("{META_HEADER}\nshards {shard_count}\n");
            File::create(&tmp)
                .and_then(|mut f| {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()
                })
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(|source| StorageError::NotWritable {
                    dir: dir.to_owned(),
                    source,
                })?;
            sync_dir(dir)
        }
        Err(e) => Err(StorageError::io("read", &path, e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
