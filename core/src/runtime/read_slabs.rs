//! The buffers a subflow's reader reads records into.
//!
//! A reader reads as much as the socket holds in one system call, several records at a
//! time, into a *slab*. Each complete record is split off the slab, opened in place, and
//! its DATA payloads go to reassembly as slices of the slab: no copy. A slab is therefore
//! shared until the application has read every payload in it. Once the current slab has
//! too little room left, the reader moves on to a spare one that the application has
//! finished with (the allocation is reclaimed whole, its pages already mapped), or a new
//! one when none is free yet; a record cut at the end of the slab is carried over.
//!
//! Why not one fresh buffer per record: every large record then costs an allocation whose
//! pages the kernel must fault in and zero, and one or two system calls of its own — on a
//! loopback bulk transfer, more than a tenth of the CPU.
//!
//! Memory: a slab starts at [`FIRST_SLAB`] and doubles, as long as reads fill it, up to
//! [`MAX_SLAB`]; a subflow keeps at most [`SPARE_SLABS`] spares (as many as a full receive
//! window of the largest slabs, since the application may lag that far behind), and lets
//! them go when it finds its socket empty [`IDLE_TRIM`] after it last changed slabs. A
//! payload pins its slab: reassembly counts the whole slab for the payloads it keeps from
//! it, and copies the ones that would hold too much (see `proto/recv.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

/// The first slab of a subflow: an idle subflow holds little.
const FIRST_SLAB: usize = 16 * 1024;
/// The largest slab: what reassembly counts a payload it keeps uncopied as holding.
const MAX_SLAB: usize = crate::proto::READ_BUFFER;
/// Slabs kept for reuse besides the current one.
const SPARE_SLABS: usize = 16;
/// A subflow that has not changed slabs for this long gives its spares back.
const IDLE_TRIM: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct ReadSlabs {
    /// Unopened bytes (a partial record at most, between reads) and room for more.
    current: BytesMut,
    /// Earlier slabs, oldest first, whose payloads may still be in use.
    spares: VecDeque<BytesMut>,
    /// Capacity of the next new slab.
    next_size: usize,
    /// When the reader last moved to another slab.
    moved_at: Option<Instant>,
}

impl ReadSlabs {
    pub(crate) fn new() -> ReadSlabs {
        ReadSlabs { current: BytesMut::with_capacity(FIRST_SLAB), spares: VecDeque::new(), next_size: FIRST_SLAB, moved_at: None }
    }

    /// The unopened bytes, to read into (up to [`ReadSlabs::room`] more) and split
    /// records off.
    pub(crate) fn bytes(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// Bytes the current slab can take without moving.
    pub(crate) fn room(&self) -> usize {
        self.current.capacity() - self.current.len()
    }

    /// Makes room for at least `want` more bytes, moving to another slab when the current
    /// one has less; the unopened bytes move along.
    pub(crate) fn make_room(&mut self, want: usize, now: Instant) {
        if self.room() >= want {
            return;
        }
        self.moved_at = Some(now);
        let need = self.current.len() + want;
        let reusable = self.spares.iter_mut().position(|s| s.try_reclaim(need));
        let mut next = match reusable.and_then(|i| self.spares.remove(i)) {
            Some(slab) => slab,
            None => {
                let slab = BytesMut::with_capacity(self.next_size.max(need));
                // The current slab filled up: the flow is busy, so larger ones pay.
                self.next_size = (self.next_size * 2).min(MAX_SLAB);
                slab
            }
        };
        next.extend_from_slice(&self.current);
        let mut done = std::mem::replace(&mut self.current, next);
        done.clear();
        self.spares.push_back(done);
        while self.spares.len() > SPARE_SLABS {
            self.spares.pop_front();
        }
    }

    /// The socket is empty: after a busy spell that ended [`IDLE_TRIM`] ago, the spares
    /// go (each is freed once the application has read its payloads) and the next busy
    /// spell starts again from small slabs.
    pub(crate) fn on_idle(&mut self, now: Instant) {
        if self.spares.is_empty() || self.moved_at.is_some_and(|t| now.duration_since(t) < IDLE_TRIM) {
            return;
        }
        self.spares.clear();
        self.next_size = FIRST_SLAB;
        if self.current.is_empty() && self.current.capacity() > FIRST_SLAB {
            self.current = BytesMut::with_capacity(FIRST_SLAB);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills the current slab and splits it all off as one "record", returning it.
    fn fill_and_split(slabs: &mut ReadSlabs) -> bytes::Bytes {
        let room = slabs.room();
        slabs.bytes().extend_from_slice(&vec![1u8; room]);
        let len = slabs.bytes().len();
        slabs.bytes().split_to(len).freeze()
    }

    #[test]
    fn slabs_grow_while_filled_and_are_reused_once_released() {
        let mut slabs = ReadSlabs::new();
        assert_eq!(slabs.room(), FIRST_SLAB);
        let mut sizes = Vec::new();
        for _ in 0..6 {
            let held = fill_and_split(&mut slabs);
            drop(held);
            slabs.make_room(1, Instant::now());
            sizes.push(slabs.room());
        }
        // Every slab was released at once, so after growing to the largest size the
        // reader goes round the spares without allocating.
        assert!(sizes.iter().all(|&s| s <= MAX_SLAB), "{sizes:?}");
        let ptrs: Vec<_> = (0..8)
            .map(|_| {
                drop(fill_and_split(&mut slabs));
                slabs.make_room(MAX_SLAB, Instant::now());
                slabs.bytes().as_ptr() as usize
            })
            .collect();
        let distinct: std::collections::HashSet<_> = ptrs.iter().collect();
        assert!(distinct.len() <= SPARE_SLABS + 1, "{} distinct slabs for 8 rounds", distinct.len());
    }

    #[test]
    fn a_slab_still_in_use_is_not_reused_and_unopened_bytes_move_along() {
        let mut slabs = ReadSlabs::new();
        let held = fill_and_split(&mut slabs);
        slabs.bytes().extend_from_slice(b"partial");
        slabs.make_room(FIRST_SLAB, Instant::now());
        assert_eq!(&slabs.bytes()[..], b"partial");
        assert!(slabs.room() >= FIRST_SLAB);
        assert!(held.iter().all(|&b| b == 1), "a payload in use is never overwritten");
        let held_ptr = held.as_ptr() as usize;
        for _ in 0..4 {
            let len = slabs.bytes().len();
            drop(slabs.bytes().split_to(len));
            slabs.make_room(slabs.room() + 1, Instant::now());
            assert_ne!(slabs.bytes().as_ptr() as usize, held_ptr);
        }
        assert!(held.iter().all(|&b| b == 1));
    }

    #[test]
    fn spares_go_once_the_subflow_idles_after_a_busy_spell() {
        let mut slabs = ReadSlabs::new();
        let t0 = Instant::now();
        for _ in 0..6 {
            drop(fill_and_split(&mut slabs));
            slabs.make_room(slabs.room() + 1, t0);
        }
        assert!(!slabs.spares.is_empty());
        slabs.on_idle(t0 + IDLE_TRIM / 2);
        assert!(!slabs.spares.is_empty(), "a short pause keeps them");
        slabs.on_idle(t0 + IDLE_TRIM);
        assert!(slabs.spares.is_empty());
        assert_eq!(slabs.room(), FIRST_SLAB, "an empty large slab is swapped for a small one");
    }
}
