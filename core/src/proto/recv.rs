//! The receive side: reassembly of DATA arriving on any subflow, in any order, possibly
//! twice, into one in-order byte stream, and the window that bounds its memory.
//!
//! The window is absolute: the peer may send payload bytes at offsets below
//! `bytes_read + recv_window`, so the bytes buffered (in-order unread plus out-of-order)
//! never exceed `recv_window`. Anything beyond the window is a protocol violation, not
//! something to buffer.
//!
//! Bytes are not all the memory, though. Every piece held costs a slot in a map, a range
//! in the ACK set and an allocation, and a payload kept without a copy holds on to the
//! whole buffer the runtime read it into. A peer cutting its data into one-byte pieces
//! with gaps between them, or sending each piece alone in a read buffer otherwise filled
//! with useless records, would make a window of bytes cost a hundred times its size. So
//! the receiver counts what each piece really costs ([`PIECE_OVERHEAD`], allocator
//! rounding, and once for all the pieces kept from it, the whole [`ReadBuffer`] a shared
//! piece lies in) and keeps the total within twice the window:
//! - pieces of [`SHARE_MIN`] bytes or more are kept as they came (no copy: the common case
//!   of large writes, whose pieces fill the buffers they came in), as long as what the
//!   buffers hold beyond the pieces' bytes stays within half the window;
//! - smaller pieces, and large ones beyond that, are copied into buffers of the receiver's
//!   own, gathered with the piece before them when they touch it;
//! - out-of-order DATA whose pieces would take the cost past the bound is refused: the
//!   subflow that carried it is closed and nothing of it is acknowledged, so an honest
//!   sender re-sends it elsewhere. In-order DATA is always taken (it lets the application
//!   read, and gathers cheaply), so the flow can always move on.
//!
//! Duplicates — retransmissions of units that did arrive, or the same DATA carried by
//! two subflows — are trimmed and counted, never delivered twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;

use bytes::{Buf, Bytes};

use super::ranges::RangeSet;
use super::ProtocolViolation;

/// The most a payload kept without a copy may hold on to when its buffer is not known
/// (a subflow reader's buffers are at most this large).
pub(crate) const READ_BUFFER: usize = 256 * 1024;
/// Pieces at least this long may be kept as they came; shorter ones are copied.
const SHARE_MIN: usize = 16 * 1024;
/// Largest buffer small pieces are gathered into.
const GATHER_MAX: usize = 64 * 1024;
/// What one piece costs besides its bytes: its B-tree slot at the emptiest nodes allow
/// and its range in the ACK set while out of order, or its queue slot and shared-buffer
/// header once in order. Checked against the real heap in `tests/memory.rs`.
pub(crate) const PIECE_OVERHEAD: usize = 256;

/// Heap an allocation of `n` bytes really takes (glibc: an 8-byte header, 16-byte
/// granules, 32 bytes at least).
fn heap(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// The buffer a payload was read into: where it ends, which tells live buffers apart, and
/// how large it is. A payload kept as it came keeps all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadBuffer {
    pub(crate) end: usize,
    pub(crate) len: usize,
}

/// What a piece kept as it came holds on to.
#[derive(Debug, Clone, Copy)]
enum Pin {
    /// A known buffer, counted once for all its pieces held.
    Buffer(usize),
    /// An unknown one, counted as a [`READ_BUFFER`] of its own.
    Alone,
}

/// Heap a read buffer of `n` bytes takes: that large, it is mapped in whole pages.
fn buffer_heap(n: usize) -> usize {
    (n + 16).next_multiple_of(4096)
}

/// What one DATA frame changed.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Payload bytes never seen before.
    pub new_bytes: u64,
    /// Payload bytes already held or delivered.
    pub duplicate_bytes: u64,
    /// In-order data or the FIN became available to `read`.
    pub readable: bool,
}

/// An out-of-order piece: as it came, or copied into a buffer of our own (which later
/// pieces touching its end are appended to).
#[derive(Debug)]
enum Stored {
    Shared(Bytes, Pin),
    Own(Vec<u8>),
}

#[derive(Debug)]
struct Piece {
    data: Stored,
    /// What it costs: see [`PIECE_OVERHEAD`].
    charge: usize,
}

