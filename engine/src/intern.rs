//! Person-id interning: maps id strings to dense `u32` numbers and back, compactly.
//!
//! Strings live back to back in one byte arena with an offset table, and the hash table stores
//! only the numbers (hashing through the arena), so a person costs about its id length plus
//! ~13 bytes, instead of a separately allocated `String` per map entry.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Dense interner of short strings.
#[derive(Default)]
pub(crate) struct Interner {
    arena: Vec<u8>,
    /// `ends[i]` is the end of string `i` in the arena; it starts at `ends[i - 1]` (or 0).
    ends: Vec<u32>,
    table: HashTable<u32>,
    hasher: FxBuildHasher,
}

impl Interner {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The bytes of number `id` (comparisons and hashing need no UTF-8 check; byte order is
    /// the contract's order). Panics on a number this interner never gave out.
    pub(crate) fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.arena[start..self.ends[i] as usize]
    }

    /// Touches the entries of `ids` before they are read one by one (see `trace::warm_up`): the
    /// independent loads overlap their cache misses.
    pub(crate) fn warm_up(&self, ids: impl Iterator<Item = u32> + Clone) {
        let mut sink = 0u32;
        for id in ids.clone() {
            sink ^= self.ends.get(id as usize).copied().unwrap_or(0);
        }
        for id in ids {
            sink ^= self.bytes(id).first().copied().unwrap_or(0) as u32;
        }
        std::hint::black_box(sink);
    }

    /// The string of number `id`. Panics on a number this interner never gave out.
    pub(crate) fn get(&self, id: u32) -> &str {
        // Only whole `&str`s are pushed into the arena, so every range is valid UTF-8.
        std::str::from_utf8(self.bytes(id)).unwrap_or("")
    }

    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s.as_bytes())
    }

    /// The number of `s`, if interned.
    pub(crate) fn find(&self, s: &str) -> Option<u32> {
        let hash = self.hash(s);
        self.table
            .find(hash, |&id| self.bytes(id) == s.as_bytes())
            .copied()
    }

    /// The number of `s`, interning it if new. Returns `(id, was_new)`.
    pub(crate) fn intern(&mut self, s: &str) -> (u32, bool) {
        let hash = self.hash(s);
        if let Some(&id) = self.table.find(hash, |&id| self.bytes(id) == s.as_bytes()) {
            return (id, false);
        }
        let id = self.ends.len() as u32;
        self.arena.extend_from_slice(s.as_bytes());
        self.ends.push(self.arena.len() as u32);
        let Interner {
            arena,
            ends,
            table,
            hasher,
        } = self;
        table.insert_unique(hash, id, |&other| {
            let i = other as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            hasher.hash_one(&arena[start..ends[i] as usize])
        });
        (id, true)
    }

    /// Heap bytes held (for memory reports).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.ends.capacity() * 4 + self.table.capacity() * 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_densely_and_finds_back() {
        let mut i = Interner::default();
        assert_eq!(i.intern("alice"), (0, true));
        assert_eq!(i.intern("bob"), (1, true));
        assert_eq!(i.intern("alice"), (0, false));
        assert_eq!(i.find("bob"), Some(1));
        assert_eq!(i.find("carol"), None);
        assert_eq!(i.get(0), "alice");
        assert_eq!(i.get(1), "bob");
        for n in 0..10_000 {
            i.intern(&format!("p{n}"));
        }
        assert_eq!(i.find("p9999").map(|id| i.get(id)), Some("p9999"));
        assert_eq!(i.len(), 10_002);
    }
}
