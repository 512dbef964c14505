//! Replay protection for sealed records.
//!
//! Records travel on several subflows, so packet numbers arrive out of order; a strict
//! "greater than the last" check would drop legitimate records. The window remembers which
//! of the last [`WINDOW`] packet numbers were seen; anything older is refused too. A refused
//! record that was legitimate costs nothing: the flow protocol re-sends its data.

/// How many packet numbers behind the highest seen are still accepted.
pub(crate) const WINDOW: u64 = 8192;
const WORDS: usize = (WINDOW / 64) as usize;

/// The set of recently seen packet numbers.
#[derive(Debug)]
pub(crate) struct ReplayWindow {
    /// One past the highest packet number accepted (0: none yet).
    top: u64,
    /// Bit `n % WINDOW` is set when `n` (within the window) was seen.
    bits: Box<[u64; WORDS]>,
}

impl ReplayWindow {
    pub(crate) fn new() -> Self {
        ReplayWindow { top: 0, bits: Box::new([0; WORDS]) }
    }

    /// Whether `pn` may be accepted; does not record it (call [`Self::insert`] once the
    /// record authenticated, so forged records cannot fill the window).
    pub(crate) fn is_fresh(&self, pn: u64) -> bool {
        // `top` counts one past the highest number: the largest cannot be taken.
        if pn == u64::MAX {
            return false;
        }
        if pn >= self.top {
            return true;
        }
        if self.top - pn > WINDOW {
            return false;
        }
        !self.get(pn)
    }

    /// Records `pn` as seen. Call only after [`Self::is_fresh`] returned true.
    pub(crate) fn insert(&mut self, pn: u64) {
        if pn >= self.top {
            // Clear the slots the window slides over.
            let advance = pn + 1 - self.top;
            if advance >= WINDOW {
                self.bits.fill(0);
            } else {
                for n in self.top..=pn {
                    self.clear(n);
                }
            }
            self.top = pn + 1;
        }
        let (w, b) = Self::slot(pn);
        self.bits[w] |= 1 << b;
    }

    fn slot(pn: u64) -> (usize, u32) {
        let i = pn % WINDOW;
        ((i / 64) as usize, (i % 64) as u32)
    }

    fn get(&self, pn: u64) -> bool {
        let (w, b) = Self::slot(pn);
        self.bits[w] & (1 << b) != 0
    }

    fn clear(&mut self, pn: u64) {
        let (w, b) = Self::slot(pn);
        self.bits[w] &= !(1 << b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, pn: u64) -> bool {
        let ok = w.is_fresh(pn);
        if ok {
            w.insert(pn);
        }
        ok
    }

    #[test]
    fn duplicates_are_refused_reordering_is_not() {
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 5));
        assert!(accept(&mut w, 3));
        assert!(accept(&mut w, 0));
        assert!(!accept(&mut w, 3));
        assert!(!accept(&mut w, 5));
        assert!(accept(&mut w, 4));
        assert!(accept(&mut w, 6));
    }

    #[test]
    fn the_largest_number_is_refused_and_does_not_wrap_the_window() {
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 7));
        assert!(!accept(&mut w, u64::MAX));
        assert!(!accept(&mut w, 7), "still remembered");
        assert!(accept(&mut w, u64::MAX - 1));
        assert!(!accept(&mut w, u64::MAX - 1));
        assert!(!accept(&mut w, 8), "now far behind the window");
    }

    #[test]
    fn too_old_is_refused_and_sliding_forgets_cleanly() {
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 10));
        assert!(accept(&mut w, 10 + WINDOW + 5));
        assert!(!accept(&mut w, 10));
        assert!(!accept(&mut w, 4));
        // A slot reused after sliding is fresh for its new packet number only.
        assert!(accept(&mut w, 10 + WINDOW));
        assert!(!accept(&mut w, 10 + WINDOW));
        for pn in 20_000..30_000 {
            assert!(accept(&mut w, pn));
        }
        for pn in (30_000 - WINDOW + 1)..30_000 {
            assert!(!accept(&mut w, pn), "{pn}");
        }
    }
}
