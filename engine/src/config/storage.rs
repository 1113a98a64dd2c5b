//! `[storage]`: where and how durable state is written (docs/storage.md, docs/configuration.md).
//!
//! Without `dir` nothing is persisted (the in-memory behaviour, and the embedded default).
//! Checks that need only the file are here ([`StorageConfig::validate`]); those that need the
//! disk (the directory exists, is writable, is not locked, holds the configured shard count)
//! are done by [`open_storage`] at startup, before any listener opens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, Driver};

/// `fsync`: when written records are flushed to the disk itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Every batch is `fdatasync`ed before the acknowledgements that depend on it are sent.
    #[default]
    Always,
    /// Batches are written at once and `fdatasync`ed every `fsync_interval_ms`: a power loss
    /// or kernel crash can lose that window (a crash of the process alone loses nothing).
    Interval,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The directory holding the logs; relative to the config file. Created if its parent
    /// exists. None: nothing is persisted.
    pub dir: Option<PathBuf>,
    pub fsync: FsyncMode,
    /// With `fsync = "interval"`: milliseconds between syncs (default 100).
    pub fsync_interval_ms: Option<u32>,
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Disk all shards' logs may use together. Ordinary records may fill half of it; the
    /// other half is kept so that a full log can always be compacted.
    pub max_disk_bytes: u64,
}

/// `fsync_interval_ms` when `fsync = "interval"` does not set it.
pub const DEFAULT_FSYNC_INTERVAL_MS: u32 = 100;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: None,
            fsync: FsyncMode::Always,
            fsync_interval_ms: None,
            segment_bytes: 64 << 20,
            max_disk_bytes: 16 << 30,
        }
    }
}

impl StorageConfig {
    /// The checks that need no disk access; errors name the key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                key,
                problem,
            })
        };
        if let Some(dir) = &self.dir
            && dir.as_os_str().is_empty()
        {
            return invalid(
                "storage.dir",
                "is empty (leave it out to keep everything in memory)".into(),
            );
        }
        if self.fsync == FsyncMode::Always && self.fsync_interval_ms.is_some() {
            return invalid(
                "storage.fsync_interval_ms",
                "has no effect unless storage.fsync = \"interval\"".into(),
            );
        }
        if let Some(ms) = self.fsync_interval_ms
            && !(1..=60_000).contains(&ms)
        {
            return invalid(
                "storage.fsync_interval_ms",
                format!("{ms} is outside 1..=60000"),
            );
        }
        let segments = ringmq_storage::MIN_SEGMENT_BYTES..=ringmq_storage::MAX_SEGMENT_BYTES;
        if !segments.contains(&self.segment_bytes) {
            return invalid(
                "storage.segment_bytes",
                format!(
                    "{} is outside {}..={} (1 MiB to 1 GiB)",
                    self.segment_bytes,
                    segments.start(),
                    segments.end()
                ),
            );
        }
        let min = self
            .segment_bytes
            .saturating_mul(ringmq_storage::MIN_SEGMENTS_PER_SHARD);
        if self.max_disk_bytes < min {
            return invalid(
                "storage.max_disk_bytes",
                format!(
                    "{} is below {min}, {} segments of storage.segment_bytes per shard",
                    self.max_disk_bytes,
                    ringmq_storage::MIN_SEGMENTS_PER_SHARD
                ),
            );
        }
        Ok(())
    }

    /// The store's settings, if `dir` is set. `driver` decides how files are written: through
    /// io_uring, or on helper threads under the epoll driver.
    pub fn store_config(&self, driver: Driver) -> Option<ringmq_storage::StoreConfig> {
        let dir = self.dir.clone()?;
        Some(ringmq_storage::StoreConfig {
            dir,
            fsync: match self.fsync {
                FsyncMode::Always => ringmq_storage::FsyncPolicy::Always,
                FsyncMode::Interval => {
                    ringmq_storage::FsyncPolicy::Interval(Duration::from_millis(u64::from(
                        self.fsync_interval_ms.unwrap_or(DEFAULT_FSYNC_INTERVAL_MS),
                    )))
                }
            },
            segment_bytes: self.segment_bytes,
            max_disk_bytes: self.max_disk_bytes,
            io: match driver {
                Driver::Legacy => ringmq_storage::IoMode::Thread,
                Driver::Auto | Driver::IoUring => ringmq_storage::IoMode::IoUring,
            },
        })
    }
}