impl Piece {
    fn len(&self) -> usize {
        match &self.data {
            Stored::Shared(b, _) => b.len(),
            Stored::Own(v) => v.len(),
        }
    }
}

/// An in-order piece waiting to be read.
#[derive(Debug)]
struct Ready {
    data: Bytes,
    charge: usize,
    pin: Option<Pin>,
}

/// Where a new piece goes, decided before anything is changed.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Kept as it came.
    Share,
    /// Appended to the buffer ending where it starts (the in-order tail, or the
    /// out-of-order piece at that key), grown to `cap`.
    Append { to: Option<u64>, cap: usize },
    /// A buffer of its own, exactly its size.
    Own,
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// In-order unread pieces, starting at `read_off`; `tail` follows them.
    ready: VecDeque<Ready>,
    /// Small in-order pieces gathered behind `ready`, and what that buffer costs.
    tail: Vec<u8>,
    tail_charge: usize,
    /// Out-of-order pieces beyond `data_end`, disjoint, keyed by offset.
    ooo: BTreeMap<u64, Piece>,
    /// Units received beyond `cum()` (for ACK ranges); includes an early FIN unit.
    received: RangeSet,
    read_off: u64,
    /// End of the contiguous received data.
    data_end: u64,
    fin: Option<u64>,
    /// Highest payload end seen.
    highest: u64,
    window: u64,
    min_window: u64,
    /// Bytes held out of order.
    ooo_bytes: u64,
    /// What everything held costs, by the reckoning above.
    charged: usize,
    /// The buffers that shared pieces keep, by end address: their size and how many
    /// pieces hold each.
    buffers: HashMap<usize, (usize, usize)>,
    /// Pieces are shared only while `charged` less the bytes held stays within this.
    share_limit: usize,
    /// `charged` less the bytes held may not pass this for out-of-order data: with the
    /// bytes (at most the window) and what in-order pieces may add, the total stays
    /// within twice the window.
    overhead_limit: usize,
}

impl RecvBuffer {
    pub fn new(window: usize, min_window: u64) -> Self {
        // A tiny window (unit tests) still leaves room for a few pieces.
        let bound = window.max(64 * 1024);
        RecvBuffer {
            ready: VecDeque::new(),
            tail: Vec::new(),
            tail_charge: 0,
            ooo: BTreeMap::new(),
            received: RangeSet::new(),
            read_off: 0,
            data_end: 0,
            fin: None,
            highest: 0,
            window: window as u64,
            min_window,
            ooo_bytes: 0,
            charged: 0,
            buffers: HashMap::new(),
            share_limit: bound / 2,
            // In-order pieces are taken whatever the cost; a sixteenth of the window
            // covers their overhead (gathered, or at least SHARE_MIN bytes each).
            overhead_limit: bound - bound / 16,
        }
    }

    /// Every unit below is received (the FIN unit counts once all data is in).
    pub fn cum(&self) -> u64 {
        if self.fin == Some(self.data_end) {
            self.data_end + 1
        } else {
            self.data_end
        }
    }

    /// Received ranges beyond `cum`, lowest first, at most `max`.
    pub fn ack_ranges(&self, max: usize) -> Vec<Range<u64>> {
        self.received.iter().take(max).collect()
    }

    /// The absolute window to advertise.
    pub fn window(&self) -> u64 {
        (self.read_off + self.window).max(self.min_window)
    }

    /// Bytes buffered: unread in-order plus out-of-order.
    pub fn buffered(&self) -> u64 {
        self.data_end - self.read_off + self.ooo_bytes
    }

    /// What the buffered bytes cost in memory, by the receiver's reckoning (at least what
    /// the heap holds for them).
    #[cfg(test)]
    pub fn memory(&self) -> usize {
        self.charged
    }

    pub fn has_ready(&self) -> bool {
        self.data_end > self.read_off
    }

    /// Every byte up to the FIN has arrived (read or not).
    pub fn fin_received(&self) -> bool {
        self.fin == Some(self.data_end)
    }

    /// All data was read and the FIN received.
    pub fn at_fin(&self) -> bool {
        self.fin == Some(self.read_off)
    }

