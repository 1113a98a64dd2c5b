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

/// The logs a changed shard count is re-homed from (see [`Shared::open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Previous {
    pub shard_count: usize,
    pub layout: u64,
}

/// What every shard's log shares: the configuration, the lock (released when the last holder
/// drops) and the counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: StoreConfig,
    pub shard_count: usize,
    /// The layout of the shard folders the logs are appended in ([`shard_dir`]).
    pub layout: u64,
    /// Re-sharding: the layout `META` still names, with its shard count, until
    /// [`Shared::commit_reshard`]; its logs are only read ([`crate::Store::recover_previous`]).
    pub previous: Option<Previous>,
    pub previous_claimed: Vec<AtomicBool>,
    /// Re-sharding was committed (`META` now names `layout`).
    pub committed: AtomicBool,
    pub stats: Vec<Arc<LogStats>>,
    /// Set once a shard was recovered: a second `recover` would give two appenders one log.
    pub claimed: Vec<AtomicBool>,
    /// Holding the descriptor holds the `flock`.
    _lock: File,
}

impl Shared {
    /// Opens the directory for `shard_count` shards. When `META` records another count N, the
    /// logs of that layout stay as they are (read later through `recover_previous`) and this
    /// store appends to fresh folders of the next layout, which nothing names yet: a crash
    /// before [`Shared::commit_reshard`] leaves `META` and the N old logs untouched (the
    /// unnamed folders are deleted at the next open), one after it finds the new layout whole.
    pub fn open(config: StoreConfig, shard_count: usize) -> Result<Shared, StorageError> {
        let dir = config.dir.clone();
        ensure_dir(&dir)?;
        let lock = lock(&dir)?;
        let recorded = check_meta(&dir, shard_count)?;
        let (layout, previous) = match recorded {
            Some(m) if m.shard_count != shard_count => (
                m.layout + 1,
                Some(Previous {
                    shard_count: m.shard_count,
                    layout: m.layout,
                }),
            ),
            Some(m) => (m.layout, None),
            None => (0, None),
        };
        // Folders of no layout in use: left by an interrupted re-sharding (before or after its
        // commit), or by a committed one whose old folders were not all deleted. A
        // re-sharding starts its new layout empty (an earlier attempt's folders go).
        collect_garbage(&dir, |l| match previous {
            Some(p) => l == p.layout,
            None => l == layout,
        })?;
        for shard in 0..shard_count {
            let path = shard_dir(&dir, layout, shard);
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(StorageError::io("create directory", &path, e)),
            }
        }
        sync_dir(&dir)?;
        let previous_count = previous.map_or(0, |p| p.shard_count);
        Ok(Shared {
            config,
            shard_count,
            layout,
            previous,
            previous_claimed: (0..previous_count)
                .map(|_| AtomicBool::new(false))
                .collect(),
            committed: AtomicBool::new(false),
            stats: (0..shard_count).map(|_| Arc::default()).collect(),
            claimed: (0..shard_count).map(|_| AtomicBool::new(false)).collect(),
            _lock: lock,
        })
    }

    /// Re-sharding: every new log holds its whole state, durable. Switches `META` to the new
    /// count and layout (written to a temporary name, synced, renamed: the one atomic step),
    /// then deletes the old layout's folders (what a crash leaves of them goes at the next
    /// open). Nothing to do without a re-sharding, or a second time.
    pub fn commit_reshard(&self) -> Result<(), StorageError> {
        let Some(previous) = self.previous else {
            return Ok(());
        };
        if self
            .committed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(());
        }
        let dir = &self.config.dir;
        write_meta(dir, self.shard_count, self.layout)?;
        for shard in 0..previous.shard_count {
            let path = shard_dir(dir, previous.layout, shard);
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("delete directory", &path, e)),
            }
        }
        sync_dir(dir)
    }
}