/// Opens the store of `config` for `shard_count` shards (the resolved count, not 0), or none
/// when `[storage] dir` is unset. Blocking; call it at startup before the shards start. The
/// error is a startup error naming the key (`storage.dir`, ...) and the problem.
pub fn open_storage(
    config: &Config,
    shard_count: usize,
) -> Result<Option<ringmq_storage::Store>, String> {
    let Some(store_config) = config.storage.store_config(config.server.driver) else {
        return Ok(None);
    };
    ringmq_storage::Store::open(store_config, shard_count)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/ringmq/ringmq.toml"))
    }

    #[test]
    fn without_storage_nothing_is_persisted() {
        let c = parse("").unwrap();
        assert_eq!(c.storage, StorageConfig::default());
        assert!(c.storage.store_config(c.server.driver).is_none());
        assert!(open_storage(&c, 2).unwrap().is_none());
    }

    #[test]
    fn keys_parse_and_dir_is_relative_to_the_file() {
        let c = parse(
            "[server]\ndriver = \"legacy\"\n[storage]\ndir = \"state\"\nfsync = \"interval\"\nfsync_interval_ms = 20\nsegment_bytes = 8388608\nmax_disk_bytes = 1073741824\n",
        )
        .unwrap();
        assert_eq!(
            c.storage.dir.as_deref(),
            Some(Path::new("/etc/ringmq/state"))
        );
        let s = c.storage.store_config(c.server.driver).unwrap();
        assert_eq!(
            s.fsync,
            ringmq_storage::FsyncPolicy::Interval(Duration::from_millis(20))
        );
        assert_eq!(s.io, ringmq_storage::IoMode::Thread);
        assert_eq!((s.segment_bytes, s.max_disk_bytes), (8 << 20, 1 << 30));
        let c = parse("[storage]\ndir = \"/var/lib/ringmq\"\nfsync = \"interval\"\n").unwrap();
        assert_eq!(
            c.storage.store_config(Driver::Auto).unwrap().fsync,
            ringmq_storage::FsyncPolicy::Interval(Duration::from_millis(100))
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[storage]\ndirr = \"/x\"\n", "dirr"),
            ("[storage]\nfsync = \"sometimes\"\n", "sometimes"),
            (
                "[storage]\nfsync_interval_ms = 5\n",
                "storage.fsync_interval_ms",
            ),
            (
                "[storage]\nfsync = \"interval\"\nfsync_interval_ms = 0\n",
                "storage.fsync_interval_ms",
            ),
            ("[storage]\nsegment_bytes = 1000\n", "storage.segment_bytes"),
            (
                "[storage]\nmax_disk_bytes = 1000\n",
                "storage.max_disk_bytes",
            ),
            ("[storage]\ndir = \"\"\n", "storage.dir"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn an_unusable_dir_stops_startup_naming_storage_dir() {
        let tmp = std::env::temp_dir().join(format!("ringmq-cfg-{}", std::process::id()));
        let text = format!(
            "[storage]\ndir = \"{}\"\n",
            tmp.join("missing-parent/state").display()
        );
        let c = parse(&text).unwrap();
        let e = open_storage(&c, 1).unwrap_err();
        assert!(e.contains("storage.dir") && e.contains("parent"), "{e}");
        // A usable one opens, and holds its lock.
        std::fs::create_dir_all(&tmp).unwrap();
        let text = format!("[storage]\ndir = \"{}\"\n", tmp.join("state").display());
        let c = parse(&text).unwrap();
        let store = open_storage(&c, 1).unwrap().unwrap();
        let e = open_storage(&c, 1).unwrap_err();
        assert!(e.contains("storage.dir") && e.contains("locked"), "{e}");
        drop(store);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
