//! What a hostile peer can make the receiver hold: real heap, measured.
//!
//! A counting global allocator (per thread, so the other tests running beside these do
//! not disturb them) charges every block what the system allocator really takes for it,
//! its header and rounding included. The tests play a peer that sends DATA cut to pieces
//! at chosen offsets — one byte at every other offset across the whole window, so nothing
//! can ever be delivered, and other patterns — sealed into records, cut off read buffers,
//! opened and handed to a [`FlowState`] as the runtime does; then they compare the live
//! heap with the receive window.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::proto::frame::DATA_HEADER_LEN;
use crate::proto::{FlowConfig, FlowState, Frame, ReadOutcome, SubflowId};
use crate::session::records::{open, seal_record_into, split_record, Receiver, Record, MAX_RECORD_PLAINTEXT};
use crate::session::{session_pair, SessionKeys};

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

/// What the allocator really gives up for a block: glibc's usable size plus its header.
fn real_size(ptr: *mut u8, layout: Layout) -> i64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = layout;
        // SAFETY: `ptr` came from the system allocator (glibc's malloc family).
        unsafe { libc::malloc_usable_size(ptr.cast()) as i64 + 8 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = ptr;
        ((layout.size() + 8).next_multiple_of(16)).max(32) as i64
    }
}

fn count(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(real_size(p, layout));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(real_size(p, layout));
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        count(-real_size(p, layout));
        System.dealloc(p, layout);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = real_size(p, layout);
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            count(real_size(q, Layout::from_size_align_unchecked(new_size, layout.align())) - old);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// Starts a measurement: the peak from here on.
fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

fn peak() -> i64 {
    PEAK.with(Cell::get)
}

/// The read buffer a subflow's reader fills (the runtime's largest).
const SLAB: usize = 256 * 1024;

/// The receiving end under attack, fed as the runtime's reader feeds it.
struct Target {
    flow: FlowState,
    id: SubflowId,
    rx: Receiver,
    keys: (std::sync::Arc<SessionKeys>, std::sync::Arc<SessionKeys>),
    now: Instant,
    pn: u64,
    /// Subflows the receiver condemned; the peer came back on a new one each time.
    violations: u64,
}

impl Target {
    fn new(window: usize) -> Target {
        let now = Instant::now();
        let cfg = FlowConfig { recv_window: window, ..FlowConfig::default() };
        let mut flow = FlowState::new(cfg, now);
        let id = flow.add_subflow(now);
        Target { flow, id, rx: Receiver::default(), keys: session_pair(), now, pn: 0, violations: 0 }
    }

    /// Seals `frames` as records (each as full as the protocol allows) into read buffers,
    /// and hands every record to the flow.
    fn feed(&mut self, frames: impl IntoIterator<Item = Frame>) {
        let mut slab = BytesMut::with_capacity(SLAB);
        let mut record: Vec<Frame> = Vec::new();
        let mut plain = 0;
        for f in frames {
            if plain + f.encoded_len() > MAX_RECORD_PLAINTEXT {
                self.seal(&mut slab, std::mem::take(&mut record));
                plain = 0;
            }
            plain += f.encoded_len();
            record.push(f);
        }
        if !record.is_empty() {
            self.seal(&mut slab, record);
        }
        self.read(&mut slab);
    }

    /// Seals one record into the read buffer; opens what the buffer holds once it is full.
    fn seal(&mut self, slab: &mut BytesMut, frames: Vec<Frame>) {
        let record = Record::numbered(self.pn, frames);
        self.pn += 1;
        if slab.len() + record.sealed_len() > SLAB {
            self.read(slab);
            *slab = BytesMut::with_capacity(SLAB);
        }
        seal_record_into(&self.keys.0, &record, slab).expect("within the limit");
    }

    fn read(&mut self, slab: &mut BytesMut) {
        while let Some(sealed) = split_record(slab) {
            let opened = open(&self.keys.1, sealed).expect("authentic");
            if self.rx.deliver(&mut self.flow, self.id, opened, self.now).is_err() {
                // The subflow is closed; the peer joins again and goes on.
                self.violations += 1;
                self.flow.remove_subflow(self.id, self.now);
                self.id = self.flow.add_subflow(self.now);
                while self.flow.poll_event().is_some() {}
            }
        }
    }
}

static ZEROS: [u8; 65_536] = [0; 65_536];

fn data(offset: u64, len: usize) -> Frame {
    Frame::Data { offset, fin: false, payload: Bytes::from_static(&ZEROS[..len]) }
}

/// What an attack left behind.
#[derive(Debug)]
struct Held {
    window: usize,
    /// Live heap the receiver kept, beyond what it had before.
    retained: i64,
    /// The most it held at any moment.
    peak: i64,
    /// Payload bytes it took in.
    received: u64,
    violations: u64,
    /// What the receiver itself reckons it holds.
    reckoned: usize,
}

impl Target {
    /// What the receiver holds now, with `window`, beyond the `before` live heap.
    fn held(&self, window: usize, before: i64) -> Held {
        Held {
            window,
            retained: live() - before,
            peak: peak() - before,
            received: self.flow.stats().bytes_received,
            violations: self.violations,
            reckoned: self.flow.recv_memory(),
        }
    }
}

impl Held {
    fn ratio(&self) -> f64 {
        self.retained as f64 / self.window as f64
    }
}

/// Runs `frames` against a fresh receiver with `window`; measures its heap.
fn attack(window: usize, frames: impl IntoIterator<Item = Frame>) -> Held {
    let mut t = Target::new(window);
    let before = live();
    reset_peak();
    t.feed(frames);
    let held = t.held(window, before);
    drop(t);
    held
}

/// The bound: twice the window, and a little for the flow's own bookkeeping.
fn assert_bounded(name: &str, h: &Held) {
    eprintln!(
        "{name}: window {} KiB, retained {} KiB ({:.2}× window; reckoned {} KiB), peak {} KiB, {} bytes received, {} subflows refused",
        h.window / 1024,
        h.retained / 1024,
        h.ratio(),
        h.reckoned / 1024,
        h.peak / 1024,
        h.received,
        h.violations
    );
    // The receiver's own reckoning is what bounds it: it must not undercount.
    assert!(h.retained <= h.reckoned as i64 + 16 * 1024, "{name}: reckoned below the real heap: {h:?}");
    let bound = 2 * h.window as i64 + 64 * 1024;
    assert!(h.retained <= bound, "{name}: {h:?} over {bound}");
    // Transients: one read buffer and one record's frames being handed over.
    assert!(h.peak <= bound + 2 * SLAB as i64, "{name}: {h:?}");
    assert!(h.received > 0, "{name}: the receiver took nothing at all: {h:?}");
}

const W: usize = 1 << 20;

/// One byte at every other offset across the whole window: nothing is ever deliverable.
#[test]
fn one_byte_at_odd_offsets_across_the_window() {
    let h = attack(4 * W, (0..(4 * W as u64) / 2).map(|i| data(2 * i + 1, 1)));
    assert_bounded("1 byte at odd offsets, 4 MiB window", &h);
}

#[test]
fn other_fragmentations_stay_within_twice_the_window() {
    let w = W as u64;
    let cases: Vec<(&str, Box<dyn Iterator<Item = Frame>>)> = vec![
        ("2 bytes every 3", Box::new((0..w / 3).map(|i| data(3 * i + 1, 2)))),
        ("3 bytes every 2 (overlapping)", Box::new((0..w / 2 - 1).map(|i| data(2 * i + 1, 3)))),
        ("1 byte at odd offsets, twice", Box::new((0..w / 2).flat_map(|i| [data(2 * i + 1, 1), data(2 * i + 1, 1)]))),
        ("1 byte at odd offsets, descending", Box::new((0..w / 2).rev().map(|i| data(2 * i + 1, 1)))),
        ("100 bytes every 101", Box::new((0..w / 101).map(|i| data(101 * i + 1, 100)))),
        ("1 KiB every 1025", Box::new((0..w / 1025).map(|i| data(1025 * i + 1, 1024)))),
    ];
    for (name, frames) in cases {
        assert_bounded(name, &attack(W, frames));
    }
}

/// In order but one byte per frame, while the application does not read.
#[test]
fn one_byte_frames_in_order_unread() {
    let h = attack(W, (0..W as u64).map(|i| data(i, 1)));
    assert_bounded("1 byte frames in order, unread", &h);
}

/// Each small new piece rides in a record padded with a PING-filled tail, so the piece is
/// a quarter of its record: kept as a slice, it would hold the whole record.
#[test]
fn small_pieces_in_padded_records() {
    let mut t = Target::new(W);
    let before = live();
    reset_peak();
    let piece = 1024;
    let mut offset = 1;
    while offset + piece as u64 <= W as u64 {
        let mut frames = vec![data(offset, piece)];
        let pad = (DATA_HEADER_LEN + piece) * 3;
        frames.extend((0..pad / 9).map(|id| Frame::Ping { id: id as u64 }));
        let mut slab = BytesMut::with_capacity(SLAB);
        t.seal(&mut slab, frames);
        t.read(&mut slab);
        offset += piece as u64 + 1;
    }
    let h = t.held(W, before);
    assert_bounded("1 KiB pieces in padded records", &h);
}

/// Each piece is large enough to keep without a copy, but the rest of the read buffer it
/// came in is filled with records of PINGs: kept as a slice, each would hold a whole
/// buffer.
#[test]
fn pieces_alone_in_read_buffers_of_pings() {
    let pings: Vec<Frame> = (0..MAX_RECORD_PLAINTEXT / 9).map(|id| Frame::Ping { id: id as u64 }).collect();
    let mut t = Target::new(4 * W);
    let before = live();
    reset_peak();
    let piece = 16 * 1024;
    let mut offset = 1;
    while offset + piece as u64 <= 4 * W as u64 {
        let mut slab = BytesMut::with_capacity(SLAB);
        t.seal(&mut slab, vec![data(offset, piece)]);
        while slab.len() + MAX_RECORD_PLAINTEXT + 26 <= SLAB {
            t.seal(&mut slab, pings.clone());
        }
        t.read(&mut slab);
        offset += piece as u64 + 1;
    }
    let h = t.held(4 * W, before);
    assert_bounded("16 KiB pieces alone in read buffers of PINGs", &h);
}

/// An honest multipath pattern: the whole window arrives out of order in large frames
/// (the path carrying its first frame is slow), then that frame: everything is taken,
/// nothing refused, and all of it reads.
#[test]
fn a_window_of_large_out_of_order_frames_is_taken_whole() {
    let frame = 60 * 1024;
    let n = (W / frame) as u64;
    let mut t = Target::new(W);
    let before = live();
    reset_peak();
    t.feed((1..n).map(|i| data(i * frame as u64, frame)));
    t.feed([data(0, frame)]);
    let h = t.held(W, before);
    assert_bounded("large frames out of order", &h);
    assert_eq!(h.violations, 0);
    assert_eq!(h.received, n * frame as u64);
    let mut buf = vec![0u8; 1 << 16];
    let mut read = 0;
    while let Ok(ReadOutcome::Data(k)) = t.flow.read(&mut buf) {
        read += k;
    }
    assert_eq!(read as u64, n * frame as u64);
}
