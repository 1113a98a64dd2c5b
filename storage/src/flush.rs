//! Flushing a batch: creating segments, the write and the `fdatasync`, deleting compacted
//! segments. Through io_uring ([`IoMode::IoUring`]) or on a helper thread ([`IoMode::Thread`]).
//!
//! A [`Flush`] owns everything it touches (the batch buffer, the file handles or the helper
//! thread's channel) and gives it back in [`Flushed`]: the [`ShardLog`] keeps taking appends
//! into its other buffer meanwhile, and there is never more than one flush in flight.
//!
//! [`IoMode::IoUring`]: crate::IoMode::IoUring
//! [`IoMode::Thread`]: crate::IoMode::Thread

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::future::Future as _;
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use crossbeam::channel::{self, Receiver, Sender, TryRecvError, TrySendError};

use crate::StorageError;
use crate::dir::segment_name;
use crate::log::ShardLog;

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

/// Appended bytes waiting for, or on their way to, the disk.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub buf: Vec<u8>,
    /// Where the bytes go: one chunk per segment touched, in order.
    pub chunks: Vec<Chunk>,
    pub records: u64,
    /// Sequence number of the last record in `buf`.
    pub last_seq: u64,
}

impl Batch {
    /// Empties the batch, keeping the capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.chunks.clear();
        self.records = 0;
        self.last_seq = 0;
    }
}

/// A run of `Batch::buf` written at `offset` of segment `segment`.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub segment: u64,
    /// The segment is created (and preallocated) by this flush; the chunk starts with its
    /// header at offset 0.
    pub new_segment: bool,
    pub offset: u64,
    pub range: Range<usize>,
}

/// A shard's file I/O, owned by the log between flushes and by the flush during one.
#[derive(Debug)]
pub(crate) enum Io {
    Uring(UringFiles),
    Thread(Worker),
}

impl Io {
    /// The I/O of a recovered log; `active` is the segment appended to, if any.
    pub fn new(
        mode: crate::IoMode,
        shard: usize,
        active: Option<(u64, File)>,
    ) -> Result<Io, StorageError> {
        Ok(match mode {
            crate::IoMode::IoUring => Io::Uring(UringFiles { active }),
            crate::IoMode::Thread => Io::Thread(Worker::spawn(shard, active)?),
        })
    }
}

/// The io_uring side's open segment, held as a std file between flushes (so that the log is
/// `Send`: it can be recovered on one thread and run on another). Each flush
/// registers a duplicate with the runtime for its duration (a `dup` and a `close` per flush,
/// next to a `fdatasync` of milliseconds).
#[derive(Debug)]
pub(crate) struct UringFiles {
    active: Option<(u64, File)>,
}

/// `file` as a monoio file of the current runtime (a duplicate descriptor).
fn on_runtime(file: &File, dir: &Path, segment: u64) -> Result<monoio::fs::File, StorageError> {
    file.try_clone()
        .and_then(monoio::fs::File::from_std)
        .map_err(|e| StorageError::io("register segment", &segment_path(dir, segment), e))
}

/// A batch on its way to disk: a `'static` future's worth of work, independent of the
/// [`ShardLog`] (which keeps taking appends meanwhile). Run it to completion.
#[derive(Debug)]
pub struct Flush {
    io: Io,
    job: Job,
}

/// What a flush does.
#[derive(Debug)]
struct Job {
    batch: Batch,
    sync: bool,
    /// Segment numbers to delete (compacted), after the write.
    delete: Range<u64>,
    segment_bytes: u64,
    dir: Arc<Path>,
}

/// The result of [`Flush::run`], for [`ShardLog::finish_flush`].
#[derive(Debug)]
pub struct Flushed {
    pub(crate) io: Io,
    pub(crate) batch: Batch,
    pub(crate) result: Result<(), StorageError>,
    pub(crate) synced: bool,
    pub(crate) deleted: Range<u64>,
    pub(crate) elapsed: Duration,
}

impl Flush {
    pub(crate) fn new(
        io: Io,
        batch: Batch,
        sync: bool,
        delete: Range<u64>,
        segment_bytes: u64,
        dir: Arc<Path>,
    ) -> Flush {
        Flush {
            io,
            job: Job {
                batch,
                sync,
                delete,
                segment_bytes,
                dir,
            },
        }
    }

    /// Whether this flush ends with an `fdatasync`.
    pub fn syncs(&self) -> bool {
        self.job.sync
    }

    /// Records this flush writes.
    pub fn records(&self) -> u64 {
        self.job.batch.records
    }

