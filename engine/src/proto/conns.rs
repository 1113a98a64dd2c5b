//! The shard's connections, and which of them have output for a writer that waits for it.
//!
//! The core never wakes a task: a writer that found nothing to write parks
//! ([`Conns::park_writer`]), and the first mutable access to its connection afterwards — the
//! only way output is written — puts it on the writable list, which the runtime drains after
//! each input ([`crate::proto::ShardCore::poll_writable`]) and wakes the tasks it keeps. An
//! access that wrote nothing costs the writer one spurious wake-up, after which it parks again;
//! the connection whose input is being handled is unparked first, so a reader's own
//! acknowledgements do not wake it.

use crate::ids::ConnId;
use crate::proto::conn::Conn;
use crate::shard::pages::PagedSlab;

#[derive(Debug, Default)]
pub(crate) struct Conns {
    slab: PagedSlab<Conn>,
    /// Parked writers whose connection was touched since the runtime last drained the list.
    /// Each connection is on it at most once (it is unparked when put on it).
    writable: Vec<ConnId>,
}

impl Conns {
    pub fn new() -> Conns {
        Conns {
            slab: PagedSlab::new(),
            writable: Vec::new(),
        }
    }

    pub fn insert(&mut self, conn: Conn) -> ConnId {
        ConnId::from_slot(self.slab.insert(conn))
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slab.get(id.slot())
    }

    /// The connection, to change it: a parked writer is put on the writable list.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let live = self.slab.len();
        let conn = self.slab.get_mut(id.slot())?;
        if conn.writer_parked {
            conn.writer_parked = false;
            self.writable.push(id);
            debug_assert!(self.writable.len() <= live, "a connection listed twice");
        }
        Some(conn)
    }

    /// The connection without waking its writer: for changes that write no output.
    pub fn get_mut_quiet(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slab.get_mut(id.slot())
    }

    pub fn try_remove(&mut self, id: ConnId) -> Option<Conn> {
        self.slab.try_remove(id.slot())
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.slab
            .iter()
            .map(|(slot, c)| (ConnId::from_slot(slot), c))
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The writer of `id` waits for output: `false` when it should not, because output is
    /// already there or the connection is closing (or gone).
    pub fn park_writer(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.slab.get_mut(id.slot()) else {
            return false;
        };
        if conn.writable_bytes() > 0 || conn.is_closing() {
            conn.writer_parked = false;
            return false;
        }
        conn.writer_parked = true;
        true
    }

    /// The task of `id` is running (it handles input): its writer is not parked.
    pub fn unpark_writer(&mut self, id: ConnId) {
        if let Some(conn) = self.slab.get_mut(id.slot()) {
            conn.writer_parked = false;
        }
    }

    /// The next connection whose parked writer has something to do.
    pub fn poll_writable(&mut self) -> Option<ConnId> {
        self.writable.pop()
    }
}