/// Deletes the shard folders of `dir` whose layout `keep` refuses (only names [`shard_dir`]
/// makes; anything else is left alone).
fn collect_garbage(dir: &Path, keep: impl Fn(u64) -> bool) -> Result<(), StorageError> {
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))?;
    let mut removed = false;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some((layout, _)) = parse_shard_dir(&name.to_string_lossy()) else {
            continue;
        };
        if keep(layout) {
            continue;
        }
        let path = entry.path();
        fs::remove_dir_all(&path).map_err(|e| StorageError::io("delete directory", &path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What a look at a store's directory finds, without creating, locking or writing anything
/// (`ringmq check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The directory exists (otherwise startup will create it: its parent exists).
    pub exists: bool,
    /// Another process (a running ringmq) holds its lock now.
    pub locked: bool,
    /// The shard count its `META` records, if it has one.
    pub recorded_shards: Option<usize>,
}

/// Checks what [`Shared::open`] would check, read-only: the directory (or its parent) exists,
/// is a directory and is writable; its `META` is readable. A lock held by another process is
/// reported, not an error: it is the normal state of a directory whose broker is running.
pub fn inspect(dir: &Path) -> Result<Inspection, StorageError> {
    let writable = |path: &Path| {
        rustix::fs::access(
            path,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .map_err(|e| StorageError::NotWritable {
            dir: path.to_owned(),
            source: e.into(),
        })
    };
    if let Some(parent) = absent_with_parent(dir)? {
        writable(parent)?;
        return Ok(Inspection {
            exists: false,
            locked: false,
            recorded_shards: None,
        });
    }
    writable(dir)?;
    let locked = match File::open(dir.join(LOCK_FILE)) {
        Ok(file) => matches!(
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK
        ),
        Err(_) => false,
    };
    Ok(Inspection {
        exists: true,
        locked,
        recorded_shards: read_meta(dir)?.map(|m| m.shard_count),
    })
}

/// `dir/shard-NNN` (layout 0, the layout of a store never re-sharded) or `dir/shard-NNN.gK`
/// (layout K: written by the K-th change of the shard count).
pub(crate) fn shard_dir(dir: &Path, layout: u64, shard: usize) -> PathBuf {
    if layout == 0 {
        dir.join(format!("shard-{shard:03}"))
    } else {
        dir.join(format!("shard-{shard:03}.g{layout}"))
    }
}

/// (layout, shard) of a folder name made by [`shard_dir`], or none.
pub(crate) fn parse_shard_dir(name: &str) -> Option<(u64, usize)> {
    let rest = name.strip_prefix("shard-")?;
    let (shard, layout) = match rest.split_once(".g") {
        Some((shard, layout)) => (shard, layout.parse::<u64>().ok().filter(|&l| l > 0)?),
        None => (rest, 0),
    };
    if shard.len() < 3 || !shard.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((layout, shard.parse().ok()?))
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

/// `None` when `dir` is a directory; its parent when `dir` is absent and the parent is a
/// directory (the parent must exist: creating a whole tree would hide a typo in the path);
/// an error naming the problem otherwise.
fn absent_with_parent(dir: &Path) -> Result<Option<&Path>, StorageError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(None),
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
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(Some(parent)),
        Ok(_) => Err(StorageError::NotADirectory {
            dir: parent.to_owned(),
        }),
        Err(_) => Err(StorageError::ParentMissing {
            dir: dir.to_owned(),
        }),
    }
}

fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    let Some(parent) = absent_with_parent(dir)? else {
        return Ok(());
    };
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

/// What `META` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    shard_count: usize,
    layout: u64,
}

/// Reads `META`; `None` when there is none.
fn read_meta(dir: &Path) -> Result<Option<Meta>, StorageError> {
    let path = dir.join(META_FILE);
    let bad = |problem: String| StorageError::BadDirectory {
        dir: dir.to_owned(),
        file: path.clone(),
        problem,
    };
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", &path, e)),
    };
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
        .filter(|&n| n > 0)
        .ok_or_else(|| bad("no `shards N` line".into()))?;
    let layout = match lines.next().filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => l
            .strip_prefix("layout ")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| bad(format!("unreadable line `{l}` (expected `layout K`)")))?,
    };
    Ok(Some(Meta {
        shard_count: recorded,
        layout,
    }))
}

/// Reads `META` (`None`: a new directory, for which it is written now with `shard_count`).
fn check_meta(dir: &Path, shard_count: usize) -> Result<Option<Meta>, StorageError> {
    if let Some(meta) = read_meta(dir)? {
        return Ok(Some(meta));
    }
    if let Some(stray) = fs::read_dir(dir)
        .map_err(|e| StorageError::io("read directory", dir, e))?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("shard-"))
    {
        return Err(StorageError::BadDirectory {
            dir: dir.to_owned(),
            file: dir.join(META_FILE),
            problem: format!(
                "missing, yet `{}` exists: refusing to guess the shard count",
                stray.path().display()
            ),
        });
    }
    write_meta(dir, shard_count, 0)?;
    Ok(None)
}

/// Writes `META` to a temporary name, syncs it and renames it: `META` is whole, old or new.
fn write_meta(dir: &Path, shard_count: usize, layout: u64) -> Result<(), StorageError> {
    let path = dir.join(META_FILE);
    let tmp = dir.join("META.tmp");
    let mut text = format!("{META_HEADER}\nshards {shard_count}\n");
    if layout > 0 {
        text.push_str(&format!("layout {layout}\n"));
    }
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

    #[test]
    fn shard_folder_names_parse() {
        let d = Path::new("/x");
        for (layout, shard) in [(0, 0), (0, 7), (1, 3), (12, 1000)] {
            let p = shard_dir(d, layout, shard);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(parse_shard_dir(&name), Some((layout, shard)), "{name}");
        }
        for bad in [
            "shard-",
            "shard-1",
            "shard-001.g0",
            "shard-001.gx",
            "shard-abc",
            "other",
        ] {
            assert_eq!(parse_shard_dir(bad), None, "{bad}");
        }
    }
}
