//! The free-operator index of a longest-idle queue: free operators ordered by how long they have
//! been free, in two tiers (unbudgeted first where the queue prefers them).
//!
//! A hint with lazy deletion, as before: an entry names a slot, its session's generation and
//! the instant the operator became free; whoever reads it checks it against the operator's
//! atomic word and `free_since`, and the claim is still the operator's CAS. What changed is its
//! shape. Operators become free in time order, so a new entry almost always belongs at the back:
//! each tier is a sorted `VecDeque` of 16-byte plain entries, an insert is a binary search and a
//! push, and the oldest entry is at the front. (The `BTreeMap` of `Candidate`s it replaces
//! touched several nodes per insert and cloned the operator's session `Arc` into every one of
//! its queues' indexes: atomic writes on a line every core shares.)
//!
//! Entries of operators who were freed again, went busy or logged out stay until a reader walks
//! past them or the index grows to twice what it held after its last compaction; the engine then
//! keeps only the entries still valid ([`IdleIndex::compact_if_due`]). So the index stays within
//! a small multiple of the operators who serve the queue, however long a session lasts, even in
//! a queue no contact ever reaches (the `BTreeMap` grew there with every free, until logout).

use std::collections::VecDeque;

/// One free operator, as the index holds it. Ordered by `(since, slot, gen)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdleEntry {
    /// When the operator became free (engine milliseconds).
    pub(crate) since: u64,
    /// The operator's slot.
    pub(crate) slot: u32,
    /// The session's generation when it became free.
    pub(crate) gen: u8,
    /// The operator's skill margin on this queue (as in `Candidate::margin`).
    pub(crate) margin: i8,
}

impl IdleEntry {
    fn key(&self) -> (u64, u32, u8) {
        (self.since, self.slot, self.gen)
    }
}

/// Entries below which the index is never compacted (walking them costs less than counting).
const COMPACT_FLOOR: usize = 64;

/// Free operators of one queue, longest free first, tier 0 before tier 1.
#[derive(Debug)]
pub(crate) struct IdleIndex {
    tiers: [VecDeque<IdleEntry>; 2],
    /// Entries held after the last compaction (or the floor).
    compacted: usize,
}

impl Default for IdleIndex {
    fn default() -> Self {
        IdleIndex { tiers: [VecDeque::new(), VecDeque::new()], compacted: COMPACT_FLOOR }
    }
}

impl IdleIndex {
    /// Enters `e` in `tier` (0 or 1; anything above counts as 1). An entry with the same
    /// `(since, slot, gen)` already there is kept (its margin updated).
    pub(crate) fn insert(&mut self, tier: u8, e: IdleEntry) {
        let t = &mut self.tiers[usize::from(tier.min(1))];
        let key = e.key();
        // The common case first: newer than the newest.
        if t.back().is_none_or(|b| b.key() < key) {
            t.push_back(e);
            return;
        }
        let at = t.partition_point(|x| x.key() < key);
        match t.get_mut(at) {
            Some(x) if x.key() == key => x.margin = e.margin,
            _ => t.insert(at, e),
        }
    }

    /// Entries in order: tier 0 oldest first, then tier 1.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u8, IdleEntry)> + '_ {
        self.tiers[0].iter().map(|e| (0, *e)).chain(self.tiers[1].iter().map(|e| (1, *e)))
    }

    /// Removes the entries listed (as `(tier, entry)` from [`IdleIndex::iter`]). Entries at the
    /// front of their tier, the usual case, go in O(1).
    pub(crate) fn remove(&mut self, gone: &[(u8, IdleEntry)]) {
        for (tier, e) in gone {
            let t = &mut self.tiers[usize::from((*tier).min(1))];
            if t.front() == Some(e) {
                t.pop_front();
                continue;
            }
            let at = t.partition_point(|x| x.key() < e.key());
            if t.get(at) == Some(e) {
                t.remove(at);
            }
        }
    }

    /// Keeps only the entries for which `keep` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&IdleEntry) -> bool) {
        for t in &mut self.tiers {
            t.retain(|e| keep(e));
        }
    }

    /// When the index holds twice what it held after the last compaction, keeps only the
    /// entries for which `valid` holds and returns true. Amortised O(1) per insert.
    pub(crate) fn compact_if_due(&mut self, valid: impl FnMut(&IdleEntry) -> bool) -> bool {
        if self.len() < 2 * self.compacted {
            return false;
        }
        self.retain(valid);
        self.compacted = self.len().max(COMPACT_FLOOR);
        true
    }

    /// Entries held, valid or not.
    pub(crate) fn len(&self) -> usize {
        self.tiers[0].len() + self.tiers[1].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn e(since: u64, slot: u32, gen: u8) -> IdleEntry {
        IdleEntry { since, slot, gen, margin: 0 }
    }

    proptest! {
        /// Whatever the order of inserts and removals, the index reads like the sorted set of
        /// `(tier, since, slot, gen)` keys the `BTreeMap` held: same entries, same order.
        #[test]
        fn reads_as_the_sorted_set_of_its_keys(
            ops in proptest::collection::vec((0u8..3, 0u8..2, 0u64..40, 0u32..8, 0u8..2), 0..300)
        ) {
            let mut idx = IdleIndex::default();
            let mut model: BTreeSet<(u8, u64, u32, u8)> = BTreeSet::new();
            for (op, tier, since, slot, gen) in ops {
                match op {
                    0 | 1 => {
                        idx.insert(tier, e(since, slot, gen));
                        model.insert((tier, since, slot, gen));
                    }
                    _ => {
                        // Remove the first entry of this slot, as a reader finding it stale would.
                        let hit = idx.iter().find(|(_, x)| x.slot == slot);
                        if let Some((t, x)) = hit {
                            idx.remove(&[(t, x)]);
                            model.remove(&(t, x.since, x.slot, x.gen));
                        }
                    }
                }
                let got: Vec<_> = idx.iter().map(|(t, x)| (t, x.since, x.slot, x.gen)).collect();
                let want: Vec<_> = model.iter().copied().collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn an_operator_freed_again_and_again_in_an_idle_queue_does_not_grow_the_index() {
        let mut idx = IdleIndex::default();
        // One operator freed a million times in a queue nobody reads: only its newest entry is
        // valid. The index never holds more than twice the floor.
        let mut most = 0;
        for since in 0..1_000_000u64 {
            idx.insert(0, e(since, 7, 1));
            idx.compact_if_due(|x| x.since == since);
            most = most.max(idx.len());
        }
        assert!(most <= 2 * COMPACT_FLOOR, "index grew to {most}");
        // The stale entries since the last compaction wait for the next; the newest is there.
        assert_eq!(idx.iter().last().map(|(_, x)| x.since), Some(999_999));
        idx.compact_if_due(|_| false);
        idx.retain(|x| x.since == 999_999);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn same_key_twice_is_one_entry_with_the_newest_margin() {
        let mut idx = IdleIndex::default();
        idx.insert(0, e(5, 1, 0));
        idx.insert(0, e(9, 2, 0));
        idx.insert(0, IdleEntry { margin: 3, ..e(5, 1, 0) });
        let got: Vec<_> = idx.iter().map(|(_, x)| (x.since, x.margin)).collect();
        assert_eq!(got, vec![(5, 3), (9, 0)]);
    }
}