    /// Writes the batch and syncs it. Must run on the shard's monoio runtime (the driver
    /// matching the store's [`crate::IoMode`]).
    pub async fn run(self) -> Flushed {
        let started = Instant::now();
        let Flush { io, mut job } = self;
        let (io, result) = match io {
            Io::Uring(mut files) => {
                let result = run_uring(&mut files, &mut job).await;
                (Io::Uring(files), result)
            }
            Io::Thread(worker) => {
                let result;
                (job, result) = worker.run(job).await;
                (Io::Thread(worker), result)
            }
        };
        let ok = result.is_ok();
        Flushed {
            io,
            batch: job.batch,
            result,
            synced: ok && job.sync,
            deleted: if ok { job.delete } else { 0..0 },
            elapsed: started.elapsed(),
        }
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(segment_name(segment))
}

/// Creates segment `segment` and preallocates it (blocking calls, once per segment: `open`
/// with `O_CREAT` and `fallocate` take microseconds on ext4 and xfs).
fn create_segment(dir: &Path, segment: u64, bytes: u64) -> Result<File, StorageError> {
    let path = segment_path(dir, segment);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| StorageError::io("create segment", &path, e))?;
    preallocate(&file, bytes).map_err(|e| StorageError::io("preallocate segment", &path, e))?;
    Ok(file)
}

/// Reserves `bytes` for `file` (`fallocate`), so that appends neither run out of space nor
/// change the file size (which `fdatasync` would then have to write too). Where the
/// filesystem cannot, a sparse `set_len` sets the size at least.
pub(crate) fn preallocate(file: &File, bytes: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            file.set_len(bytes)
        }
        Err(e) => Err(e.into()),
    }
}

/// One flush through io_uring: writes and syncs with monoio's file operations.
async fn run_uring(files: &mut UringFiles, job: &mut Job) -> Result<(), StorageError> {
    let mut buf = std::mem::take(&mut job.batch.buf);
    let result = write_uring(files, job, &mut buf).await;
    job.batch.buf = buf;
    result
}

async fn write_uring(
    files: &mut UringFiles,
    job: &Job,
    buf: &mut Vec<u8>,
) -> Result<(), StorageError> {
    // Segments left by a rotation in this batch: synced with the batch, then closed.
    let mut left: Vec<(u64, monoio::fs::File)> = Vec::new();
    let mut current: Option<(u64, monoio::fs::File)> = None;
    for chunk in &job.batch.chunks {
        if chunk.new_segment {
            let file = create_segment(&job.dir, chunk.segment, job.segment_bytes)?;
            sync_dir_uring(&job.dir).await?;
            if let Some(old) = current.take() {
                left.push(old);
            } else if let Some((n, old)) = &files.active {
                left.push((*n, on_runtime(old, &job.dir, *n)?));
            }
            files.active = Some((chunk.segment, file));
        }
        let file = match current.take() {
            Some((n, f)) if n == chunk.segment => f,
            _ => match files.active.as_ref() {
                Some((n, active)) if *n == chunk.segment => on_runtime(active, &job.dir, *n)?,
                _ => {
                    return Err(StorageError::io(
                        "write",
                        &segment_path(&job.dir, chunk.segment),
                        std::io::Error::other("segment is not open (internal error)"),
                    ));
                }
            },
        };
        let file = &current.insert((chunk.segment, file)).1;
        let (res, slice) = file
            .write_all_at(
                monoio::buf::IoBuf::slice(std::mem::take(buf), chunk.range.clone()),
                chunk.offset,
            )
            .await;
        *buf = slice.into_inner();
        res.map_err(|e| StorageError::io("write", &segment_path(&job.dir, chunk.segment), e))?;
    }
    if job.sync {
        if current.is_none()
            && let Some((n, active)) = &files.active
        {
            // A sync owed by an earlier write (`interval`), nothing written now.
            current = Some((*n, on_runtime(active, &job.dir, *n)?));
        }
        for (n, file) in left.iter().chain(current.iter()) {
            file.sync_data()
                .await
                .map_err(|e| StorageError::io("fdatasync", &segment_path(&job.dir, *n), e))?;
        }
    }
    for n in job.delete.clone() {
        let path = segment_path(&job.dir, n);
        match monoio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("delete segment", &path, e)),
        }
    }
    Ok(())
}

async fn sync_dir_uring(dir: &Path) -> Result<(), StorageError> {
    let d = monoio::fs::File::open(dir)
        .await
        .map_err(|e| StorageError::io("open directory", dir, e))?;
    d.sync_all()
        .await
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// The helper thread of a shard on the epoll driver, where file I/O would block the shard.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: Sender<Job>,
    done: Receiver<(Job, Result<(), StorageError>)>,
    waker: Arc<AtomicWaker>,
}