    /// Takes in one DATA frame, or refuses all of it. `source` is the buffer the payload
    /// lies in, when known.
    pub fn receive(
        &mut self,
        offset: u64,
        payload: Bytes,
        fin: bool,
        source: Option<ReadBuffer>,
    ) -> Result<Received, ProtocolViolation> {
        let len = payload.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|e| *e < super::frame::MAX_OFFSET)
            .ok_or(ProtocolViolation::OffsetTooLarge)?;
        let window = self.window();
        if end > window {
            return Err(ProtocolViolation::DataBeyondWindow { end, window });
        }
        if fin {
            match self.fin {
                Some(f) if f != end => {
                    return Err(ProtocolViolation::FinChanged { was: f, now: end })
                }
                None if self.highest > end => {
                    return Err(ProtocolViolation::FinChanged {
                        was: self.highest,
                        now: end,
                    })
                }
                _ => {}
            }
        } else if let Some(f) = self.fin {
            if end > f {
                return Err(ProtocolViolation::DataBeyondFin { end, fin: f });
            }
        }
        let gaps = self.gaps(offset.max(self.data_end), end);
        let in_order = offset <= self.data_end;
        let mut places = Vec::with_capacity(gaps.len());
        if !in_order {
            // Only a frame that starts beyond the in-order data may be refused: the rest
            // of the stream can always be read, and its pieces gather behind it.
            let (mut cost, mut bytes, mut shared) = (0, 0, false);
            for g in &gaps {
                let (place, c) = self.place(g, source, (cost, bytes, shared));
                shared |= matches!(place, Place::Share);
                places.push(place);
                cost += c;
                bytes += (g.end - g.start) as usize;
            }
            let held = self.buffered() as usize + gaps.iter().map(|g| (g.end - g.start) as usize).sum::<usize>();
            if (self.charged + cost).saturating_sub(held) > self.overhead_limit {
                return Err(ProtocolViolation::ReassemblyMemory {
                    needed: (self.charged + cost) as u64,
                    limit: (held + self.overhead_limit) as u64,
                });
            }
        }
        let mut out = Received::default();
        if fin && self.fin.is_none() {
            self.fin = Some(end);
            if end > self.data_end {
                self.received.insert(end..end + 1);
            } else {
                out.readable = true;
            }
        }
        self.highest = self.highest.max(end);
        out.new_bytes = gaps.iter().map(|g| g.end - g.start).sum();
        out.duplicate_bytes = len - out.new_bytes;
        let before = self.data_end;
        for (i, gap) in gaps.into_iter().enumerate() {
            let piece = payload.slice((gap.start - offset) as usize..(gap.end - offset) as usize);
            // In order, each piece follows the one before once the pieces held between
            // them are pulled in: it is placed then.
            let place = places.get(i).copied().unwrap_or_else(|| self.place(&gap, source, (0, 0, false)).0);
            self.store(gap, piece, place, source);
            if in_order {
                self.pull();
            }
        }
        if self.data_end > before {
            out.readable = true;
        }
        Ok(out)
    }

    /// The stretches of `[from, end)` not held yet (all at or beyond `data_end`).
    fn gaps(&self, from: u64, end: u64) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        if from >= end {
            return gaps;
        }
        let mut pos = from;
        let before = self.ooo.range(..from).next_back().map(|(&s, p)| s..s + p.len() as u64);
        let held = before.into_iter().chain(self.ooo.range(from..end).map(|(&s, p)| s..s + p.len() as u64));
        for h in held {
            if h.start > pos {
                gaps.push(pos..h.start);
            }
            pos = pos.max(h.end);
        }
        if pos < end {
            gaps.push(pos..end);
        }
        gaps
    }

    /// Where the piece for `gap` goes, and what that costs, with `pending` (cost, bytes,
    /// whether one was shared) of this frame's pieces placed before it.
    fn place(&self, gap: &Range<u64>, source: Option<ReadBuffer>, pending: (usize, usize, bool)) -> (Place, usize) {
        let n = (gap.end - gap.start) as usize;
        if n >= SHARE_MIN {
            let pin = match source {
                // Counted already when one of its pieces is held (or placed just before).
                Some(b) if self.buffers.contains_key(&b.end) || pending.2 => 0,
                Some(b) => buffer_heap(b.len),
                None => READ_BUFFER,
            };
            let cost = PIECE_OVERHEAD + pin;
            let held = self.buffered() as usize + pending.1 + n;
            if (self.charged + pending.0 + cost).saturating_sub(held) <= self.share_limit {
                return (Place::Share, cost);
            }
        }
        let before = match gap.start == self.data_end {
            true => (!self.tail.is_empty()).then_some((None, &self.tail)),
            false => self.ooo.range(..gap.start).next_back().and_then(|(&s, p)| match &p.data {
                Stored::Own(v) if s + v.len() as u64 == gap.start => Some((Some(s), v)),
                _ => None,
            }),
        };
        match before.filter(|(_, v)| n < SHARE_MIN && v.len() + n <= GATHER_MAX) {
            Some((to, v)) if v.len() + n <= v.capacity() => (Place::Append { to, cap: v.capacity() }, 0),
            Some((to, v)) => {
                let cap = (2 * v.capacity()).max(v.len() + n).min(GATHER_MAX);
                (Place::Append { to, cap }, heap(cap) - heap(v.capacity()))
            }
            None => (Place::Own, heap(n) + PIECE_OVERHEAD),
        }
    }

    /// Counts a shared piece against the buffer it holds; returns the pin and the piece's
    /// own charge.
    fn pin(&mut self, source: Option<ReadBuffer>) -> (Pin, usize) {
        match source {
            Some(b) => {
                let (len, pieces) = self.buffers.entry(b.end).or_insert((buffer_heap(b.len), 0));
                if *pieces == 0 {
                    self.charged += *len;
                }
                *pieces += 1;
                self.charged += PIECE_OVERHEAD;
                (Pin::Buffer(b.end), PIECE_OVERHEAD)
            }
            None => {
                self.charged += READ_BUFFER + PIECE_OVERHEAD;
                (Pin::Alone, READ_BUFFER + PIECE_OVERHEAD)
            }
        }
    }

    /// A shared piece is gone: its buffer is no longer counted once no piece holds it.
    fn unpin(&mut self, pin: Pin) {
        if let Pin::Buffer(end) = pin {
            if let Some((len, pieces)) = self.buffers.get_mut(&end) {
                *pieces -= 1;
                if *pieces == 0 {
                    self.charged -= *len;
                    self.buffers.remove(&end);
                }
            }
        }
    }

    fn store(&mut self, gap: Range<u64>, piece: Bytes, place: Place, source: Option<ReadBuffer>) {
        let n = piece.len();
        if gap.start == self.data_end {
            match place {
                Place::Share => {
                    self.freeze_tail();
                    let (pin, charge) = self.pin(source);
                    self.ready.push_back(Ready { data: piece, charge, pin: Some(pin) });
                }
                Place::Append { cap, .. } => {
                    let grown = grow(&mut self.tail, cap, &piece);
                    self.tail_charge += grown;
                    self.charged += grown;
                }
                Place::Own => {
                    self.freeze_tail();
                    self.tail = piece.to_vec();
                    self.tail_charge = heap(n) + PIECE_OVERHEAD;
                    self.charged += self.tail_charge;
                }
            }
            self.data_end = gap.end;
        } else {
            match place {
                Place::Share => {
                    let (pin, charge) = self.pin(source);
                    self.ooo.insert(gap.start, Piece { data: Stored::Shared(piece, pin), charge });
                }
                Place::Append { to, cap } => {
                    let p = to.and_then(|k| self.ooo.get_mut(&k)).expect("placed after a piece of our own");
                    let Stored::Own(v) = &mut p.data else { unreachable!("placed after a piece of our own") };
                    let grown = grow(v, cap, &piece);
                    p.charge += grown;
                    self.charged += grown;
                }
                Place::Own => {
                    let charge = heap(n) + PIECE_OVERHEAD;
                    self.charged += charge;
                    self.ooo.insert(gap.start, Piece { data: Stored::Own(piece.to_vec()), charge });
                }
            }
            self.ooo_bytes += n as u64;
            self.received.insert(gap);
        }
    }

    /// Moves out-of-order pieces that now connect to the in-order data.
    fn pull(&mut self) {
        while let Some(entry) = self.ooo.first_entry() {
            let start = *entry.key();
            if start > self.data_end {
                break;
            }
            debug_assert_eq!(start, self.data_end, "pieces never overlap what is in order");
            let piece = entry.remove();
            let n = piece.len();
            self.data_end += n as u64;
            self.ooo_bytes -= n as u64;
            match piece.data {
                Stored::Own(v) if n < SHARE_MIN && !self.tail.is_empty() && self.tail.len() + n <= GATHER_MAX => {
                    // A small piece joins the tail: one buffer fewer.
                    let cap = (2 * self.tail.capacity()).max(self.tail.len() + n).min(GATHER_MAX);
                    let grown = grow(&mut self.tail, cap, &v);
                    self.tail_charge += grown;
                    self.charged = self.charged + grown - piece.charge;
                }
                // The last one gathers what comes in order next.
                Stored::Own(v) => {
                    self.freeze_tail();
                    (self.tail, self.tail_charge) = (v, piece.charge);
                }
                Stored::Shared(data, pin) => {
                    self.freeze_tail();
                    self.ready.push_back(Ready { data, charge: piece.charge, pin: Some(pin) });
                }
            }
        }
        let cum = self.cum();
        self.received.remove_below(cum);
    }

    /// Queues the gathered tail for reading (a buffer of exactly its bytes from then on).
    fn freeze_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let mut tail = std::mem::take(&mut self.tail);
        let mut charge = std::mem::take(&mut self.tail_charge);
        if tail.capacity() > tail.len() {
            // Shrinks in place: nothing is copied.
            let was = heap(tail.capacity());
            tail.shrink_to_fit();
            self.charged -= was - heap(tail.capacity());
            charge -= was - heap(tail.capacity());
        }
        self.ready.push_back(Ready { data: Bytes::from(tail), charge, pin: None });
    }

    /// The front in-order piece, the tail queued first if it is all that is left.
    fn front(&mut self) -> Option<&mut Ready> {
        if self.ready.is_empty() {
            self.freeze_tail();
        }
        self.ready.front_mut()
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let piece = self.ready.pop_front()?;
        self.charged -= piece.charge;
        if let Some(pin) = piece.pin {
            self.unpin(pin);
        }
        if self.ready.capacity() > 64 && self.ready.len() < self.ready.capacity() / 4 {
            self.ready.shrink_to_fit();
        }
        Some(piece.data)
    }

    /// Copies in-order bytes into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.front() else {
                break;
            };
            let take = front.data.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&front.data[..take]);
            n += take;
            if take == front.data.len() {
                self.pop_front();
            } else {
                front.data.advance(take);
            }
        }
        self.read_off += n as u64;
        n
    }

    /// Like [`RecvBuffer::read`], but hands over up to `max` in-order bytes as the
    /// payloads themselves (the front one cut to fit), for a reader that copies them
    /// elsewhere. Returns how many bytes.
    pub fn take(&mut self, max: usize, out: &mut Vec<Bytes>) -> usize {
        let mut n = 0;
        while n < max {
            let Some(front) = self.front() else {
                break;
            };
            if front.data.len() > max - n {
                out.push(front.data.split_to(max - n));
                n = max;
                break;
            }
            if let Some(data) = self.pop_front() {
                n += data.len();
                out.push(data);
            }
        }
        self.read_off += n as u64;
        n
    }
}

