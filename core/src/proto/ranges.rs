//! A set of `u64` units stored as disjoint, non-touching half-open ranges.
//!
//! Both halves of the protocol think in ranges: the sender tracks what is in flight on each
//! subflow and what must be re-sent; the receiver tracks what arrived beyond the cumulative
//! point. Ranges are always kept merged, so the set's size is bounded by the number of
//! *gaps*, and every unit counted once.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, merged half-open ranges keyed by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    map: BTreeMap<u64, u64>,
    /// Units covered (kept current, so asking is free).
    units: u64,
}

impl RangeSet {
    pub(crate) fn new() -> Self {
        RangeSet::default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of ranges (not units).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Total number of units covered.
    pub(crate) fn covered(&self) -> u64 {
        debug_assert_eq!(self.units, self.map.iter().map(|(s, e)| e - s).sum::<u64>());
        self.units
    }

    /// The lowest range.
    pub(crate) fn first(&self) -> Option<Range<u64>> {
        self.map.iter().next().map(|(&s, &e)| s..e)
    }

    pub(crate) fn contains(&self, unit: u64) -> bool {
        self.map
            .range(..=unit)
            .next_back()
            .is_some_and(|(_, &e)| unit < e)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// Adds `r`; returns how many of its units were not in the set before.
    pub(crate) fn insert(&mut self, r: Range<u64>) -> u64 {
        if r.start >= r.end {
            return 0;
        }
        let (mut start, mut end) = (r.start, r.end);
        let mut already = 0;
        let mut absorbed = Vec::new();
        // Ranges starting at or before `r.end` that reach `r.start` overlap or touch `r`.
        for (&s, &e) in self.map.range(..=r.end).rev() {
            if e < r.start {
                break;
            }
            let (os, oe) = (s.max(r.start), e.min(r.end));
            if oe > os {
                already += oe - os;
            }
            absorbed.push(s);
            start = start.min(s);
            end = end.max(e);
        }
        for s in absorbed {
            self.map.remove(&s);
        }
        self.map.insert(start, end);
        let added = (r.end - r.start) - already;
        self.units += added;
        added
    }

    /// Removes every unit of `r`; returns how many were in the set.
    pub(crate) fn remove(&mut self, r: Range<u64>) -> u64 {
        if r.start >= r.end {
            return 0;
        }
        let before = self.units;
        let mut hit = Vec::new();
        for (&s, &e) in self.map.range(..r.end).rev() {
            if e <= r.start {
                break;
            }
            hit.push((s, e));
        }
        for (s, e) in hit {
            self.map.remove(&s);
            self.units -= e - s;
            if s < r.start {
                self.map.insert(s, r.start);
                self.units += r.start - s;
            }
            if e > r.end {
                self.map.insert(r.end, e);
                self.units += e - r.end;
            }
        }
        before - self.units
    }

    /// Removes the units of `r` and returns them as a set of their own.
    pub(crate) fn split_off(&mut self, r: Range<u64>) -> RangeSet {
        let mut out = RangeSet::new();
        for (&s, &e) in self.map.range(..r.end).rev() {
            if e <= r.start {
                break;
            }
            out.insert(s.max(r.start)..e.min(r.end));
        }
        self.remove(r);
        out
    }

    /// Removes every unit below `unit`; returns how many were in the set.
    pub(crate) fn remove_below(&mut self, unit: u64) -> u64 {
        let before = self.units;
        while let Some(entry) = self.map.first_entry() {
            let (s, e) = (*entry.key(), *entry.get());
            if s >= unit {
                break;
            }
            entry.remove();
            self.units -= e - s;
            if e > unit {
                self.map.insert(unit, e);
                self.units += e - unit;
                break;
            }
        }
        before - self.units
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_touching_and_overlapping() {
        let mut s = RangeSet::new();
        assert_eq!(s.insert(5..10), 5);
        assert_eq!(s.insert(10..12), 2);
        assert_eq!(s.insert(1..3), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1..3, 5..12]);
        assert_eq!(s.insert(2..6), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1..12]);
        s.remove(4..6);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1..4, 6..12]);
        s.remove_below(7);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![7..12]);
        assert_eq!(s.covered(), 5);
        assert!(s.contains(7) && !s.contains(12) && !s.contains(6));
    }

    proptest! {
        #[test]
        fn behaves_like_a_set_of_units(ops in proptest::collection::vec((0u8..3, 0u64..64, 0u64..16), 0..60)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (op, start, len) in ops {
                let r = start..start + len;
                match op {
                    0 => {
                        let new = r.clone().filter(|u| !model.contains(u)).count() as u64;
                        prop_assert_eq!(s.insert(r.clone()), new);
                        model.extend(r);
                    }
                    1 => { s.remove(r.clone()); for u in r { model.remove(&u); } }
                    _ => { s.remove_below(start); model.retain(|&u| u >= start); }
                }
                let units: BTreeSet<u64> = s.iter().flatten().collect();
                prop_assert_eq!(&units, &model);
                let v: Vec<_> = s.iter().collect();
                for w in v.windows(2) { prop_assert!(w[0].end < w[1].start); }
                prop_assert_eq!(s.covered(), model.len() as u64);
                prop_assert_eq!(v.len(), s.len());
            }
        }
    }
}