impl Worker {
    fn spawn(shard: usize, active: Option<(u64, File)>) -> Result<Worker, StorageError> {
        // One job in flight at most: capacity 1 each way, nothing allocated per job.
        let (jobs, job_rx) = channel::bounded::<Job>(1);
        let (done_tx, done) = channel::bounded(1);
        let waker = Arc::new(AtomicWaker::new());
        let thread_waker = waker.clone();
        std::thread::Builder::new()
            .name(format!("ringmq-wal-{shard}"))
            .spawn(move || {
                let mut active = active;
                // Ends when the log (and its sender) is dropped.
                while let Ok(mut job) = job_rx.recv() {
                    let result = run_blocking(&mut active, &mut job);
                    if done_tx.send((job, result)).is_err() {
                        break;
                    }
                    thread_waker.wake();
                }
            })
            .map_err(|e| StorageError::io("spawn helper thread for", Path::new("the log"), e))?;
        Ok(Worker { jobs, done, waker })
    }

    /// Hands `job` to the thread and waits (without blocking the shard) for it to finish.
    async fn run(&self, job: Job) -> (Job, Result<(), StorageError>) {
        let gone = |job: Job| {
            let path = job.dir.to_path_buf();
            (
                job,
                Err(StorageError::io(
                    "write (helper thread gone)",
                    &path,
                    std::io::Error::other("the log's helper thread exited"),
                )),
            )
        };
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.jobs.try_send(job)
        {
            return gone(job);
        }
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.done.try_recv() {
                Ok(done) => Poll::Ready(Some(done)),
                Err(TryRecvError::Empty) => Poll::Pending,
                Err(TryRecvError::Disconnected) => Poll::Ready(None),
            }
        })
        .await
        .unwrap_or_else(|| {
            // The thread died holding the job (it does not panic; this is defensive).
            (
                Job {
                    batch: Batch::default(),
                    sync: false,
                    delete: 0..0,
                    segment_bytes: 0,
                    dir: Arc::from(Path::new("")),
                },
                Err(StorageError::io(
                    "write",
                    Path::new("the log"),
                    std::io::Error::other("the log's helper thread exited"),
                )),
            )
        })
    }
}

/// One flush with blocking calls, on the helper thread.
fn run_blocking(active: &mut Option<(u64, File)>, job: &mut Job) -> Result<(), StorageError> {
    let mut left: Vec<(u64, File)> = Vec::new();
    for chunk in &job.batch.chunks {
        if chunk.new_segment {
            let file = create_segment(&job.dir, chunk.segment, job.segment_bytes)?;
            crate::dir::sync_dir(&job.dir)?;
            if let Some(old) = active.replace((chunk.segment, file)) {
                left.push(old);
            }
        }
        let path = || segment_path(&job.dir, chunk.segment);
        let Some((n, file)) = active.as_ref() else {
            return Err(StorageError::io(
                "write",
                &path(),
                std::io::Error::other("segment is not open (internal error)"),
            ));
        };
        debug_assert_eq!(*n, chunk.segment);
        file.write_all_at(&job.batch.buf[chunk.range.clone()], chunk.offset)
            .map_err(|e| StorageError::io("write", &path(), e))?;
    }
    if job.sync {
        for (n, file) in left.iter().chain(active.iter()) {
            file.sync_data()
                .map_err(|e| StorageError::io("fdatasync", &segment_path(&job.dir, *n), e))?;
        }
    }
    for n in job.delete.clone() {
        let path = segment_path(&job.dir, n);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("delete segment", &path, e)),
        }
    }
    Ok(())
}

/// The flush loop of one shard: waits for appends, flushes a batch at a time (one in flight),
/// and calls `on_durable` after each. Returns `Ok` once the log is closed
/// ([`ShardLog::close`]) and everything appended is durable and synced, or the first I/O
/// error (the log is failed then: it accepts no more appends).
///
/// Needs a runtime with the timer enabled (for `fsync = "interval"`).
pub async fn run_flusher(
    log: Rc<RefCell<ShardLog>>,
    mut on_durable: impl FnMut(Durable),
) -> Result<(), StorageError> {
    loop {
        let flush = log.borrow_mut().start_flush();
        let Some(flush) = flush else {
            if log.borrow().is_done() {
                return if log.borrow().is_failed() {
                    Err(StorageError::Failed {
                        shard: log.borrow().shard(),
                    })
                } else {
                    Ok(())
                };
            }
            let deadline = log.borrow().sync_deadline();
            wait_for_work(&log, deadline).await;
            continue;
        };
        let done = flush.run().await;
        let durable = log.borrow_mut().finish_flush(done)?;
        on_durable(durable);
    }
}

/// Until the log has work (or is done), or `deadline` passes.
async fn wait_for_work(log: &Rc<RefCell<ShardLog>>, deadline: Option<Instant>) {
    let mut sleep = std::pin::pin!(deadline.map(|d| monoio::time::sleep_until(d.into())));
    std::future::poll_fn(|cx| {
        if log.borrow_mut().poll_flush_ready(cx).is_ready() {
            return Poll::Ready(());
        }
        match sleep.as_mut().as_pin_mut() {
            Some(s) => s.poll(cx),
            None => Poll::Pending,
        }
    })
    .await;
}