/// Appends `piece` to `v`, growing it to `cap` first; returns what that added to its cost.
fn grow(v: &mut Vec<u8>, cap: usize, piece: &[u8]) -> usize {
    let was = heap(v.capacity());
    if cap > v.capacity() {
        v.reserve_exact(cap - v.len());
    }
    v.extend_from_slice(piece);
    heap(v.capacity()) - was
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn take_hands_over_large_payloads_as_they_came() {
        let mut r = RecvBuffer::new(4 << 20, 64 * 1024);
        let first = Bytes::from(vec![1u8; SHARE_MIN]);
        r.receive(0, first.clone(), false, None).unwrap();
        r.receive(SHARE_MIN as u64, Bytes::from(vec![2u8; SHARE_MIN]), false, None).unwrap();
        let mut out = Vec::new();
        assert_eq!(r.take(SHARE_MIN + 5, &mut out), SHARE_MIN + 5);
        assert_eq!(out[0].as_ptr(), first.as_ptr(), "no copy");
        assert_eq!(out[1][..], [2u8; 5]);
        let mut rest = vec![0u8; SHARE_MIN];
        assert_eq!(r.read(&mut rest), SHARE_MIN - 5);
        assert_eq!(r.memory(), 0, "all released");
    }

    /// Pieces kept from one read buffer count it once; a piece alone in a buffer counts
    /// all of it, and only half a window of such waste is kept before pieces are copied.
    #[test]
    fn a_read_buffer_counts_once_for_all_the_pieces_kept_from_it() {
        let window = 1 << 20;
        let mut r = RecvBuffer::new(window, 64 * 1024);
        let slab = Bytes::from(vec![5u8; 4 * SHARE_MIN]);
        let buffer = Some(ReadBuffer { end: 1 << 40, len: slab.len() });
        for i in 0..4 {
            let piece = slab.slice(i * SHARE_MIN..(i + 1) * SHARE_MIN);
            r.receive((i * SHARE_MIN) as u64, piece, false, buffer).unwrap();
        }
        assert_eq!(r.buffers.len(), 1);
        let whole = buffer_heap(slab.len()) + 4 * PIECE_OVERHEAD;
        assert_eq!(r.memory(), whole);
        // Pieces alone in large buffers: shared while the waste stays within half the
        // window, copied after.
        let mut offset = 4 * SHARE_MIN as u64;
        let mut shared = 0;
        for i in 0..20 {
            let lonely = Some(ReadBuffer { end: (2 + i) << 40, len: READ_BUFFER });
            r.receive(offset, Bytes::from(vec![6u8; SHARE_MIN]), false, lonely).unwrap();
            shared += usize::from(r.buffers.len() > shared + 1);
            offset += SHARE_MIN as u64;
        }
        assert!((1..20).contains(&shared), "{shared} kept as they came");
        assert!(r.memory() - r.buffered() as usize <= window / 2 + PIECE_OVERHEAD * 24);
        let mut buf = vec![0u8; offset as usize];
        assert_eq!(r.read(&mut buf), offset as usize);
        assert_eq!((r.memory(), r.buffers.len()), (0, 0));
    }

    /// Small pieces are copied and gathered: a thousand of them cost about their bytes,
    /// not a thousand allocations and map slots, in order or not.
    #[test]
    fn small_pieces_are_gathered() {
        let mut r = RecvBuffer::new(1 << 20, 64 * 1024);
        for i in 0..1000u64 {
            r.receive(100 + 10 * i, b("0123456789"), false, None).unwrap();
        }
        assert_eq!(r.ooo.len(), 1);
        assert!(r.memory() < 10_000 + 4 * PIECE_OVERHEAD + GATHER_MAX / 4, "{}", r.memory());
        r.receive(0, Bytes::from(vec![b'x'; 100]), false, None).unwrap();
        for i in 0..1000u64 {
            r.receive(10_100 + 3 * i, b("abc"), false, None).unwrap();
        }
        let mut buf = vec![0u8; 20_000];
        assert_eq!(r.read(&mut buf), 13_100);
        assert_eq!(&buf[..100], &[b'x'; 100][..]);
        assert_eq!(&buf[100..110], b"0123456789");
        assert_eq!(&buf[13_097..13_100], b"abc");
        assert_eq!(r.memory(), 0);
    }

    /// One byte at every other offset: each piece alone costs a few hundred bytes, so
    /// before the window is a sixteenth full the bound is reached, and the next piece out
    /// of order is refused — not acknowledged. In-order data is still taken.
    #[test]
    fn scattered_pieces_are_refused_at_the_bound_and_in_order_data_still_goes() {
        let window = 64 * 1024;
        let mut r = RecvBuffer::new(window, 0);
        let mut offset = 1;
        let refused = loop {
            match r.receive(offset, b("."), false, None) {
                Ok(got) => assert_eq!(got.new_bytes, 1),
                Err(refused) => break refused,
            }
            offset += 2;
        };
        assert!(matches!(refused, ProtocolViolation::ReassemblyMemory { .. }), "{refused:?}");
        assert!(r.memory() <= 2 * window, "{}", r.memory());
        assert!(offset < window as u64 / 16, "refused only at {offset}");
        assert!(!r.ack_ranges(usize::MAX).iter().any(|g| g.contains(&offset)), "the refused piece is not acknowledged");
        // A frame from 0 over the scattered bytes and beyond is taken whole: everything
        // in it reads in order, the bytes held gathered with the new ones.
        let end = offset + 10;
        let got = r.receive(0, Bytes::from(vec![b'-'; end as usize]), true, None).unwrap();
        assert!(got.readable);
        assert_eq!(got.new_bytes, end - offset / 2);
        assert_eq!(r.cum(), end + 1);
        assert!(r.ready.len() + usize::from(!r.tail.is_empty()) <= 2, "gathered: {} pieces", r.ready.len());
        let mut buf = vec![0u8; end as usize + 1];
        assert_eq!(r.read(&mut buf), end as usize);
        assert!(buf[..offset as usize].iter().enumerate().all(|(i, &c)| c == if i % 2 == 1 { b'.' } else { b'-' }));
        assert!(r.at_fin());
        assert_eq!(r.memory(), 0);
    }

    fn read_all(r: &mut RecvBuffer) -> String {
        let mut buf = [0u8; 256];
        let n = r.read(&mut buf);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn reassembles_out_of_order_with_duplicates() {
        let mut r = RecvBuffer::new(100, 0);
        assert_eq!(r.receive(6, b("world"), true, None).unwrap().new_bytes, 5);
        assert_eq!(r.cum(), 0);
        assert_eq!(r.ack_ranges(32), vec![6..12]);
        let got = r.receive(3, b("lo wo"), false, None).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (3, 2));
        let got = r.receive(0, b("hel"), false, None).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (3, 0));
        assert_eq!(r.cum(), 12);
        assert!(r.ack_ranges(32).is_empty());
        assert_eq!(r.receive(0, b("hello"), false, None).unwrap().duplicate_bytes, 5);
        assert_eq!(read_all(&mut r), "hello world");
        assert!(r.at_fin());
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn partial_overlaps_are_trimmed_on_both_sides() {
        let mut r = RecvBuffer::new(100, 0);
        r.receive(0, b("hel"), false, None).unwrap();
        let got = r.receive(1, b("ello"), false, None).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (2, 2));
        r.receive(8, b("rld"), false, None).unwrap();
        let got = r.receive(6, b("wor"), false, None).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (2, 1));
        // Overlaps delivered data, fills the gap, overlaps both out-of-order segments.
        let got = r.receive(4, b("o worl"), false, None).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (1, 5));
        assert_eq!(read_all(&mut r), "hello world");
        assert_eq!(r.cum(), 11);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn window_and_fin_are_enforced() {
        let mut r = RecvBuffer::new(10, 0);
        assert!(matches!(
            r.receive(5, b("123456"), false, None),
            Err(ProtocolViolation::DataBeyondWindow {
                end: 11,
                window: 10
            })
        ));
        r.receive(0, b("0123456789"), false, None).unwrap();
        assert_eq!(read_all(&mut r).len(), 10);
        assert_eq!(r.window(), 20);
        r.receive(12, b("ab"), true, None).unwrap();
        assert!(matches!(
            r.receive(12, b("abc"), true, None),
            Err(ProtocolViolation::FinChanged { .. })
        ));
        assert!(matches!(
            r.receive(13, b("bc"), false, None),
            Err(ProtocolViolation::DataBeyondFin { .. })
        ));
        assert_eq!(r.ack_ranges(32), vec![12..15]);
        r.receive(10, b("xy"), false, None).unwrap();
        assert_eq!(r.cum(), 15);
        let mut r = RecvBuffer::new(10, 0);
        r.receive(5, b("abc"), false, None).unwrap();
        assert!(matches!(
            r.receive(0, b("ab"), true, None),
            Err(ProtocolViolation::FinChanged { .. })
        ));
    }
}
