//! A slab that grows by fixed-size pages.
//!
//! A shard keeps its connections and sessions in slabs indexed by small integers. A
//! `Vec`-backed slab doubles and copies when it fills: with many connections, up to half of
//! its capacity is unused (and resident: the allocator touches large blocks), and the copies
//! it left behind stay resident too. Here entries live in pages of `PAGE_BYTES` that never
//! move, so memory follows the number of entries, plus at most one partly used page.

/// Bytes per page: a size the allocator serves without rounding up (mimalloc's size classes
/// are a quarter of a power of two apart, so an arbitrary size can waste up to a fifth).
const PAGE_BYTES: usize = 16 * 1024;

#[derive(Debug)]
enum Slot<T> {
    /// Free; the next free slot (the slab's capacity when none).
    Vacant(usize),
    Occupied(T),
}

/// A slab of `T` in pages: `insert` returns a stable index, freed indexes are reused.
#[derive(Debug)]
pub struct PagedSlab<T> {
    pages: Vec<Box<[Slot<T>]>>,
    /// First free slot (the capacity when every slot is occupied).
    next_free: usize,
    len: usize,
}

impl<T> Default for PagedSlab<T> {
    fn default() -> Self {
        PagedSlab::new()
    }
}

impl<T> PagedSlab<T> {
    /// Entries per page.
    const PAGE: usize = {
        let n = PAGE_BYTES / std::mem::size_of::<Slot<T>>();
        if n == 0 { 1 } else { n }
    };

    pub const fn new() -> PagedSlab<T> {
        PagedSlab {
            pages: Vec::new(),
            next_free: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Indices below this may hold an entry (an incremental walk's end, see `durable/`).
    pub fn capacity(&self) -> usize {
        self.pages.len() * Self::PAGE
    }

    fn slot(&self, index: usize) -> Option<&Slot<T>> {
        self.pages.get(index / Self::PAGE)?.get(index % Self::PAGE)
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot<T>> {
        self.pages
            .get_mut(index / Self::PAGE)?
            .get_mut(index % Self::PAGE)
    }

    /// Stores `value` and returns its index.
    pub fn insert(&mut self, value: T) -> usize {
        if self.next_free == self.capacity() {
            let base = self.capacity();
            self.pages
                .push((1..=Self::PAGE).map(|i| Slot::Vacant(base + i)).collect());
        }
        let index = self.next_free;
        let slot = self.slot_mut(index);
        debug_assert!(matches!(slot, Some(Slot::Vacant(_))), "free list broken");
        let Some(slot) = slot else {
            unreachable!("the free list points into the pages");
        };
        let Slot::Vacant(next) = std::mem::replace(slot, Slot::Occupied(value)) else {
            unreachable!("the free list holds vacant slots only");
        };
        self.next_free = next;
        self.len += 1;
        index
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        match self.slot(index)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        match self.slot_mut(index)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    /// Removes and returns the entry at `index`, if any.
    pub fn try_remove(&mut self, index: usize) -> Option<T> {
        let next_free = self.next_free;
        let slot = self.slot_mut(index)?;
        if matches!(slot, Slot::Vacant(_)) {
            return None;
        }
        let Slot::Occupied(value) = std::mem::replace(slot, Slot::Vacant(next_free)) else {
            unreachable!("checked occupied above");
        };
        self.next_free = index;
        self.len -= 1;
        Some(value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.pages
            .iter()
            .flat_map(|page| page.iter())
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Occupied(value) => Some((i, value)),
                Slot::Vacant(_) => None,
            })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.pages
            .iter_mut()
            .flat_map(|page| page.iter_mut())
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Occupied(value) => Some((i, value)),
                Slot::Vacant(_) => None,
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Large enough that a page holds few entries, so the tests cross pages.
    #[derive(Debug, PartialEq)]
    struct Item(i32, [u8; 1000]);

    fn item(i: i32) -> Item {
        Item(i, [0; 1000])
    }

    type Slab = PagedSlab<Item>;

    #[test]
    fn indexes_are_stable_and_reused() {
        const { assert!(Slab::PAGE < 20, "pages hold few items") };
        let mut s = Slab::new();
        let ids: Vec<usize> = (0..200).map(|i| s.insert(item(i))).collect();
        assert_eq!(ids, (0..200).collect::<Vec<_>>());
        assert_eq!(s.len(), 200);
        assert_eq!(s.pages.len(), 200usize.div_ceil(Slab::PAGE));
        assert_eq!(s.try_remove(70), Some(item(70)));
        assert_eq!(s.try_remove(70), None);
        assert_eq!(s.try_remove(3), Some(item(3)));
        assert_eq!(s.get(3), None);
        assert_eq!(s.get(4), Some(&item(4)));
        assert_eq!(s.get(10_000), None);
        // Freed slots are reused, most recent first, before the pages grow.
        assert_eq!(s.insert(item(1003)), 3);
        assert_eq!(s.insert(item(1070)), 70);
        assert_eq!(s.insert(item(200)), 200);
        assert_eq!(s.len(), 201);
        s.get_mut(70).unwrap().0 += 1;
        assert_eq!(s.get(70), Some(&item(1071)));
    }

    #[test]
    fn iteration_skips_free_slots_and_yields_indexes() {
        let mut s = Slab::new();
        for i in 0..130 {
            s.insert(item(i * 10));
        }
        for i in (0..130).step_by(2) {
            s.try_remove(i);
        }
        let seen: Vec<(usize, i32)> = s.iter().map(|(i, v)| (i, v.0)).collect();
        assert_eq!(seen.len(), 65);
        assert!(seen.iter().all(|&(i, v)| i % 2 == 1 && v == i as i32 * 10));
        for (_, v) in s.iter_mut() {
            v.0 += 1;
        }
        assert_eq!(s.get(129).map(|v| v.0), Some(1291));
        for i in (1..130).step_by(2) {
            s.try_remove(i);
        }
        assert!(s.is_empty());
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn memory_grows_by_pages_that_fit_a_size_class() {
        let mut s = Slab::new();
        for i in 0..(Slab::PAGE * 5 + 1) {
            s.insert(item(i as i32));
        }
        assert_eq!(s.pages.len(), 6);
        assert_eq!(s.capacity(), Slab::PAGE * 6);
        assert!(Slab::PAGE * std::mem::size_of::<Slot<Item>>() <= PAGE_BYTES);
    }
}
